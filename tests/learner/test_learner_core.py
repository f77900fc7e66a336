"""The learner core without a transport: episode assembly per actor, sparse reward, demo copies, snapshots."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

from point_reach import point_spec  # noqa: E402

from irevla.head_file import LOG_STD_NAME  # noqa: E402
from irevla.learner.config import LearnerConfig, SACConfig  # noqa: E402
from irevla.learner.sac import SACLearner  # noqa: E402
from irevla.transport.messages import EpisodeEnd, Transition, pooled_latent  # noqa: E402


def _send_episode(learner, actor, episode, steps, success, skip_step=None):
    rng = np.random.default_rng(episode)
    for t in range(steps):
        if t == skip_step:
            continue
        tokens, mask = pooled_latent(rng.normal(size=16).astype(np.float16))
        learner.ingest(Transition(episode, t, tokens, mask, np.full(2, t, np.float32),
                                  np.full(2, 0.5, np.float32), False, 0), actor)
    tokens, mask = pooled_latent(np.zeros(16, np.float16))
    learner.ingest(EpisodeEnd(episode, steps, success, tokens, mask, np.full(2, steps, np.float32)), actor)


def _learner(**overrides):
    config = LearnerConfig(sac=SACConfig(num_critics=2, batch_size=8, utd=1), warmup_transitions=4,
                           online_capacity=200, demo_capacity=200, **overrides)
    return SACLearner(point_spec(), config, actor_state=None)


def test_interleaved_actors_are_stored_as_whole_episodes_with_sparse_reward():
    learner = _learner()
    # Two actors' steps arrive interleaved; each episode is written contiguously when it ends.
    for t in range(3):
        for actor in ("a", "b"):
            tokens, mask = pooled_latent(np.full(16, t, np.float16))
            learner.ingest(Transition(7, t, tokens, mask, np.full(2, t, np.float32), np.full(2, 0.5, np.float32),
                                      False, 0), actor)
    for actor, success in (("a", True), ("b", False)):
        tokens, mask = pooled_latent(np.zeros(16, np.float16))
        learner.ingest(EpisodeEnd(7, 3, success, tokens, mask, np.full(2, 3, np.float32)), actor)
    batch = learner.online.gather(learner.online.valid_indices())
    np.testing.assert_array_equal(batch["next_proprio"][:, 0] - batch["proprio"][:, 0], 1.0)
    assert batch["reward"].tolist() == [0, 0, 1, 0, 0, 0]
    assert batch["terminal"].tolist() == [0, 0, 1, 0, 0, 0]
    # Env-unit actions (0.5 in a [-1, 1] spec) stored in unit space; the success was copied to the demo buffer.
    np.testing.assert_allclose(batch["action"], 0.5)
    assert len(learner.demo) == 3 and learner.successes == 1 and learner.episodes == 2


def test_an_episode_with_a_missing_step_is_not_stored():
    learner = _learner()
    _send_episode(learner, "a", 0, 5, True, skip_step=2)
    assert len(learner.online) == 0 and learner.incomplete_episodes == 1


def test_updates_follow_the_data_and_heads_carry_the_exploration_std(tmp_path):
    learner = _learner(updates_per_transition=0.5)
    assert learner.updates_allowed() == 0
    _send_episode(learner, "a", 0, 10, True)
    assert learner.updates_allowed() == 5
    for _ in range(learner.updates_allowed()):
        info = learner.update()
    assert learner.updates_allowed() == 0 and np.isfinite(list(info.values())).all()
    version, params = learner.head_message()
    assert version == 1 and params[LOG_STD_NAME].shape == (2,)
    assert all(name.startswith("mlp.") for name in params if name != LOG_STD_NAME)  # pooled: the MLP only

    learner.snapshot(tmp_path / "snap")
    restored = SACLearner.restore(tmp_path / "snap", learner.spec, learner.config)
    assert (restored.updates, restored.episodes, restored.successes) == (5, 1, 1)
    assert len(restored.online) == len(learner.online) and len(restored.demo) == len(learner.demo)
    _, restored_params = restored.head_message()
    for name, value in params.items():
        np.testing.assert_array_equal(restored_params[name], value)
