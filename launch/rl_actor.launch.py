"""Stage-1 RL on the robot: vla_policy in rl_actor mode (recording D_RL) + teleop for human interventions.

    export IREVLA_LEARNER_TOKEN_FILE=~/.irevla/learner.token      # the learner's token (a loopback learner)
    ros2 launch irevla rl_actor.launch.py checkpoint:=/data/policies/pick out:=runs/pick/d_rl learner:=tcp://127.0.0.1:5555
    # a learner on another machine: CURVE keys from `irevla learner keys`, no token
    ros2 launch irevla rl_actor.launch.py ... learner:=tcp://192.168.1.10:5555 \
        curve_server_key:=keys/learner.key curve_secret:=keys/arm-1.key_secret

vla_policy streams latents + actions to `irevla learner serve` at `learner` and applies the heads it publishes;
episodes: /vla_policy/start_episode, /vla_policy/end_episode_success, /vla_policy/end_episode_failure
(docs/robot.md, "RL actor mode"); with reward_source:=classifier+human detector:=runs/pick/detector the success
detector ends episodes and a person has review_window_s to veto (/vla_policy/end_episode_failure). Each successful episode (every camera, state, executed actions, interventions)
is written to the episode store `out` (rl_actor.record_dir; record_failures:=true keeps the failures too): D_RL
for stage 2. out:='' records nothing.
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
        DeclareLaunchArgument("out", default_value="runs/robot/d_rl",
                              description="episode store for the RL episodes (D_RL); '' = do not record"),
        DeclareLaunchArgument("record_failures", default_value="false",
                              description="also record unsuccessful episodes"),
        DeclareLaunchArgument("learner", default_value="tcp://127.0.0.1:5555",
                              description="ZeroMQ address of irevla learner serve"),
        DeclareLaunchArgument("curve_server_key", default_value="",
                              description="CURVE: the learner's public key file (needed beyond loopback)"),
        DeclareLaunchArgument("curve_secret", default_value="", description="CURVE: this actor's secret key file"),
        DeclareLaunchArgument("reward_source", default_value="human",
                              choices=["human", "classifier", "classifier+human"],
                              description="who ends an episode: a person (services/keys), the success detector, or "
                                          "the detector with a person's veto window"),
        DeclareLaunchArgument("detector", default_value="",
                              description="success detector directory (irevla reward train) for the classifier "
                                          "sources"),
        DeclareLaunchArgument("review_window_s", default_value="10.0",
                              description="classifier+human: seconds a person has to confirm or veto"),
        Node(package="irevla", executable="vla_policy", name="vla_policy", output="screen",
             parameters=[os.path.join(config_dir, "vla_policy.yaml"),
                         {"mode": "rl_actor", "policy.checkpoint": LaunchConfiguration("checkpoint"),
                          "instruction": LaunchConfiguration("instruction"),
                          "rl_actor.learner_address": LaunchConfiguration("learner"),
                          "rl_actor.curve_server_key": LaunchConfiguration("curve_server_key"),
                          "rl_actor.curve_secret": LaunchConfiguration("curve_secret"),
                          "rl_actor.record_dir": LaunchConfiguration("out"),
                          "rl_actor.record_failures": LaunchConfiguration("record_failures"),
                          "rl_actor.reward_source": LaunchConfiguration("reward_source"),
                          "rl_actor.detector": LaunchConfiguration("detector"),
                          "rl_actor.review_window_s": LaunchConfiguration("review_window_s")}]),
        Node(package="irevla", executable="teleop", name="teleop", output="screen", emulate_tty=True,
             parameters=[os.path.join(config_dir, "teleop.yaml")]),
    ])
