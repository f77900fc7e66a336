"""Stage-1 RL on the robot: vla_policy in rl_actor mode + teleop for human interventions + recorder.

    ros2 launch irevla rl_actor.launch.py checkpoint:=/data/policies/pick out:=runs/rl/pick

NOTE: vla_policy's rl_actor mode needs the RL learner's transport (the loop issue); until it exists the node exits
with a message saying so. The seam is irevla/robot/rl_actor.py.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description():
    config_dir = os.path.join(get_package_share_directory("irevla"), "config")
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", default_value="", description="policy checkpoint directory"),
        DeclareLaunchArgument("instruction", default_value="pick up the cube"),
        DeclareLaunchArgument("out", default_value="runs/robot/rl", description="episode directory"),
        Node(package="irevla", executable="vla_policy", name="vla_policy", output="screen",
             parameters=[os.path.join(config_dir, "vla_policy.yaml"),
                         {"mode": "rl_actor", "policy.checkpoint": LaunchConfiguration("checkpoint"),
                          "instruction": LaunchConfiguration("instruction")}]),
        Node(package="irevla", executable="teleop", name="teleop", output="screen", emulate_tty=True,
             parameters=[os.path.join(config_dir, "teleop.yaml")]),
        Node(package="irevla", executable="recorder", name="recorder", output="screen",
             parameters=[os.path.join(config_dir, "recorder.yaml"),
                         {"out": LaunchConfiguration("out"), "source": "rl",
                          "instruction": LaunchConfiguration("instruction")}]),
    ])
