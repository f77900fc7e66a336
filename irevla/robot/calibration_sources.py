"""ROS 2 pose and image sources for hand-eye collection (`irevla calibrate ... --pose-source ros`).

They live at the robot's rclpy edge, not in `irevla.calibration` (which stays ROS-free); the calibration CLI imports
this module only when a ROS source is chosen, and rclpy and the message packages are imported only inside the
classes.

- `Ros2PoseSource`: geometry_msgs/PoseStamped, by default franka_ros2's
  ``/franka_robot_state_broadcaster/current_pose`` (published BEST_EFFORT, so subscribed with sensor-data QoS).
- `Ros2ImageSource`: sensor_msgs/Image (+ CameraInfo for the intrinsics), by default realsense-ros' colour stream.

Both wait for a message that arrives after the request, so a capture never pairs a pose or image from before the
user pressed Enter. The conversion functions at the top take any object with the message's fields and need no rclpy.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from irevla.calibration.camera_model import CameraIntrinsics
from irevla.calibration.errors import CalibrationError
from irevla.calibration.sources import CapturedImage, StampedPose
from irevla.calibration.transforms import from_translation_quaternion
from irevla.robot.conversions import ConversionError, image_to_rgb, stamp_to_seconds


# --------------------------------------------------------------------------------------- message conversions
def stamp_seconds(header: Any) -> float:
    return stamp_to_seconds(header.stamp)


def pose_message_to_matrix(message: Any, name: str = "PoseStamped") -> np.ndarray:
    position, orientation = message.pose.position, message.pose.orientation
    return from_translation_quaternion([position.x, position.y, position.z],
                                       [orientation.x, orientation.y, orientation.z, orientation.w], name=name)


def image_message_to_rgb(message: Any) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 HxWx3 (`irevla.robot.conversions.image_to_rgb`), as a CalibrationError."""
    try:
        return image_to_rgb(message)
    except ConversionError as exc:
        raise CalibrationError(f"image for calibration: {exc} (e.g. realsense-ros colour: rgb8)") from None


def camera_info_to_intrinsics(message: Any, stream: str = "color") -> CameraIntrinsics:
    k = list(message.k)
    model = message.distortion_model or "plumb_bob"
    coefficients = tuple(float(v) for v in message.d)
    if model == "plumb_bob" and not coefficients:
        coefficients = (0.0,) * 5
    if model not in ("plumb_bob", "rational_polynomial", "equidistant"):
        raise CalibrationError(f"CameraInfo distortion model {model!r} is not supported")
    return CameraIntrinsics(stream=stream, width=int(message.width), height=int(message.height), fx=float(k[0]),
                            fy=float(k[4]), cx=float(k[2]), cy=float(k[5]), distortion_model=model,
                            distortion_coefficients=coefficients)


# ---------------------------------------------------------------------------------------------- rclpy edge
class _LatestMessage:
    """The newest message of a topic and when it arrived; `wait_newer` blocks for one that arrived after a time."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._message: Any = None
        self._received = -1.0

    def put(self, message: Any) -> None:
        with self._condition:
            self._message, self._received = message, time.monotonic()
            self._condition.notify_all()

    def wait_newer(self, after: float, timeout_s: float) -> Any | None:
        deadline = after + timeout_s
        with self._condition:
            while self._received <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._condition.wait(remaining)
            return self._message

    def latest(self) -> Any | None:
        with self._condition:
            return self._message


class Ros2Connection:
    """One rclpy node spun on a background thread, shared by the pose and image sources."""

    def __init__(self, node_name: str = "irevla_calibrate"):
        try:
            import rclpy
            from rclpy.executors import SingleThreadedExecutor
        except ImportError as exc:
            raise CalibrationError(f"ROS 2 (rclpy) is not available ({exc}); source your ROS 2 setup or install "
                                   "ros-rclpy[fastrtps] ros-geometry-msgs ros-sensor-msgs, or use --pose-source "
                                   "manual / --image-source realsense") from None
        self._rclpy = rclpy
        self._owns_context = not rclpy.ok()
        if self._owns_context:
            rclpy.init()
        self.node = rclpy.create_node(node_name)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, name=f"{node_name}_spin", daemon=True)
        self._thread.start()

    def subscribe(self, message_type: Any, topic: str) -> _LatestMessage:
        from rclpy.qos import qos_profile_sensor_data

        cache = _LatestMessage()
        # Sensor-data QoS (best effort) also matches reliable publishers, and franka_ros2 publishes best effort.
        self.node.create_subscription(message_type, topic, cache.put, qos_profile_sensor_data)
        return cache

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        if self._owns_context and self._rclpy.ok():
            self._rclpy.shutdown()
        self._thread.join(timeout=2.0)


class Ros2PoseSource:
    def __init__(self, connection: Ros2Connection, topic: str = "/franka_robot_state_broadcaster/current_pose",
                 timeout_s: float = 5.0):
        from geometry_msgs.msg import PoseStamped

        self.topic, self.timeout_s = topic, timeout_s
        self._poses = connection.subscribe(PoseStamped, topic)

    def current_pose(self) -> StampedPose:
        message = self._poses.wait_newer(time.monotonic(), self.timeout_s)
        if message is None:
            raise CalibrationError(f"no pose on {self.topic} within {self.timeout_s:.0f} s; is the robot stack "
                                   f"running (check: ros2 topic hz {self.topic})? Or use --pose-source manual")
        return StampedPose(pose_message_to_matrix(message, name=self.topic), stamp_seconds(message.header))

    def close(self) -> None:
        pass


class Ros2ImageSource:
    def __init__(self, connection: Ros2Connection, image_topic: str = "/camera/camera/color/image_raw",
                 camera_info_topic: str | None = "/camera/camera/color/camera_info", timeout_s: float = 5.0,
                 serial: str = ""):
        from sensor_msgs.msg import CameraInfo, Image

        self.image_topic, self.camera_info_topic, self.timeout_s, self.serial = (image_topic, camera_info_topic,
                                                                                 timeout_s, serial)
        self._images = connection.subscribe(Image, image_topic)
        self._infos = connection.subscribe(CameraInfo, camera_info_topic) if camera_info_topic else None

    def capture(self) -> CapturedImage:
        message = self._images.wait_newer(time.monotonic(), self.timeout_s)
        if message is None:
            raise CalibrationError(f"no image on {self.image_topic} within {self.timeout_s:.0f} s; is the camera "
                                   f"node running (check: ros2 topic hz {self.image_topic})?")
        return CapturedImage(image_message_to_rgb(message), stamp_seconds(message.header))

    def intrinsics(self) -> CameraIntrinsics | None:
        if self._infos is None:
            return None
        message = self._infos.latest() or self._infos.wait_newer(time.monotonic(), self.timeout_s)
        return camera_info_to_intrinsics(message) if message is not None else None

    def close(self) -> None:
        pass
