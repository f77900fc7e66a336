"""vla_policy's rl_actor mode with a success detector as the reward source (issue 15 item 3, the robot side): the
actor core with a real tiny detector trained here on the frozen VLM of a real tiny policy (`LatentActorRunner`), and
the node over real DDS in the private network namespace, where a human vetoes the detector's success within the
review window."""

from __future__ import annotations

import json
import secrets

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("zmq", reason="the rl_actor mode needs pyzmq (the learner extra)")

from netns import run_isolated  # noqa: E402
from reward_helpers import SUCCESS_FROM, robot_success_episode, save_robot_policy, train_robot_detector  # noqa: E402

from irevla.data import read_episode  # noqa: E402
from irevla.data.store import EpisodeStore  # noqa: E402
from irevla.policy.checkpoint import load_policy  # noqa: E402
from irevla.reward.detector import SuccessDetector  # noqa: E402
from irevla.reward.features import FrameEncoder  # noqa: E402
from irevla.reward.labels import frame_labels  # noqa: E402
from irevla.reward.sources import ClassifierHumanReward, ClassifierReward  # noqa: E402
from irevla.robot.policy_runner import LatentActorRunner, PolicyRunner  # noqa: E402
from irevla.robot.rl_actor import DISAGREEMENTS_FILE, RlActorCore  # noqa: E402
from irevla.robot.rl_episodes import RlEpisodeRecorder  # noqa: E402
from irevla.transport.messages import InMemoryLearnerLink  # noqa: E402

torch.set_num_threads(1)
TOKEN = secrets.token_hex(32)
SEED = 101  # an episode the detector trained here scores cleanly (red block from observation 8)


class Clock:
    """The review window's clock, moved by hand: no sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("robot_detector")
    policy_dir = save_robot_policy(root / "policy")
    return SuccessDetector.load(train_robot_detector(root, policy_dir)), policy_dir


def actor_core(policy_dir, reward=None, record_dir=None, max_episode_steps=11):
    """11 steps: frame 10, the last success frame, is still judged (the detector may first fire there)."""
    runner = LatentActorRunner(PolicyRunner(load_policy(policy_dir), "test checkpoint"), "pooled", explore=False)
    link = InMemoryLearnerLink()
    recorder = None
    if record_dir is not None:
        recorder = RlEpisodeRecorder(EpisodeStore(record_dir), runner.action_spec, task="press-button",
                                     max_episode_steps=max_episode_steps, metadata={"actor_id": "arm-test"})
    return RlActorCore(runner, link, max_episode_steps=max_episode_steps, recorder=recorder, reward=reward), link


def offline_decision(detector, policy_dir, episode):
    """The frame the detector's rule picks on the whole episode, encoded offline."""
    latent, proprio = FrameEncoder(load_policy(policy_dir)).episode(episode)
    return detector.decide(detector.probabilities(detector.episode_features(latent, proprio)))


def run_until_no_action(core, episode):
    """Tick through `episode`'s observations until the core returns no action; (tick, frame)."""
    for t in range(episode.n_steps + 1):
        tick = core.tick(episode.observation(t))
        if tick.action is None:
            return tick, t
        assert not tick.intervention
    raise AssertionError("the reward source never ended the episode")


def disagreements(record_dir) -> list[dict]:
    path = record_dir / DISAGREEMENTS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_classifier_ends_the_episode_at_the_success_frame(trained, tmp_path):
    detector, policy_dir = trained
    core, link = actor_core(policy_dir, ClassifierReward(detector), tmp_path / "d_rl")
    episode = robot_success_episode(SEED, True)
    offline = offline_decision(detector, policy_dir, episode)
    assert offline is not None and offline >= SUCCESS_FROM  # the detector's own rule on the whole episode
    decoy = robot_success_episode(SEED, False, decoy=True)
    assert offline_decision(detector, policy_dir, decoy) is None

    core.begin_episode()
    tick, frame = run_until_no_action(core, episode)
    # online (one observation at a time) and offline (batched) scores differ in the last bits, and the threshold sits
    # near 1: the online decision falls on a success frame, not necessarily the same one
    assert SUCCESS_FROM <= frame <= 10 and not core.active and tick.review is None
    ended = tick.ended
    assert ended["success"] is True and ended["success_source"] == "classifier" and ended["steps"] == frame
    assert ended["success_frame"] == frame and ended["detector_p"] >= detector.threshold
    assert link.episode_ends[-1].success is True and link.episode_ends[-1].steps == frame
    assert len(link.transitions) == frame  # no action on the observation it fired on: the final one
    recorded = read_episode(ended["recorded"])
    assert recorded.success and recorded.n_steps == frame
    assert recorded.metadata["success_source"] == "classifier" and recorded.metadata["end"] == "classifier"
    assert np.array_equal(recorded.images["front"][-1], episode.images["front"][frame])

    # a failure that looks a little like success: the detector stays quiet, the time limit ends it
    core, link = actor_core(policy_dir, ClassifierReward(detector), tmp_path / "d_rl", max_episode_steps=10)
    core.begin_episode()
    for t in range(10):
        assert core.tick(decoy.observation(t)).action is not None
    assert core.time_up
    ended = core.end_at_time_limit(decoy.observation(10))
    assert ended["success"] is False and ended["success_source"] == "classifier" and ended["steps"] == 10
    assert "record_failures is false" in ended["not_recorded"]
    assert disagreements(tmp_path / "d_rl") == []


