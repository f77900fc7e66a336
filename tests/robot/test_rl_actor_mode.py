"""vla_policy's rl_actor mode: the actor core over the real ZeroMQ transport (a `LearnerServer` in this process on
127.0.0.1, no DDS), its episode bookkeeping, and the node over real DDS in the private network namespace, recording
its successful episodes into the episode store (D_RL)."""

from __future__ import annotations

import secrets
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("zmq", reason="the rl_actor mode needs pyzmq (the learner extra)")
pytest.importorskip("torch", reason="LatentActor is torch (the policy extra)")

from netns import run_isolated  # noqa: E402

from irevla.head_file import LOG_STD_NAME  # noqa: E402
from irevla.robot.config import PolicySourceConfig  # noqa: E402
from irevla.robot.policy_runner import LatentActorRunner, PolicyRunner  # noqa: E402
from irevla.robot.rl_actor import RlActorCore  # noqa: E402
from irevla.spec import Observation  # noqa: E402
from irevla.transport.actor_side import ZmqLearnerLink  # noqa: E402
from irevla.transport.learner_side import LearnerServer  # noqa: E402
from irevla.transport.messages import EpisodeEnd, InMemoryLearnerLink, Transition  # noqa: E402

torch.set_num_threads(1)
TOKEN = secrets.token_hex(32)
FAST = {"heartbeat_s": 0.1, "ack_timeout_s": 1.0, "dead_after_s": 2.0}
HUMAN = np.array([0.05, -0.01, 0.0, 0.0, 0.0, 0.0, 1.0], np.float32)  # x beyond the 2 cm bound: clipped


def tiny_runner() -> PolicyRunner:
    return PolicyRunner.load(PolicySourceConfig(preset="tiny"), ["front", "wrist"])


def observation(value: int = 100) -> Observation:
    return Observation(images={"front": np.full((40, 48, 3), value % 256, np.uint8),
                               "wrist": np.full((24, 24, 3), 7, np.uint8)},
                       proprio=np.array([0.5, 0.0, 0.3, 3.1, 0.0, 0.0, 0.08], np.float32),
                       instruction="pick up the cube", timestamp=float(value))


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def constant_head(policy, bias: np.ndarray, log_std) -> dict[str, np.ndarray]:
    """A learner head message (pooled mode: mlp.* + the log-std) whose mean action is tanh(bias) everywhere."""
    params = {name: tensor.numpy() for name, tensor in policy.head_state().items() if name.startswith("mlp.")}
    params["mlp.out.weight"] = np.zeros_like(params["mlp.out.weight"])
    params["mlp.out.bias"] = np.asarray(bias, np.float32)
    params[LOG_STD_NAME] = np.broadcast_to(np.asarray(log_std, np.float32), (7,)).copy()
    return params


def from_unit(policy, unit: np.ndarray) -> np.ndarray:
    action = policy.normalizer.action_from_unit(torch.as_tensor(np.asarray(unit, np.float32))).numpy()
    return policy.action_spec.clip(action)


