"""Poses and rotations for the robot stack, in plain numpy (no scipy, no ROS).

Conventions, the same as ROS geometry_msgs: quaternions are ``(x, y, z, w)``; positions in metres in the robot's
base frame; rotation vectors (axis-angle) are ``axis * angle`` in radians with the angle in ``[0, pi]``.
Every function accepts array-likes and returns float64 arrays; none of them accept NaN/inf silently: callers that
take untrusted input (the safety filter) check finiteness first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IDENTITY_QUATERNION = np.array([0.0, 0.0, 0.0, 1.0])
# A quaternion this far from unit length is not rounding error but a wrong field order or garbage.
QUATERNION_NORM_TOLERANCE = 0.1


class PoseError(ValueError):
    """A pose or rotation that cannot be used (non-finite, zero-length or badly scaled quaternion)."""


def normalize_quaternion(quaternion, name: str = "quaternion", tolerance: float | None = None) -> np.ndarray:
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
        raise PoseError(f"{name}: zero-length quaternion")
    if tolerance is not None and (largest > 1e100 or abs(norm - 1.0) > tolerance):
        raise PoseError(f"{name}: quaternion {q.tolist()} has norm {norm:.3f}, expected 1 (order is x y z w)")
    q = q / norm
    return -q if q[3] < 0 else q


def quaternion_multiply(a, b) -> np.ndarray:
    """Hamilton product a * b (apply b, then a), both (x, y, z, w)."""
    ax, ay, az, aw = np.asarray(a, dtype=np.float64)
    bx, by, bz, bw = np.asarray(b, dtype=np.float64)
    return np.array([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz])


def quaternion_conjugate(q) -> np.ndarray:
    x, y, z, w = np.asarray(q, dtype=np.float64)
    return np.array([-x, -y, -z, w])


def rotvec_to_quaternion(rotvec) -> np.ndarray:
    v = np.asarray(rotvec, dtype=np.float64).reshape(3)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.array([0.5 * v[0], 0.5 * v[1], 0.5 * v[2], 1.0]) / np.sqrt(1.0 + 0.25 * angle * angle)
    axis = v / angle
    return np.concatenate([axis * np.sin(0.5 * angle), [np.cos(0.5 * angle)]])


def quaternion_to_rotvec(q) -> np.ndarray:
    """Axis-angle with the angle in [0, pi] (the shorter of q and -q)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    sin_half = float(np.linalg.norm(q[:3]))
    if sin_half < 1e-12:
        return 2.0 * q[:3]
    angle = 2.0 * np.arctan2(sin_half, q[3])
    return q[:3] / sin_half * angle


def quaternion_angle(a, b) -> float:
    """Angle (rad, in [0, pi]) of the rotation taking `a` to `b`."""
    dot = abs(float(np.dot(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))))
    return 2.0 * float(np.arccos(min(1.0, dot)))


def rotate_towards(start, goal, max_angle: float) -> np.ndarray:
    """`goal` if it is within `max_angle` of `start`, else the rotation `max_angle` from `start` towards `goal`
    along the shortest path (slerp). Both unit quaternions."""
    start = np.asarray(start, dtype=np.float64)
    goal = np.asarray(goal, dtype=np.float64)
    angle = quaternion_angle(start, goal)
    if angle <= max_angle:
        return normalize_quaternion(goal)
    relative = quaternion_multiply(goal, quaternion_conjugate(start))  # start -> goal, in the base frame
    rotvec = quaternion_to_rotvec(relative)
    step = rotvec * (max_angle / max(float(np.linalg.norm(rotvec)), 1e-12))
    return normalize_quaternion(quaternion_multiply(rotvec_to_quaternion(step), start))


def quaternion_to_matrix(q) -> np.ndarray:
    x, y, z, w = normalize_quaternion(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quaternion(matrix) -> np.ndarray:
    """(x, y, z, w) of a 3x3 rotation matrix (Shepperd's method: stable for every rotation)."""
    m = np.asarray(matrix, dtype=np.float64).reshape(3, 3)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    return normalize_quaternion(q)


def wxyz_to_xyzw(q) -> np.ndarray:
    """MuJoCo's (w, x, y, z) order to ROS's (x, y, z, w)."""
    q = np.asarray(q, dtype=np.float64)
    return np.array([q[1], q[2], q[3], q[0]])


def xyzw_to_wxyz(q) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return np.array([q[3], q[0], q[1], q[2]])


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

    def matrix(self) -> np.ndarray:
        transform = np.eye(4)
        transform[:3, :3] = quaternion_to_matrix(self.orientation)
        transform[:3, 3] = self.position
        return transform

    @classmethod
    def from_matrix(cls, transform) -> Pose:
        transform = np.asarray(transform, dtype=np.float64)
        return cls(transform[:3, 3], matrix_to_quaternion(transform[:3, :3]))

    def distance_to(self, other: Pose) -> tuple[float, float]:
        """(translation m, rotation rad) between two poses."""
        return (float(np.linalg.norm(self.position - other.position)),
                quaternion_angle(self.orientation, other.orientation))


def proprio_from_pose(pose: Pose, gripper_width: float) -> np.ndarray:
    """`irevla.spec.REAL_ROBOT_PROPRIO` order: EE position, EE rotation (axis-angle), gripper width."""
    return np.concatenate([pose.position, pose.rotvec, [gripper_width]]).astype(np.float32)