def test_classifier_human_a_veto_within_the_window_is_a_recorded_failure_with_the_human_label(trained, tmp_path):
    detector, policy_dir = trained
    clock = Clock()
    record_dir = tmp_path / "d_rl"
    core, link = actor_core(policy_dir, ClassifierHumanReward(detector, window_s=10.0, clock=clock), record_dir)
    core.begin_episode()
    tick, frame = run_until_no_action(core, robot_success_episode(SEED, True))
    assert frame >= SUCCESS_FROM and tick.ended is None and tick.review is not None
    assert core.reviewing and core.active and not core.time_up  # held: no action, no end yet
    assert link.episode_ends == []
    with pytest.raises(RuntimeError, match="review"):
        core.tick(robot_success_episode(SEED, True).observation(frame))
    with pytest.raises(RuntimeError, match="running"):
        core.begin_episode()
    clock.now = 9.0
    assert core.poll_review() is None  # the window is still open
    ended, answered = core.answer_review(False)  # ~/end_episode_failure: the veto
    assert answered and not core.active and not core.reviewing
    assert ended["success"] is False and ended["success_source"] == "human" and ended["disagreement"] == "veto"
    assert link.episode_ends[-1].success is False and link.episode_ends[-1].steps == frame

    # written although record_failures is false: the detector's best negative
    assert ended["recorded"] is not None
    recorded = read_episode(ended["recorded"])
    assert recorded.success is False and recorded.n_steps == frame
    assert recorded.metadata["human_labels"] == [{"frame": frame, "success": False}]
    assert recorded.metadata["disagreement"] == "veto" and recorded.metadata["end"] == "review"
    assert frame_labels(recorded)[frame] == 0  # what the next detector trains on
    (line,) = disagreements(record_dir)
    assert line["kind"] == "veto" and line["episode"] == 0 and line["frame"] == frame
    assert line["p"] == pytest.approx(ended["detector_p"]) and line["recorded"] == ended["recorded"]
    assert line["success"] is False and line["time"] > 0
    with pytest.raises(RuntimeError, match="no review"):
        core.answer_review(True)


def test_classifier_human_confirm_and_no_answer(trained, tmp_path):
    detector, policy_dir = trained
    clock = Clock()
    record_dir = tmp_path / "d_rl"
    core, link = actor_core(policy_dir, ClassifierHumanReward(detector, window_s=10.0, clock=clock), record_dir)
    episode = robot_success_episode(SEED, True)

    core.begin_episode()  # confirmed: a success both agree on
    run_until_no_action(core, episode)
    ended, answered = core.answer_review(True)
    assert answered and ended["success"] is True and ended["success_source"] == "classifier+human"
    assert "disagreement" not in ended and read_episode(ended["recorded"]).metadata["success_source"] == \
        "classifier+human"

    clock.now = 100.0
    core.begin_episode()  # nobody answers: after the window the detector's label stands
    run_until_no_action(core, episode)
    clock.now = 109.5
    assert core.poll_review() is None and core.reviewing
    clock.now = 110.0
    ended = core.poll_review()
    assert ended["success"] is True and ended["success_source"] == "classifier" and not core.reviewing
    assert read_episode(ended["recorded"]).metadata["end"] == "review"

    clock.now = 200.0
    core.begin_episode()  # an answer that comes after the window closed is too late
    run_until_no_action(core, episode)
    clock.now = 215.0
    ended, answered = core.answer_review(False)
    assert not answered and ended["success"] is True and ended["success_source"] == "classifier"
    assert [e.success for e in link.episode_ends] == [True, True, True]
    assert disagreements(record_dir) == []


