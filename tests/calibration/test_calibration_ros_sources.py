"""The ROS 2 pose and image sources against real DDS traffic, inside a private network namespace.

The test re-runs this file as a script under ``unshare -n`` (loopback only) with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a random ROS_DOMAIN_ID, so no DDS packet leaves the machine. A fake
robot publishes franka_ros2-style poses (best effort) and realsense-style images with padded rows (reliable); the
calibration sources must receive and convert them. Skipped where rclpy or unprivileged namespaces are missing.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
POSE_TOPIC = "/franka_robot_state_broadcaster/current_pose"
IMAGE_TOPIC = "/camera/camera/color/image_raw"
INFO_TOPIC = "/camera/camera/color/camera_info"


def _namespace_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0


def test_ros2_sources_receive_pose_image_and_camera_info():
    pytest.importorskip("rclpy", reason="rclpy not installed (pip install 'ros-rclpy[fastrtps]')")
    if not _namespace_available():
        pytest.skip("cannot create a private network namespace (unshare -n) here")
    environment = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                       ROS_DOMAIN_ID=str(random.randint(1, 100)), FASTDDS_BUILTIN_TRANSPORTS="UDPv4",
                       PYTHONPATH=os.pathsep.join([str(REPOSITORY_ROOT), os.environ.get("PYTHONPATH", "")]))
    command = f"ip link set lo up && exec {sys.executable} {os.path.abspath(__file__)}"
    result = subprocess.run(["unshare", "-n", "sh", "-c", command], env=environment, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ROUND TRIP OK" in result.stdout


def _round_trip() -> None:
    """Runs inside the namespace: publish like the robot stack, read through the calibration sources."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from irevla.robot.calibration_sources import (
        Ros2Connection,
        Ros2ImageSource,
        Ros2PoseSource,
    )

    connection = Ros2Connection("irevla_calibration_test")
    pose_source = Ros2PoseSource(connection, POSE_TOPIC, timeout_s=20.0)
    image_source = Ros2ImageSource(connection, IMAGE_TOPIC, INFO_TOPIC, timeout_s=20.0, serial="fake")
    robot = connection.node  # publishing needs no spinning; reuse the node
    pose_publisher = robot.create_publisher(PoseStamped, POSE_TOPIC, qos_profile_sensor_data)  # franka: best effort
    image_publisher = robot.create_publisher(Image, IMAGE_TOPIC, QoSProfile(depth=5))  # realsense-ros: reliable
    info_publisher = robot.create_publisher(CameraInfo, INFO_TOPIC, QoSProfile(depth=5))

    picture = np.zeros((48, 64, 3), np.uint8)
    picture[10:20, 30:40] = (250, 120, 5)
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            pose = PoseStamped()
            pose.header.frame_id = "fr3_link0"
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.31, -0.05, 0.42
            pose.pose.orientation.x, pose.pose.orientation.w = 1.0, 0.0
            pose_publisher.publish(pose)
            image = Image(height=48, width=64, encoding="rgb8", step=64 * 3 + 8)  # 8 bytes of row padding
            rows = np.concatenate([picture.reshape(48, -1), np.zeros((48, 8), np.uint8)], axis=1)
            image.data = rows.tobytes()
            image_publisher.publish(image)
            info = CameraInfo(width=64, height=48, distortion_model="plumb_bob")
            info.k = [60.0, 0.0, 32.0, 0.0, 61.0, 24.0, 0.0, 0.0, 1.0]
            info.d = [0.01, 0.0, 0.0, 0.0, 0.0]
            info_publisher.publish(info)
            time.sleep(0.05)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        pose = pose_source.current_pose()
        assert np.allclose(pose.T_base_gripper[:3, 3], [0.31, -0.05, 0.42])
        assert np.allclose(pose.T_base_gripper[:3, :3], np.diag([1.0, -1.0, -1.0]))
        captured = image_source.capture()
        assert captured.image.shape == (48, 64, 3) and tuple(captured.image[15, 35]) == (250, 120, 5)
        intrinsics = image_source.intrinsics()
        assert (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy) == (60.0, 61.0, 32.0, 24.0)
    finally:
        stop.set()
        publisher.join()
        connection.close()
    print("ROUND TRIP OK")


if __name__ == "__main__":
    _round_trip()
