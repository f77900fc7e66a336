"""Rotations and poses, one module for the whole stack, built on `scipy.spatial.transform.Rotation`.

Conventions (the same as ROS geometry_msgs and scipy; the contract in `irevla.spec` relies on them):

* Quaternions are ``(x, y, z, w)``, scalar last. MuJoCo stores ``(w, x, y, z)``: convert at the MuJoCo boundary with
  `wxyz_to_xyzw` / `xyzw_to_wxyz`. Quaternions we return are unit length with ``w >= 0``, so equal rotations print
  the same.
* Rotation vectors (axis-angle) are ``axis * angle`` in radians with the angle in ``[0, pi]``. Actions carry their
  rotation part this way (drx dry drz, `irevla.spec.ActionSpec.ee_delta`).
* Rotation matrices are 3x3, acting on column vectors (``v_base = R @ v_ee``).
* Proprio EE rotation is *relative to the home orientation* (`ee_rotation_feature`): the axis-angle of
  ``R @ R_home^T``, so a gripper pointing down (pi from the base frame, where axis-angle flips sign) reads ~0.
* Positions are metres in the robot's base frame.

Every function accepts array-likes and returns float64 arrays. `normalize_quaternion` and `Pose` reject NaN/inf and
badly scaled quaternions with `PoseError`; the plain conversions assume finite input (callers that take untrusted
input, like the safety filter, check finiteness first).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from irevla.errors import UserError

# scipy >= 1.15 can skip re-orthogonalising a matrix (an SVD, 5x the cost of the rest): the sim controller converts
# one per physics step, and MuJoCo's and our matrices are rotations to rounding already.
_FROM_VALID_MATRIX = {"assume_valid": True} if "assume_valid" in inspect.signature(Rotation.from_matrix).parameters \
    else {}

IDENTITY_QUATERNION = np.array([0.0, 0.0, 0.0, 1.0])
# A quaternion this far from unit length is not rounding error but a wrong field order or garbage.
QUATERNION_NORM_TOLERANCE = 0.1


class PoseError(UserError, ValueError):
    """A pose or rotation that cannot be used (non-finite, zero-length or badly scaled quaternion)."""


# ------------------------------------------------------------------------------------------------- quaternions
def normalize_quaternion(quaternion: Any, name: str = "quaternion", tolerance: float | None = None) -> np.ndarray:
    """Unit quaternion (x, y, z, w) with w >= 0. Raises PoseError for non-finite, zero or (with `tolerance`)
    clearly non-unit input, naming `name`."""
    q = np.asarray(quaternion, dtype=np.float64).reshape(-1)
    if q.shape != (4,):
        raise PoseError(f"{name}: expected 4 values (x y z w), got {q.shape[0]}")
    if not np.all(np.isfinite(q)):
        raise PoseError(f"{name}: non-finite values {q.tolist()}")
    largest = float(np.max(np.abs(q)))
    if largest > 1e100:  # the norm of huge components would overflow; only the direction matters
        q = q / largest
    norm = float(np.linalg.norm(q))
    if norm < 1e-9:
        raise PoseError(f"{name}: quaternion {q.tolist()} has norm 0.000 (zero length), expected 1 (order is x y z w)")
    if tolerance is not None and (largest > 1e100 or abs(norm - 1.0) > tolerance):
        raise PoseError(f"{name}: quaternion {q.tolist()} has norm {norm:.3f}, expected 1 (order is x y z w)")
    return _canonical(q / norm)


def _canonical(q: np.ndarray) -> np.ndarray:
    return -q if q[3] < 0 else q


def _from_matrix(matrix: Any) -> Rotation:
    return Rotation.from_matrix(np.asarray(matrix, dtype=np.float64).reshape(3, 3), **_FROM_VALID_MATRIX)


def _rotation(q: Any) -> Rotation:
    return Rotation.from_quat(np.asarray(q, dtype=np.float64).reshape(4))


def quaternion_multiply(a: Any, b: Any) -> np.ndarray:
    """Product a * b (apply b, then a), both (x, y, z, w); unit, w >= 0."""
    return _canonical((_rotation(a) * _rotation(b)).as_quat())


def quaternion_conjugate(q: Any) -> np.ndarray:
    """The inverse rotation of a unit quaternion (x, y, z, w)."""
    x, y, z, w = np.asarray(q, dtype=np.float64).reshape(4)
    return np.array([-x, -y, -z, w])


def rotvec_to_quaternion(rotvec: Any) -> np.ndarray:
    return _canonical(Rotation.from_rotvec(np.asarray(rotvec, dtype=np.float64).reshape(3)).as_quat())


def quaternion_to_rotvec(q: Any) -> np.ndarray:
    """Axis-angle with the angle in [0, pi] (the shorter of q and -q)."""
    return _rotation(q).as_rotvec()


def quaternion_to_matrix(q: Any) -> np.ndarray:
    return Rotation.from_quat(normalize_quaternion(q)).as_matrix()


def matrix_to_quaternion(matrix: Any) -> np.ndarray:
    """(x, y, z, w), w >= 0, of a 3x3 rotation matrix."""
    return _canonical(_from_matrix(matrix).as_quat())


def wxyz_to_xyzw(q: Any) -> np.ndarray:
    """MuJoCo's (w, x, y, z) order to ours (x, y, z, w)."""
    q = np.asarray(q, dtype=np.float64).reshape(4)
    return np.array([q[1], q[2], q[3], q[0]])


