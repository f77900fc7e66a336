"""Closed-loop evaluation plumbing: `evaluate_policy` and `irevla policy eval` on a real simulated env."""

import json

import numpy as np
import pytest
import torch
from policy_factory import tiny_config
from test_sft_cli import run

from irevla.data.stats import stats_from_arrays
from irevla.data.store import EpisodeStore
from irevla.policy.checkpoint import save_policy
from irevla.policy.rollout import EVAL_SEED_START, evaluate_policy
from irevla.policy.vla import VLAPolicy
from irevla.sim.registry import make_env_by_name


def _policy_for(task_name, image_size=32):
    env = make_env_by_name("metaworld", task_name, image_size=image_size)
    task = env.task_spec
    env.close()
    rng = np.random.default_rng(0)
    stats = stats_from_arrays([rng.uniform(-1, 1, (20, 4))], [rng.normal(size=(21, 4))], task.action_spec.names,
                              task.observation_spec.proprio_names)
    return VLAPolicy.build(tiny_config(training="frozen"), task.action_spec, task.observation_spec, stats)


def test_evaluation_runs_seeded_episodes_and_records_them(tmp_path):
    policy = _policy_for("reach-v3")
    report = evaluate_policy(policy, ["reach-v3"], episodes=2, max_episode_steps=4, record_dir=tmp_path)
    result = report.tasks[0]
    assert result.episodes == 2 and result.steps == 8 and result.seeds == [EVAL_SEED_START, EVAL_SEED_START + 1]
    assert 0.0 <= report.success_rate <= 1.0 and "reach-v3" in report.format()
    episodes = list(EpisodeStore(tmp_path).episodes())
    assert len(episodes) == 2 and all(e.source == "rl" and e.n_steps == 4 for e in episodes)
    assert sorted(e.metadata["seed"] for e in episodes) == result.seeds
    assert all(policy.action_spec.contains(a) for e in episodes for a in e.actions)


def test_policy_eval_command(tmp_path, capsys):
    torch.manual_seed(0)
    save_policy(_policy_for("reach-v3"), tmp_path / "ckpt")
    assert run(["policy", "eval", str(tmp_path / "ckpt"), "--tasks", "reach-v3", "--episodes", "1", "--max-steps",
                "3", "--report", str(tmp_path / "report.json"), "--quiet"]) == 0
    assert "reach-v3" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tasks"][0]["episodes"] == 1 and report["tasks"][0]["steps"] == 3


def test_batched_evaluation_runs_the_same_episodes(tmp_path):
    """Envs stepped side by side with one act_batch call: the same seeds give the same recorded episodes as one env
    at a time, and more episodes than envs reuse each env (one reset per seed)."""
    torch.manual_seed(0)
    policy = _policy_for("reach-v3")
    kwargs = dict(episodes=5, max_episode_steps=6)
    one = evaluate_policy(policy, ["reach-v3"], record_dir=tmp_path / "one", **kwargs)
    batched = evaluate_policy(policy, ["reach-v3"], record_dir=tmp_path / "batched", parallel_envs=3, **kwargs)
    assert batched.tasks[0].seeds == one.tasks[0].seeds == list(range(EVAL_SEED_START, EVAL_SEED_START + 5))
    assert batched.tasks[0].outcomes == one.tasks[0].outcomes and batched.tasks[0].steps == one.tasks[0].steps == 30

    def by_seed(directory):
        return {e.metadata["seed"]: e for e in EpisodeStore(directory).episodes()}

    sequential, side_by_side = by_seed(tmp_path / "one"), by_seed(tmp_path / "batched")
    assert sorted(side_by_side) == sorted(sequential)
    for seed, episode in sequential.items():
        other = side_by_side[seed]
        np.testing.assert_allclose(other.actions, episode.actions, atol=1e-5)
        np.testing.assert_array_equal(other.proprio, episode.proprio)
        np.testing.assert_array_equal(other.observation(0).images[policy.cameras[0]],
                                      episode.observation(0).images[policy.cameras[0]])
    camera = policy.cameras[0]
    assert len({e.observation(0).images[camera].tobytes() for e in sequential.values()}) > 1  # seeds differ


def test_batched_evaluation_refuses_zero_envs():
    with pytest.raises(ValueError, match="parallel_envs"):
        evaluate_policy(_policy_for("reach-v3"), ["reach-v3"], episodes=1, parallel_envs=0)
