"""Stage-1 RL on the robot: vla_policy in rl_actor mode + teleop for human interventions + recorder.

    export IREVLA_LEARNER_TOKEN_FILE=~/.irevla/learner.token      # the learner's token
    ros2 launch irevla rl_actor.launch.py checkpoint:=/data/policies/pick out:=runs/rl/pick learner:=tcp://127.0.0.1:5555

vla_policy streams latents + actions to `irevla learner serve` at `learner` and applies the heads it publishes;
episodes: /vla_policy/start_episode, /vla_policy/end_episode_success, /vla_policy/end_episode_failure
(docs/robot.md, "RL actor mode").
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
        DeclareLaunchArgument("learner", default_value="tcp://127.0.0.1:5555",
                              description="ZeroMQ address of irevla learner serve"),
        Node(package="irevla", executable="vla_policy", name="vla_policy", output="screen",
             parameters=[os.path.join(config_dir, "vla_policy.yaml"),
                         {"mode": "rl_actor", "policy.checkpoint": LaunchConfiguration("checkpoint"),
                          "instruction": LaunchConfiguration("instruction"),
                         "rl_actor.learner_address": LaunchConfiguration("learner")}]),
        Node(package="irevla", executable="teleop", name="teleop", output="screen", emulate_tty=True,
             parameters=[os.path.join(config_dir, "teleop.yaml")]),
        Node(package="irevla", executable="recorder", name="recorder", output="screen",
             parameters=[os.path.join(config_dir, "recorder.yaml"),
                         {"out": LaunchConfiguration("out"), "source": "rl",
                          "instruction": LaunchConfiguration("instruction")}]),
    ])