def unit_deviation(policy, actions: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The exploration noise behind actions = from_unit(tanh(bias + noise))."""
    unit = policy.normalizer.action_to_unit(torch.as_tensor(actions, dtype=torch.float32)).numpy()
    return np.arctanh(np.clip(unit, -0.999999, 0.999999)) - bias


def drain(server: LearnerServer, until, timeout: float = 30.0) -> list:
    got: list = []
    wait_for(lambda: got.extend(server.poll(timeout_ms=50)) or until(got), timeout, "items at the learner")
    server.commit()
    return got


# ---------------------------------------------------------------------------------------- over the transport
def test_core_streams_pooled_latents_and_the_label_to_a_real_learner_server():
    runner = tiny_runner()
    actor = LatentActorRunner(runner, "pooled", explore=False)
    with LearnerServer("tcp://127.0.0.1:0", TOKEN) as server, \
            ZmqLearnerLink(server.address, TOKEN, actor_id="arm-test", **FAST) as link:
        core = RlActorCore(actor, link)
        assert core.begin_episode() == 0
        deployed = runner.act(observation(10))
        action, intervened = core.step(observation(10))
        assert not intervened and np.allclose(action, deployed, atol=1e-5)  # explore off: the deployed VLA
        human, intervened = core.step(observation(20), human_action=HUMAN)
        assert intervened and human[0] == pytest.approx(0.02) and human[6] == 1.0
        core.step(observation(30))
        summary = core.end_episode(observation(40), success=True)
        assert summary == {"episode": 0, "steps": 3, "success": True, "interventions": 1, "policy_version": 0,
                           "sent": True}
        got = drain(server, lambda items: any(isinstance(r.item, EpisodeEnd) for r in items))

    assert {r.actor for r in got} == {"arm-test"}
    transitions = [r.item for r in got if isinstance(r.item, Transition)]
    (end,) = [r.item for r in got if isinstance(r.item, EpisodeEnd)]
    pooled_dim = runner.policy.head.token_learner.output_dim
    assert [t.step for t in transitions] == [0, 1, 2] and [t.intervention for t in transitions] == [False, True, False]
    for t, value in zip(transitions, (10, 20, 30), strict=True):
        assert t.latent_tokens.shape == (1, pooled_dim) and t.latent_tokens.dtype == np.float16
        assert t.latent_mask.tolist() == [True] and t.policy_version == 0
        tokens, mask = runner.encode(observation(value))  # the token learner's output on the VLM's latent
        with torch.no_grad():
            pooled = runner.policy.head.token_learner(torch.as_tensor(tokens)[None],
                                                      torch.as_tensor(mask)[None]).numpy()
        assert np.allclose(t.latent_tokens.astype(np.float32), pooled, atol=2e-3, rtol=2e-3)
    assert np.allclose(transitions[0].action, deployed) and np.allclose(transitions[1].action, human)
    assert end.success is True and end.steps == 3 and end.final_tokens.shape == (1, pooled_dim)
    assert np.allclose(end.final_proprio, observation(40).proprio)


def test_a_head_published_by_the_learner_drives_the_actions_and_its_log_std_the_exploration():
    runner = tiny_runner()
    actor = LatentActorRunner(runner, "pooled", explore=True, seed=3)
    policy = runner.policy
    bias = np.array([0.5, -0.3, 0.2, 0.0, 0.1, -0.2, 0.4], np.float32)
    with LearnerServer("tcp://127.0.0.1:0", TOKEN) as server, \
            ZmqLearnerLink(server.address, TOKEN, actor_id="arm-test", **FAST) as link:
        core = RlActorCore(actor, link)
        core.begin_episode()
        server.publish_head(1, constant_head(policy, bias, log_std=-20.0))  # no noise: the mean exactly
        t = 0

        def step():
            nonlocal t
            t += 1
            return core.step(observation(t))[0]

        wait_for(lambda: step() is not None and runner.version == 1, what="head 1 applied")
        assert np.allclose(step(), from_unit(policy, np.tanh(bias)), atol=1e-5)
        assert np.allclose(actor.log_std, -20.0)

        log_std = np.log(np.array([0.15, 0.6, 0.15, 0.6, 0.15, 0.6, 0.15], np.float32))
        server.publish_head(2, constant_head(policy, bias, log_std))
        wait_for(lambda: step() is not None and runner.version == 2, what="head 2 applied")
        assert np.allclose(actor.log_std, log_std)
        actions = np.stack([step() for _ in range(120)])
        core.end_episode(observation(t + 1), success=False)
        got = drain(server, lambda items: any(isinstance(r.item, EpisodeEnd) for r in items))

    noise = unit_deviation(policy, actions, bias)
    assert np.allclose(noise.mean(axis=0), 0.0, atol=0.2)
    assert np.allclose(noise.std(axis=0), np.exp(log_std), rtol=0.3), noise.std(axis=0)
    transitions = [r.item for r in got if isinstance(r.item, Transition)]
    versions = [tr.policy_version for tr in transitions]
    assert versions == sorted(versions) and versions[-1] == 2 and versions.count(2) >= 120
    assert np.allclose(np.stack([tr.action for tr in transitions[-120:]]), actions)  # what was executed is sent


def test_pink_noise_drifts_within_an_episode_and_is_drawn_anew_for_each_episode():
    """`rl_actor.noise_beta: 1`: the core starts each episode's noise sequence (`begin_episode`), the steps of one
    episode are correlated (a drift), the next episode's sequence is a new one; white noise has no correlation."""
    bias = np.array([0.3, -0.2, 0.1, 0.0, 0.1, -0.1, 0.2], np.float32)

    def episodes(noise_beta: float) -> list[np.ndarray]:
        runner = tiny_runner()
        link = InMemoryLearnerLink()
        link.pending_head = (1, constant_head(runner.policy, bias, log_std=np.log(0.1)))
        core = RlActorCore(LatentActorRunner(runner, "pooled", seed=5, noise_beta=noise_beta, noise_horizon=60),
                           link)
        noises = []
        for _ in range(2):
            core.begin_episode()
            actions = np.stack([core.step(observation(t))[0] for t in range(60)])
            core.end_episode(observation(61), success=False)
            noises.append(unit_deviation(runner.policy, actions, bias))
        return noises

    def lag1(noise: np.ndarray) -> float:
        return float(np.mean([np.corrcoef(noise[:-1, d], noise[1:, d])[0, 1] for d in range(noise.shape[1])]))

    pink, white = episodes(1.0), episodes(0.0)
    assert all(lag1(n) > 0.3 for n in pink), [lag1(n) for n in pink]
    assert all(abs(lag1(n)) < 0.3 for n in white), [lag1(n) for n in white]
    assert not np.allclose(pink[0], pink[1], atol=1e-3)  # a new sequence, not the last one replayed


# ----------------------------------------------------------------------------------------- the core's rules
def test_episode_rules_time_limit_empty_episodes_and_bad_heads():
    runner = tiny_runner()
    link = InMemoryLearnerLink()
    reports: list[str] = []
    core = RlActorCore(LatentActorRunner(runner, "tokens", explore=False), link, max_episode_steps=2,
                       report=reports.append)
    with pytest.raises(RuntimeError, match="begin_episode first"):
        core.step(observation())
    with pytest.raises(RuntimeError, match="no episode"):
        core.end_episode(observation(), success=True)
    assert core.begin_episode() == 0
    with pytest.raises(RuntimeError, match="end it first"):
        core.begin_episode()
    assert core.end_episode(observation(), success=True)["sent"] is False  # nothing to learn from: nothing sent
    assert link.transitions == [] and link.episode_ends == []

    core.begin_episode()
    link.pending_head = (7, {"mlp.out.bias": np.zeros(3, np.float32)})  # wrong shape: reported, not applied
    core.step(observation(1))
    assert runner.version == 0 and core.rejected_heads == 1 and "head version 7" in reports[0]
    core.step(observation(2))
    assert core.time_up
    with pytest.raises(RuntimeError, match="time limit"):
        core.step(observation(3))
    core.end_episode(observation(3), success=False)
    assert not core.time_up and [e.episode for e in link.episode_ends] == [1]
    tokens = link.transitions[0].latent_tokens  # tokens mode: the VLM's (m, d) latent with its mask
    assert tokens.ndim == 2 and tokens.shape[0] > 1 and tokens.dtype == np.float16
    assert link.transitions[0].latent_mask.shape == tokens.shape[:1]


def test_latent_actor_runner_acts_only_on_its_last_latent():
    actor = LatentActorRunner(tiny_runner(), "pooled")
    tokens, mask = actor.encode(observation())
    with pytest.raises(ValueError, match="last encode"):
        actor.act_from_latent(tokens.copy(), mask, observation().proprio)
    assert actor.action_spec.contains(actor.act_from_latent(tokens, mask, observation().proprio))


# --------------------------------------------------------------------------------------- the node, over DDS
def test_vla_policy_node_in_rl_actor_mode_runs_episodes_for_the_learner():
    run_isolated(rl_actor_node_body, timeout=240, extra_env={"IREVLA_LEARNER_TOKEN": TOKEN})


def rl_actor_node_body() -> None:
    import json
    import os
    import tempfile
    import threading
    from pathlib import Path

    import rclpy
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from irevla.config import ConfigError
    from irevla.data import read_episode
    from irevla.robot.config import CamerasConfig, RlActorConfig, VLAPolicyConfig
    from irevla.robot.conversions import (
        action_to_joint_state,
        action_values_from_joint_state,
        numpy_to_image,
        proprio_to_joint_state,
    )
    from irevla.robot.nodes.vla_policy import VLAPolicyNode
    from irevla.robot.ros_edge import COMMAND_QOS, SENSOR_QOS, STATE_QOS
    from irevla.robot.safety import DELTA_NAMES

    rclpy.init()
    server = LearnerServer("tcp://127.0.0.1:0")  # the token from $IREVLA_LEARNER_TOKEN, as the node's
    d_rl = Path(tempfile.mkdtemp()) / "d_rl"
    config = VLAPolicyConfig(mode="rl_actor", control_hz=10.0, cameras=CamerasConfig(
        names=("front",), image_topics=("/camera/front/color/image_raw",)), rl_actor=RlActorConfig(
        learner_address=server.address, actor_id="arm-test", max_episode_steps=80, explore=True,
        record_dir=str(d_rl), record_task="pick-cube", record_round=1))
    token = os.environ.pop("IREVLA_LEARNER_TOKEN")
    os.environ.pop("IREVLA_LEARNER_TOKEN_FILE", None)
    with pytest.raises(ConfigError, match="no learner token"):  # said at start, before loading the model
        VLAPolicyNode(config, namespace="/without_token")
    os.environ["IREVLA_LEARNER_TOKEN"] = token
    node = VLAPolicyNode(config)  # loads the tiny preset and connects to the learner in the background
    probe = Probe()
    probe.watch(JointState, "/irevla/action", keep=True)
    probe.watch(String, "/irevla/episode/event", keep=True)
    camera = probe.create_publisher(Image, "/camera/front/color/image_raw", SENSOR_QOS)
    state = probe.create_publisher(JointState, "/irevla/robot/state", STATE_QOS)
    teleop = probe.create_publisher(JointState, "/irevla/teleop/action", COMMAND_QOS)
    resets: list[float] = []

    def on_reset(request, response):
        resets.append(time.monotonic())
        response.success, response.message = True, "at home"
        return response

    probe.create_service(Trigger, "/irevla/control/reset_to_home", on_reset)
    human = {"intervening": False}
    stop = threading.Event()

    def sensors_and_teleop() -> None:
        while not stop.is_set():
            now = time.time()
            camera.publish(numpy_to_image(np.full((32, 32, 3), 90, np.uint8), "rgb8", now))
            state.publish(proprio_to_joint_state([0.5, 0, 0.3, 3.14, 0, 0, 0.08], now))
            teleop.publish(action_to_joint_state(HUMAN if human["intervening"] else np.zeros(7), DELTA_NAMES, now,
                                                 "base", intervention=human["intervening"]))
            time.sleep(0.05)

    feeder = threading.Thread(target=sensors_and_teleop, daemon=True)
    executor = spin_in_background([node, probe])
    feeder.start()
    items: list = []
    try:
        def actions():
            return [action_values_from_joint_state(m, DELTA_NAMES) for _, m in probe.history.get("/irevla/action", [])]

        def ended(episode: int):
            items.extend(server.poll(timeout_ms=20))
            return [r.item for r in items if isinstance(r.item, EpisodeEnd) and r.item.episode == episode]

        assert not probe.call(Trigger, "/vla_policy/end_episode_success").success  # nothing is running
        wait_for(lambda: node.core is not None and node.link.connected, 120, "the policy and the learner link")
        bias = np.array([0.3, 0.0, -0.2, 0.0, 0.0, 0.1, -0.5], np.float32)
        server.publish_head(3, constant_head(node.runner.runner.policy, bias, log_std=-20.0))
        wait_for(lambda: node.link.stats()["heads_received"] >= 1, 20, "head 3 at the actor")
        assert not actions()  # between episodes nothing is published

        response = probe.call(Trigger, "/vla_policy/start_episode")
        assert response.success and "episode 0" in response.message, response.message
        assert len(resets) == 1
        assert not probe.call(Trigger, "/vla_policy/start_episode").success  # one at a time
        wait_for(lambda: len(actions()) >= 5, 30, "the policy's actions")
        expected = from_unit(node.runner.runner.policy, np.tanh(bias))
        values, meta = actions()[-1]
        assert np.allclose(values, expected, atol=1e-5) and meta["meta/policy_version"] == 3
        assert meta["meta/intervention"] == 0.0
        human["intervening"] = True
        wait_for(lambda: actions()[-1][1]["meta/intervention"] == 1.0, 10, "an intervention")
        values, _ = actions()[-1]
        assert np.allclose(values, [0.02, -0.01, 0, 0, 0, 0, 1.0], atol=1e-6)  # the human's, clipped
        human["intervening"] = False
        wait_for(lambda: actions()[-1][1]["meta/intervention"] == 0.0, 10, "the policy back in control")
        response = probe.call(Trigger, "/vla_policy/end_episode_success")
        assert response.success, response.message
        (recorded,) = d_rl.glob("ep-*.h5")  # written before the service answered
        assert f"recorded to {recorded}" in response.message, response.message
        time.sleep(0.3)  # what was published before the end has arrived
        published = len(actions())

        (end,) = wait_for(lambda: ended(0), 30, "episode 0 at the learner")
        transitions = [r.item for r in items if isinstance(r.item, Transition) and r.item.episode == 0]
        assert end.success is True and end.steps == len(transitions) >= published
        assert {r.actor for r in items} == {"arm-test"}
        pooled_dim = node.runner.runner.policy.head.token_learner.output_dim
        assert all(t.latent_tokens.shape == (1, pooled_dim) and t.latent_mask.tolist() == [True]
                   for t in transitions)
        flagged = [t for t in transitions if t.intervention]
        assert flagged and all(np.allclose(t.action, [0.02, -0.01, 0, 0, 0, 0, 1.0]) for t in flagged)
        assert not transitions[-1].intervention and transitions[-1].policy_version == 3

        # D_RL: the same episode with its pixels, read back by the validating reader
        episode = read_episode(recorded)
        assert episode.source == "rl" and episode.success is True and episode.round == 1
        assert episode.task.name == "pick-cube" and episode.instruction == config.instruction
        assert episode.n_steps == end.steps and episode.images["front"].shape == (end.steps + 1, 32, 32, 3)
        assert (episode.images["front"] == 90).all() and np.allclose(episode.proprio[:, 0], 0.5)
        assert np.array_equal(episode.actions, np.stack([t.action for t in transitions]))
        assert episode.interventions.tolist() == [t.intervention for t in transitions]
        assert episode.rewards[-1] == 1.0 and episode.rewards[:-1].sum() == 0.0
        assert episode.metadata["policy_version"] == 3 and episode.metadata["actor_id"] == "arm-test"
        assert episode.metadata["end"] == "label" and episode.metadata["interventions"] == len(flagged)

        time.sleep(0.5)
        assert len(actions()) == published  # the episode is over: the arm is left to franka_control's hold

        # the time limit: the next episode ends by itself, unsuccessful, after max_episode_steps
        assert probe.call(Trigger, "/vla_policy/start_episode").success and len(resets) == 2
        (end,) = wait_for(lambda: ended(1), 90, "episode 1 to hit its time limit")
        assert end.success is False and end.steps == 80
        assert not probe.call(Trigger, "/vla_policy/end_episode_failure").success  # already over
        events = [json.loads(m.data) for _, m in probe.history["/irevla/episode/event"]]
        ends = [e for e in events if e["event"] == "rl_episode_end"]
        assert [(e["episode"], e["success"], e["reason"]) for e in ends] == [(0, True, "label"),
                                                                              (1, False, "time limit")]
        assert ends[0]["recorded"] == str(recorded)
        assert ends[1]["recorded"] is None and "record_failures is false" in ends[1]["not_recorded"]
        assert list(d_rl.glob("ep-*.h5")) == [recorded]  # failures stay out of D_RL
    finally:
        stop.set()
        executor.shutdown(timeout_sec=1.0)
        node.close()
        server.close()
        rclpy.shutdown()
