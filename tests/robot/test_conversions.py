"""Message conversions: Image <-> numpy (row padding, encodings, byte order), poses, action/state JointStates."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message packages not installed (the 'robot' extra)")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402

from irevla.robot.conversions import (  # noqa: E402
    ConversionError,
    action_to_joint_state,
    camera_info_message,
    column_major_matrix_to_pose,
    command_from_joint_state,
    gripper_width_from_joint_state,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
    pose_from_message,
    pose_to_float64_array,
    pose_to_message,
    proprio_from_joint_state,
    proprio_to_joint_state,
    stamp_to_seconds,
)
from irevla.rotations import Pose, PoseError, quaternion_to_matrix, rotvec_to_quaternion  # noqa: E402
from irevla.spec import REAL_ROBOT_PROPRIO  # noqa: E402

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("encoding, shape, dtype", [
    ("rgb8", (7, 5, 3), np.uint8), ("bgr8", (4, 9, 3), np.uint8), ("rgba8", (3, 4, 4), np.uint8),
    ("mono8", (6, 3), np.uint8), ("mono16", (5, 7), np.uint16), ("16UC1", (2, 3), np.uint16),
    ("32FC1", (4, 4), np.float32)])
def test_image_round_trip(encoding, shape, dtype):
    array = (RNG.random(shape) * 60000).astype(dtype)
    message = numpy_to_image(array, encoding, stamp=12.5, frame_id="cam")
    assert message.step == shape[1] * (shape[2] if len(shape) == 3 else 1) * np.dtype(dtype).itemsize
    assert stamp_to_seconds(message.header.stamp) == 12.5 and message.header.frame_id == "cam"
    back = image_to_numpy(message)
    assert back.dtype == dtype and np.array_equal(back, array)


def _padded(array: np.ndarray, encoding: str, padding: int, big_endian: bool = False) -> Image:
    height, width = array.shape[:2]
    raw = array.astype(array.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
    row = len(raw) // height
    rows = np.frombuffer(raw, np.uint8).reshape(height, row)
    padded = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    return Image(height=height, width=width, encoding=encoding, step=row + padding, is_bigendian=int(big_endian),
                 data=padded.tobytes())


def test_row_padding_is_skipped():
    picture = RNG.integers(0, 255, (6, 5, 3), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(_padded(picture, "rgb8", padding=9)), picture)


def test_bgr_and_mono_become_rgb():
    picture = RNG.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(_padded(picture[..., ::-1].copy(), "bgr8", 4)), picture)
    grey = RNG.integers(0, 255, (3, 5), dtype=np.uint8)
    rgb = image_to_rgb(_padded(grey, "mono8", 3))
    assert rgb.shape == (3, 5, 3) and np.array_equal(rgb[..., 1], grey)


def test_big_endian_depth_is_read_correctly():
    depth = RNG.integers(0, 65535, (5, 6), dtype=np.uint16)
    for big in (True, False):
        assert np.array_equal(image_to_numpy(_padded(depth, "16UC1", 2, big_endian=big)), depth)


def test_bad_images_name_the_field():
    with pytest.raises(ConversionError, match="encoding"):
        image_to_numpy(Image(height=1, width=1, encoding="yuv422", step=2, data=b"\0\0"))
    with pytest.raises(ConversionError, match="step"):
        image_to_numpy(Image(height=2, width=4, encoding="rgb8", step=6, data=bytes(24)))
    with pytest.raises(ConversionError, match="data"):
        image_to_numpy(Image(height=2, width=4, encoding="rgb8", step=12, data=bytes(10)))
    with pytest.raises(ConversionError, match="8-bit"):
        image_to_rgb(numpy_to_image(np.zeros((2, 2), np.uint16), "16UC1"))


def test_pose_round_trip_and_float_array_layouts():
    pose = Pose([0.4, -0.1, 0.3], rotvec_to_quaternion([0.3, -2.0, 0.5]))
    message = pose_to_message(pose, stamp=3.25, frame_id="fr3_link0")
    assert isinstance(message, PoseStamped) and message.header.frame_id == "fr3_link0"
    back = pose_from_message(message)
    assert np.allclose(back.position, pose.position) and np.allclose(back.orientation, pose.orientation)
    values = pose_to_float64_array(pose)
    assert np.allclose(np.reshape(values[3:], (3, 3)), quaternion_to_matrix(pose.orientation))
    assert np.allclose(pose_to_float64_array(pose, "position_quaternion")[3:], pose.orientation)
    column_major = pose.matrix().T.reshape(-1)
    assert np.allclose(column_major_matrix_to_pose(column_major).position, pose.position)


def test_nan_pose_message_is_refused():
    message = pose_to_message(Pose([0.4, 0, 0.3], [0, 0, 0, 1]))
    message.pose.position.y = float("nan")
    with pytest.raises(PoseError, match="position"):
        pose_from_message(message)


def test_action_joint_state_round_trip_with_meta_entries():
    names = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")
    values = [0.01, -0.02, 0.0, 0.05, 0.0, -0.1, 1.0]
    message = action_to_joint_state(values, names, stamp=100.5, frame="ee", policy_version=7, intervention=True)
    assert isinstance(message, JointState)
    command = command_from_joint_state(message)
    assert command.kind == "delta" and command.frame == "ee" and command.stamp == 100.5
    assert np.allclose(command.values, values) and command.policy_version == 7 and command.intervention
    pose_names = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper")
    reordered = action_to_joint_state([1.0, 0.5, 0.0, 0.0, 0.0, 1.0, 0.0, 0.2][::-1], pose_names[::-1])
    command = command_from_joint_state(reordered)
    assert command.kind == "pose" and command.frame == "base" and np.allclose(command.values, [1.0, 0.5, 0.0, 0.0, 0.0, 1.0, 0.0, 0.2])


def test_unknown_action_names_and_frames_are_refused():
    with pytest.raises(ConversionError, match="expected"):
        command_from_joint_state(action_to_joint_state([1.0, 2.0], ["vx", "vy"]))
    bad_frame = action_to_joint_state([0.0] * 7, ("dx", "dy", "dz", "drx", "dry", "drz", "gripper"),
                                      frame="camera")
    with pytest.raises(ConversionError, match="frame_id"):
        command_from_joint_state(bad_frame)


def test_proprio_and_gripper_joint_states():
    proprio = np.arange(7, dtype=np.float32) / 10
    message = proprio_to_joint_state(proprio, stamp=1.0)
    assert list(message.name) == list(REAL_ROBOT_PROPRIO)
    assert np.array_equal(proprio_from_joint_state(message), proprio)
    message.position[2] = float("inf")
    with pytest.raises(ConversionError, match="non-finite"):
        proprio_from_joint_state(message)
    fingers = JointState(name=["fr3_finger_joint1", "fr3_finger_joint2"], position=[0.02, 0.021])
    assert gripper_width_from_joint_state(fingers) == pytest.approx(0.041)


def test_camera_info_fields_are_lower_case_ros2():
    info = camera_info_message(64, 48, 60.0, 61.0, 32.0, 24.0, stamp=2.0, frame_id="wrist_color_optical_frame")
    assert list(info.k) == [60.0, 0.0, 32.0, 0.0, 61.0, 24.0, 0.0, 0.0, 1.0] and len(info.p) == 12