def test_classifier_human_a_success_the_detector_missed(trained, tmp_path):
    detector, policy_dir = trained
    record_dir = tmp_path / "d_rl"
    core, _ = actor_core(policy_dir, ClassifierHumanReward(detector, window_s=10.0, clock=Clock()), record_dir)
    episode = robot_success_episode(SEED, True)
    core.begin_episode()
    for t in range(5):
        assert core.tick(episode.observation(t)).action is not None
    ended = core.human_label(episode.observation(5), True)  # ~/end_episode_success before the detector fired
    assert ended["success"] is True and ended["success_source"] == "human" and ended["disagreement"] == "missed"
    assert read_episode(ended["recorded"]).metadata["human_labels"] == [{"frame": 5, "success": True}]
    (line,) = disagreements(record_dir)
    assert line["kind"] == "missed" and line["frame"] == 5


def test_human_mode_is_as_before(trained, tmp_path):
    """The default source: the detector is not consulted, only the human's label and the time limit end an
    episode; the label's source is recorded."""
    _, policy_dir = trained
    core, link = actor_core(policy_dir, record_dir=tmp_path / "d_rl", max_episode_steps=4)
    episode = robot_success_episode(SEED, True)
    core.begin_episode()
    for t in range(4):
        assert core.tick(episode.observation(t)).action is not None
    assert core.time_up
    ended = core.end_at_time_limit(episode.observation(4))
    assert ended["success"] is False and ended["success_source"] == "human"
    core.begin_episode()
    for t in range(SUCCESS_FROM - 2, SUCCESS_FROM + 2):  # the red block is shown: nobody but the human decides
        action, intervention = core.step(episode.observation(t))
        assert action is not None and not intervention
    ended = core.human_label(episode.observation(SUCCESS_FROM + 2), True)
    assert ended["success"] is True and ended["success_source"] == "human" and "disagreement" not in ended
    assert ended["steps"] == 4 and [e.success for e in link.episode_ends] == [False, True]
    recorded = read_episode(ended["recorded"])
    assert recorded.metadata["end"] == "label" and recorded.metadata["success_source"] == "human"
    assert disagreements(tmp_path / "d_rl") == []


def test_a_classifier_reward_source_needs_a_detector():
    from pydantic import ValidationError

    from irevla.robot.config import RlActorConfig

    with pytest.raises(ValidationError, match="needs detector"):
        RlActorConfig(reward_source="classifier+human")
    assert RlActorConfig(reward_source="classifier", detector="runs/detector").review_window_s == 10.0


# --------------------------------------------------------------------------------------- the node, over DDS
def test_vla_policy_node_a_human_vetoes_the_detectors_success_within_the_review_window():
    run_isolated(classifier_human_node_body, timeout=240, extra_env={"IREVLA_LEARNER_TOKEN": TOKEN})


def firing_detector(root, policy_dir):
    """A detector trained for real on `policy_dir`'s VLM, its threshold set to 0 in detector.json (the loader hashes
    the weights file only): it fires at the first frame it may (frame 1) whatever the sim camera shows -- this test
    is about what the node does then."""
    directory = train_robot_detector(root, policy_dir)
    settings = json.loads((directory / "detector.json").read_text())
    (directory / "detector.json").write_text(json.dumps(settings | {"threshold": 0.0}))
    return directory


def another_vlms_detector(detector, directory):
    """The same detector, claiming to be trained on another VLM."""
    import shutil

    shutil.copytree(detector, directory)
    settings = json.loads((directory / "detector.json").read_text())
    (directory / "detector.json").write_text(json.dumps(settings | {"vlm": "sha256:" + "0" * 64}))
    return directory


