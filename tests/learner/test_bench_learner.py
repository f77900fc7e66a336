"""bench/bench_learner.py's smoke modes, so the learner benchmark cannot rot: --quick (pooled and token latents, the
shared critic token learner, the re-encoding ratio) and --profile (where a token-latent step goes).

Run as subprocesses: the benchmark sets JAX's platform and thread flags before importing jax.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path, *args):
    out = tmp_path / "learner.json"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_learner.py"), *args, "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


def test_quick_mode_reports_pooled_and_token_updates(tmp_path):
    report, stdout = _run(tmp_path, "--quick")
    rows = {(row["latent"], row["critic_token_learner"]): row for row in report["updates"]}
    assert set(rows) == {("pooled", "-"), ("tokens", "shared")}
    assert rows["pooled", "-"]["vs_pooled"] == 1.0
    assert rows["tokens", "shared"]["vs_pooled"] > 1.0  # token learners cost something on top of the MLPs
    assert all(row["updates_per_s"] > 0 and row["utd"] == 1 for row in rows.values())
    assert {row["latent"] for row in report["reencode"]} == {"pooled", "tokens"}
    assert all(row["reencode_ratio"] > 1.0 for row in report["reencode"])
    assert report["machine"]["jax_devices"] and "vs_pooled" in stdout


def test_profile_mode_breaks_a_token_step_down(tmp_path):
    report, stdout = _run(tmp_path, "--quick", "--profile")
    rows = {row["critic_token_learner"]: row for row in report["profile"]}
    assert set(rows) == {"shared", "per_critic"}
    for row in rows.values():
        assert row["compiles"] == 1  # one jitted update per shape
        assert 0 < row["sample_s"] < row["step_s"] and 0 < row["update_s"]
        assert row["token_learner_forward_backward_s"] > row["token_learner_forward_s"] > 0
    # One critic token learner instead of ten: fewer passes, and a cheaper update.
    assert rows["shared"]["token_learner_passes"] == {"forward": 3, "forward_backward": 2}
    assert rows["per_critic"]["token_learner_passes"] == {"forward": 21, "forward_backward": 11}
    assert rows["shared"]["update_s"] < rows["per_critic"]["update_s"]
    assert "where a token-latent step goes" in stdout
