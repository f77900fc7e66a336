"""The franka_control core (no ROS): commands -> safety filter -> target; watchdog; homing; status.

The node (`irevla.robot.nodes.franka_control`) feeds it robot states and commands and sends whatever target it
returns to a backend (`irevla.robot.backends`). Modes:

==============  ===========================================================================================
``waiting``     no robot state yet: commands are refused (there is nothing to apply a delta to)
``idle``        state known, no command stream: nothing is sent; the robot's controller holds its own target
``active``      commands arrive: each one is filtered and the target sent at once (lowest latency); the current
                target is re-sent every tick when ``control.resend_target``
``holding``     the stream went stale (``watchdog.command_timeout``): the target is the measured pose clipped
                into the box, re-sent every tick, until the next accepted command
``homing``      moving to ``control.home_*`` at ``homing_speed`` through the same safety filter; commands are
                ignored; ends in ``idle``
``resetting``   a backend-side reset (the sim teleports); commands are ignored; ends in ``idle``
``fault``       the robot state stopped (``control.state_timeout``) or a backend error; nothing is sent until
                the state returns (-> ``idle``) or recovery succeeds
==============  ===========================================================================================
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from irevla.robot.config import FrankaControlConfig
from irevla.robot.safety import Command, FilterResult, PoseTarget, SafetyFilter
from irevla.robot.watchdog import CommandWatchdog
from irevla.rotations import Pose

GRIPPER_MAX_WIDTH = 0.08  # Franka Hand, both fingers open
MODES = ("waiting", "idle", "active", "holding", "homing", "resetting", "fault")


@dataclass(frozen=True)
class RobotState:
    """A measurement from a backend: EE pose (base frame), gripper width (m), its stamp (wall-clock s, 0 if
    unknown) and when it was received (the core's monotonic clock)."""

    pose: Pose
    gripper_width: float
    stamp: float
    received: float
    joint_positions: tuple[float, ...] = ()
    errors: tuple[str, ...] = ()


def gripper_command_from_width(width: float, max_width: float = GRIPPER_MAX_WIDTH) -> float:
    """0 (open) ... 1 (closed) from a measured width; used to seed the first target."""
    if not np.isfinite(width):
        return 0.0
    return float(np.clip(1.0 - width / max_width, 0.0, 1.0))


class RobotBackend(Protocol):
    """What franka_control needs from a robot. Implementations live in irevla.robot.backends (ROS edge)."""

    name: str

    def latest_state(self) -> RobotState | None: ...

    def send_target(self, target: PoseTarget) -> None: ...

    def handles_reset(self) -> bool:
        """True when the backend resets itself (the sim teleports); otherwise the core streams a homing motion."""
        ...

    def request_reset(self, done: Callable[[bool, str], None]) -> None: ...

    def request_recovery(self, done: Callable[[bool, str], None]) -> None: ...

    def close(self) -> None: ...


class ControlCore:
    """See the module docstring. Not thread-safe: the node serialises calls with a lock."""

    def __init__(self, config: FrankaControlConfig, safety: SafetyFilter | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.safety = safety or SafetyFilter.from_config(config.safety)
        self.watchdog = CommandWatchdog(config.watchdog)
        self.clock, self.wall_clock = clock, wall_clock
        self.mode = "waiting"
        self.state: RobotState | None = None
        self.target: PoseTarget | None = None
        self.last_sent: float | None = None
        self.counters: Counter = Counter()
        self.recent_events: deque[str] = deque(maxlen=20)
        self.last_policy_version: int | None = None
        self.last_intervention = False
        self._homing_started: float | None = None
        self.home = PoseTarget(Pose(config.control.home_position, config.control.home_orientation), 0.0)

    # ---------------------------------------------------------------------------------------------- inputs
    def on_state(self, state: RobotState) -> None:
        self.state = state
        if state.errors and self.mode not in ("fault", "waiting"):
            self.mode, self.target = "fault", None
            self._event(f"fault: the robot reports {'; '.join(state.errors)} (call the recover service)")
            return
        if self.mode == "waiting":
            self.mode = "idle"
        elif self.mode == "fault" and self.counters["fault_reason_state"]:
            self.counters["fault_reason_state"] = 0
            self._event("robot state is back: idle (send commands to move)")
            self.mode, self.target = "idle", None
            self.watchdog.reset()

    def _state_fresh(self, now: float) -> bool:
        return self.state is not None and now - self.state.received <= self.config.control.state_timeout

    def on_command(self, command: Command) -> tuple[PoseTarget | None, FilterResult | None]:
        """Filter a command; returns (target to send now or None, the filter's result if it ran)."""
        now = self.clock()
        self.counters["commands"] += 1
        refusal = None
        if self.mode in ("homing", "resetting"):
            refusal = f"ignored: {self.mode} in progress"
        elif self.mode == "fault":
            refusal = "ignored: fault (call the recover service)"
        elif not self._state_fresh(now):
            refusal = "refused: no fresh robot state"
        else:
            refusal = self.watchdog.command_age_problem(command.stamp, self.wall_clock())
        if refusal is not None:
            self.counters["refused"] += 1
            self._event(refusal)
            return None, None
        assert self.state is not None
        previous = self.target or self.safety.hold_target(self.state.pose,
                                                          gripper_command_from_width(self.state.gripper_width))
        # The first command of a stream moves at most one nominal control period's worth.
        dt = now - self.last_sent if self.last_sent is not None else 1.0 / self.config.control.control_hz
        result = self.safety.filter(command, previous, self.state.pose, dt)
        for event in result.events:
            self._event(event)
        if not result.accepted:
            self.counters["rejected"] += 1
            return None, result
        if result.events:
            self.counters["clipped"] += 1
        self.watchdog.feed(now)
        self.last_policy_version = command.policy_version
        self.last_intervention = command.intervention
        if self.mode != "active":
            self._event(f"{self.mode} -> active")
        self.mode = "active"
        return self._send(result.target, now), result

    # ----------------------------------------------------------------------------------------------- ticking
    def tick(self) -> PoseTarget | None:
        """Called at ``control.tick_hz``: watchdog, homing progress, re-sending. Returns a target to send."""
        now = self.clock()
        if self.mode in ("active", "holding", "homing") and not self._state_fresh(now):
            self.mode, self.target = "fault", None
            self.counters["fault_reason_state"] = 1
            self._event(f"fault: no robot state for {self.config.control.state_timeout:.2f} s; stopped sending")
            return None
        if self.mode == "homing":
            return self._homing_step(now)
        if self.mode == "active":
            verdict = self.watchdog.check(now)
            if verdict.stale:
                assert self.state is not None and self.target is not None
                self.mode = "holding"
                self.counters["holds"] += 1
                self._event(f"watchdog: no command for {verdict.age:.3f} s -> holding the current pose")
                return self._send(self.safety.hold_target(self.state.pose, self.target.gripper), now)
        if self.mode in ("active", "holding") and self.config.control.resend_target and self.target is not None:
            return self.target  # a re-send: not a new target, so the velocity limits' clock does not restart
        return None

    def _send(self, target: PoseTarget, now: float) -> PoseTarget:
        """Adopt a new target; `last_sent` is when the target last changed (the velocity limits' reference)."""
        self.target, self.last_sent = target, now
        return target

    # ------------------------------------------------------------------------------------------ home / reset
    def start_homing(self) -> str | None:
        """Begin the homing motion; returns a reason when it cannot start."""
        now = self.clock()
        if not self._state_fresh(now):
            return "no fresh robot state"
        if self.mode == "fault":
            return "fault: recover first"
        assert self.state is not None
        if self.target is None:
            self.target = self.safety.hold_target(self.state.pose, gripper_command_from_width(self.state.gripper_width))
        self.mode, self._homing_started = "homing", now
        self._event("homing started")
        return None

    def _homing_step(self, now: float) -> PoseTarget | None:
        assert self.state is not None and self.target is not None
        control = self.config.control
        home = np.concatenate([self.home.pose.position, self.home.pose.orientation, [self.home.gripper]])
        dt = now - self.last_sent if self.last_sent is not None else float("nan")
        result = self.safety.filter(Command("pose", home), self.target, self.state.pose, dt,
                                    linear_velocity=control.homing_speed,
                                    angular_velocity=control.homing_angular_speed)
        target = self._send(result.target, now)
        home_in_box = Pose(np.clip(self.home.pose.position, self.safety.box_min, self.safety.box_max),
                           self.home.pose.orientation)
        distance, angle = self.state.pose.distance_to(home_in_box)
        if distance <= control.home_tolerance and angle <= 10 * control.home_tolerance:
            self.finish_reset(True, f"homing done ({distance * 1000:.1f} mm from home)")
        elif now - (self._homing_started or now) > control.homing_timeout:
            self.finish_reset(False, f"homing timed out after {control.homing_timeout:.0f} s, "
                                     f"{distance * 1000:.0f} mm from home")
        return target

    @property
    def homing_done(self) -> bool:
        return self.mode != "homing"

    def begin_external_reset(self) -> None:
        self.mode = "resetting"
        self._event("backend reset started")

    def finish_reset(self, success: bool, message: str) -> None:
        """End of homing or a backend reset: idle with a fresh command stream (or fault)."""
        self.mode = "idle" if success else "fault"
        self.target = None if success else self.target
        self.watchdog.reset()
        self._event(message)

    def recovered(self, success: bool, message: str) -> None:
        if success:
            self.mode, self.target = ("idle" if self.state is not None else "waiting"), None
            self.watchdog.reset()
            self.counters["fault_reason_state"] = 0
        self._event(message)

    # ------------------------------------------------------------------------------------------------ status
    def _event(self, text: str) -> None:
        self.recent_events.append(text)
        self.counters["events"] += 1

    def status(self) -> dict:
        now = self.clock()
        age = None if self.watchdog.last_command_time is None else now - self.watchdog.last_command_time
        target = self.target
        return {
            "mode": self.mode,
            "command_age": age,
            "policy_version": self.last_policy_version,
            "intervention": self.last_intervention,
            "target": None if target is None else {"position": target.pose.position.round(5).tolist(),
                                                   "orientation": target.pose.orientation.round(6).tolist(),
                                                   "gripper": round(target.gripper, 4)},
            "robot_errors": list(self.state.errors) if self.state is not None else [],
            "counters": {k: v for k, v in self.counters.items() if k != "fault_reason_state"},
            "recent_events": list(self.recent_events)[-5:],
        }
