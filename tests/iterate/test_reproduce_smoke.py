"""`bench/reproduce.py --smoke`: the paper's comparison in a tiny version, every method and stage, then a rerun.

Real everything (Meta-World, the SFT trainer, the SAC learner process, PPO on the whole VLA); only the budgets are
tiny, so the numbers mean nothing: the test checks the bookkeeping -- each method's stage list, the stages shared
from ire-vla's run, the table with a row per method after each RL task, the instruction check and the plots, and
that a rerun resumes (finished runs are not run again).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("metaworld")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))


def _run(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "reproduce.py"), "--out", str(out), "--smoke",
                           "--seeds", "0"], capture_output=True, text=True, cwd=REPO, timeout=1500,
                          env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})


def _stages(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())["stages"]


@pytest.mark.slow
def test_smoke_runs_every_method_and_resumes(tmp_path):
    from reproduce import METHODS, settings

    out = tmp_path / "reproduce"
    result = _run(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    seed = out / "seed-0"
    two = ["eval-0", "rl-1", "stage2-1", "eval-1", "rl-2", "stage2-2", "eval-2"]
    no_stage2 = ["eval-0", "rl-1", "eval-1", "rl-2", "eval-2"]
    assert list(_stages(seed / "ire-vla")) == ["demos", "sft", *two]
    assert list(_stages(seed / "ire-vla-freeze")) == two
    for method in ("stage1-only", "ppo", "ppo-replay"):
        assert list(_stages(seed / method)) == no_stage2, method
    # Shared stages are ire-vla's own (same SFT policy, same first stage 1), not reruns.
    freeze = _stages(seed / "ire-vla-freeze")
    assert freeze["rl-1"]["shared_from"] == str(seed / "ire-vla") and freeze["stage2-1"]["backbone_training"] == \
        "frozen"
    assert _stages(seed / "ppo")["rl-1"]["trains"] == "whole" and _stages(seed / "ppo")["rl-1"]["expert_replay"] == 0
    assert _stages(seed / "ppo-replay")["rl-2"]["expert_replay"] > 0
    # The table: every method after each RL task, with a value for this seed.
    text = (out / "results.md").read_text()
    for method in METHODS:
        rows = [line for line in text.splitlines() if line.startswith(f"| {method} |")]
        assert len(rows) == len(settings(True)["rl"]) and all("(1 seed)" in row for row in rows), (method, rows)
    check = json.loads((seed / "instruction.json").read_text())
    assert set(check) == set(settings(True)["expert"]) and all(0 <= v["swapped"] <= 1 for v in check.values())
    for group in ("expert", "rl", "unseen"):
        assert (out / f"results_{group}.png").stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["ire-vla"]["2"]["expert"] == [pytest.approx(results["results"]["ire-vla"]["2"]
                                                                           ["expert"][0])]

    # A rerun finds everything finished: no stage runs again.
    finished = {m: {s: v["finished"] for s, v in _stages(seed / m).items()} for m in METHODS if m != "sft-only"}
    result = _run(out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert finished == {m: {s: v["finished"] for s, v in _stages(seed / m).items()} for m in finished}
