"""franka_control's core without ROS: modes, watchdog hold timing, homing, refusals, fault on lost state."""

from __future__ import annotations

import numpy as np
import pytest

from irevla.robot.config import FrankaControlConfig
from irevla.robot.control import ControlCore, RobotState
from irevla.robot.safety import Command
from irevla.rotations import Pose

DOWN = np.array([1.0, 0.0, 0.0, 0.0])


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_core(**control):
    clock = FakeClock()
    config = FrankaControlConfig()
    if control:
        config = config.model_copy(update={"control": config.control.model_copy(update=control)})
    return ControlCore(config, clock=clock, wall_clock=lambda: 1000.0 + clock.now), clock


def feed_state(core: ControlCore, clock: FakeClock, position=(0.5, 0.0, 0.3), width=0.08):
    core.on_state(RobotState(Pose(position, DOWN), width, stamp=clock.now, received=clock.now))


def delta(dx=0.0, dy=0.0, dz=0.0, gripper=0.0, **kw):
    return Command("delta", np.array([dx, dy, dz, 0, 0, 0, gripper]), **kw)


def test_commands_are_refused_until_a_state_arrives_then_applied_at_once():
    core, clock = make_core()
    assert core.mode == "waiting"
    assert core.on_command(delta(0.01)) == (None, None)
    feed_state(core, clock)
    assert core.mode == "idle" and core.tick() is None  # idle: nothing is sent
    target, result = core.on_command(delta(0.01, gripper=1.0))
    assert core.mode == "active" and result.accepted
    assert np.allclose(target.pose.position, [0.51, 0.0, 0.3]) and target.gripper == 1.0


def test_watchdog_holds_the_measured_pose_after_the_timeout():
    core, clock = make_core()
    feed_state(core, clock)
    core.on_command(delta(0.01))
    timeout = core.config.watchdog.command_timeout
    clock.now += timeout - 0.01
    feed_state(core, clock, position=(0.505, 0.0, 0.3))
    assert core.tick() is not None and core.mode == "active"  # re-sent, not yet stale
    clock.now += 0.02
    feed_state(core, clock, position=(0.507, 0.0, 0.3))
    hold = core.tick()
    assert core.mode == "holding" and np.allclose(hold.pose.position, [0.507, 0.0, 0.3])
    assert core.counters["holds"] == 1
    clock.now += 0.02
    feed_state(core, clock)
    assert core.tick() is hold  # re-sent unchanged
    target, _ = core.on_command(delta(0.0, 0.01))  # a new command resumes from the hold target
    assert core.mode == "active" and np.allclose(target.pose.position, [0.507, 0.01, 0.3])


def test_rejected_commands_do_not_feed_the_watchdog():
    core, clock = make_core()
    feed_state(core, clock)
    core.on_command(delta(0.01))
    for _ in range(10):
        clock.now += 0.05
        feed_state(core, clock)
        core.on_command(delta(float("nan")))
        core.tick()
    assert core.mode == "holding" and core.counters["rejected"] == 10


def test_old_stamps_are_refused():
    core, clock = make_core()
    feed_state(core, clock)
    wall_now = 1000.0 + clock.now
    assert core.on_command(delta(0.01, stamp=wall_now - 5.0)) == (None, None)
    assert "stamped" in core.recent_events[-1]
    assert core.on_command(delta(0.01, stamp=wall_now - 0.05))[0] is not None


def test_lost_state_is_a_fault_and_recovers_when_it_returns():
    core, clock = make_core()
    feed_state(core, clock)
    core.on_command(delta(0.01))
    clock.now += core.config.control.state_timeout + 0.1
    assert core.tick() is None and core.mode == "fault"
    assert core.on_command(delta(0.01)) == (None, None)
    feed_state(core, clock)
    assert core.mode == "idle"


def test_homing_moves_at_the_homing_speed_and_ends_idle():
    core, clock = make_core(homing_speed=0.2)
    feed_state(core, clock, position=(0.6, 0.2, 0.2))
    assert core.start_homing() is None and core.mode == "homing"
    assert core.on_command(delta(0.01)) == (None, None)  # ignored while homing
    previous = np.array([0.6, 0.2, 0.2])
    for _ in range(400):
        clock.now += 0.02
        target = core.tick()
        if core.mode != "homing":
            break
        assert np.linalg.norm(target.pose.position - previous) <= 0.2 * 0.02 + 1e-9
        previous = target.pose.position
        feed_state(core, clock, position=target.pose.position)  # a perfect controller
    assert core.mode == "idle"
    assert np.allclose(previous, core.config.control.home_position, atol=core.config.control.home_tolerance)


def test_homing_times_out_into_a_fault():
    core, clock = make_core(homing_timeout=1.0)
    feed_state(core, clock, position=(0.6, 0.2, 0.2))
    core.start_homing()
    for _ in range(60):
        clock.now += 0.02
        feed_state(core, clock, position=(0.6, 0.2, 0.2))  # the arm does not move
        core.tick()
    assert core.mode == "fault" and "timed out" in core.recent_events[-1]
    core.recovered(True, "recovered")
    assert core.mode == "idle"


def test_status_is_json_serialisable():
    import json

    core, clock = make_core()
    feed_state(core, clock)
    core.on_command(delta(0.01, policy_version=3))
    status = json.loads(json.dumps(core.status()))
    assert status["mode"] == "active" and status["policy_version"] == 3


@pytest.mark.parametrize("timeout", [0.1, 0.3])
def test_hold_is_detected_within_one_tick_of_the_timeout(timeout):
    core, clock = make_core(tick_hz=50.0)
    core.watchdog.config = core.watchdog.config.model_copy(update={"command_timeout": timeout})
    feed_state(core, clock)
    core.on_command(delta(0.01))
    start = clock.now
    while core.mode != "holding":
        clock.now += 1.0 / 50.0
        feed_state(core, clock)
        core.tick()
    assert clock.now - start <= timeout + 1.0 / 50.0 + 1e-9


def test_robot_errors_stop_sending_until_recovered():
    core, clock = make_core()
    feed_state(core, clock)
    core.on_command(delta(0.01))
    core.on_state(RobotState(Pose((0.5, 0, 0.3), DOWN), 0.08, clock.now, clock.now, errors=("reflex",)))
    assert core.mode == "fault" and core.tick() is None and core.status()["robot_errors"] == ["reflex"]
    assert core.on_command(delta(0.01)) == (None, None)
    core.recovered(True, "recovered")
    feed_state(core, clock)
    assert core.mode == "idle" and core.on_command(delta(0.01))[0] is not None
