"""The whole stack in simulation: sim_robot + franka_control (sim backend) + vla_policy (+ recorder).

    ros2 launch irevla sim.launch.py                                  # tiny random-weight VLA, cameras front+wrist
    ros2 launch irevla sim.launch.py checkpoint:=/path/to/policy instruction:="pick up the cube" record:=true

Each node reads share/irevla/config/<node>.yaml (or <config_dir>/<node>.yaml); the launch arguments below override.
Without ros2 launch: `irevla robot up --sim` starts the same nodes in one process.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory("irevla"), "config")
    config_dir = LaunchConfiguration("config_dir")

    def params(node_name):
        return [LaunchConfiguration(f"{node_name}_params")]

    arguments = [
        DeclareLaunchArgument("config_dir", default_value=default_config,
                              description="directory with <node>.yaml parameter files"),
        DeclareLaunchArgument("checkpoint", default_value="", description="policy checkpoint ('' = tiny preset)"),
        DeclareLaunchArgument("instruction", default_value="pick up the cube"),
        DeclareLaunchArgument("record", default_value="false", description="also start the recorder"),
        DeclareLaunchArgument("out", default_value="runs/robot/sim_episodes", description="recorder output dir"),
    ]
    for node_name, file_name in (("sim_robot", "sim_robot.yaml"), ("franka_control", "franka_control.yaml"),
                                 ("vla_policy", "vla_policy.yaml"), ("recorder", "recorder.yaml")):
        arguments.append(DeclareLaunchArgument(f"{node_name}_params", default_value=[config_dir, "/" + file_name]))

    return LaunchDescription(arguments + [
        Node(package="irevla", executable="sim_robot", name="sim_robot", output="screen",
             parameters=params("sim_robot")),
        Node(package="irevla", executable="franka_control", name="franka_control", output="screen",
             parameters=params("franka_control") + [{"control.backend": "sim"}]),
        Node(package="irevla", executable="vla_policy", name="vla_policy", output="screen",
             parameters=params("vla_policy") + [{"policy.checkpoint": LaunchConfiguration("checkpoint"),
                                                 "instruction": LaunchConfiguration("instruction")}]),
        Node(package="irevla", executable="recorder", name="recorder", output="screen",
             condition=IfCondition(LaunchConfiguration("record")),
             parameters=params("recorder") + [{"out": LaunchConfiguration("out"), "source": "rl",
                                               "instruction": LaunchConfiguration("instruction")}]),
    ])
