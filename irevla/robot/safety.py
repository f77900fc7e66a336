"""The safety filter: every command passes through it before any controller sees a target.

Layers, in order (DESIGN.md "Safety is layered and client-side"):

1. **Rejection** -- a command with any NaN/inf, the wrong number of values or a zero quaternion is rejected as a
   whole: the previous target stays, nothing of it is forwarded.
2. **Action scaling** -- delta commands are clipped per component to ``delta_max_translation`` /
   ``delta_max_rotation`` (the ActionSpec bounds); the gripper command is clipped to [0, 1].
3. **Desired pose** -- the delta is applied to the *previous target* (drift-free integration; the reference clip
   below prevents wind-up), in the base frame or the end-effector frame; absolute poses are taken as they are.
4. **Workspace box** -- positions are clipped into the axis-aligned box (from `irevla calibrate workspace`);
   **orientation limits** -- the tool z axis is kept within ``max_tilt`` of the nominal tool orientation's (a cone)
   and the rotation about it within ``[yaw_min, yaw_max]`` of the nominal's (swing-twist decomposition relative to
   the nominal; SERL's box bounds orientation too).
5. **Reference clipping** -- the target may lead the measured pose by at most ``max_target_error`` /
   ``max_target_rotation_error`` (SERL): pushing against a table cannot wind the target up.
6. **Per-step and velocity limits** -- the target moves at most ``min(max_translation_per_step,
   max_linear_velocity * dt)`` from the previous target (and the rotational counterpart), along the straight line
   / the shortest rotation towards the result of 4-5.

Invariants (tested with hypothesis on >= 10,000 random, NaN, inf and huge commands): when the previous target is
inside the box and the orientation limits, the new target is inside them; it is never farther from the previous target
than the step limits allow; it is always finite with a unit quaternion; a rejected command leaves the target
unchanged. Because the box is convex and the step limit moves along a segment, limit 6 cannot push a target out of the
box. The orientation set is not convex along every slerp, so a rotation step that would leave it is clipped back into
it, and if that clipped orientation is farther than the step limit from the previous target, the orientation stays.

A previous target outside the box (the arm was outside it when control started) is moved *towards* the box by at
most the step limits; the hold target of the watchdog (`hold_target`) is the measured pose clipped into the box and
the orientation limits.
Every clip and rejection is reported in `FilterResult.events`, which the node logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from irevla.robot.config import SafetyConfig
from irevla.rotations import (
    Pose,
    PoseError,
    normalize_quaternion,
    quaternion_angle,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_to_matrix,
    quaternion_to_rotvec,
    rotate_towards,
    rotvec_to_quaternion,
    swing_twist_z,
)

CommandKind = Literal["delta", "pose"]
DELTA_NAMES = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")
POSE_NAMES = ("x", "y", "z", "qx", "qy", "qz", "qw", "gripper")
# Tolerance for the invariant checks callers may run (floating-point slack of the clipping arithmetic).
EPSILON = 1e-9
# With the tool axis flipped (tilt pi, allowed only by max_tilt = pi) the rotation about it is undefined: no yaw limit.
YAW_UNDEFINED_TILT = np.pi - 1e-6


@dataclass(frozen=True)
class PoseTarget:
    """What a backend is told: an end-effector pose and a gripper command (0 open ... 1 closed)."""

    pose: Pose
    gripper: float


@dataclass(frozen=True)
class Command:
    """One action command as received: `values` may be anything (the filter validates), `stamp` is the sender's
    time (s) or 0 when unknown."""

    kind: CommandKind
    values: np.ndarray
    frame: Literal["base", "ee"] = "base"
    stamp: float = 0.0
    policy_version: int | None = None
    intervention: bool = False


@dataclass(frozen=True)
class FilterResult:
    target: PoseTarget
    accepted: bool
    events: tuple[str, ...] = field(default_factory=tuple)


def _clip_norm(vector: np.ndarray, limit: float) -> tuple[np.ndarray, float]:
    norm = float(np.linalg.norm(vector))
    if norm <= limit:
        return vector, norm
    return vector * (limit / norm), norm


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


class OrientationLimits:
    """A cone of half-angle `max_tilt` for the tool z axis around the nominal orientation's, and a range
    [yaw_min, yaw_max] for the rotation about the tool axis relative to the nominal (swing-twist decomposition of
    ``nominal^-1 * q``). ``max_tilt = pi`` and a yaw range of 2 pi switch the two parts off."""

    def __init__(self, nominal, max_tilt: float, yaw_min: float, yaw_max: float) -> None:
        self.nominal = normalize_quaternion(nominal, "orientation_nominal")
        self.max_tilt, self.yaw_min, self.yaw_max = float(max_tilt), float(yaw_min), float(yaw_max)
        if not (0 < self.max_tilt <= np.pi and -np.pi <= self.yaw_min < self.yaw_max <= np.pi):
            raise ValueError(f"orientation limits: need 0 < max_tilt <= pi and -pi <= yaw_min < yaw_max <= pi, got "
                             f"max_tilt {max_tilt}, yaw {yaw_min} .. {yaw_max}")
        self.full_yaw = self.yaw_max - self.yaw_min >= 2 * np.pi - 1e-9
        self.active = self.max_tilt < np.pi or not self.full_yaw
        self._inverse_nominal = quaternion_conjugate(self.nominal)

    def tilt_and_yaw(self, orientation) -> tuple[float, float]:
        """(angle of the tool axis from the nominal's, rotation about it relative to the nominal), radians."""
        swing, yaw = swing_twist_z(quaternion_multiply(self._inverse_nominal, orientation))
        return float(np.linalg.norm(quaternion_to_rotvec(swing))), yaw

    def _yaw_inside(self, yaw: float, tolerance: float) -> bool:
        if self.full_yaw:
            return True
        # yaw is in (-pi, pi]; a range may end at -pi, which is the same angle as pi
        return any(self.yaw_min - tolerance <= value <= self.yaw_max + tolerance
                   for value in (yaw, yaw - 2 * np.pi, yaw + 2 * np.pi))

    def contains(self, orientation, tolerance: float = 1e-6) -> bool:
        if not self.active:
            return True
        tilt, yaw = self.tilt_and_yaw(orientation)
        return tilt <= self.max_tilt + tolerance and (tilt > YAW_UNDEFINED_TILT or self._yaw_inside(yaw, tolerance))

    def clip(self, orientation) -> tuple[np.ndarray, str | None]:
        """The orientation moved into the limits (unchanged when inside) and what was clipped (None: nothing)."""
        orientation = normalize_quaternion(orientation)
        if not self.active:
            return orientation, None
        swing, yaw = swing_twist_z(quaternion_multiply(self._inverse_nominal, orientation))
        rotvec = quaternion_to_rotvec(swing)
        tilt = float(np.linalg.norm(rotvec))
        changes = []
        if tilt > self.max_tilt:
            changes.append(f"tilt {tilt:.3f}->{self.max_tilt:.3f} rad")
            swing = rotvec_to_quaternion(rotvec * (self.max_tilt / tilt))
        if tilt <= YAW_UNDEFINED_TILT and not self._yaw_inside(yaw, 0.0):
            # The nearer bound around the circle: a yaw just past +pi is closer to a range ending at -pi + 0.1.
            bound = min((self.yaw_min, self.yaw_max), key=lambda b: abs(_wrap(yaw - b)))
            changes.append(f"yaw {yaw:.3f}->{bound:.3f} rad")
            yaw = bound
        if not changes:
            return orientation, None
        relative = quaternion_multiply(swing, rotvec_to_quaternion([0.0, 0.0, yaw]))
        return quaternion_multiply(self.nominal, relative), ", ".join(changes)


class SafetyFilter:
    """See the module docstring. Pure: keeps no state between calls (the caller holds the previous target)."""

    def __init__(self, config: SafetyConfig, workspace_min=None, workspace_max=None,
                 orientation: OrientationLimits | None = None) -> None:
        self.config = config
        self.box_min = np.asarray(workspace_min if workspace_min is not None else config.workspace_min, float)
        self.box_max = np.asarray(workspace_max if workspace_max is not None else config.workspace_max, float)
        if self.box_min.shape != (3,) or self.box_max.shape != (3,) or not np.all(self.box_max > self.box_min):
            raise ValueError(f"workspace box: need min < max on x y z, got {self.box_min} .. {self.box_max}")
        self.orientation = orientation or OrientationLimits(config.orientation_nominal, config.max_tilt,
                                                            config.yaw_min, config.yaw_max)

    @classmethod
    def from_config(cls, config: SafetyConfig) -> SafetyFilter:
        """Build the filter; ``workspace_file`` (if set) supplies the box, and the orientation limits when it holds
        them; errors name the file and field."""
        if config.workspace_file:
            from irevla.calibration.workspace import load_workspace_box

            path = Path(config.workspace_file).expanduser()
            box = load_workspace_box(path)
            orientation = None
            if box.max_tilt is not None:
                orientation = OrientationLimits(box.orientation_nominal or config.orientation_nominal, box.max_tilt,
                                                box.yaw_min if box.yaw_min is not None else config.yaw_min,
                                                box.yaw_max if box.yaw_max is not None else config.yaw_max)
            return cls(config, box.min, box.max, orientation)
        return cls(config)

    # ------------------------------------------------------------------------------------------------ queries
    def contains(self, position, tolerance: float = EPSILON) -> bool:
        position = np.asarray(position, float)
        return bool(np.all(position >= self.box_min - tolerance) and np.all(position <= self.box_max + tolerance))

    def step_limits(self, dt: float, linear_velocity: float | None = None,
                    angular_velocity: float | None = None) -> tuple[float, float]:
        """(max translation m, max rotation rad) for a command `dt` seconds after the previous target."""
        config = self.config
        if not np.isfinite(dt) or dt < config.min_step_time:
            dt = config.min_step_time
        linear = config.max_linear_velocity if linear_velocity is None else min(linear_velocity,
                                                                                 config.max_linear_velocity)
        angular = config.max_angular_velocity if angular_velocity is None else min(angular_velocity,
                                                                                     config.max_angular_velocity)
        return (min(config.max_translation_per_step, linear * dt), min(config.max_rotation_per_step, angular * dt))

    # ---------------------------------------------------------------------------------------------- filtering
    def filter(self, command: Command, previous: PoseTarget, measured: Pose | None, dt: float,
               linear_velocity: float | None = None, angular_velocity: float | None = None) -> FilterResult:
        """The new target for `command`, given the previous target, the measured pose (None: unknown) and the
        time since the previous target was sent. Velocity overrides may only lower the configured limits."""
        events: list[str] = []
        desired = self._desired(command, previous, events)
        if desired is None:
            return FilterResult(previous, False, tuple(events))
        position, orientation, gripper = desired

        position = self._clip_to_box(position, events, "desired")
        orientation = self._clip_orientation(orientation, events, "desired")
        if measured is not None:
            offset, distance = _clip_norm(position - measured.position, self.config.max_target_error)
            if distance > self.config.max_target_error:
                events.append(f"reference: target {distance:.3f} m from the measured pose, limited to "
                              f"{self.config.max_target_error:.3f} m")
                position = self._clip_to_box(measured.position + offset, events, None)
            angle = quaternion_angle(measured.orientation, orientation)
            if angle > self.config.max_target_rotation_error:
                events.append(f"reference: target {angle:.3f} rad from the measured orientation, limited to "
                              f"{self.config.max_target_rotation_error:.3f} rad")
                orientation = rotate_towards(measured.orientation, orientation, self.config.max_target_rotation_error)
                orientation = self._clip_orientation(orientation, events, None)

        max_translation, max_rotation = self.step_limits(dt, linear_velocity, angular_velocity)
        step, distance = _clip_norm(position - previous.pose.position, max_translation)
        if distance > max_translation:
            events.append(f"step: translation {distance:.4f} m limited to {max_translation:.4f} m")
        position = previous.pose.position + step
        if self.contains(previous.pose.position):
            # The segment between two points of the box stays in it; this only removes floating-point slack.
            position = np.clip(position, self.box_min, self.box_max)
        angle = quaternion_angle(previous.pose.orientation, orientation)
        if angle > max_rotation:
            events.append(f"step: rotation {angle:.4f} rad limited to {max_rotation:.4f} rad")
            orientation = rotate_towards(previous.pose.orientation, orientation, max_rotation)
            if self.orientation.contains(previous.pose.orientation) and not self.orientation.contains(orientation):
                # The slerp left the limits (the set is not convex along every geodesic): back into them, or stay.
                clipped, _ = self.orientation.clip(orientation)
                if quaternion_angle(previous.pose.orientation, clipped) <= max_rotation + EPSILON:
                    orientation = clipped
                else:
                    orientation = previous.pose.orientation
                events.append("orientation: the rotation step was kept inside the orientation limits")
        return FilterResult(PoseTarget(Pose(position, orientation), gripper), True, tuple(events))

    def hold_target(self, measured: Pose, gripper: float) -> PoseTarget:
        """The watchdog's target: stay where the arm is (clipped into the box and the orientation limits), gripper
        unchanged."""
        orientation, _ = self.orientation.clip(measured.orientation)
        return PoseTarget(Pose(np.clip(measured.position, self.box_min, self.box_max), orientation),
                          float(np.clip(gripper, 0.0, 1.0)) if np.isfinite(gripper) else 0.0)

    def _clip_orientation(self, orientation: np.ndarray, events: list[str], label: str | None) -> np.ndarray:
        clipped, change = self.orientation.clip(orientation)
        if change is not None and label is not None:
            events.append(f"orientation: {label} orientation clipped into the limits ({change})")
        return clipped

    # -------------------------------------------------------------------------------------------------- parts
    def _clip_to_box(self, position: np.ndarray, events: list[str], label: str | None) -> np.ndarray:
        clipped = np.clip(position, self.box_min, self.box_max)
        if label is not None and not np.array_equal(clipped, position):
            axes = [f"{axis} {before:.3f}->{after:.3f}" for axis, before, after in zip("xyz", position, clipped)
                    if before != after]
            events.append(f"workspace: {label} position clipped into the box ({', '.join(axes)})")
        return clipped

    def _desired(self, command: Command, previous: PoseTarget, events: list[str]
                 ) -> tuple[np.ndarray, np.ndarray, float] | None:
        names = DELTA_NAMES if command.kind == "delta" else POSE_NAMES
        try:
            values = np.asarray(command.values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            events.append(f"rejected: {command.kind} command values are not numbers")
            return None
        if command.kind not in ("delta", "pose"):
            events.append(f"rejected: unknown command kind {command.kind!r}")
            return None
        if values.shape != (len(names),):
            events.append(f"rejected: {command.kind} command needs {len(names)} values {names}, got {values.size}")
            return None
        bad = [name for name, value in zip(names, values) if not np.isfinite(value)]
        if bad:
            events.append(f"rejected: non-finite (NaN/inf) values in {bad}")
            return None
        gripper = float(np.clip(values[-1], 0.0, 1.0))
        if gripper != values[-1]:
            events.append(f"gripper: {values[-1]:.3g} clipped to {gripper:.3g}")

        if command.kind == "pose":
            try:
                orientation = normalize_quaternion(values[3:7], "pose command quaternion")
            except PoseError as exc:
                events.append(f"rejected: {exc}")
                return None
            return values[:3].copy(), orientation, gripper

        config = self.config
        translation = np.clip(values[:3], -config.delta_max_translation, config.delta_max_translation)
        rotation = np.clip(values[3:6], -config.delta_max_rotation, config.delta_max_rotation)
        if not (np.array_equal(translation, values[:3]) and np.array_equal(rotation, values[3:6])):
            events.append(f"action scaling: delta clipped to +-{config.delta_max_translation:.3f} m / "
                          f"+-{config.delta_max_rotation:.3f} rad per component")
        start = previous.pose
        turn = rotvec_to_quaternion(rotation)
        if command.frame == "ee":
            position = start.position + quaternion_to_matrix(start.orientation) @ translation
            orientation = quaternion_multiply(start.orientation, turn)
        else:
            position = start.position + translation
            orientation = quaternion_multiply(turn, start.orientation)
        return position, normalize_quaternion(orientation), gripper
