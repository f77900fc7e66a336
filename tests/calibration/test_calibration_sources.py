"""Pose/image sources without ROS: typed poses, ROS message conversions (on plain objects), transforms, I/O."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from irevla.atomic_io import atomic_write_text
from irevla.calibration.errors import CalibrationError
from irevla.calibration.sources import ManualPoseSource, parse_pose_text
from irevla.calibration.transforms import (
    from_translation_quaternion,
    invert,
    make_transform,
    to_translation_quaternion,
)
from irevla.robot.calibration_sources import (
    camera_info_to_intrinsics,
    image_message_to_rgb,
    pose_message_to_matrix,
)


def test_typed_pose_as_translation_and_quaternion():
    pose = parse_pose_text("[0.4, -0.1, 0.3]  0 1 0 0")
    assert np.allclose(pose[:3, 3], [0.4, -0.1, 0.3])
    assert np.allclose(pose[:3, :3], np.diag([-1.0, 1.0, -1.0]))


def test_typed_pose_as_libfranka_column_major_matrix():
    truth = make_transform(Rotation.from_euler("xyz", [180, 0, 30], degrees=True), [0.31, 0.02, 0.48])
    text = ", ".join(f"{v:.12f}" for v in truth.T.ravel())  # column-major, as O_T_EE prints
    assert np.allclose(parse_pose_text(text), truth)
    with pytest.raises(CalibrationError, match="last row of the 4x4 must be 0 0 0 1"):
        parse_pose_text(", ".join(f"{v:.12f}" for v in truth.ravel()))  # row-major by mistake


@pytest.mark.parametrize("text, message", [
    ("0.4 0.1", "got 2 numbers"),
    ("x y z", "is not a list of numbers"),
    ("0.4 0.1 0.3 0 0 0 2", "has norm 2.000"),
    ("0.4 0.1 0.3 0 0 nan 1", "NaN or inf"),
])
def test_typed_pose_errors(text, message):
    with pytest.raises(CalibrationError, match=message):
        parse_pose_text(text)


def test_manual_source_asks_again_after_a_typo():
    answers = iter(["0.4 0.1", "0.4 0.1 0.3 0 0 0 1"])
    said = []
    source = ManualPoseSource(read_line=lambda prompt: next(answers), say=said.append)
    assert np.allclose(source.current_pose().T_base_gripper[:3, 3], [0.4, 0.1, 0.3])
    assert len(said) == 1 and "got 2 numbers" in said[0]


def test_pose_message_to_matrix():
    message = SimpleNamespace(pose=SimpleNamespace(position=SimpleNamespace(x=0.3, y=0.0, z=0.5),
                                                   orientation=SimpleNamespace(x=1.0, y=0.0, z=0.0, w=0.0)))
    matrix = pose_message_to_matrix(message)
    assert np.allclose(matrix[:3, 3], [0.3, 0.0, 0.5]) and np.allclose(matrix[:3, :3], np.diag([1.0, -1.0, -1.0]))


def _image_message(pixels: np.ndarray, encoding: str, padding: int = 0):
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.concatenate([rows, np.zeros((height, padding), np.uint8)], axis=1)
    return SimpleNamespace(height=height, width=width, encoding=encoding, step=padded.shape[1], is_bigendian=0,
                           data=padded.tobytes())


def test_image_message_respects_row_padding_and_encoding():
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    assert np.array_equal(image_message_to_rgb(_image_message(rgb, "rgb8", padding=7)), rgb)
    assert np.array_equal(image_message_to_rgb(_image_message(rgb[..., ::-1].copy(), "bgr8", padding=1)), rgb)
    gray = rgb[..., 0].copy()
    assert np.array_equal(image_message_to_rgb(_image_message(gray, "mono8", padding=3))[..., 2], gray)
    with pytest.raises(CalibrationError, match="image for calibration: .*16UC1"):
        image_message_to_rgb(_image_message(gray, "16UC1"))


def test_camera_info_to_intrinsics():
    message = SimpleNamespace(width=640, height=480, distortion_model="plumb_bob", d=[0.1, -0.2, 0.0, 0.0, 0.0],
                              k=[615.0, 0.0, 321.0, 0.0, 614.0, 239.0, 0.0, 0.0, 1.0])
    intrinsics = camera_info_to_intrinsics(message)
    assert (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy) == (615.0, 614.0, 321.0, 239.0)
    assert intrinsics.distortion_coefficients == (0.1, -0.2, 0.0, 0.0, 0.0)


def test_transform_round_trips():
    pose = make_transform(Rotation.from_euler("xyz", [20, -170, 45], degrees=True), [0.1, 0.2, 0.3])
    translation, quaternion = to_translation_quaternion(pose)
    assert quaternion[3] >= 0
    assert np.allclose(from_translation_quaternion(translation, quaternion), pose)
    assert np.allclose(invert(pose) @ pose, np.eye(4))


def test_atomic_write_leaves_nothing_when_it_fails(tmp_path, monkeypatch):
    target = tmp_path / "result.yaml"
    atomic_write_text(target, "old: 1\n")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new: 2\n")
    assert target.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.yaml"]