def classifier_human_node_body() -> None:
    import tempfile
    import threading
    import time
    from pathlib import Path

    import rclpy
    from ros_probe import Probe, spin_in_background
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from irevla.config import ConfigError
    from irevla.robot.config import CamerasConfig, PolicySourceConfig, RlActorConfig, VLAPolicyConfig
    from irevla.robot.conversions import numpy_to_image, proprio_to_joint_state
    from irevla.robot.nodes.vla_policy import VLAPolicyNode
    from irevla.robot.ros_edge import SENSOR_QOS, STATE_QOS
    from irevla.transport.learner_side import LearnerServer
    from irevla.transport.messages import EpisodeEnd

    rclpy.init()
    server = LearnerServer("tcp://127.0.0.1:0")  # the token from $IREVLA_LEARNER_TOKEN, as the node's
    root = Path(tempfile.mkdtemp())
    policy_dir = save_robot_policy(root / "policy")
    detector = firing_detector(root, policy_dir)
    d_rl = root / "d_rl"

    def config(detector_dir) -> VLAPolicyConfig:
        return VLAPolicyConfig(
            mode="rl_actor", control_hz=10.0, policy=PolicySourceConfig(checkpoint=str(policy_dir)),
            cameras=CamerasConfig(names=("front",), image_topics=("/camera/front/color/image_raw",)),
            rl_actor=RlActorConfig(learner_address=server.address, actor_id="arm-test", max_episode_steps=80,
                                   explore=False, record_dir=str(d_rl), reward_source="classifier+human",
                                   detector=str(detector_dir), review_window_s=60.0))

    # a detector trained on another VLM stops the node at start, naming the file
    other = another_vlms_detector(detector, root / "other_detector")
    with pytest.raises(ConfigError, match=r"rl_actor\.detector: .*other_detector/detector\.json: field 'vlm'"):
        VLAPolicyNode(config(other), namespace="/other_vlm")

    node = VLAPolicyNode(config(detector))  # loads the checkpoint and connects to the learner in the background
    probe = Probe()
    probe.watch(JointState, "/irevla/action", keep=True)
    probe.watch(String, "/irevla/episode/event", keep=True)
    camera = probe.create_publisher(Image, "/camera/front/color/image_raw", SENSOR_QOS)
    state = probe.create_publisher(JointState, "/irevla/robot/state", STATE_QOS)

    def on_reset(request, response):
        response.success, response.message = True, "at home"
        return response

    probe.create_service(Trigger, "/irevla/control/reset_to_home", on_reset)
    stop = threading.Event()

    def sensors() -> None:
        while not stop.is_set():
            now = time.time()
            camera.publish(numpy_to_image(np.full((32, 32, 3), 90, np.uint8), "rgb8", now))
            state.publish(proprio_to_joint_state([0.5, 0, 0.3, 3.14, 0, 0, 0.08], now))
            time.sleep(0.05)

    feeder = threading.Thread(target=sensors, daemon=True)
    executor = spin_in_background([node, probe])
    feeder.start()
    items: list = []
    try:
        def events(kind: str) -> list[dict]:
            return [e for e in (json.loads(m.data) for _, m in probe.history.get("/irevla/episode/event", []))
                    if e["event"] == kind]

        def actions() -> int:
            return len(probe.history.get("/irevla/action", []))

        wait_for_ = probe.wait_for
        wait_for_(lambda: node.core is not None and node.link.connected, 120, "the policy and the learner link")
        assert node.core.reward.name == "classifier+human"
        response = probe.call(Trigger, "/vla_policy/start_episode")
        assert response.success, response.message

        (review,) = wait_for_(lambda: events("rl_episode_review"), 30, "the detector's verdict")
        assert review["episode"] == 0 and review["success_frame"] == 1 and review["window_s"] == 60.0
        assert node.core.reviewing and node.core.active
        time.sleep(0.3)  # what was published before the verdict has arrived
        held = actions()
        assert held == 1  # frame 0 was acted on; frame 1, where the detector fired, is the final observation
        time.sleep(0.7)
        assert actions() == held and not events("rl_episode_end")  # the arm holds while the human reviews
        assert not probe.call(Trigger, "/vla_policy/start_episode").success  # still running

        # the stand-in for the keyboard: the human presses "no" within the window
        keyboard_veto = probe.call(Trigger, "/vla_policy/end_episode_failure")
        assert keyboard_veto.success, keyboard_veto.message
        assert "failure" in keyboard_veto.message and "disagreement: veto" in keyboard_veto.message
        (recorded,) = d_rl.glob("ep-*.h5")  # a failure, written although record_failures is false
        assert f"recorded to {recorded}" in keyboard_veto.message

        (end,) = wait_for_(lambda: events("rl_episode_end"), 10, "the episode's end event")
        assert end["success"] is False and end["success_source"] == "human" and end["disagreement"] == "veto"
        assert end["reason"] == "review" and end["success_frame"] == 1 and end["recorded"] == str(recorded)

        def ended():
            items.extend(server.poll(timeout_ms=20))
            return [r.item for r in items if isinstance(r.item, EpisodeEnd)]

        (learned,) = wait_for_(ended, 30, "the episode's end at the learner")
        assert learned.success is False and learned.steps == 1

        episode = read_episode(recorded)
        assert episode.success is False and episode.n_steps == 1
        assert episode.metadata["success_source"] == "human" and episode.metadata["disagreement"] == "veto"
        assert episode.metadata["human_labels"] == [{"frame": 1, "success": False}]
        (line,) = [json.loads(x) for x in (d_rl / DISAGREEMENTS_FILE).read_text().splitlines()]
        assert line["kind"] == "veto" and line["frame"] == 1 and line["episode"] == 0
        assert line["recorded"] == str(recorded)
        assert not node.core.active and not node.core.reviewing
        assert not probe.call(Trigger, "/vla_policy/end_episode_success").success  # over
    finally:
        stop.set()
        executor.shutdown(timeout_sec=1.0)
        node.close()
        server.close()
        rclpy.shutdown()
