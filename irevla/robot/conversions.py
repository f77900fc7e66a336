"""ROS message <-> numpy conversions for the robot nodes (no rclpy; message classes are imported when needed).

Images (`sensor_msgs/Image`): ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``, ``mono16``, ``16UC1``, ``32FC1``.
Reading honours ``step`` (rows may be padded), ``is_bigendian`` for 16/32-bit data and the encoding's channel
order; `image_to_rgb` gives the contract's uint8 RGB. Writing produces tightly packed rows in the machine's byte
order. cv_bridge is not needed (it is not installable from PyPI).

Actions travel as `sensor_msgs/JointState` (header stamp + named values, a standard message every ROS install
has):

* ``name`` = the action names and ``position`` = their values, either the delta form
  ``dx dy dz drx dry drz gripper`` (m, rad axis-angle, 0 open ... 1 closed) or the absolute form
  ``x y z qx qy qz qw gripper``;
* ``header.frame_id`` = the frame of a delta: ``base`` or ``ee`` (empty: franka_control's default);
* ``header.stamp`` = the time of the observation the action was computed from (the recorder pairs them by it);
* optional extra entries ``meta/policy_version`` (the policy's head version, an integer) and
  ``meta/intervention`` (1.0 when a human produced the action).

The robot state travels as `sensor_msgs/JointState` too: ``name`` = `irevla.spec.REAL_ROBOT_PROPRIO`,
``position`` = the proprio vector.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from irevla.robot.safety import DELTA_NAMES, POSE_NAMES, Command
from irevla.rotations import Pose
from irevla.spec import REAL_ROBOT_PROPRIO, ContractError

# encoding -> (numpy dtype, channels)
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3), "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4), "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1), "8UC1": (np.dtype(np.uint8), 1), "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1), "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
META_POLICY_VERSION = "meta/policy_version"
META_INTERVENTION = "meta/intervention"
SYSTEM_IS_BIG_ENDIAN = sys.byteorder == "big"


class ConversionError(ContractError):
    """A message that cannot be converted; the message names the field and what was expected."""


# -------------------------------------------------------------------------------------------------------- time
def stamp_to_seconds(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def seconds_to_stamp(seconds: float, stamp: Any | None = None) -> Any:
    """Fill (or create) a builtin_interfaces/Time from float seconds."""
    if stamp is None:
        from builtin_interfaces.msg import Time

        stamp = Time()
    nanoseconds = int(round(float(seconds) * 1e9))
    stamp.sec, stamp.nanosec = nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000
    return stamp


# ------------------------------------------------------------------------------------------------------- images
def image_to_numpy(message: Any) -> np.ndarray:
    """sensor_msgs/Image -> HxW (1 channel) or HxWxC array in the message's own channel order and dtype."""
    encoding = message.encoding
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"Image.encoding: {encoding!r} is not supported; use one of {sorted(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    row_bytes = width * channels * dtype.itemsize
    data = message.data
    buffer = np.frombuffer(data if isinstance(data, (bytes, bytearray, memoryview)) else bytes(data), np.uint8)
    if height <= 0 or width <= 0:
        raise ConversionError(f"Image: empty image {width}x{height}")
    if step < row_bytes:
        raise ConversionError(f"Image.step: {step} bytes per row is less than width*channels*bytes = {row_bytes} "
                              f"({width}x{height} {encoding})")
    if buffer.size < step * (height - 1) + row_bytes:
        raise ConversionError(f"Image.data: {buffer.size} bytes, expected {step * height} "
                              f"(step {step} x height {height})")
    if buffer.size < step * height:  # tolerate a last row without its padding
        buffer = np.concatenate([buffer, np.zeros(step * height - buffer.size, np.uint8)])
    rows = buffer[:step * height].reshape(height, step)[:, :row_bytes]
    big_endian = bool(message.is_bigendian)
    array_dtype = dtype.newbyteorder(">" if big_endian else "<") if dtype.itemsize > 1 else dtype
    image = np.ascontiguousarray(rows).view(array_dtype).reshape(height, width, channels)
    if dtype.itemsize > 1:
        image = image.astype(dtype, copy=False)  # native byte order
    return image[..., 0] if channels == 1 else image


def image_to_rgb(message: Any) -> np.ndarray:
    """sensor_msgs/Image -> the contract's uint8 RGB HxWx3 (grey is replicated, alpha dropped, BGR swapped)."""
    image = image_to_numpy(message)
    encoding = message.encoding
    if image.dtype != np.uint8:
        raise ConversionError(f"Image.encoding: {encoding!r} is not an 8-bit colour or grey image")
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2))
    if encoding.startswith("bgr"):
        image = image[..., 2::-1]
    return np.ascontiguousarray(image[..., :3])


