"""LatentReplay: next observations by index, episode boundaries, the ring's wrap, snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from irevla.learner.replay import LatentReplay, ReplayError


def _obs(value: float, shape=(3, 4)):
    return np.full(shape, value, np.float16), np.ones(shape[0], bool), np.full(2, value, np.float32)


def _episode(replay, start: float, steps: int, success: bool):
    for t in range(steps):
        latent, mask, proprio = _obs(start + t)
        replay.add_step(latent, mask, proprio, np.full(1, start + t, np.float32))
    latent, mask, proprio = _obs(start + steps)
    replay.end_episode(latent, mask, proprio, reward=float(success), terminal=success)


def test_next_observation_is_the_following_step_and_boundaries_are_respected():
    replay = LatentReplay(100, (3, 4), proprio_dim=2, action_dim=1)
    _episode(replay, 0, 3, success=True)  # slots 0..3 (3 final)
    _episode(replay, 10, 2, success=False)  # slots 4..6 (6 final)
    assert len(replay) == 5
    assert list(replay.valid_indices()) == [0, 1, 2, 4, 5]
    batch = replay.gather(replay.valid_indices())
    np.testing.assert_array_equal(batch["next_proprio"][:, 0] - batch["proprio"][:, 0], 1.0)
    # Sparse reward: only the last step of a successful episode; success is terminal, a time limit is not.
    np.testing.assert_array_equal(batch["reward"], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(batch["terminal"], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(batch["action"][:, 0], [0, 1, 2, 10, 11])
    assert batch["latent"].dtype == np.float16 and batch["mask"].shape == (5, 3)
    # A final observation is never the start of a transition, across many random draws.
    sampled = replay.sample_indices(np.random.default_rng(0), 1000)
    assert not set(sampled.tolist()) & {3, 6}


def test_the_ring_wrap_never_links_observations_of_different_ages():
    replay = LatentReplay(7, (3, 4), proprio_dim=2, action_dim=1)
    for e in range(20):
        _episode(replay, 100 * e, 1 + e % 4, success=e % 2 == 0)
        batch = replay.gather(replay.valid_indices())
        # Every sampleable transition links step t to step t + 1 of the same episode.
        np.testing.assert_array_equal(batch["next_proprio"][:, 0] - batch["proprio"][:, 0], 1.0)
        np.testing.assert_array_equal(batch["action"][:, 0], batch["proprio"][:, 0])
    assert replay.size == 7


def test_episode_longer_than_the_ring_keeps_only_consistent_transitions():
    replay = LatentReplay(5, (3, 4), proprio_dim=2, action_dim=1)
    _episode(replay, 0, 12, success=True)
    batch = replay.gather(replay.valid_indices())
    assert len(replay) == 4
    np.testing.assert_array_equal(batch["next_proprio"][:, 0] - batch["proprio"][:, 0], 1.0)
    assert batch["reward"].sum() == 1.0


def test_snapshot_round_trip_and_continue_writing(tmp_path):
    replay = LatentReplay(9, (3, 4), proprio_dim=2, action_dim=1)
    for e in range(4):
        _episode(replay, 100 * e, 2, success=True)
    latent, mask, proprio = _obs(999)
    replay.add_step(latent, mask, proprio, np.zeros(1, np.float32))  # an open episode at snapshot time
    path = replay.save(tmp_path / "online.safetensors")
    loaded = LatentReplay.load(path)
    assert loaded.state_summary() == replay.state_summary()
    # The reload unrolls the ring oldest-first: same transitions, possibly other slots.
    before, after = replay.gather(replay.valid_indices()), loaded.gather(loaded.valid_indices())
    order_before, order_after = np.argsort(before["proprio"][:, 0]), np.argsort(after["proprio"][:, 0])
    for key, value in before.items():
        np.testing.assert_array_equal(after[key][order_after], value[order_before])
    _episode(loaded, 500, 2, success=False)  # the reload closed the open episode; writing goes on
    batch = loaded.gather(loaded.valid_indices())
    np.testing.assert_array_equal(batch["next_proprio"][:, 0] - batch["proprio"][:, 0], 1.0)
    # A larger ring can take a partly filled snapshot.
    bigger = LatentReplay.load(path, capacity=50)
    assert len(bigger) == len(replay)


def test_bad_input_and_bad_snapshots_raise_clear_errors(tmp_path):
    replay = LatentReplay(10, (3, 4), proprio_dim=2, action_dim=1)
    latent, mask, proprio = _obs(0)
    with pytest.raises(ReplayError, match="latent shape"):
        replay.add_step(np.zeros((2, 4)), mask, proprio, np.zeros(1))
    with pytest.raises(ReplayError, match="NaN"):
        replay.add_step(latent, mask, proprio, np.array([np.nan]))
    with pytest.raises(ReplayError, match="no episode is open"):
        replay.end_episode(latent, mask, proprio, 0.0, False)
    with pytest.raises(ReplayError, match="no complete transition"):
        replay.sample(np.random.default_rng(0), 4)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a snapshot")
    with pytest.raises(ReplayError, match="bad.safetensors"):
        LatentReplay.load(bad)
    with pytest.raises(ReplayError, match="not found"):
        LatentReplay.load(tmp_path / "missing.safetensors")


def test_add_episode_and_pooled_latents():
    replay = LatentReplay(50, (8,), proprio_dim=2, action_dim=1)
    assert not replay.with_mask
    replay.add_episode(np.zeros((4, 8), np.float16), None, np.arange(8, dtype=np.float32).reshape(4, 2),
                       np.zeros((3, 1), np.float32), success=True)
    assert len(replay) == 3 and "mask" not in replay.gather(replay.valid_indices())
    with pytest.raises(ReplayError, match="expected 3 observations"):
        replay.add_episode(np.zeros((2, 8)), None, np.zeros((2, 2)), np.zeros((2, 1)), success=False)
