"""`evaluate_checkpoint`: a saved policy evaluated in worker processes gives the episodes of the in-process evaluation.

One real run with two spawned workers (each loads the checkpoint and steps its own MuJoCo envs): the same seeds, the
same outcomes and steps per seed, the same recorded episodes bit for bit, and a progress call per episode."""

import numpy as np
import pytest
import torch
from test_rollout import _policy_for

from irevla.data.store import EpisodeStore
from irevla.errors import MissingFileError
from irevla.policy.checkpoint import save_policy
from irevla.policy.rollout import (
    AUTO_WORKERS_MIN_STEPS,
    EVAL_SEED_START,
    MAX_AUTO_WORKERS,
    EvalTask,
    available_cores,
    evaluate_checkpoint,
    resolve_workers,
)

TASKS = [EvalTask("reach-v3"), EvalTask("reach-v3", variation="hand:0.04,0,0")]


def test_two_workers_run_the_episodes_of_one_process(tmp_path):
    torch.manual_seed(0)
    save_policy(_policy_for("reach-v3"), tmp_path / "ckpt")
    # batches of 2 seeds: 2 per task, 4 for the 2 workers (which run them on envs that ran other batches before)
    kwargs = dict(episodes=3, max_episode_steps=6, parallel_envs=2)
    ended = []
    one = evaluate_checkpoint(tmp_path / "ckpt", TASKS, workers=1, record_dir=tmp_path / "one", **kwargs)
    two = evaluate_checkpoint(tmp_path / "ckpt", TASKS, workers=2, record_dir=tmp_path / "two",
                              on_episode=lambda *event: ended.append(event), **kwargs)
    seeds = list(range(EVAL_SEED_START, EVAL_SEED_START + 3))
    assert [t.task for t in two.tasks] == ["reach-v3", "reach-v3"]
    for a, b in zip(one.tasks, two.tasks, strict=True):
        assert a.seeds == b.seeds == seeds and a.outcomes == b.outcomes
        assert a.episodes == b.episodes == 3 and a.steps == b.steps == 18
    assert sorted((index, seed) for index, seed, _, _ in ended) == [(i, s) for i in range(2) for s in seeds]
    assert all(steps == 6 for *_, steps in ended)

    def by_key(directory):
        return {(e.metadata["variation"], e.metadata["seed"]): e for e in EpisodeStore(directory).episodes()}

    serial, parallel = by_key(tmp_path / "one"), by_key(tmp_path / "two")
    assert sorted(parallel) == sorted(serial) and len(serial) == 6
    for key, episode in serial.items():
        np.testing.assert_array_equal(parallel[key].actions, episode.actions)
        np.testing.assert_array_equal(parallel[key].proprio, episode.proprio)
        for camera, frames in episode.images.items():
            np.testing.assert_array_equal(parallel[key].images[camera], frames)
    # the variation moved the hand: the two tasks' episodes of a seed differ
    assert not np.array_equal(serial[("", EVAL_SEED_START)].proprio[0],
                              serial[("hand:0.04,0,0", EVAL_SEED_START)].proprio[0])


def test_a_missing_checkpoint_fails_before_any_worker_starts(tmp_path):
    with pytest.raises(MissingFileError):
        evaluate_checkpoint(tmp_path / "none", TASKS, episodes=4, workers=2)


def test_worker_counts():
    # explicit: at most one per episode
    assert resolve_workers(3, tasks=5, episodes=30, max_episode_steps=200) == 3
    assert resolve_workers(8, tasks=1, episodes=3, max_episode_steps=200) == 3
    # auto: in this process for a short evaluation, else one per core (at most MAX_AUTO_WORKERS)
    assert resolve_workers("auto", tasks=3, episodes=1, max_episode_steps=10) == 1
    short = AUTO_WORKERS_MIN_STEPS // 200 - 1
    assert resolve_workers("auto", tasks=1, episodes=short, max_episode_steps=200) == 1
    assert resolve_workers("auto", tasks=5, episodes=30, max_episode_steps=200) == \
        min(available_cores(), MAX_AUTO_WORKERS)
    for wrong in (0, -1, "many", True):
        with pytest.raises(ValueError, match="workers"):
            resolve_workers(wrong, tasks=1, episodes=1, max_episode_steps=None)
