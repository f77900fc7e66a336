"""`irevla iterate` end to end in a tiny configuration, killed with SIGKILL during RL and during SFT, then rerun.

Real everything: Meta-World rendering, HDF5 episodes, a tiny VLA trained by the real SFT trainer, the learner in its
own process over ZeroMQ on loopback, JAX training. The rerun must finish with the same stage list, keep every
trajectory recorded before the kill, and continue SFT's step count instead of restarting it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from irevla.data.store import EpisodeStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_metrics_log import tensorboard_scalars  # noqa: E402

pytest.importorskip("jax")
pytest.importorskip("metaworld")

REPO = Path(__file__).resolve().parents[2]


def _config(run_dir: Path, sft_steps: int = 20) -> dict:
    return {
        "run_dir": str(run_dir), "family": "metaworld",
        "demos": {"tasks": ["button-press-v3"], "episodes": 3, "seed": 0, "render": {"image_size": 32, "fast": True}},
        "sft_config": str(REPO / "config" / "sft.yaml"),
        "sft_overrides": {"train.steps": sft_steps, "train.eval_every": 10, "train.checkpoint_every": 5,
                          "train.batch_size": 8, "policy.backbone.image_size": 32},
        "rl_tasks": [{"task": "button-press-v3", "variation": "hand:0.06,0,0"}],
        "unseen_tasks": [{"task": "button-press-v3", "variation": "color:red"}],
        "rl": {"demo_rollouts": 1, "demo_rollout_attempts": 1, "max_env_steps": 600, "max_episode_steps": 100,
               "final_rollouts": 2,
               "learner": {"warmup_transitions": 20, "publish_every": 2, "snapshot_every_s": 1.0,
                           "sac": {"num_critics": 2, "batch_size": 16}}},
        "stage2": {"steps": 10},
        "eval": {"episodes": 1, "max_episode_steps": 100},
    }


def _start(config_path: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "irevla", "iterate", "--config", str(config_path)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, cwd=REPO,
                            start_new_session=True)


def _kill_when(process: subprocess.Popen, condition, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the loop exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)  # the loop only: its learner child must notice and exit by itself
    process.wait()


def _episodes(directory: Path) -> set[str]:
    return {p.name for p in directory.glob("*.h5")} if directory.is_dir() else set()


@pytest.mark.slow
def test_kill_during_sft_and_during_rl_then_resume(tmp_path):
    from irevla.config import validate_config
    from irevla.iterate.config import IterateConfig
    from irevla.iterate.loop import stage_names

    run_dir = tmp_path / "run"
    config = _config(run_dir)
    config_path = tmp_path / "loop.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log = tmp_path / "loop.log"

    # 1. Kill during stage-0 SFT, once a periodic checkpoint exists.
    process = _start(config_path, log)
    _kill_when(process, lambda: (run_dir / "sft" / "last").is_dir(), "an SFT checkpoint")


    # 2. Rerun; kill during stage 1 once the actor has finished an episode and the learner has snapshotted.
    process = _start(config_path, log)
    progress = run_dir / "rl-1" / "actor.json"
    snapshot = run_dir / "rl-1" / "learner" / "snapshot" / "learner.json"

    def rl_under_way() -> bool:
        return progress.is_file() and json.loads(progress.read_text())["episodes"] >= 2 and snapshot.is_file()

    _kill_when(process, rl_under_way, "RL episodes and a learner snapshot")
    episodes_before = json.loads(progress.read_text())["episodes"]
    trajectories_before = _episodes(run_dir / "d_rl")
    state = json.loads((run_dir / "state.json").read_text())
    assert "sft" in state["stages"] and "rl-1" not in state["stages"]

    # 3. Rerun to the end.
    process = _start(config_path, log)
    assert process.wait(timeout=900) == 0, log.read_text()[-3000:]

    expected = stage_names(validate_config(config, IterateConfig))
    state = json.loads((run_dir / "state.json").read_text())
    assert list(state["stages"]) == expected
    # Nothing collected before the kill was lost, and RL continued counting from where it was.
    assert trajectories_before <= _episodes(run_dir / "d_rl")
    assert json.loads(progress.read_text())["episodes"] >= episodes_before
    # The final head's own episodes ran once each; their successes are in D_RL.
    rl_out = state["stages"]["rl-1"]
    assert rl_out["final_rollouts"] == 2 and len(json.loads(progress.read_text())["final"]) == 2
    finals = [e for e in EpisodeStore(run_dir / "d_rl").episodes() if "final_rollout" in e.metadata]
    assert len(finals) == rl_out["final_successes"]
    # SFT resumed from its checkpoint: the step count continued instead of restarting.
    assert state["stages"]["sft"]["resumed_from_step"] >= 5
    steps = [json.loads(line)["step"] for line in (run_dir / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 20 and steps == sorted(steps)
    _assert_stage_metrics(run_dir, json.loads(progress.read_text()))
    assert (run_dir / "report.md").is_file() and (run_dir / "report.png").stat().st_size > 1000
    report = json.loads((run_dir / "report.json").read_text())
    assert [e["stage"] for e in report["evaluations"]] == ["eval-0", "eval-1"]
    # The learner of the killed run exited on its own (it watches its parent); no orphan holds the stage.
    out = subprocess.run(["pgrep", "-f", f"irevla learner serve --init {run_dir}"], capture_output=True, text=True)
    assert out.stdout.strip() == "", out.stdout


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _tb_steps(directory: Path, tag: str) -> list[int]:
    return [step for step, _ in tensorboard_scalars(directory)[tag]]


def _assert_stage_metrics(run_dir: Path, actor: dict) -> None:
    """Every long stage logged into its directory, and the kills + resumes left each step once (metrics.jsonl and
    TensorBoard alike)."""
    # SFT, killed and resumed: one TensorBoard curve over both runs, each logged step once.
    sft_steps = [r["step"] for r in _jsonl(run_dir / "sft" / "metrics.jsonl") if "loss" in r]
    assert _tb_steps(run_dir / "sft" / "tensorboard", "loss") == sft_steps == sorted(set(sft_steps))
    assert _tb_steps(run_dir / "sft" / "tensorboard", "val_loss") == [10, 20]
    assert _tb_steps(run_dir / "stage2-1" / "tensorboard", "loss")[-1] == 10
    # Stage 1's actor, killed and resumed: one record per counted episode (step: env steps), then the final head's.
    episodes = [h["env_steps"] for h in actor["history"]]
    records = _jsonl(run_dir / "rl-1" / "metrics.jsonl")
    assert [r["step"] for r in records] == [*episodes, episodes[-1] + 1]
    assert records[-1]["rl/final_success"] == sum(actor["final"]) / len(actor["final"])
    for tag in ("episode/success", "episode/return", "episode/steps", "rolling_success"):
        assert _tb_steps(run_dir / "rl-1" / "tensorboard", tag) == episodes, tag
    # The learner process (restarted from its snapshot): update statistics, strictly increasing update counts.
    learner = [r["step"] for r in _jsonl(run_dir / "rl-1" / "learner" / "metrics.jsonl")]
    assert learner and learner == sorted(set(learner))
    for tag in ("critic_loss", "actor_loss", "alpha", "q_mean", "updates_per_s", "learner/episodes"):
        assert _tb_steps(run_dir / "rl-1" / "learner" / "tensorboard", tag) == learner, tag
    # The evaluations, one point per round.
    evaluations = _jsonl(run_dir / "eval" / "metrics.jsonl")
    assert [r["step"] for r in evaluations] == [0, 1]
    scalars = tensorboard_scalars(run_dir / "eval" / "tensorboard")
    for tag in ("success/expert", "success/rl", "success/unseen", "success/expert/button-press-v3",
                "success/rl/button-press-v3_hand_0.06_0_0_", "success/unseen/button-press-v3_color_red_"):
        assert [step for step, _ in scalars[tag]] == [0, 1], tag
    assert "success/rl/button-press-v3[hand:0.06,0,0]" in evaluations[1]