def xyzw_to_wxyz(q: Any) -> np.ndarray:
    """Ours (x, y, z, w) to MuJoCo's (w, x, y, z)."""
    q = np.asarray(q, dtype=np.float64).reshape(4)
    return np.array([q[3], q[0], q[1], q[2]])


# ---------------------------------------------------------------------------------------------------- matrices
def matrix_to_rotvec(matrix: Any) -> np.ndarray:
    """Axis-angle vector (angle in [0, pi]) of a 3x3 rotation matrix; accurate near 0 and near pi."""
    return _from_matrix(matrix).as_rotvec()


def rotvec_to_matrix(rotvec: Any) -> np.ndarray:
    return Rotation.from_rotvec(np.asarray(rotvec, dtype=np.float64).reshape(3)).as_matrix()


# ------------------------------------------------------------------------------------------------------ angles
def quaternion_angle(a: Any, b: Any) -> float:
    """Angle (rad, in [0, pi]) of the rotation taking `a` to `b` (unit quaternions)."""
    return float((_rotation(b) * _rotation(a).inv()).magnitude())


def matrix_angle(a: Any, b: Any) -> float:
    """Angle (rad, in [0, pi]) of the rotation taking 3x3 rotation `a` to `b`."""
    a = np.asarray(a, dtype=np.float64).reshape(3, 3)
    return float(_from_matrix(a.T @ np.asarray(b, dtype=np.float64).reshape(3, 3)).magnitude())


def rotate_towards(start: Any, goal: Any, max_angle: float) -> np.ndarray:
    """`goal` if it is within `max_angle` of `start`, else the rotation `max_angle` from `start` towards `goal`
    along the shortest path (slerp). Both unit quaternions (x, y, z, w); returns one with w >= 0."""
    start_rotation, goal_rotation = _rotation(start), _rotation(goal)
    relative = (goal_rotation * start_rotation.inv()).as_rotvec()  # start -> goal, in the base frame
    angle = float(np.linalg.norm(relative))
    if angle <= max_angle:
        return normalize_quaternion(goal)
    step = Rotation.from_rotvec(relative * (max_angle / angle))
    return _canonical((step * start_rotation).as_quat())


def swing_twist_z(q: Any) -> tuple[np.ndarray, float]:
    """Split a unit quaternion (x, y, z, w) as ``swing * twist``: `twist` a rotation about the body z axis by `yaw`
    (returned as the angle, in (-pi, pi]), `swing` a rotation about an axis perpendicular to z whose angle is the
    angle between the rotated and the original z axis (the tilt). At a tilt of pi (z flipped) the twist is undefined
    and taken as 0."""
    x, y, z, w = normalize_quaternion(q)
    norm = float(np.hypot(z, w))
    if norm < 1e-9:
        return _canonical(np.array([x, y, z, w])), 0.0
    twist = np.array([0.0, 0.0, z / norm, w / norm])
    yaw = float(np.arctan2(twist[2], twist[3]) * 2.0)
    yaw = float((yaw + np.pi) % (2 * np.pi) - np.pi)
    if yaw == -np.pi:
        yaw = np.pi
    swing = quaternion_multiply([x, y, z, w], quaternion_conjugate(twist))
    return swing, yaw


