"""The safety filter: unit cases, then a property-based fuzz of >= 10,000 random, NaN, inf and huge commands.

Invariants checked on every command (irevla/robot/safety.py's docstring): the target stays in the workspace box
and, when the previous target was inside them, in the orientation limits; it never moves more than the per-step /
velocity limits from the previous target, is finite with a unit quaternion, and a command with any NaN/inf is
rejected with the previous target kept (nothing of it forwarded). The orientation limits alone are fuzzed with 10,000
more rotations, near +-pi and degenerate ones included.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irevla.robot.config import SafetyConfig
from irevla.robot.safety import EPSILON, Command, OrientationLimits, PoseTarget, SafetyFilter
from irevla.rotations import (
    Pose,
    PoseError,
    normalize_quaternion,
    quaternion_angle,
    quaternion_multiply,
    rotvec_to_quaternion,
)

CONFIG = SafetyConfig()
# Orientation limits with every part on: a 0.6 rad cone and a yaw range that does not contain 0's opposite.
LIMITED = SafetyConfig(max_tilt=0.6, yaw_min=-0.5, yaw_max=0.8)
DOWN = np.array([1.0, 0.0, 0.0, 0.0])
FUZZ_COMMANDS = 10_000


def target_at(position, orientation=DOWN, gripper=0.0) -> PoseTarget:
    return PoseTarget(Pose(position, orientation), gripper)


def test_delta_in_base_frame_moves_the_target_by_the_delta():
    safety = SafetyFilter(CONFIG)
    start = target_at([0.5, 0.0, 0.3])
    result = safety.filter(Command("delta", np.array([0.01, -0.02, 0.005, 0, 0, 0, 1.0])), start, start.pose, 0.1)
    assert result.accepted and not result.events
    assert np.allclose(result.target.pose.position, [0.51, -0.02, 0.305])
    assert result.target.gripper == 1.0


def test_delta_in_ee_frame_is_rotated_by_the_current_orientation():
    safety = SafetyFilter(CONFIG)
    start = target_at([0.5, 0.0, 0.3])  # pointing down: ee z = base -z, ee y = base -y
    result = safety.filter(Command("delta", np.array([0, 0.01, 0.01, 0, 0, 0, 0]), frame="ee"), start,
                           start.pose, 0.1)
    assert np.allclose(result.target.pose.position, [0.5, -0.01, 0.29])


def test_rotation_delta_turns_the_target():
    safety = SafetyFilter(CONFIG)
    start = target_at([0.5, 0.0, 0.3])
    result = safety.filter(Command("delta", np.array([0, 0, 0, 0, 0, 0.05, 0])), start, start.pose, 0.1)
    assert math.isclose(quaternion_angle(start.pose.orientation, result.target.pose.orientation), 0.05, rel_tol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_commands_are_rejected_whole(bad):
    safety = SafetyFilter(CONFIG)
    start = target_at([0.5, 0.0, 0.3], gripper=0.3)
    for kind, size in (("delta", 7), ("pose", 8)):
        for index in range(size):
            values = np.array([0.0] * size)
            if kind == "pose":
                values[:8] = [0.5, 0, 0.3, 1, 0, 0, 0, 0.5]
            values[index] = bad
            result = safety.filter(Command(kind, values), start, start.pose, 0.1)
            assert not result.accepted and result.target is start
            assert "non-finite" in result.events[0]


def test_wrong_size_zero_quaternion_and_text_are_rejected():
    safety = SafetyFilter(CONFIG)
    start = target_at([0.5, 0.0, 0.3])
    for command in (Command("delta", np.zeros(6)), Command("pose", np.array([0.5, 0, 0.3, 0, 0, 0, 0, 0])),
                    Command("delta", np.array(["a"] * 7)), Command("twist", np.zeros(7))):
        result = safety.filter(command, start, start.pose, 0.1)
        assert not result.accepted and result.target is start, command


def test_far_pose_is_clipped_into_the_box_then_step_limited():
    safety = SafetyFilter(CONFIG)
    start = target_at([0.5, 0.0, 0.3])
    result = safety.filter(Command("pose", np.array([9.0, 0.0, -5.0, 1, 0, 0, 0, 0])), start, start.pose, 0.1)
    assert result.accepted
    moved = np.linalg.norm(result.target.pose.position - start.pose.position)
    assert moved == pytest.approx(CONFIG.max_translation_per_step)
    assert any(e.startswith("workspace") for e in result.events)
    assert any(e.startswith("step") for e in result.events)


def test_velocity_limit_shrinks_the_step_for_commands_in_quick_succession():
    safety = SafetyFilter(CONFIG)
    start = target_at([0.5, 0.0, 0.3])
    result = safety.filter(Command("delta", np.array([0.02, 0, 0, 0, 0, 0, 0])), start, start.pose, 0.025)
    # 0.5 m/s * 0.025 s = 12.5 mm < the 20 mm asked for
    assert np.linalg.norm(result.target.pose.position - start.pose.position) == pytest.approx(0.0125)


def test_reference_clipping_keeps_the_target_near_the_measured_pose():
    safety = SafetyFilter(CONFIG)
    previous = target_at([0.5, 0.0, 0.10])
    measured = Pose([0.5, 0.0, 0.16], DOWN)  # pushed away 6 cm (e.g. touching the table)
    result = safety.filter(Command("delta", np.array([0, 0, -0.02, 0, 0, 0, 0])), previous, measured, 0.1)
    assert np.linalg.norm(result.target.pose.position - measured.position) <= CONFIG.max_target_error + 1e-9


def test_hold_target_is_the_measured_pose_clipped_into_the_box():
    safety = SafetyFilter(CONFIG)
    hold = safety.hold_target(Pose([0.5, 0.0, 0.9], DOWN), gripper=float("nan"))
    assert np.allclose(hold.pose.position, [0.5, 0.0, CONFIG.workspace_max[2]]) and hold.gripper == 0.0


def test_workspace_file_supplies_the_box(tmp_path):
    from irevla.calibration.workspace import box_from_limits, write_workspace_box

    path = tmp_path / "workspace.yaml"
    write_workspace_box(path, box_from_limits([0.3, -0.2, 0.05], [0.6, 0.2, 0.5], margin=0.01, frame="fr3_link0"))
    safety = SafetyFilter.from_config(CONFIG.model_copy(update={"workspace_file": str(path)}))
    assert np.allclose(safety.box_min, [0.31, -0.19, 0.06]) and np.allclose(safety.box_max, [0.59, 0.19, 0.49])


def test_missing_workspace_file_names_the_file(tmp_path):
    with pytest.raises(Exception, match="workspace_missing.yaml"):
        SafetyFilter.from_config(CONFIG.model_copy(update={"workspace_file": str(tmp_path / "workspace_missing.yaml")}))


def tool_turn(rotvec) -> np.ndarray:
    """DOWN turned by `rotvec` in the tool frame (z = the tool axis)."""
    return quaternion_multiply(DOWN, rotvec_to_quaternion(rotvec))


def test_orientation_limits_clip_the_tilt_and_the_yaw():
    limits = OrientationLimits(DOWN, max_tilt=0.6, yaw_min=-0.5, yaw_max=0.8)
    tilt, yaw = limits.tilt_and_yaw(tool_turn([0.3, 0.0, 0.0]))
    assert tilt == pytest.approx(0.3) and yaw == pytest.approx(0.0, abs=1e-12)
    clipped, change = limits.clip(tool_turn([1.4, 0.0, 0.0]))  # tilted 1.4 rad about the tool x axis
    assert limits.tilt_and_yaw(clipped) == pytest.approx((0.6, 0.0), abs=1e-9) and "tilt 1.400->0.600" in change
    clipped, change = limits.clip(tool_turn([0.0, 0.0, 2.0]))  # 2 rad about the tool axis: the nearer bound, 0.8
    assert limits.tilt_and_yaw(clipped) == pytest.approx((0.0, 0.8), abs=1e-9) and "yaw" in change
    clipped, _ = limits.clip(tool_turn([0.0, 0.0, -2.9]))  # nearer to -0.5 than to 0.8 around the circle
    assert limits.tilt_and_yaw(clipped)[1] == pytest.approx(-0.5)
    inside = tool_turn([0.2, -0.1, 0.4])
    same, change = limits.clip(inside)
    assert change is None and quaternion_angle(same, inside) < 1e-12
    wrapped = OrientationLimits(DOWN, max_tilt=np.pi, yaw_min=-np.pi, yaw_max=-2.5)  # a range ending at -pi
    clipped, change = wrapped.clip(tool_turn([0, 0, 3.0]))  # 3.0 is nearer to -pi (= pi) than to -2.5
    assert wrapped.contains(clipped) and abs(wrapped.tilt_and_yaw(clipped)[1]) == pytest.approx(np.pi)
    assert wrapped.contains(tool_turn([0, 0, np.pi])) and wrapped.contains(tool_turn([0, 0, -np.pi]))
    assert not OrientationLimits(DOWN, np.pi, -np.pi, np.pi).active  # the defaults of a full circle: off
    with pytest.raises(ValueError, match="yaw_min < yaw_max"):
        OrientationLimits(DOWN, 0.5, 0.3, 0.2)
    with pytest.raises(PoseError, match="orientation_nominal"):
        OrientationLimits([0, 0, 0, 0], 0.5, -1, 1)


def test_a_tilted_pose_command_is_clipped_into_the_cone_then_step_limited():
    safety = SafetyFilter(LIMITED)
    start = target_at([0.5, 0.0, 0.3])
    asked = tool_turn([1.5, 0.0, 0.0])
    result = safety.filter(Command("pose", np.array([0.5, 0.0, 0.3, *asked, 0.0])), start, start.pose, 0.1)
    assert result.accepted and any(e.startswith("orientation: desired") for e in result.events), result.events
    assert safety.orientation.contains(result.target.pose.orientation)
    assert quaternion_angle(start.pose.orientation, result.target.pose.orientation) <= LIMITED.max_rotation_per_step
    # commanded again and again, the target settles on the cone's edge, never beyond it
    previous = result.target
    for _ in range(20):
        previous = safety.filter(Command("pose", np.array([0.5, 0.0, 0.3, *asked, 0.0])), previous, previous.pose,
                                 0.1).target
    assert safety.orientation.tilt_and_yaw(previous.pose.orientation)[0] == pytest.approx(0.6, abs=1e-9)


def test_default_limits_keep_the_tool_within_a_radian_of_pointing_down():
    safety = SafetyFilter(CONFIG)
    start = target_at([0.5, 0.0, 0.3])
    previous = start
    for _ in range(40):  # a policy that keeps rotating about the base x axis
        previous = safety.filter(Command("delta", np.array([0, 0, 0, 0.1, 0, 0, 0])), previous, previous.pose,
                                 0.1).target
    assert safety.orientation.tilt_and_yaw(previous.pose.orientation)[0] == pytest.approx(CONFIG.max_tilt, abs=1e-6)


def test_hold_target_respects_the_orientation_limits():
    safety = SafetyFilter(LIMITED)
    hold = safety.hold_target(Pose([0.5, 0.0, 0.3], tool_turn([0.9, 0.0, 1.5])), gripper=0.5)
    assert safety.orientation.contains(hold.pose.orientation)
    tilt, yaw = safety.orientation.tilt_and_yaw(hold.pose.orientation)
    assert tilt == pytest.approx(0.6) and yaw == pytest.approx(0.8)
    inside = tool_turn([0.1, 0.2, 0.3])
    assert quaternion_angle(safety.hold_target(Pose([0.5, 0, 0.3], inside), 0.0).pose.orientation, inside) < 1e-12


def test_workspace_file_supplies_the_orientation_limits(tmp_path):
    from irevla.calibration.workspace import box_from_limits, with_orientation_limits, write_workspace_box

    path = tmp_path / "workspace.yaml"
    box = box_from_limits([0.3, -0.2, 0.05], [0.6, 0.2, 0.5], margin=0.0, frame="fr3_link0")
    write_workspace_box(path, with_orientation_limits(box, 0.4, (-0.2, 0.3)))
    safety = SafetyFilter.from_config(CONFIG.model_copy(update={"workspace_file": str(path)}))
    assert (safety.orientation.max_tilt, safety.orientation.yaw_min, safety.orientation.yaw_max) == (0.4, -0.2, 0.3)
    assert np.allclose(safety.orientation.nominal, DOWN)  # the file has no nominal: the config's
    path.write_text(path.read_text() + "yaw_min: 0.5\n")
    with pytest.raises(Exception, match=r"workspace\.yaml.*yaw_max \(0\.3\) must be greater than yaw_min \(0\.5\)"):
        SafetyFilter.from_config(CONFIG.model_copy(update={"workspace_file": str(path)}))


def test_safety_config_refuses_bad_orientation_limits():
    for update, message in (({"yaw_min": 0.5, "yaw_max": 0.1}, "yaw_max"), ({"max_tilt": 4.0}, "max_tilt"),
                            ({"orientation_nominal": (0.0, 0.0, 0.0, 0.0)}, "orientation_nominal")):
        with pytest.raises(ValueError, match=message):
            SafetyConfig(**update)


# ---------------------------------------------------------------------------------------------------- the fuzz
SPECIAL = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e12, -1e12, 0.0, -0.0, 5e-324]
number = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.floats(-1.0, 1.0), st.floats(-0.05, 0.05), st.sampled_from(SPECIAL))
command_strategy = st.one_of(
    st.builds(lambda v, frame: Command("delta", np.array(v), frame=frame),
              st.lists(number, min_size=7, max_size=7), st.sampled_from(["base", "ee"])),
    st.builds(lambda v: Command("pose", np.array(v)), st.lists(number, min_size=8, max_size=8)),
    st.builds(lambda v: Command("delta", np.array(v)), st.lists(number, min_size=0, max_size=10)),
)
position_in_box = st.tuples(*[st.floats(lo, hi) for lo, hi in zip(CONFIG.workspace_min, CONFIG.workspace_max)])
unit_rotvec = st.tuples(*[st.floats(-2.0, 2.0)] * 3)
offset = st.tuples(*[st.floats(-0.2, 0.2)] * 3)


def check_invariants(safety: SafetyFilter, command: Command, previous: PoseTarget, result, dt: float) -> None:
    target = result.target
    assert np.all(np.isfinite(target.pose.position)) and np.all(np.isfinite(target.pose.orientation))
    assert abs(np.linalg.norm(target.pose.orientation) - 1.0) < 1e-9
    assert 0.0 <= target.gripper <= 1.0
    assert safety.contains(target.pose.position, tolerance=EPSILON), target.pose.position
    max_translation, max_rotation = safety.step_limits(dt)
    assert np.linalg.norm(target.pose.position - previous.pose.position) <= max_translation + EPSILON
    assert quaternion_angle(target.pose.orientation, previous.pose.orientation) <= max_rotation + 1e-7
    if safety.orientation.contains(previous.pose.orientation):
        assert safety.orientation.contains(target.pose.orientation, tolerance=1e-6), \
            safety.orientation.tilt_and_yaw(target.pose.orientation)
    values = np.asarray(command.values)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        assert not result.accepted and target is previous  # NaN never forwarded


@settings(max_examples=FUZZ_COMMANDS // 10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(start=position_in_box, start_rotation=unit_rotvec, measured_offset=offset,
       commands=st.lists(st.tuples(command_strategy, st.one_of(st.floats(-1.0, 1.0), st.just(math.nan))), min_size=10,
                         max_size=10))
def test_fuzz_targets_stay_in_the_box_within_step_limits_and_never_nan(start, start_rotation, measured_offset,
                                                                        commands):
    """FUZZ_COMMANDS commands in all: 1,000 sequences of 10, each command filtered from the previous result; the start
    orientation is within 2 rad of pointing down (inside or outside the orientation limits, which are on in full)."""
    safety = SafetyFilter(LIMITED)
    previous = PoseTarget(Pose(start, tool_turn(start_rotation)), 0.0)
    for command, dt in commands:
        measured = Pose(previous.pose.position + np.asarray(measured_offset), previous.pose.orientation)
        result = safety.filter(command, previous, measured, dt)
        check_invariants(safety, command, previous, result, dt)
        previous = result.target


def test_fuzz_with_numpy_random_commands_covers_10000_more():
    """A second, cheaper sweep: 10,000 uniformly random commands of every scale, incl. NaN/inf sprinkled in."""
    rng = np.random.default_rng(0)
    safety = SafetyFilter(LIMITED)
    previous = target_at([0.5, 0.0, 0.3])
    rejected = 0
    for i in range(FUZZ_COMMANDS):
        scale = 10.0 ** rng.integers(-3, 300)
        kind = "delta" if i % 2 else "pose"
        values = rng.normal(size=7 if kind == "delta" else 8) * scale
        if i % 7 == 0:
            values[rng.integers(values.size)] = rng.choice([np.nan, np.inf, -np.inf])
        dt = float(rng.choice([0.0, 0.001, 0.1, 1.0, np.nan]))
        command = Command(kind, values, frame="ee" if i % 3 else "base")
        result = safety.filter(command, previous, previous.pose, dt)
        check_invariants(safety, command, previous, result, dt)
        rejected += not result.accepted
        previous = result.target
    assert rejected >= FUZZ_COMMANDS // 7


def near_pi_and_degenerate_rotations(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Random rotations, rotations by almost exactly +-pi (about any axis and about the tool axis), tilts of pi
    (the tool axis flipped, where the yaw is undefined), quaternions with w = 0, tiny, huge and unnormalised ones."""
    out = []
    for i in range(count):
        kind = i % 6
        if kind == 0:
            q = rng.normal(size=4)
        elif kind == 1:  # |angle| within 1e-9 of pi about a random axis, either sign
            axis = rng.normal(size=3)
            q = rotvec_to_quaternion(axis / np.linalg.norm(axis) * (np.pi - rng.uniform(0, 1e-9)) * rng.choice([-1, 1]))
        elif kind == 2:  # the tool axis flipped (tilt pi), possibly with a little twist
            q = quaternion_multiply(tool_turn([np.pi, 0, 0]), rotvec_to_quaternion([0, 0, rng.uniform(-4, 4)]))
        elif kind == 3:  # yaw near +-pi about the tool axis
            q = tool_turn([0, 0, rng.choice([-1, 1]) * (np.pi - rng.uniform(0, 1e-6))])
        elif kind == 4:  # w = 0 and single-axis quaternions
            q = np.zeros(4)
            q[rng.integers(3)] = rng.choice([-1, 1])
            q[rng.integers(3)] += rng.uniform(-1e-12, 1e-12)
        else:  # scaled by tiny or huge factors (the direction is what counts)
            q = rng.normal(size=4) * 10.0 ** rng.integers(-8, 200)
        out.append(np.asarray(q, float))
    return out


