"""The reward sources behind one interface, and the loop's stage-1 episode with each: the env's success, and a
detector that decides while the real Meta-World env's own success is only recorded."""

from __future__ import annotations

import numpy as np
import pytest
from success_factory import save_tiny_policy, success_episode, write_success_data

from irevla.data.episode import EpisodeBuilder
from irevla.iterate.actor import DetectorDecides, run_rl_episode
from irevla.policy.checkpoint import load_policy
from irevla.policy.latent_actor import LatentActor
from irevla.reward.detector import DetectorError, SuccessDetector
from irevla.reward.features import FrameEncoder
from irevla.reward.sources import (
    ClassifierHumanReward,
    ClassifierReward,
    EnvReward,
    HumanReward,
    Review,
    Verdict,
    make_reward_source,
)
from irevla.reward.train import train_detector
from irevla.transport.messages import InMemoryLearnerLink

CAMERA = "corner2"


@pytest.fixture(scope="module")
def detector_and_policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    policy = save_tiny_policy(root / "policy", camera=CAMERA)
    data = write_success_data(root / "data", successes=10, failures=10, camera=CAMERA)
    train_detector([data], policy, root / "detector", target_precision=0.95, epochs=120, progress=False,
                   log=lambda _: None)
    return SuccessDetector.load(root / "detector"), policy


