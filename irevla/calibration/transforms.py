"""Rigid transforms as 4x4 matrices, with the naming convention used across the calibration package.

``T_a_b`` is the pose of frame ``b`` expressed in frame ``a``: it maps a point given in ``b`` to ``a``
(``p_a = T_a_b @ p_b``), so chains read left to right: ``T_base_cam = T_base_gripper @ T_gripper_cam``.
Quaternions are ``(x, y, z, w)`` like ROS geometry_msgs and scipy; the rotation conversions are `irevla.rotations`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from irevla.calibration.errors import CalibrationError
from irevla.rotations import (
    QUATERNION_NORM_TOLERANCE,
    PoseError,
    matrix_angle,
    matrix_to_quaternion,
    normalize_quaternion,
)


def make_transform(rotation: np.ndarray | Rotation, translation: Sequence[float]) -> np.ndarray:
    """4x4 from a rotation (3x3 matrix or scipy Rotation) and a translation."""
    matrix = rotation.as_matrix() if isinstance(rotation, Rotation) else np.asarray(rotation, dtype=float)
    transform = np.eye(4)
    transform[:3, :3] = matrix
    transform[:3, 3] = np.asarray(translation, dtype=float).reshape(3)
    return transform


def from_translation_quaternion(translation: Sequence[float], quaternion_xyzw: Sequence[float],
                                name: str = "pose") -> np.ndarray:
    """4x4 from a translation and an (x, y, z, w) quaternion; rejects non-finite or zero-norm input, naming `name`."""
    translation = np.asarray(translation, dtype=float).reshape(-1)
    quaternion = np.asarray(quaternion_xyzw, dtype=float).reshape(-1)
    if translation.shape != (3,) or quaternion.shape != (4,):
        raise CalibrationError(f"{name}: expected 3 translation values and 4 quaternion values (x y z w), "
                               f"got {translation.shape[0]} and {quaternion.shape[0]}")
    if not (np.all(np.isfinite(translation)) and np.all(np.isfinite(quaternion))):
        raise CalibrationError(f"{name}: translation/quaternion contain NaN or inf")
    try:
        # A quaternion far from unit length is a typo or a wrong field order, not rounding; refuse to guess.
        quaternion = normalize_quaternion(quaternion, name, QUATERNION_NORM_TOLERANCE)
    except PoseError as exc:
        raise CalibrationError(str(exc)) from None
    return make_transform(Rotation.from_quat(quaternion), translation)


def to_translation_quaternion(transform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(translation[3], quaternion_xyzw[4]) with w >= 0, so that equal rotations always print the same."""
    return transform[:3, 3].copy(), matrix_to_quaternion(transform[:3, :3])


def invert(transform: np.ndarray) -> np.ndarray:
    rotation = transform[:3, :3]
    inverse = np.eye(4)
    inverse[:3, :3] = rotation.T
    inverse[:3, 3] = -rotation.T @ transform[:3, 3]
    return inverse


def rotation_angle_deg(rotation_a: np.ndarray, rotation_b: np.ndarray) -> float:
    """Angle (deg) of the rotation taking `rotation_a` to `rotation_b` (both 3x3)."""
    return float(np.degrees(matrix_angle(rotation_a, rotation_b)))


def mean_transform(transforms: Iterable[np.ndarray]) -> np.ndarray:
    """Average pose: chordal L2 mean of the rotations, arithmetic mean of the translations."""
    stack = np.asarray(list(transforms), dtype=float)
    rotation = Rotation.from_matrix(stack[:, :3, :3]).mean()
    return make_transform(rotation, stack[:, :3, 3].mean(axis=0))


def from_rvec_tvec(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """4x4 from OpenCV's Rodrigues vector + translation (solvePnP output)."""
    return make_transform(Rotation.from_rotvec(np.asarray(rvec, dtype=float).reshape(3)), np.asarray(tvec).reshape(3))


def poses_close(T_a: np.ndarray, T_b: np.ndarray, translation_m: float, rotation_deg: float) -> bool:
    """True when two poses differ by at most `translation_m` and `rotation_deg`."""
    return (float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3])) <= translation_m
            and rotation_angle_deg(T_a[:3, :3], T_b[:3, :3]) <= rotation_deg)
