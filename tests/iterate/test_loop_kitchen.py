"""`irevla iterate --config config/kitchen.yaml`, the shipped Franka Kitchen run, end to end at a tiny budget.

The shipped file is what runs: its task lists, variations and settings, with only the budgets shrunk by ``--set``
(32 px, 2 demos per task, 20 SFT steps, a few RL episodes, 1 evaluation episode per task). Real everything: Kitchen
rendering, the scripted Kitchen expert recording D_e, the SFT trainer, the learner process over ZeroMQ; the RL task's
env succeeds after a few steps (`succeeding_envs`: a 20-step policy never opens the door), so D_RL holds Kitchen
episodes and stage 2 trains on them. The CLI runs in a subprocess (`irevla.cli.main`, what ``python -m irevla`` runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from succeeding_envs import cli_shim  # noqa: E402

pytest.importorskip("jax")
pytest.importorskip("gymnasium_robotics")

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "kitchen.yaml"
TINY = {
    "demos.episodes": 2, "demos.render.image_size": 32,
    "sft_overrides.train.steps": 20, "sft_overrides.train.eval_every": 10, "sft_overrides.train.checkpoint_every": 10,
    "sft_overrides.train.batch_size": 8, "sft_overrides.policy.backbone.image_size": 32,
    "rl.demo_rollouts": 1, "rl.demo_rollout_attempts": 1, "rl.max_env_steps": 100, "rl.max_episode_steps": 20,
    "rl.plateau_window": 2, "rl.final_rollouts": 2, "rl.learner.warmup_transitions": 10,
    "rl.learner.publish_every": 2, "rl.learner.snapshot_every_s": 1.0, "rl.learner.sac.num_critics": 2,
    "rl.learner.sac.batch_size": 8,
    "stage2.steps": 10,
    # 80 steps: the noised expert's longest demo is 74 steps (the loop records D_e with this limit too).
    "eval.episodes": 1, "eval.max_episode_steps": 80,
}


@pytest.mark.slow
def test_the_kitchen_config_runs_the_loop(tmp_path, monkeypatch):
    from irevla.data.store import EpisodeStore
    from irevla.iterate.config import load_iterate_config
    from irevla.iterate.loop import stage_names
    from irevla.sim.kitchen import TASKS

    monkeypatch.chdir(REPO)  # the shipped file names config/sft.yaml relative to the repository
    run_dir = tmp_path / "run"
    shipped = load_iterate_config(CONFIG)
    config = load_iterate_config(CONFIG, {**TINY, "run_dir": str(run_dir)})
    assert config.family == shipped.demos.family == "kitchen"
    assert set(shipped.demos.tasks) <= set(TASKS) and len(shipped.demos.tasks) == 5
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "loop.log"
    with log.open("wb") as out:
        completed = subprocess.run([sys.executable, "-c", cli_shim(5), "iterate", "--config", str(CONFIG),
                                    "--run-dir", str(run_dir), *sets], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, cwd=REPO, timeout=900)
    assert completed.returncode == 0, log.read_text()[-3000:]

    # The run is the shipped config with the budgets above (the loop saves what it ran).
    assert load_iterate_config(run_dir / "config.yaml") == config
    state = json.loads((run_dir / "state.json").read_text())
    assert list(state["stages"]) == stage_names(config) == ["demos", "sft", "eval-0", "rl-1", "stage2-1", "eval-1"]

    # D_e: the scripted Kitchen expert's episodes of the five tasks, at the policy's 32 px.
    expert = EpisodeStore(run_dir / "expert").index()
    assert sorted(i.task_name for i in expert) == sorted(t for t in shipped.demos.tasks for _ in range(2))
    assert all(i.metadata["expert"] == "kitchen-scripted" for i in expert)
    # D_RL: stage 1's Kitchen episodes of the RL task (the slide door in red), with its metadata.
    (rl_ref,) = shipped.rl_tasks
    rl = state["stages"]["rl-1"]
    episodes = list(EpisodeStore(run_dir / "d_rl").episodes())
    assert len(episodes) == rl["successes"] + rl["final_successes"] >= 3
    for episode in episodes:
        assert (episode.task.family, episode.task.name, episode.task.variation) == ("kitchen", rl_ref.task, "color:red")
        assert (episode.round, episode.source, episode.success) == (1, "rl", True)
        assert episode.task.instruction == TASKS[rl_ref.task].instruction
        assert (episode.metadata["task"], episode.metadata["variation"], episode.metadata["stage"]) == \
            (rl_ref.task, "color:red", "rl-1")
        assert episode.images["front"].shape[1:] == (32, 32, 3)
    stage2 = json.loads((run_dir / "stage2-1" / "policy" / "policy.json").read_text())["info"]
    assert stage2["data_dirs"] == [str(run_dir / "expert"), str(run_dir / "d_rl")]
    assert sorted(stage2["tasks"]) == sorted(shipped.demos.tasks)

    # The evaluations and the report: every group with the Kitchen labels of the shipped config.
    labels = {"expert": list(shipped.demos.tasks), "rl": ["slide-door-open [red]"],
              "unseen": [ref.label for ref in shipped.unseen_tasks]}
    assert len(labels["unseen"]) == 2
    report = json.loads((run_dir / "report.json").read_text())
    assert [e["stage"] for e in report["evaluations"]] == ["eval-0", "eval-1"]
    for evaluation in report["evaluations"]:
        assert {group: list(tasks) for group, tasks in evaluation["groups"].items()} == labels
        assert all(task["episodes"] == 1 for tasks in evaluation["groups"].values() for task in tasks.values())
    assert list(report["rl"]) == ["rl-1"] and report["rl"]["rl-1"]["episodes"] == rl["episodes"]
    markdown = (run_dir / "report.md").read_text()
    for group, names in labels.items():
        for name in names:
            assert f"| {group} | {name} |" in markdown
    assert (run_dir / "report.png").stat().st_size > 1000
