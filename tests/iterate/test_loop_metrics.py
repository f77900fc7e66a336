"""The loop's ``logging`` section reaches every stage: the SFT stages' train.wandb / train.tensorboard, the learner
process's --logging file, and the evaluations' log (one point per round; wandb offline, one run for all rounds).
The stages themselves log in the end-to-end loop test (test_loop_resume.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from irevla.config import ConfigError, validate_config
from irevla.iterate.config import IterateConfig
from irevla.iterate.loop import _learner_command, _write_learner_logging, log_evaluation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_metrics_log import tensorboard_scalars, wandb_offline_history  # noqa: E402


def _config(run_dir: Path, **changes) -> IterateConfig:
    return validate_config({"run_dir": str(run_dir), "init": "some/policy", "sft_config": None,
                            "expert_tasks": [{"task": "push-left"}], "rl_tasks": [{"task": "push-left"}], **changes},
                           IterateConfig, "<test>")


def test_logging_reaches_the_sft_stages_and_the_learner(tmp_path):
    run_dir = tmp_path / "demo"
    plain = _config(run_dir)
    assert plain.logging.tensorboard and not plain.logging.wandb.enabled
    assert not plain.stage2_sft(1, "p").train.wandb.enabled and plain.stage2_sft(1, "p").train.tensorboard

    config = _config(run_dir, logging={"tensorboard": False, "wandb": {"enabled": True, "mode": "offline",
                                                                       "tags": ["t"]}})
    stage2 = config.stage2_sft(1, "p").train
    assert (stage2.wandb.enabled, stage2.wandb.name, stage2.wandb.group, stage2.wandb.tags) == \
        (True, "demo/stage2-1", "demo", ("t",))
    assert stage2.tensorboard is False
    stage_dir = run_dir / "rl-1"
    stage_dir.mkdir(parents=True)
    _write_learner_logging(stage_dir, config, run_dir)
    assert _learner_command(stage_dir, config)[-2:] == ["--logging", str(stage_dir / "logging.yaml")]
    learner = yaml.safe_load((stage_dir / "logging.yaml").read_text())
    assert learner["tensorboard"] is False
    assert (learner["wandb"]["enabled"], learner["wandb"]["name"], learner["wandb"]["group"]) == \
        (True, "demo/rl-1/learner", "demo")

    with pytest.raises(ConfigError, match="sft_overrides.train.wandb: the loop sets it from logging.wandb"):
        _config(run_dir, sft_overrides={"train.wandb.enabled": True})


def test_each_evaluation_is_one_point_and_a_rerun_replaces_it(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    run_dir = tmp_path / "demo"
    config = _config(run_dir, logging={"wandb": {"enabled": True, "mode": "offline"}})

    def outputs(rate: float) -> dict:
        return {"groups": {"expert": {"push-left": {"rate": 1.0}},
                           "rl": {"push-left[hand:0.06,0,0]": {"rate": rate}, "push-right": {"rate": 0.0}},
                           "unseen": {}}}

    log_evaluation(config, run_dir, 0, outputs(0.2))
    log_evaluation(config, run_dir, 1, outputs(0.4))
    log_evaluation(config, run_dir, 1, outputs(0.6))  # eval-1 rerun (interrupted before the state was written)
    records = [json.loads(line) for line in (run_dir / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1] and records[1]["success/rl/push-left[hand:0.06,0,0]"] == 0.6
    scalars = tensorboard_scalars(run_dir / "eval" / "tensorboard")
    assert scalars["success/rl/push-left_hand_0.06_0_0_"] == [(0, pytest.approx(0.2)), (1, pytest.approx(0.6))]
    assert scalars["success/rl"] == [(0, pytest.approx(0.1)), (1, pytest.approx(0.3))]
    assert "success/unseen" not in scalars  # a group without tasks has no mean
    runs = wandb_offline_history(tmp_path / "wandb")
    assert list(runs) == [(run_dir / "eval" / "wandb.id").read_text().strip()]  # one wandb run for all rounds
    logged = {row["_step"] for row in runs[list(runs)[0]] if "success/rl" in row}
    assert logged == {0, 1}
