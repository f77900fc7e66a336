"""vla_policy alone (deploy mode), next to robot.launch.py or sim.launch.py's robot side.

    ros2 launch irevla policy.launch.py checkpoint:=/data/policies/pick instruction:="pick up the carrot"
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description():
    config = os.path.join(get_package_share_directory("irevla"), "config", "vla_policy.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", default_value="", description="policy checkpoint directory"),
        DeclareLaunchArgument("instruction", default_value="pick up the cube"),
        DeclareLaunchArgument("params", default_value=config, description="vla_policy parameter file"),
        Node(package="irevla", executable="vla_policy", name="vla_policy", output="screen",
             parameters=[LaunchConfiguration("params"),
                         {"policy.checkpoint": LaunchConfiguration("checkpoint"),
                          "instruction": LaunchConfiguration("instruction")}]),
    ])