def numpy_to_image(array: np.ndarray, encoding: str, stamp: float = 0.0, frame_id: str = "",
                   message: Any | None = None) -> Any:
    """HxW / HxWxC array -> sensor_msgs/Image (packed rows, native byte order)."""
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"encoding {encoding!r} is not supported; use one of {sorted(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    array = np.asarray(array)
    shape_ok = (array.ndim == 2 and channels == 1) or (array.ndim == 3 and array.shape[2] == channels)
    if not shape_ok or array.dtype != dtype:
        raise ConversionError(f"image for {encoding}: expected {dtype} with {channels} channel(s), got "
                              f"{array.dtype} {tuple(array.shape)}")
    if message is None:
        from sensor_msgs.msg import Image

        message = Image()
    message.header.frame_id = frame_id
    seconds_to_stamp(stamp, message.header.stamp)
    message.height, message.width = int(array.shape[0]), int(array.shape[1])
    message.encoding = encoding
    message.is_bigendian = int(SYSTEM_IS_BIG_ENDIAN and dtype.itemsize > 1)
    message.step = int(array.shape[1] * channels * dtype.itemsize)
    message.data = np.ascontiguousarray(array).tobytes()
    return message


def camera_info_message(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                        distortion: Sequence[float] = (0.0,) * 5, distortion_model: str = "plumb_bob",
                        stamp: float = 0.0, frame_id: str = "") -> Any:
    """sensor_msgs/CameraInfo for an undistorted-rectified pinhole (ROS 2 field names are lower case)."""
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.header.frame_id = frame_id
    seconds_to_stamp(stamp, info.header.stamp)
    info.width, info.height = int(width), int(height)
    info.distortion_model = distortion_model
    info.d = [float(v) for v in distortion]
    info.k = [float(fx), 0.0, float(cx), 0.0, float(fy), float(cy), 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [float(fx), 0.0, float(cx), 0.0, 0.0, float(fy), float(cy), 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


# -------------------------------------------------------------------------------------------------------- poses
def pose_to_arrays(message: Any) -> tuple[np.ndarray, np.ndarray]:
    """geometry_msgs/Pose or PoseStamped -> (position[3], quaternion xyzw[4]) as float64, unvalidated."""
    pose = getattr(message, "pose", message)
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z], dtype=np.float64), np.array([q.x, q.y, q.z, q.w], dtype=np.float64)


def pose_from_message(message: Any) -> Pose:
    """geometry_msgs/Pose(Stamped) -> validated `Pose` (raises PoseError for NaN or a non-unit quaternion)."""
    return Pose(*pose_to_arrays(message))


def pose_to_message(pose: Pose, stamp: float = 0.0, frame_id: str = "", message: Any | None = None) -> Any:
    """`Pose` -> geometry_msgs/PoseStamped."""
    if message is None:
        from geometry_msgs.msg import PoseStamped

        message = PoseStamped()
    message.header.frame_id = frame_id
    seconds_to_stamp(stamp, message.header.stamp)
    position, orientation = pose.position, pose.orientation
    message.pose.position.x, message.pose.position.y, message.pose.position.z = (float(v) for v in position)
    (message.pose.orientation.x, message.pose.orientation.y, message.pose.orientation.z,
     message.pose.orientation.w) = (float(v) for v in orientation)
    return message


def pose_to_float64_array(pose: Pose, layout: str = "position_rotation_matrix") -> list[float]:
    """For controllers that take std_msgs/Float64MultiArray: ``[x y z R00 R01 R02 R10 .. R22]`` (multipanda's
    cartesian_impedance_controller) or ``[x y z qx qy qz qw]``."""
    if layout == "position_rotation_matrix":
        return [float(v) for v in pose.position] + [float(v) for v in pose.matrix()[:3, :3].reshape(-1)]
    if layout == "position_quaternion":
        return [float(v) for v in pose.position] + [float(v) for v in pose.orientation]
    raise ConversionError(f"Float64MultiArray layout {layout!r}: use position_rotation_matrix or "
                          f"position_quaternion")


