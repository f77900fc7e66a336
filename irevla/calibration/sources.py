"""Where collection gets robot poses and camera images from: small interfaces plus the typed-in pose source.

Implementations: `ManualPoseSource` (below: the user types the pose shown in Desk or printed by libfranka),
`irevla.robot.calibration_sources.Ros2PoseSource` / `Ros2ImageSource` (topics),
`realsense.RealSenseImageSource` (pyrealsense2 directly), `synthetic.SimulatedRig` (a rehearsal without hardware).
All poses are ``T_base_gripper`` 4x4 in metres.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from irevla.calibration.camera_model import CameraIntrinsics
from irevla.calibration.errors import CalibrationError
from irevla.calibration.transforms import from_translation_quaternion


@dataclass(frozen=True)
class StampedPose:
    T_base_gripper: np.ndarray
    stamp: float


@dataclass(frozen=True)
class CapturedImage:
    image: np.ndarray  # RGB uint8 HxWx3
    stamp: float


class PoseSource(Protocol):
    """`live` (optional attribute, default True): readings come from the robot, so two reads can be compared."""

    def current_pose(self) -> StampedPose:
        """A pose measured after this call started (never a stale cached one)."""

    def close(self) -> None: ...


class ImageSource(Protocol):
    serial: str

    def capture(self) -> CapturedImage:
        """An image exposed after this call started."""

    def intrinsics(self) -> CameraIntrinsics | None:
        """The stream's intrinsics when the source knows them (RealSense factory values, CameraInfo), else None."""

    def close(self) -> None: ...


POSE_FORMAT_HELP = ("7 numbers 'x y z qx qy qz qw' (metres, quaternion x y z w) or the 16 numbers of a column-major "
                    "4x4 matrix as libfranka prints O_T_EE")


def parse_pose_text(text: str, name: str = "typed pose") -> np.ndarray:
    """``T_base_gripper`` from typed text; commas, brackets and extra spaces are ignored."""
    tokens = [t for t in re.split(r"[\s,;\[\]()]+", text.strip()) if t]
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise CalibrationError(
            f"{name}: {text.strip()!r} is not a list of numbers; expected {POSE_FORMAT_HELP}") from None
    if len(values) == 7:
        return from_translation_quaternion(values[:3], values[3:], name=name)
    if len(values) == 16:
        matrix = np.asarray(values, dtype=float).reshape(4, 4).T  # libfranka stores column-major
        if not np.allclose(matrix[3], [0, 0, 0, 1], atol=1e-6):
            raise CalibrationError(f"{name}: the last row of the 4x4 must be 0 0 0 1 (column-major order expected)")
        rotation = matrix[:3, :3]
        if np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3 or np.linalg.det(rotation) < 0:
            raise CalibrationError(f"{name}: the 3x3 block is not a rotation matrix (row-major pasted by mistake?)")
        return matrix
    raise CalibrationError(f"{name}: got {len(values)} numbers; expected {POSE_FORMAT_HELP}")


class ManualPoseSource:
    """Asks the user to type the current end-effector pose (for robots without ROS 2 on this PC)."""

    live = False  # each reading is typed by hand: read it once per capture

    def __init__(self, read_line: Callable[[str], str] | None = None, say: Callable[[str], None] | None = None):
        # Looked up at call time, not bound at definition, so a replaced builtins.input (tests, front ends) is used.
        self._read_line = read_line or (lambda prompt: input(prompt))
        self._say = say or print

    def current_pose(self) -> StampedPose:
        while True:
            text = self._read_line(f"Type the end-effector pose in the base frame ({POSE_FORMAT_HELP}): ")
            try:
                return StampedPose(parse_pose_text(text), time.time())
            except CalibrationError as exc:
                self._say(f"  {exc}; try again")

    def close(self) -> None:
        pass
