"""Train/val split by episode and action/proprio statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from episode_factory import make_episode, make_task
from hypothesis import given, settings
from hypothesis import strategies as st

from irevla.data.split import split_by_episode
from irevla.data.stats import DatasetStats, compute_stats
from irevla.data.store import EpisodeStore
from irevla.spec import ContractError


def fake_paths(n: int) -> list[Path]:
    return [Path(f"/data/ep-20250101T0000{i:02d}-{i:08x}.h5") for i in range(n)]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 60), fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_split_is_a_partition_by_episode(n: int, fraction: float, seed: int) -> None:
    paths = fake_paths(n)
    train, val = split_by_episode(paths, fraction, seed)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(paths)
    assert train == [p for p in paths if p in set(train)]  # input order kept
    if 0 < fraction < 1 and n >= 2:
        assert train and val
    assert (train, val) == split_by_episode(paths, fraction, seed)  # deterministic
    # Each episode is its own coin flip (that is what keeps the split stable as data grows): binomial spread.
    assert abs(len(val) - n * fraction) <= 4 * (n * fraction * (1 - fraction)) ** 0.5 + 1


def test_split_fraction_is_right_on_average() -> None:
    sizes = [len(split_by_episode(fake_paths(60), 0.2, seed=s)[1]) for s in range(200)]
    assert abs(np.mean(sizes) - 12) < 0.6


def test_split_ignores_order_and_directory_and_depends_on_seed() -> None:
    paths = fake_paths(40)
    _, val = split_by_episode(paths, 0.25, seed=3)
    _, val_reversed = split_by_episode(paths[::-1], 0.25, seed=3)
    moved = [Path("/elsewhere") / p.name for p in paths]
    _, val_moved = split_by_episode(moved, 0.25, seed=3)
    assert set(val) == set(val_reversed)
    assert {p.name for p in val} == {p.name for p in val_moved}
    assert set(val) != set(split_by_episode(paths, 0.25, seed=4)[1])
    # A copy of an episode in another directory lands on the same side as the original.
    train, val = split_by_episode(paths + moved, 0.25, seed=3)
    assert {p.name for p in train}.isdisjoint({p.name for p in val})


def test_split_accepts_episode_infos(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    for seed in range(6):
        store.write(make_episode(seed))
    train, val = split_by_episode(store.index(), 0.5, seed=0)
    assert train and val and len(train) + len(val) == 6
    assert {i.path for i in train}.isdisjoint({i.path for i in val})
    assert [i.path for i in val] == [p for p in split_by_episode(store.paths(), 0.5, seed=0)[1]]
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_episode(store.index(), 1.5)


def test_statistics_match_numpy(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    episodes = [make_episode(seed) for seed in range(5)]
    for episode in episodes:
        store.write(episode)
    actions = np.concatenate([e.actions for e in episodes]).astype(np.float64)
    proprio = np.concatenate([e.proprio for e in episodes]).astype(np.float64)

    for stats in (compute_stats(store.paths()), compute_stats(store.index()), compute_stats(episodes)):
        assert stats.n_episodes == 5 and stats.n_steps == len(actions)
        assert stats.action.count == len(actions) and stats.proprio.count == len(proprio) == len(actions) + 5
        assert stats.action.names == ("dx", "dy", "dz", "gripper")
        assert stats.proprio.names == make_task().observation_spec.proprio_names
        for array_stats, data in ((stats.action, actions), (stats.proprio, proprio)):
            np.testing.assert_allclose(array_stats.mean, data.mean(0), rtol=1e-12)
            np.testing.assert_allclose(array_stats.std, data.std(0), rtol=1e-12)
            np.testing.assert_array_equal(array_stats.min, data.min(0))
            np.testing.assert_array_equal(array_stats.max, data.max(0))
            np.testing.assert_allclose(array_stats.q01, np.quantile(data, 0.01, axis=0), rtol=1e-12)
            np.testing.assert_allclose(array_stats.q99, np.quantile(data, 0.99, axis=0), rtol=1e-12)


def test_statistics_json_round_trip(tmp_path: Path) -> None:
    stats = compute_stats([make_episode(seed) for seed in range(3)])
    path = stats.save(tmp_path / "stats.json")
    assert DatasetStats.load(path) == stats
    data = json.loads(path.read_text())
    assert data["format"] == "irevla-stats" and len(data["action"]["q99"]) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "other"}', "not an irevla statistics file"),
    ('{"format": "irevla-stats", "version": 9}', "statistics version 9 is not supported"),
    ('{"format": "irevla-stats", "version": 1, "n_episodes": 1, "n_steps": 1, "proprio": {}}', "missing key 'action'"),
])
def test_bad_statistics_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "stats.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        DatasetStats.load(path)
    assert str(path) in str(error.value)


def test_statistics_refuse_mixed_action_spaces() -> None:
    with pytest.raises(ContractError, match="differ from the first episode"):
        compute_stats([make_episode(1), make_episode(2, task=make_task(real_robot=True))])
    with pytest.raises(ValueError, match="no episodes"):
        compute_stats([])


def test_adding_episodes_never_moves_an_old_one_across_the_split():
    # iRe-VLA grows its datasets every round: last round's validation episodes must stay out of training.
    for seed in range(50):
        old_train, old_val = split_by_episode(fake_paths(20), val_fraction=0.1, seed=seed)
        new_train, new_val = split_by_episode(fake_paths(60), val_fraction=0.1, seed=seed)
        if len(old_val) > 1 and len(old_train) > 1:  # not the tiny-set fallback
            assert set(old_val) <= set(new_val) and set(old_train) <= set(new_train)