def column_major_matrix_to_pose(values: Sequence[float], name: str = "O_T_EE") -> Pose:
    """libfranka's 16-value column-major transform (FrankaState.o_t_ee) -> `Pose`."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.shape != (16,):
        raise ConversionError(f"{name}: expected 16 values (column-major 4x4), got {array.size}")
    return Pose.from_matrix(array.reshape(4, 4).T)


# ------------------------------------------------------------------------------------------ actions and state
def action_to_joint_state(values: Sequence[float], names: Sequence[str], stamp: float = 0.0, frame: str = "",
                          policy_version: int | None = None, intervention: bool | None = None,
                          message: Any | None = None) -> Any:
    """Action values -> sensor_msgs/JointState (see the module docstring for the convention)."""
    values = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    if len(values) != len(names):
        raise ConversionError(f"action: {len(values)} values for {len(names)} names {list(names)}")
    if message is None:
        from sensor_msgs.msg import JointState

        message = JointState()
    message.header.frame_id = frame
    seconds_to_stamp(stamp, message.header.stamp)
    names, values = list(names), list(values)
    if policy_version is not None:
        names.append(META_POLICY_VERSION)
        values.append(float(policy_version))
    if intervention is not None:
        names.append(META_INTERVENTION)
        values.append(1.0 if intervention else 0.0)
    message.name, message.position = names, values
    message.velocity, message.effort = [], []
    return message


def command_from_joint_state(message: Any, default_frame: str = "base") -> Command:
    """sensor_msgs/JointState -> `Command` (values unvalidated: the safety filter rejects NaN/inf).

    Raises ConversionError when the names are neither the delta nor the absolute form."""
    names = list(message.name)
    positions = list(message.position)
    if len(names) != len(positions):
        raise ConversionError(f"action JointState: {len(names)} names but {len(positions)} positions")
    by_name = dict(zip(names, positions))
    meta = {name: by_name.pop(name) for name in (META_POLICY_VERSION, META_INTERVENTION) if name in by_name}
    if set(by_name) == set(DELTA_NAMES):
        kind, order = "delta", DELTA_NAMES
    elif set(by_name) == set(POSE_NAMES):
        kind, order = "pose", POSE_NAMES
    else:
        raise ConversionError(f"action JointState.name: expected {list(DELTA_NAMES)} or {list(POSE_NAMES)} (plus "
                              f"optional {META_POLICY_VERSION}, {META_INTERVENTION}), got {names}")
    frame = message.header.frame_id or default_frame
    if frame not in ("base", "ee"):
        raise ConversionError(f"action header.frame_id: expected 'base', 'ee' or empty, got {frame!r}")
    version = meta.get(META_POLICY_VERSION)
    return Command(kind=kind, values=np.array([by_name[n] for n in order], dtype=np.float64), frame=frame,
                   stamp=stamp_to_seconds(message.header.stamp),
                   policy_version=int(version) if version is not None and np.isfinite(version) else None,
                   intervention=bool(meta.get(META_INTERVENTION, 0.0) > 0.5))


def action_values_from_joint_state(message: Any, names: Sequence[str]) -> tuple[np.ndarray, dict[str, float]]:
    """(values in `names` order, meta entries) from an action JointState; missing names raise ConversionError."""
    by_name = dict(zip(message.name, message.position))
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConversionError(f"action JointState: missing entries {missing} (got {list(message.name)})")
    meta = {k: float(v) for k, v in by_name.items() if k.startswith("meta/")}
    return np.array([by_name[n] for n in names], dtype=np.float64), meta


def proprio_to_joint_state(proprio: Sequence[float], stamp: float = 0.0, frame: str = "",
                           names: Sequence[str] = REAL_ROBOT_PROPRIO, message: Any | None = None) -> Any:
    if message is None:
        from sensor_msgs.msg import JointState

        message = JointState()
    message.header.frame_id = frame
    seconds_to_stamp(stamp, message.header.stamp)
    message.name = list(names)
    message.position = [float(v) for v in proprio]
    message.velocity, message.effort = [], []
    return message


def proprio_from_joint_state(message: Any, names: Sequence[str] = REAL_ROBOT_PROPRIO) -> np.ndarray:
    """JointState -> float32 proprio in `names` order (finite, complete; else ConversionError)."""
    by_name: Mapping[str, float] = dict(zip(message.name, message.position))
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConversionError(f"robot state JointState: missing entries {missing} (got {list(message.name)})")
    values = np.array([by_name[n] for n in names], dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise ConversionError(f"robot state JointState: non-finite values {values.tolist()}")
    return values


def gripper_width_from_joint_state(message: Any) -> float:
    """Franka Hand joint states (two finger joints, each 0 ... 0.04 m) -> width (m)."""
    positions = [float(p) for name, p in zip(message.name, message.position) if "finger" in name]
    if not positions:
        positions = [float(p) for p in message.position[:2]]
    return float(sum(positions)) if len(positions) >= 2 else float(2 * positions[0]) if positions else float("nan")
