"""Demonstrations by teleoperation: teleop drives franka_control directly and the recorder records.

    ros2 launch irevla robot.launch.py ...            # robot side first (or sim.launch.py)
    ros2 run irevla teleop --ros-args -p output_topic:=/irevla/action   # in a terminal, for keyboard teleop
    ros2 launch irevla teleop_record.launch.py out:=data/pick task:=pick-cube instruction:="pick up the cube"

Recorder keys need a terminal too: run `ros2 run irevla recorder ...` in one, or call its services
(/recorder/start, /recorder/mark_success, /recorder/stop).
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
        DeclareLaunchArgument("out", default_value="runs/robot/teleop", description="episode directory"),
        DeclareLaunchArgument("task", default_value="pick-cube"),
        DeclareLaunchArgument("instruction", default_value="pick up the cube"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | spacemouse | keyboard"),
        Node(package="irevla", executable="teleop", name="teleop", output="screen", emulate_tty=True,
             parameters=[os.path.join(config_dir, "teleop.yaml"),
                         {"device": LaunchConfiguration("device"), "output_topic": "/irevla/action"}]),
        Node(package="irevla", executable="recorder", name="recorder", output="screen", emulate_tty=True,
             parameters=[os.path.join(config_dir, "recorder.yaml"),
                         {"out": LaunchConfiguration("out"), "task": LaunchConfiguration("task"),
                          "instruction": LaunchConfiguration("instruction"), "source": "teleop"}]),
    ])
