"""The loop's evaluation reports to a progress bar per finished episode, and `irevla iterate`'s bar shows rate and ETA.

In process (eval.workers 1) on a tiny saved policy: evaluate_checkpoint in workers is tests/policy/test_eval_workers.py.
"""

from __future__ import annotations

import io

import torch
from test_rollout import _policy_for

from irevla.config import validate_config
from irevla.iterate.cli import StageBar
from irevla.iterate.config import IterateConfig
from irevla.iterate.loop import stage_eval
from irevla.policy.checkpoint import save_policy


class _Recorder:
    bars: list[_Recorder] = []

    def __init__(self, name: str, total: int) -> None:
        self.name, self.total, self.updates, self.closed = name, total, [], False
        _Recorder.bars.append(self)

    def update(self, info: dict) -> None:
        self.updates.append(info)

    def close(self) -> None:
        self.closed = True


def test_evaluation_reports_every_episode_to_its_bar(tmp_path):
    torch.manual_seed(0)
    save_policy(_policy_for("reach-v3"), tmp_path / "ckpt")
    config = validate_config({
        "run_dir": str(tmp_path / "run"), "init": str(tmp_path / "ckpt"), "expert_tasks": [{"task": "reach-v3"}],
        "rl_tasks": [{"task": "reach-v3", "variation": "hand:0.04,0,0", "name": "reach shifted"}],
        "eval": {"episodes": 3, "max_episode_steps": 4, "parallel_envs": 2, "workers": 1}}, IterateConfig)
    lines: list[str] = []
    _Recorder.bars = []
    outputs = stage_eval(config, str(tmp_path / "ckpt"), lines.append, _Recorder, "eval-0")
    [bar] = _Recorder.bars
    assert (bar.name, bar.total, bar.closed) == ("eval-0", 6, True)
    assert [u["done"] for u in bar.updates] == [0, 1, 2, 3, 4, 5, 6] and {u["unit"] for u in bar.updates} == {"ep"}
    assert bar.updates[-1]["postfix"] == {"successes": 0}  # 4 steps of a random policy reach nothing
    assert outputs["groups"]["expert"]["reach-v3"]["episodes"] == 3
    assert outputs["groups"]["rl"]["reach shifted"]["episodes"] == 3 and outputs["groups"]["unseen"] == {}
    assert any("reach shifted" in line and "0/3" in line for line in lines)


def test_the_stage_bar_shows_rate_and_eta_of_this_run():
    out = io.StringIO()
    bar = StageBar("sft", 100, file=out)
    bar.update({"done": 40, "initial": 40, "unit": "step", "postfix": {}})  # resumed at step 40
    assert bar.bar.n == 40
    for done in range(41, 51):
        bar.update({"done": done, "unit": "step", "postfix": {"loss": "0.5"}})
    meter = bar.bar.format_dict
    text = bar.bar.format_meter(**meter)
    bar.close()
    # "elapsed<remaining, rate": the rate counts the 10 steps of this run, not the 40 before it
    assert text.startswith("sft:  50%") and "50/100" in text and "step/s" in text and "<?" not in text
    assert "loss=0.5" in text and meter["initial"] == 40
