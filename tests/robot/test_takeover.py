"""Taking over from the policy with teleop and handing back, through the real parts and no ROS: the RL actor core
(the tiny VLA with a fixed learner head: it moves along +x and holds the gripper closed), teleop's core (keyboard
input, the intervention detector), franka_control's core with the safety filter, and an arm that reaches each target
by the next command. At the takeover and at the release the commanded target must move by exactly what the executed
action says -- no snap back to a stale target or to the measured pose -- and the gripper the policy closed must stay
closed when the human takes over (teleop follows the commanded gripper while nobody intervenes)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from netns import run_isolated  # noqa: E402

from irevla.head_file import LOG_STD_NAME  # noqa: E402
from irevla.robot.config import FrankaControlConfig, PolicySourceConfig, TeleopConfig  # noqa: E402
from irevla.robot.control import ControlCore, RobotState  # noqa: E402
from irevla.robot.policy_runner import LatentActorRunner, PolicyRunner  # noqa: E402
from irevla.robot.rl_actor import RlActorCore  # noqa: E402
from irevla.robot.safety import Command  # noqa: E402
from irevla.robot.teleop import KeyboardSource, TeleopCore  # noqa: E402
from irevla.rotations import Pose, quaternion_angle, quaternion_to_matrix, quaternion_to_rotvec  # noqa: E402
from irevla.spec import Observation  # noqa: E402
from irevla.transport.messages import InMemoryLearnerLink  # noqa: E402

torch.set_num_threads(1)
DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # tool pointing down (x, y, z, w)
PERIOD = 0.1  # 10 Hz: the policy's and teleop's rate
# The policy's head: the mean action is tanh(bias) in the unit space -> +x, no rotation, gripper (nearly) closed.
BIAS = np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0], np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fixed_head(policy) -> dict[str, np.ndarray]:
    """A learner head message whose mean action is tanh(BIAS) everywhere; no exploration noise."""
    params = {name: tensor.numpy() for name, tensor in policy.head_state().items() if name.startswith("mlp.")}
    params["mlp.out.weight"] = np.zeros_like(params["mlp.out.weight"])
    params["mlp.out.bias"] = BIAS.copy()
    params[LOG_STD_NAME] = np.full(7, -20.0, np.float32)
    return params


def observation(pose: Pose, width: float, stamp: float) -> Observation:
    proprio = np.concatenate([pose.position, quaternion_to_rotvec(pose.orientation), [width]]).astype(np.float32)
    return Observation(images={"front": np.full((40, 48, 3), 90, np.uint8), "wrist": np.full((24, 24, 3), 7, np.uint8)},
                       proprio=proprio, instruction="pick up the cube", timestamp=stamp)


def run_episode(script: list[str]) -> list[dict]:
    """One RL episode; ``script[k]`` is what the human types before tick k ("" = hands off). Returns per tick the
    executed action, whether it was the human's, the target before and after, and the filter's events."""
    runner = PolicyRunner.load(PolicySourceConfig(preset="tiny"), ["front", "wrist"])
    link = InMemoryLearnerLink(pending_head=(1, fixed_head(runner.policy)))
    actor = RlActorCore(LatentActorRunner(runner, "pooled", explore=True, seed=0), link)
    clock = Clock()
    control = ControlCore(FrankaControlConfig(), clock=clock, wall_clock=lambda: 1000.0 + clock.now)
    keys = KeyboardSource()
    teleop = TeleopCore(TeleopConfig(), keys.read, clock=clock)
    frame = runner.action_spec.frame

    pose, width = Pose((0.45, 0.0, 0.35), DOWN), 0.08  # the arm at home, gripper open
    actor.begin_episode()
    ticks = []
    for typed in script:
        control.on_state(RobotState(pose, width, stamp=1000.0 + clock.now, received=clock.now))
        for key in typed:
            keys.on_key(key)
        step = teleop.step()
        human = step.action if step.intervening else None  # vla_policy: teleop's action while it intervenes
        action, intervened = actor.step(observation(pose, width, 1000.0 + clock.now), human)
        before = control.target
        target, result = control.on_command(Command("delta", action, frame=frame, stamp=1000.0 + clock.now,
                                                    intervention=intervened))
        assert target is not None and result.accepted
        # The teleop node hears the executed action on topics.action (vla_policy publishes it there).
        teleop.follow_gripper(float(action[-1]))
        ticks.append({"action": action.astype(np.float64), "human": intervened, "before": before,
                      "target": target, "events": result.events})
        for _ in range(5):  # franka_control ticks at 50 Hz between commands: re-sends, watchdog
            clock.now += PERIOD / 5
            control.tick()
        assert control.mode == "active"
        # The arm reaches the target by the next command (an ideal tracker: the measured pose is the target).
        pose, width = target.pose, 0.08 * (1.0 - target.gripper)
    return ticks


def implied(before, action: np.ndarray, frame: str) -> np.ndarray:
    """Where a delta action moves a target in position (franka_control integrates deltas on its target)."""
    rotation = quaternion_to_matrix(before.pose.orientation) if frame == "ee" else np.eye(3)
    return before.pose.position + rotation @ action[:3]


def test_takeover_and_release_move_the_target_exactly_as_the_actions_say():
    policy_ticks, human_ticks = 8, 6
    hold = round(TeleopConfig().intervention_hold / PERIOD)  # the takeover lasts this long after the last input
    script = [""] * policy_ticks + ["a"] * human_ticks + [""] * (hold + 8)  # "a": +y at full deflection
    ticks = run_episode(script)
    frame = PolicyRunner.load(PolicySourceConfig(preset="tiny"), ["front", "wrist"]).action_spec.frame

    flags = [t["human"] for t in ticks]
    takeover = flags.index(True)
    release = takeover + flags[takeover:].index(False)
    # held `hold` ticks after the last input (one more when the float clock lands exactly on the hold time)
    assert takeover == policy_ticks and release - takeover - human_ticks in (hold, hold + 1)
    assert not any(flags[release:])
    config = FrankaControlConfig().safety

    for k, tick in enumerate(ticks[1:], start=1):
        before, target, action = tick["before"], tick["target"], tick["action"]
        assert before == ticks[k - 1]["target"]  # each command starts from the last target, never a stale one
        assert tick["events"] == (), (k, tick["events"])  # nothing was clipped: the step is the action's
        np.testing.assert_allclose(target.pose.position, implied(before, action, frame), atol=1e-9, err_msg=str(k))
        step = np.linalg.norm(target.pose.position - before.pose.position)
        assert step <= min(config.max_translation_per_step, np.linalg.norm(action[:3])) + 1e-9
        assert quaternion_angle(target.pose.orientation, before.pose.orientation) < 1e-5
        assert target.gripper == pytest.approx(action[-1])

    policy_action = ticks[takeover - 1]["action"]
    human_action = ticks[takeover]["action"]
    assert policy_action[0] > 0.005 and abs(human_action[0]) < 1e-9 and abs(human_action[1]) > 0.01
    # The gripper the policy closed stays closed through the takeover and the release: the human pressed no button.
    closed = ticks[takeover - 1]["target"].gripper
    assert closed > 0.99
    assert [t["target"].gripper for t in ticks[takeover:]] == pytest.approx([closed] * (len(ticks) - takeover))
    # While the human holds the takeover without moving, the arm stands still (zero deltas), then the policy resumes
    # from where the human left it.
    for tick in ticks[takeover + human_ticks:release]:
        assert np.allclose(tick["target"].pose.position, tick["before"].pose.position, atol=1e-12)
    assert ticks[release]["before"] == ticks[release - 1]["target"]
    assert ticks[release]["action"][0] == pytest.approx(policy_action[0])


def test_a_takeover_that_opens_the_gripper_does_so_by_the_human_s_button_only():
    policy_ticks = 4
    script = [""] * policy_ticks + ["a", "a ", "a"] + [""] * 2  # the human moves, then toggles the gripper open
    ticks = run_episode(script)
    grippers = [t["target"].gripper for t in ticks]
    closed = grippers[policy_ticks - 1]
    assert closed > 0.99 and grippers[policy_ticks] == pytest.approx(closed)  # the takeover itself keeps it
    assert grippers[policy_ticks + 1] == 0.0 and grippers[policy_ticks + 2] == 0.0  # the human's toggle opens it


def test_teleop_follows_the_commanded_gripper_only_while_nobody_intervenes():
    clock = Clock()
    keys = KeyboardSource()
    teleop = TeleopCore(TeleopConfig(), keys.read, clock=clock)
    assert teleop.follow_gripper(0.9) and teleop.step().action[6] == pytest.approx(0.9)
    assert not teleop.follow_gripper(float("nan")) and teleop.gripper == pytest.approx(0.9)
    keys.on_key("w")
    assert teleop.step().intervening
    assert not teleop.follow_gripper(0.0)  # the human owns the gripper during a takeover
    assert teleop.step().action[6] == pytest.approx(0.9)
    keys.on_key(" ")  # toggle: from the followed (closed) state to open
    assert teleop.step().action[6] == 0.0
    clock.now += TeleopConfig().intervention_hold + 0.01
    assert not teleop.step().intervening and teleop.follow_gripper(1.0) and teleop.gripper == 1.0


# ------------------------------------------------------------------------------------------------- over DDS
def test_the_teleop_node_takes_over_with_the_gripper_the_robot_was_commanded():
    """The teleop node over real DDS (private network namespace): it hears the policy's commands on topics.action and
    its first intervening action keeps their (closed) gripper."""
    run_isolated(teleop_follows_body, timeout=90)


def teleop_follows_body() -> None:
    import time

    import rclpy
    from hid_standin import StandInHidDevice, translation_report
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import JointState

    from irevla.robot.config import SpaceMouseConfig
    from irevla.robot.conversions import action_to_joint_state, action_values_from_joint_state
    from irevla.robot.nodes.teleop import TeleopNode
    from irevla.robot.ros_edge import COMMAND_QOS
    from irevla.robot.teleop import ACTION_NAMES

    rclpy.init()
    device = StandInHidDevice()
    mapping = SpaceMouseConfig(axis_order=(0, 1, 2, 3, 4, 5), axis_signs=(1.0,) * 6, deadband=0.1)
    teleop = TeleopNode(TeleopConfig(device="spacemouse", spacemouse=mapping), hid_device=device)
    probe = Probe()
    probe.watch(JointState, "/irevla/teleop/action", keep=True)
    policy = probe.create_publisher(JointState, "/irevla/action", COMMAND_QOS)
    executor = spin_in_background([teleop, probe])
    try:
        def teleop_actions():
            return [action_values_from_joint_state(m, ACTION_NAMES) for _, m in
                    probe.history.get("/irevla/teleop/action", [])]

        def policy_closed_the_gripper():  # vla_policy's commands to franka_control, gripper closed
            policy.publish(action_to_joint_state([0.005, 0, 0, 0, 0, 0, 0.97], ACTION_NAMES, time.time(), "base",
                                                 policy_version=1, intervention=False))
            actions = teleop_actions()
            return actions and actions[-1][0][6] == pytest.approx(0.97)

        probe.wait_for(policy_closed_the_gripper, 20, "teleop to follow the commanded gripper", period=0.1)
        device.push(translation_report(350, 0, 0))  # the human takes over: full +x, no button
        probe.wait_for(lambda: any(meta["meta/intervention"] == 1.0 for _, meta in teleop_actions()), 10,
                       "an intervening action")
        taking_over = [values for values, meta in teleop_actions() if meta["meta/intervention"] == 1.0]
        assert taking_over[0][0] > 0.019 and taking_over[0][6] == pytest.approx(0.97)  # still closed
    finally:
        executor.shutdown(timeout_sec=1.0)
        teleop.close()
        rclpy.shutdown()
