"""The robot's door to the VLA (PolicyRunner, tiny preset) and the RL actor seam with an in-memory learner link
(test_rl_actor_mode.py: the same over the real transport, and the node)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from irevla.config import ConfigError  # noqa: E402
from irevla.robot.config import PolicySourceConfig  # noqa: E402
from irevla.robot.policy_runner import PolicyRunner  # noqa: E402
from irevla.robot.rl_actor import InMemoryLearnerLink, RlActorCore  # noqa: E402
from irevla.spec import Observation  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runner() -> PolicyRunner:
    return PolicyRunner.load(PolicySourceConfig(preset="tiny"), ["front", "wrist"])


def observation(value: int = 100) -> Observation:
    return Observation(images={"front": np.full((40, 48, 3), value, np.uint8), "wrist": np.full((24, 24, 3), 7, np.uint8)},
                       proprio=np.array([0.5, 0.0, 0.3, 3.1, 0.0, 0.0, 0.08], np.float32),
                       instruction="pick up the cube", timestamp=1.0)


def test_tiny_preset_acts_within_the_robot_action_space(runner):
    action = runner.act(observation())
    assert action.shape == (7,) and action.dtype == np.float32 and runner.action_spec.contains(action)
    assert runner.info()["cameras"] == ["front", "wrist"] and runner.action_spec.frame == "base"


def test_latent_path_matches_the_direct_path(runner):
    tokens, mask = runner.encode(observation())
    assert tokens.ndim == 2 and mask.shape == tokens.shape[:1] and mask.dtype == bool
    assert np.allclose(runner.act_from_latent(tokens, mask, observation().proprio), runner.act(observation()),
                       atol=1e-5)


def test_missing_checkpoint_and_preset_none_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="preset is 'none'"):
        PolicyRunner.load(PolicySourceConfig(preset="none"), ["front"])
    with pytest.raises(FileNotFoundError):
        PolicyRunner.load(PolicySourceConfig(checkpoint=str(tmp_path / "nope")), ["front"])


def test_checkpoint_cameras_must_be_available(tmp_path, runner):
    from irevla.policy.checkpoint import save_policy

    save_policy(runner.policy, tmp_path / "policy")
    loaded = PolicyRunner.load(PolicySourceConfig(checkpoint=str(tmp_path / "policy")), ["front", "wrist", "side"])
    assert np.allclose(loaded.act(observation()), runner.act(observation()), atol=1e-6)
    with pytest.raises(ConfigError, match="missing \\['wrist'\\]"):
        PolicyRunner.load(PolicySourceConfig(checkpoint=str(tmp_path / "policy")), ["front"])


def test_rl_actor_core_streams_latents_marks_interventions_and_applies_heads(runner):
    link = InMemoryLearnerLink()
    actor = RlActorCore(runner, link)
    actor.begin_episode()
    policy_action, intervened = actor.step(observation(10))
    assert not intervened and runner.action_spec.contains(policy_action)
    human = np.array([0.05, 0, 0, 0, 0, 0, 1.0], np.float32)  # beyond the bounds: clipped
    action, intervened = actor.step(observation(20), human_action=human)
    assert intervened and action[0] == pytest.approx(0.02) and action[6] == 1.0
    head = {name: tensor.numpy() * 0.0 for name, tensor in runner.policy.head_state().items()}
    original = runner.policy.head_state()
    try:
        link.pending_head = (5, head)
        actor.step(observation(30))  # the new head is applied before this step acts: it carries version 5
        assert runner.version == 5
        actor.end_episode(observation(40), success=True)
        versions = [t.policy_version for t in link.transitions]
        assert versions == [0, 0, 5] and [t.intervention for t in link.transitions] == [False, True, False]
        assert link.transitions[0].latent_tokens.dtype == np.float16
        assert link.episodes == [{"episode": 0, "steps": 3, "success": True}]
    finally:
        runner.load_head_state({k: v.numpy() for k, v in original.items()}, 0)


def test_warm_up_compiles_before_the_first_control_step_and_keeps_every_path_exact():
    """`policy.compile` (vla_policy's parameter) compiles during warm-up on blank observations; afterwards act,
    encode and act_from_latent give what the eager policy gives. Traced with the eager backend here (a CPU)."""
    import torch._dynamo

    def load():
        return PolicyRunner.load(PolicySourceConfig(preset="tiny"), ["front", "wrist"])

    eager, compiled = load(), load()
    probe = observation(90)
    torch._dynamo.reset()
    assert compiled.warm_up("default", backend="eager") > 0
    np.testing.assert_array_equal(compiled.act(probe), eager.act(probe))
    tokens, mask = compiled.encode(probe)
    np.testing.assert_array_equal(tokens, eager.encode(probe)[0])
    np.testing.assert_array_equal(compiled.act_from_latent(tokens, mask, probe.proprio),
                                  eager.act_from_latent(tokens, mask, probe.proprio))
    torch._dynamo.reset()