def test_fuzz_orientation_limits_on_10000_rotations_near_pi_and_degenerate():
    rng = np.random.default_rng(1)
    limit_sets = [OrientationLimits(DOWN, 0.6, -0.5, 0.8), OrientationLimits(DOWN, 1e-3, -1e-3, 1e-3),
                  OrientationLimits(DOWN, np.pi, -np.pi, -3.0), OrientationLimits(tool_turn([0.3, 0.2, 1.0]), 2.5,
                                                                                   -0.1, 3.1)]
    for i, q in enumerate(near_pi_and_degenerate_rotations(rng, FUZZ_COMMANDS)):
        limits = limit_sets[i % len(limit_sets)]
        clipped, change = limits.clip(q)
        assert np.all(np.isfinite(clipped)) and abs(np.linalg.norm(clipped) - 1.0) < 1e-9
        assert limits.contains(clipped, tolerance=1e-6), (q, limits.tilt_and_yaw(clipped))
        again, second = limits.clip(clipped)  # idempotent: inside stays put
        assert quaternion_angle(again, clipped) < 1e-6, (q, second)
        if change is None:
            assert quaternion_angle(clipped, normalize_quaternion(q)) < 1e-9
    with pytest.raises(PoseError, match="zero length"):
        OrientationLimits(DOWN, 0.6, -0.5, 0.8).clip(np.zeros(4))
