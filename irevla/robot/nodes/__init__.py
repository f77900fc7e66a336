"""rclpy nodes: thin shells over the ROS-free cores in irevla.robot. Each module has a `main()` console script."""