# --------------------------------------------------------------------------------------------- proprio feature
def ee_rotation_feature(matrix: Any, reference: Any) -> np.ndarray:
    """The proprio EE-rotation entries (float32[3]): axis-angle of ``matrix @ reference^T``, the rotation that takes
    the home orientation `reference` to the current one, expressed in the base frame (so a base-frame ``drz`` action
    shows up on rz). Both 3x3; see the module docstring for why relative to home."""
    reference = np.asarray(reference, dtype=np.float64).reshape(3, 3)
    return matrix_to_rotvec(np.asarray(matrix, dtype=np.float64).reshape(3, 3) @ reference.T).astype(np.float32)


# ------------------------------------------------------------------------------------------------------- poses
@dataclass(frozen=True)
class Pose:
    """An end-effector pose in the base frame: position (m) and unit quaternion (x, y, z, w)."""

    position: np.ndarray
    orientation: np.ndarray

    def __post_init__(self) -> None:
        position = np.asarray(self.position, dtype=np.float64).reshape(-1)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise PoseError(f"Pose.position: expected 3 finite values, got {position.tolist()}")
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "orientation", normalize_quaternion(self.orientation, "Pose.orientation",
                                                                     QUATERNION_NORM_TOLERANCE))

    @property
    def rotvec(self) -> np.ndarray:
        return quaternion_to_rotvec(self.orientation)

    def rotation_matrix(self) -> np.ndarray:
        return quaternion_to_matrix(self.orientation)

    def matrix(self) -> np.ndarray:
        """The 4x4 homogeneous transform base <- EE."""
        transform = np.eye(4)
        transform[:3, :3] = self.rotation_matrix()
        transform[:3, 3] = self.position
        return transform

    @classmethod
    def from_matrix(cls, transform: Any) -> Pose:
        transform = np.asarray(transform, dtype=np.float64)
        return cls(transform[:3, 3], matrix_to_quaternion(transform[:3, :3]))

    def distance_to(self, other: Pose) -> tuple[float, float]:
        """(translation m, rotation rad) between two poses."""
        return (float(np.linalg.norm(self.position - other.position)),
                quaternion_angle(self.orientation, other.orientation))


def proprio_from_pose(pose: Pose, gripper_width: float) -> np.ndarray:
    """`irevla.spec.REAL_ROBOT_PROPRIO` order: EE position, EE rotation (axis-angle, base frame), gripper width.

    The rotation here is the pose's own axis-angle, not yet the home-relative `ee_rotation_feature`."""
    return np.concatenate([pose.position, pose.rotvec, [gripper_width]]).astype(np.float32)


__all__ = ["IDENTITY_QUATERNION", "QUATERNION_NORM_TOLERANCE", "Pose", "PoseError", "ee_rotation_feature",
           "matrix_angle", "matrix_to_quaternion", "matrix_to_rotvec", "normalize_quaternion", "proprio_from_pose",
           "quaternion_angle", "quaternion_conjugate", "quaternion_multiply", "quaternion_to_matrix",
           "quaternion_to_rotvec", "rotate_towards", "rotvec_to_matrix", "rotvec_to_quaternion", "wxyz_to_xyzw",
           "xyzw_to_wxyz"]


def _settle_scipy_array_dispatch() -> None:
    """scipy's array-API dispatch asks, once per argument type and then cached, whether an argument is a torch tensor
    by looking torch up in `sys.modules`. In a robot process the policy imports torch on a worker thread; a rotation
    converted on another thread in that window met a half-imported torch ("partially initialized module 'torch' has
    no attribute 'Tensor'", franka_control's state callback died). Converting once here, at import, settles the cached
    answer for the numpy arrays every function above passes to scipy."""
    rotation = Rotation.from_quat(IDENTITY_QUATERNION.copy())
    (rotation * rotation.inv()).magnitude()
    rotation.as_rotvec(), rotation.as_matrix()
    _from_matrix(np.eye(3)).as_quat()
    Rotation.from_rotvec(np.zeros(3)).as_quat()


_settle_scipy_array_dispatch()
