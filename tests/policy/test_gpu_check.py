"""bench/gpu_check.py, the one GPU command, in its CPU dry run so that it cannot rot: every preset's family (tiny
models) through every phase -- build, eager act / act_batch / encode, a LoRA stage-2 step, the learner on pooled and
token latents with the re-encoding ratio, torch.compile (tracing backend) -- and the JSON and Markdown it writes.

Run as a subprocess: the script sets JAX's platform and memory flags before importing jax.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[2]
PHASES = ("build", "eager", "lora_step", "compiled")


def test_the_dry_run_goes_through_every_phase_of_every_preset(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["dtype"] == "bfloat16"
    assert list(report["presets"]) == ["blip2-opt-2.7b", "paligemma2-3b-pt-224", "smolvlm2-500m", "qwen2.5-vl-3b",
                                       "qwen3-vl-2b", "qwen2-vl-2b"]
    for name, record in report["presets"].items():
        for phase in PHASES:
            assert record[phase]["status"] == "ok", (name, phase, record[phase])
        eager, compiled = record["eager"], record["compiled"]
        for timing in (eager["act_b1"], eager["act_b16"], compiled["act_b1"], record["lora_step"]["step"]):
            assert 0 < timing["p50_ms"] <= timing["p99_ms"]
        assert eager["b16_obs_per_s"] > 0 and eager["encode_images_per_s"] > 0
        assert record["lora_step"]["lora_layers"] > 0 and record["lora_step"]["samples_per_s"] > 0
        assert "head" in compiled["modules"]
    learner = report["learner"]
    assert learner["status"] == "ok"
    latents = {row["latent"] for row in learner["rows"]}
    assert latents == {"pooled", "tokens"}
    assert all(row["updates_per_s"] > 0 for row in learner["rows"])
    ratios = learner["reencode"]
    assert {row["preset"] for row in ratios} == set(report["presets"])
    assert all(row["reencode_ratio"] > 1 for row in ratios)
    table = out.with_suffix(".md").read_text()
    assert all(f"| {name} |" in table for name in report["presets"])
    assert "cached vs re-encoding" in table and "updates/s" in table


def test_a_missing_package_is_named_with_how_to_bring_it(tmp_path):
    """The GPU image may lack a package: the script says which and how to bring it as wheels, before building."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(  # an import hook that makes optax look uninstalled
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'optax':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out",
                             str(tmp_path / "x.json")], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert "missing Python packages: optax" in result.stderr and "--wheels" in result.stderr
    assert not (tmp_path / "x.json").exists()
