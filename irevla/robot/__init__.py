"""ROS 2 nodes: thin rclpy shells over ROS-free cores. Only this package imports rclpy. (robot issue)"""
