"""The paper's PPO baselines in the loop (``rl.trains: whole``): PPO on the whole tiny VLA, nothing frozen.

Real Meta-World, a tiny VLA trained by the real SFT trainer, real PPO updates through the VLM. Checks that the VLM's
own weights move (the baseline's point: nothing frozen), that PPO-Replay's expert term runs, that a rerun with a
larger budget resumes at the last finished iteration (not from scratch), and that the loop's stage list has no stage
2 when the run skips it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("metaworld")

REPO = Path(__file__).resolve().parents[2]


def _config(run_dir: Path, max_env_steps: int, replay: float) -> dict:
    return {
        "run_dir": str(run_dir), "family": "metaworld",
        "demos": {"tasks": ["button-press-v3"], "episodes": 2, "seed": 0, "render": {"image_size": 32, "fast": True}},
        "sft_config": str(REPO / "config" / "sft.yaml"),
        "sft_overrides": {"train.steps": 6, "train.eval_every": 6, "train.checkpoint_every": 6,
                          "train.batch_size": 8, "policy.backbone.image_size": 32},
        "rl_tasks": [{"task": "button-press-v3", "variation": "hand:0.06,0,0"}],
        "rl": {"trains": "whole", "max_env_steps": max_env_steps, "max_episode_steps": 20,
               "whole_ppo": {"rollout_episodes": 2, "minibatch": 16, "epochs": 1, "lr": 1e-3,
                             "expert_replay": replay, "replay_batch": 4}},
        "stage2": {"skip": True},
        "eval": {"episodes": 1, "max_episode_steps": 100, "parallel_envs": 1},
        "logging": {"tensorboard": False},
    }


def _backbone(path: Path) -> dict[str, torch.Tensor]:
    from irevla.policy.checkpoint import load_policy

    return {k: v.clone() for k, v in load_policy(path).backbone.state_dict().items()}


@pytest.mark.slow
def test_ppo_replay_trains_the_whole_vla_and_resumes(tmp_path):
    from irevla.config import validate_config
    from irevla.iterate.config import IterateConfig
    from irevla.iterate.loop import run_iterate, stage_names

    run_dir = tmp_path / "run"
    config = validate_config(_config(run_dir, 40, replay=0.5), IterateConfig)
    assert stage_names(config) == ["demos", "sft", "eval-0", "rl-1", "eval-1"]
    lines: list[str] = []
    run_iterate(config, log=lines.append)
    state = json.loads((run_dir / "state.json").read_text())
    rl = state["stages"]["rl-1"]
    assert rl["trains"] == "whole" and rl["iterations"] == 1 and rl["env_steps"] == 40 and rl["episodes"] == 2
    before, after = _backbone(run_dir / "sft" / "policy"), _backbone(run_dir / "rl-1" / "policy")
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) > len(before) // 2, f"the VLM's weights did not train: {len(moved)}/{len(before)} moved"
    records = [json.loads(line) for line in (run_dir / "rl-1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1]
    assert records[0]["replay_loss"] >= 0 and records[0]["approx_kl"] >= 0

    # A larger budget for the same run: rl-1 is redone from its last iteration (state.json dropped rl-1 by hand,
    # as a kill during the stage would leave it), not from the SFT policy.
    del state["stages"]["rl-1"], state["stages"]["eval-1"]
    (run_dir / "state.json").write_text(json.dumps(state))
    config = validate_config(_config(run_dir, 80, replay=0.5), IterateConfig)
    lines.clear()
    run_iterate(config, log=lines.append)
    assert any("resumes after iteration 1" in line for line in lines), lines
    rl = json.loads((run_dir / "state.json").read_text())["stages"]["rl-1"]
    assert rl["iterations"] == 2 and rl["env_steps"] == 80
    records = [json.loads(line) for line in (run_dir / "rl-1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]


def test_whole_ppo_is_refused_on_the_robot():
    from irevla.config import ConfigError, validate_config
    from irevla.iterate.config import IterateConfig

    with pytest.raises(ConfigError, match="rl.trains: whole"):
        validate_config({"family": "robot", "init": "ckpt", "expert_tasks": [{"task": "pick"}],
                         "rl_tasks": [{"task": "pick"}], "rl": {"trains": "whole"},
                         "robot": {"success_topic": "/s"}}, IterateConfig)
