"""The real robot's side of irevla: franka_control (franka_ros2 or multipanda backend) + realsense_camera.

    ros2 launch irevla robot.launch.py backend:=franka_ros2 camera_names:=wrist,front \
        camera_serials:=123456789012,234567890123 workspace_file:=$HOME/irevla/workspace.yaml
    ros2 launch irevla robot.launch.py backend:=multipanda robot_ip:=<your robot IP> start_driver:=true

The Franka driver and its Cartesian impedance controller are started separately (docs/robot.md), or here with
start_driver:=true, which includes franka_bringup's franka.launch.py with robot_ip (needs franka_bringup installed).
Cameras: realsense_camera by default; use_realsense_ros:=true leaves the cameras to a realsense-ros node you start
yourself (point vla_policy's cameras.image_topics at its topics).
Camera frames: hand_eye_file:=calibration_wrist_camera.yaml[,calibration_fixed_camera.yaml] (written by
`irevla calibrate handeye`) starts one tf2_ros static_transform_publisher per file with the calibrated camera pose;
hand_eye_child_frame renames the camera frame, one entry per file (docs/calibration.md).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def _split(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def _nodes(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    config_dir = value("config_dir")
    control_overrides = {"control.backend": value("backend")}
    if value("workspace_file"):
        control_overrides["safety.workspace_file"] = value("workspace_file")
    nodes = [Node(package="irevla", executable="franka_control", name="franka_control", output="screen",
                  parameters=[os.path.join(config_dir, "franka_control.yaml"), control_overrides])]
    if value("use_realsense_ros").lower() != "true":
        names, serials = _split(value("camera_names")), _split(value("camera_serials"))
        if serials and len(serials) != len(names):
            raise RuntimeError(f"camera_serials has {len(serials)} entries for {len(names)} camera_names")
        nodes.append(Node(package="irevla", executable="realsense_camera", name="realsense_camera", output="screen",
                          parameters=[os.path.join(config_dir, "realsense_camera.yaml"),
                                      {"names": names, "serials": serials or [""] * len(names)}]))
    return nodes + _hand_eye_publishers(value("hand_eye_file"), value("hand_eye_child_frame"))


def _hand_eye_publishers(files, child_frames):
    """One static_transform_publisher per hand-eye result file; the file is read now, at launch time."""
    if not files.strip():
        return []
    from irevla.calibration.errors import CalibrationError
    from irevla.calibration.result import static_transform_publishers

    try:
        publishers = static_transform_publishers(files, child_frames)
    except CalibrationError as exc:
        raise RuntimeError(f"hand_eye_file: {exc}") from None
    return [Node(package="tf2_ros", executable="static_transform_publisher", name=name, output="screen",
                 arguments=arguments) for name, arguments in publishers]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("backend", default_value="franka_ros2", choices=["franka_ros2", "multipanda", "sim"],
                              description="the control backend (docs/robot.md)"),
        DeclareLaunchArgument("robot_ip", default_value="",
                              description="the arm's IP (see docs/robot.md); required with start_driver:=true"),
        DeclareLaunchArgument("start_driver", default_value="false",
                              description="also include franka_bringup/launch/franka.launch.py"),
        DeclareLaunchArgument("camera_names", default_value="wrist", description="comma-separated camera names"),
        DeclareLaunchArgument("camera_serials", default_value="", description="comma-separated serials, same order"),
        DeclareLaunchArgument("use_realsense_ros", default_value="false"),
        DeclareLaunchArgument("workspace_file", default_value="", description="workspace box from calibration"),
        DeclareLaunchArgument("hand_eye_file", default_value="",
                              description="comma-separated hand-eye results (irevla calibrate handeye): publish "
                                          "each camera's calibrated pose on /tf_static"),
        DeclareLaunchArgument("hand_eye_child_frame", default_value="",
                              description="comma-separated, one per hand_eye_file: publish the camera as this "
                                          "frame instead of the file's (empty = the file's)"),
        DeclareLaunchArgument("config_dir", default_value=os.path.join(get_package_share_directory("irevla"),
                                                                        "config")),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("franka_bringup"), "launch",
                                                                "franka.launch.py"])),
            launch_arguments={"robot_ip": LaunchConfiguration("robot_ip"), "load_gripper": "true"}.items(),
            condition=IfCondition(LaunchConfiguration("start_driver"))),
        OpaqueFunction(function=_nodes),
    ])
