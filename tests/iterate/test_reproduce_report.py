"""`bench/reproduce.py`'s table over seeds run in different sittings.

The runs' state files are written the way the loop writes them (`state.json` with `stages.eval-K.groups`), with
chosen rates, so the mean, the sample std and the per-task table can be checked exactly in a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

reproduce = pytest.importorskip("reproduce")


def _write_run(run_dir: Path, rates: dict[str, float], evals: int) -> None:
    """A finished run whose every task has `rates[group]` at eval-0..eval-{evals-1}."""
    s = reproduce.settings(True)
    groups = {"expert": s["expert"], "rl": [r["name"] for r in s["rl"]], "unseen": [u["name"] for u in s["unseen"]]}
    stages = {f"eval-{k}": {"groups": {g: {task: {"rate": rates[g]} for task in tasks} for g, tasks in groups.items()},
                            "finished": "2026-12-05T00:00:00"} for k in range(evals)}
    run_dir.mkdir(parents=True)
    (run_dir / "state.json").write_text(json.dumps({"stages": stages}))


def test_report_counts_every_sitting_s_seeds_with_mean_and_std(tmp_path):
    s = reproduce.settings(True)
    n_evals = len(s["rl"]) + 1
    for seed, rl in ((0, 0.5), (1, 0.7)):
        seed_dir = tmp_path / f"seed-{seed}"
        _write_run(seed_dir / "ire-vla", {"expert": 0.9, "rl": rl, "unseen": 0.3}, n_evals)
        _write_run(seed_dir / "ppo", {"expert": 0.1, "rl": 0.0, "unseen": 0.0}, n_evals)
    # Seed 2 started in this sitting, nothing finished yet: it adds no value anywhere.
    (tmp_path / "seed-2" / "ire-vla").mkdir(parents=True)

    text = reproduce.write_report(tmp_path, [2], s)

    assert "seeds started or asked: [0, 1, 2] (this sitting: [2])" in text
    ire = [line for line in text.splitlines() if line.startswith("| ire-vla |")]
    assert len(ire) == len(s["rl"])
    # rl: 0.5 and 0.7 -> mean 0.60, sample std 0.14, two seeds
    assert all(row.split(" | ")[1:4] == ["0.90 ± 0.00 (2)", "0.60 ± 0.14 (2)", "0.30 ± 0.00 (2)"] for row in ire)
    # Methods with no finished run stay empty rather than reading as zero.
    freeze = [line for line in text.splitlines() if line.startswith("| ire-vla-freeze |")]
    assert all(row.split(" | ")[1:4] == ["-", "-", "-"] for row in freeze)
    # The per-task table: sft-only reads ire-vla's eval-0, ppo its own run.
    task_row = next(line for line in text.splitlines() if line.startswith(f"| {s['rl'][0]['name']} |"))
    cells = dict(zip(reproduce.METHODS, task_row.strip("| ").split(" | ")[1:], strict=True))
    assert cells["sft-only"] == "0.60" and cells["ire-vla"] == "0.60" and cells["ppo"] == "0.00"
    assert cells["stage1-only"] == "-"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["seeds"] == [0, 1, 2] and saved["per_task"]["ppo"]["1"][s["expert"][0]] == [0.1, 0.1]
    for group in ("expert", "rl", "unseen"):
        assert (tmp_path / f"results_{group}.png").stat().st_size > 1000