def _frames(policy_dir, episode) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pooled hidden states, proprio) of every frame, as the actor hands them to a source."""
    latent, proprio = FrameEncoder(load_policy(policy_dir)).episode(episode)
    return list(zip(latent, proprio, strict=True))


def test_env_and_human_sources():
    env = EnvReward()
    assert env.observe(3, env_success=False) is None
    assert env.observe(4, env_success=True) == Verdict(True, "env", 4, env_success=True)
    with pytest.raises(ValueError, match="a robot has none"):
        env.observe(1)
    assert env.time_up(9) == Verdict(False, "env", 9)
    human = HumanReward()
    assert human.observe(1) is None
    human.label(True)
    assert human.observe(2) == Verdict(True, "human", 2)
    assert human.observe(3) is None  # a label ends one episode only
    with pytest.raises(ValueError, match="one of"):
        make_reward_source("oracle")
    with pytest.raises(ValueError, match="needs a success detector"):
        make_reward_source("classifier")


def test_classifier_ends_a_success_at_its_first_success_frame(detector_and_policy):
    detector, policy = detector_and_policy
    source = ClassifierReward(detector)
    episode = success_episode(77, success=True, n_steps=10, success_frames=3, camera=CAMERA)
    frames = _frames(policy, episode)
    source.start_episode()
    verdicts = [source.observe(t, features=f, proprio=p, env_success=bool(t >= 8)) for t, (f, p) in enumerate(frames)]
    fired = [t for t, v in enumerate(verdicts) if v is not None]
    assert fired and fired[0] == 9, source.probabilities  # frames 8..10 show the success; 2 frames confirm it
    verdict = verdicts[9]
    assert (verdict.success, verdict.source, verdict.env_success) == (True, "classifier", True)
    assert verdict.metadata()["success_source"] == "classifier" and 0 < verdict.metadata()["detector_p"] <= 1
    failure = _frames(policy, success_episode(78, success=False, camera=CAMERA))
    source.start_episode()
    assert all(source.observe(t, features=f, proprio=p) is None for t, (f, p) in enumerate(failure))
    features = {**detector.settings["features"], "inputs": ["latent", "proprio"]}
    reads_proprio = SuccessDetector(detector.net, {**detector.settings, "features": features})
    with pytest.raises(DetectorError, match="give the frame's proprio"):
        ClassifierReward(reads_proprio).observe(0, features=failure[0][0])


def test_classifier_plus_human_veto_confirm_timeout_and_missed(detector_and_policy):
    detector, policy = detector_and_policy
    now = [0.0]
    source = ClassifierHumanReward(detector, window_s=5.0, clock=lambda: now[0])
    frames = _frames(policy, success_episode(79, success=True, camera=CAMERA))

    def run() -> Verdict:
        source.start_episode()
        for t, (f, p) in enumerate(frames):
            verdict = source.observe(t, features=f, proprio=p)
            if verdict is not None:
                return verdict
        raise AssertionError("the classifier never fired")

    verdict = run()
    review = source.review(verdict)
    assert review.veto()
    vetoed = review.wait()
    assert (vetoed.success, vetoed.source, vetoed.disagreement) == (False, "human", "veto")
    assert vetoed.metadata()["human_labels"] == [{"frame": verdict.frame, "success": False}]
    review = source.review(run())
    review.confirm()
    assert review.wait().source == "classifier+human" and review.wait().success
    review = source.review(run())
    now[0] += 6.0  # nobody answered within the window: the classifier's verdict stands
    assert review.wait() == verdict and not review.veto()
    # a human ends the episode as a success before the classifier saw it: a label for the next detector
    source.start_episode()
    source.observe(0, features=frames[0][0], proprio=frames[0][1])
    source.label(True)
    missed = source.observe(1, features=frames[1][0], proprio=frames[1][1])
    assert (missed.success, missed.source, missed.disagreement) == (True, "human", "missed")
    assert missed.human_labels == ({"frame": 1, "success": True},)
    assert isinstance(review, Review)


def _metaworld_env(max_steps: int):
    pytest.importorskip("metaworld")
    from irevla.sim.registry import make_env_by_name

    return make_env_by_name("metaworld", "button-press-v3", cameras=(CAMERA,), image_size=32, max_episode_steps=max_steps)


def test_stage1_episode_with_a_detector_the_env_does_not_end_it(detector_and_policy, tmp_path):
    detector, policy_dir = detector_and_policy
    policy = load_policy(policy_dir)
    env = _metaworld_env(12)
    link = InMemoryLearnerLink()
    actor = LatentActor(policy, "pooled", seed=0)
    try:
        # env source: the episode runs to the time limit (an untrained head does not press the button)
        builder = EpisodeBuilder(env.task_spec, source="rl", round=1)
        verdict, steps, episode = run_rl_episode(env, actor, link, 0, seed=3, explore=True, builder=builder)
        assert (verdict.source, verdict.success, steps) == ("env", False, 12)
        assert episode.n_steps == 12 and episode.metadata["success_source"] == "env"
        # a detector whose threshold is 0 declares success as soon as it may (frame 1): the episode ends there,
        # labelled by the detector, with the env's truth recorded beside it
        always = SuccessDetector(detector.net, {**detector.settings, "threshold": 0.0, "confirm_frames": 1})
        wrapped = DetectorDecides(env)
        builder = EpisodeBuilder(env.task_spec, source="rl", round=1)
        verdict, steps, episode = run_rl_episode(wrapped, actor, link, 1, seed=4, explore=False, builder=builder,
                                                 reward=ClassifierReward(always))
        assert (verdict.source, verdict.success, verdict.frame, steps) == ("classifier", True, 1, 1)
        assert episode.success and episode.rewards[-1] == 1.0
        assert episode.metadata["env_success_at_decision"] is False and episode.metadata["env_success_seen"] is False
        # never fires: the time limit labels it
        never = SuccessDetector(detector.net, {**detector.settings, "threshold": 1.0})
        builder = EpisodeBuilder(env.task_spec, source="rl", round=1)
        verdict, steps, _ = run_rl_episode(wrapped, actor, link, 2, seed=5, explore=False, builder=builder,
                                           reward=ClassifierReward(never))
        assert (verdict.success, steps) == (False, 12)
    finally:
        env.close()
    ends = link.episode_ends
    assert len(link.transitions) == 12 + 1 + 12
    assert [e.success for e in ends] == [False, True, False] and [e.steps for e in ends] == [12, 1, 12]
