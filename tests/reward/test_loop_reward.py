"""`irevla iterate` with ``rl.reward.source: classifier``: stage 1 in real Meta-World with the learner in its own
process, every episode labelled by the detector, the simulator's truth recorded beside it, and the report saying how
the detector did; a detector trained on another VLM stops the stage before anything runs."""

from __future__ import annotations

import json

import pytest
from success_factory import save_tiny_policy, write_success_data

from irevla.config import ConfigError, validate_config
from irevla.data.store import EpisodeStore
from irevla.iterate.config import IterateConfig
from irevla.iterate.loop import run_iterate
from irevla.reward.detector import DetectorError
from irevla.reward.train import train_detector

pytest.importorskip("jax")
pytest.importorskip("metaworld")
CAMERA = "corner2"


def _config(root, detector, policy) -> dict:
    return {"run_dir": str(root / "run"), "family": "metaworld", "init": str(policy), "expert_tasks": [],
            "rl_tasks": [{"task": "button-press-v3"}], "stage2": {"skip": True},
            "rl": {"demo_rollouts": 1, "demo_rollout_attempts": 1, "expert_demos": False, "max_env_steps": 40,
                   "max_episode_steps": 10, "final_rollouts": 1,
                   "reward": {"source": "classifier", "detector": str(detector)},
                   "learner": {"warmup_transitions": 10, "publish_every": 2, "snapshot_every_s": 5.0,
                               "sac": {"num_critics": 2, "batch_size": 8}}},
            "eval": {"episodes": 1, "max_episode_steps": 10}}


@pytest.mark.slow
def test_stage1_labelled_by_a_detector(tmp_path):
    policy = save_tiny_policy(tmp_path / "policy", camera=CAMERA)
    data = write_success_data(tmp_path / "data", successes=8, failures=8, camera=CAMERA)
    train_detector([data], policy, tmp_path / "detector", target_precision=0.9, epochs=60, progress=False,
                   log=lambda _: None)
    with pytest.raises(ConfigError, match="source classifier needs detector"):
        validate_config({**_config(tmp_path, "", policy), "rl": {"reward": {"source": "classifier"}}}, IterateConfig)
    other = save_tiny_policy(tmp_path / "other", seed=3, camera=CAMERA)
    with pytest.raises(DetectorError, match="field 'vlm'"):
        run_iterate(validate_config(_config(tmp_path / "mismatch", tmp_path / "detector", other), IterateConfig),
                    log=lambda _: None)
    assert not (tmp_path / "mismatch" / "run" / "rl-1" / "learner").exists()  # stopped before the learner started

    config = validate_config(_config(tmp_path, tmp_path / "detector", policy), IterateConfig)
    state = run_iterate(config, log=lambda _: None)
    out = state.output("rl-1")
    history = json.loads((tmp_path / "run" / "rl-1" / "actor.json").read_text())["history"]
    assert history and all(h["source"] == "classifier" for h in history)
    assert all({"env_success", "false_success", "missed_success"} <= set(h) for h in history)
    reward = out["reward"]
    assert reward["source"] == "classifier" and reward["episodes"] == len(history)
    assert reward["declared"] == sum(h["success"] for h in history)
    for episode in EpisodeStore(tmp_path / "run" / "d_rl").episodes():
        if "final_rollout" not in episode.metadata:  # stage-1 episodes: labelled by the detector
            assert episode.metadata["success_source"] == "classifier"
            assert "env_success_at_decision" in episode.metadata
    assert "labelled by the success detector (classifier)" in (tmp_path / "run" / "report.md").read_text()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "rl-1" / "metrics.jsonl").read_text().splitlines()]
    assert any("episode/false_success" in m for m in metrics)
