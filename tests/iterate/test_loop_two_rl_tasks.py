"""`irevla iterate` with two RL tasks in one run (Algorithm 1's loop over tasks), end to end in a tiny configuration.

Real Meta-World rendering, HDF5 episodes, the real SFT trainer and the learner process over ZeroMQ, as in
test_loop_resume.py; the RL tasks' envs succeed after a few steps (`succeeding_envs`), so every stage-1 episode joins
D_RL and the test can follow D_RL from the first RL task to the second. Checks: the stage order, that rl-2 starts from
stage2-1's policy (not rl-1's or stage 0's), that D_RL only grows and carries each round's task metadata, that
stage2-2 trains on both rounds, and that the report has all three evaluations.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from succeeding_envs import patch_rl_envs  # noqa: E402

from irevla.config import validate_config  # noqa: E402
from irevla.data.store import EpisodeStore  # noqa: E402
from irevla.iterate.config import IterateConfig  # noqa: E402

pytest.importorskip("jax")
pytest.importorskip("metaworld")

REPO = Path(__file__).resolve().parents[2]
RL_TASKS = [{"task": "button-press-v3", "variation": "hand:0.06,0,0"},
            {"task": "button-press-v3", "variation": "color:red"}]


def _config(run_dir: Path) -> dict:
    """test_loop_resume.py's tiny run with a second RL task; stage 1 stops once 3 exploring episodes succeed."""
    return {
        "run_dir": str(run_dir), "family": "metaworld",
        "demos": {"tasks": ["button-press-v3"], "episodes": 3, "seed": 0, "render": {"image_size": 32, "fast": True}},
        "sft_config": str(REPO / "config" / "sft.yaml"),
        "sft_overrides": {"train.steps": 20, "train.eval_every": 10, "train.checkpoint_every": 10,
                          "train.batch_size": 8, "policy.backbone.image_size": 32},
        "rl_tasks": RL_TASKS,
        "rl": {"demo_rollouts": 1, "demo_rollout_attempts": 1, "max_env_steps": 200, "max_episode_steps": 30,
               "plateau_window": 3, "final_rollouts": 2,
               "learner": {"warmup_transitions": 10, "publish_every": 2, "snapshot_every_s": 1.0,
                           "sac": {"num_critics": 2, "batch_size": 8}}},
        "stage2": {"steps": 10},
        "eval": {"episodes": 1, "max_episode_steps": 100},
    }


def _backbone_hash(policy: str) -> str:
    manifest = json.loads((Path(policy) / "policy.json").read_text())
    (name,) = [n for n in manifest["files"] if "backbone" in n]
    return manifest["files"][name]


@pytest.mark.slow
def test_two_rl_tasks_in_sequence(tmp_path, monkeypatch):
    from irevla.iterate.loop import current_policy, run_iterate, stage_names
    from irevla.policy.sft import load_episodes

    patch_rl_envs(5, monkeypatch)
    run_dir = tmp_path / "run"
    config = validate_config(_config(run_dir), IterateConfig)
    d_rl = run_dir / "d_rl"
    before: dict[str, set[str]] = {}  # the D_RL files when each stage started
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        started = re.match(r"\[\d+/\d+\] (\S+)$", line)
        if started:
            before[started.group(1)] = {p.name for p in d_rl.glob("*.h5")}

    state = run_iterate(config, log=log)

    # The stages, in Algorithm 1's order: a round per RL task.
    order = ["demos", "sft", "eval-0", "rl-1", "stage2-1", "eval-1", "rl-2", "stage2-2", "eval-2"]
    assert stage_names(config) == order
    saved = json.loads((run_dir / "state.json").read_text())
    assert list(saved["stages"]) == order == state.finished
    stages = saved["stages"]

    # Each stage starts from the policy of the stage before it: rl-2 from stage2-1's, not rl-1's or stage 0's.
    assert current_policy(config, state, "rl-1") == stages["sft"]["policy"]
    assert current_policy(config, state, "stage2-1") == stages["rl-1"]["policy"]
    assert current_policy(config, state, "rl-2") == stages["stage2-1"]["policy"]
    assert current_policy(config, state, "stage2-2") == stages["rl-2"]["policy"]
    assert [stages[f"eval-{k}"]["policy"] for k in range(3)] == \
        [stages["sft"]["policy"], stages["stage2-1"]["policy"], stages["stage2-2"]["policy"]]
    # ... and the checkpoints say so: stage 1 freezes the VLM, so rl-2's backbone is stage2-1's (which stage 2's LoRA
    # changed), while rl-1's is stage 0's.
    assert _backbone_hash(stages["rl-2"]["policy"]) == _backbone_hash(stages["stage2-1"]["policy"])
    assert _backbone_hash(stages["rl-1"]["policy"]) == _backbone_hash(stages["sft"]["policy"])
    assert _backbone_hash(stages["stage2-1"]["policy"]) != _backbone_hash(stages["sft"]["policy"])
    for k in (1, 2):
        info = json.loads((Path(stages[f"rl-{k}"]["policy"]) / "policy.json").read_text())["info"]
        assert info["stage"] == f"rl-{k}" and info["task"] == config.rl_tasks[k - 1].label
        assert info["episodes"] == stages[f"rl-{k}"]["episodes"]

    # D_RL grows: rl-1's successes (round 1, task 1), then rl-2's added (round 2, task 2), nothing replaced.
    after_rl1, after_rl2 = before["stage2-1"], before["stage2-2"]
    assert before["rl-1"] == set() and before["rl-2"] == after_rl1 and after_rl1 < after_rl2
    episodes = {info.path.name: info for info in EpisodeStore(d_rl).index()}
    assert set(episodes) == after_rl2  # stage 2 and evaluation write nothing into D_RL
    for k, names in ((1, after_rl1), (2, after_rl2 - after_rl1)):
        ref = config.rl_tasks[k - 1]
        out = stages[f"rl-{k}"]
        assert len(names) == out["successes"] + out["final_successes"] >= 4  # 1 demo rollout, 3 exploring, 2 final
        for name in names:
            info = episodes[name]
            assert (info.round, info.source, info.success) == (k, "rl", True)
            assert info.task_name == ref.task
            assert (info.metadata["task"], info.metadata["variation"], info.metadata["stage"]) == \
                (ref.task, ref.variation, f"rl-{k}")
    assert max(after_rl1) < min(after_rl2 - after_rl1)  # file names sort by creation time

    # Stage 2 trains on D_e + all of D_RL so far: stage2-1 on round 1, stage2-2 on both rounds. (D_RL has not
    # changed since stage2-2, so its split, redone here, is the one it trained on.)
    infos = [json.loads((Path(stages[f"stage2-{k}"]["policy"]) / "policy.json").read_text())["info"] for k in (1, 2)]
    assert [info["data_dirs"] for info in infos] == [[str(run_dir / "expert"), str(d_rl)]] * 2
    train, val = load_episodes(config.stage2_sft(2, stages["rl-2"]["policy"], run_dir))
    assert infos[1]["train_episodes"] == len(train)
    assert {i.path.name for i in [*train, *val] if i.source == "rl"} == after_rl2
    assert {i.round for i in train if i.source == "rl"} == {1, 2}
    assert infos[1]["train_episodes"] > infos[0]["train_episodes"]

    # The report: the three evaluations, each with both RL tasks.
    report = json.loads((run_dir / "report.json").read_text())
    assert [e["stage"] for e in report["evaluations"]] == ["eval-0", "eval-1", "eval-2"]
    assert [e["label"] for e in report["evaluations"]] == ["SFT", "round 1", "round 2"]
    labels = [ref.label for ref in config.rl_tasks]
    for evaluation in report["evaluations"]:
        assert list(evaluation["groups"]["rl"]) == labels
        assert list(evaluation["groups"]["expert"]) == ["button-press-v3"]
    assert list(report["rl"]) == ["rl-1", "rl-2"]
    assert report["summary"]["rl"]["sft"] is not None
    markdown = (run_dir / "report.md").read_text()
    assert "| group | task | SFT | round 1 | round 2 |" in markdown
    for label in labels:
        assert f"| rl | {label} |" in markdown
    assert "| rl-1 |" in markdown and "| rl-2 |" in markdown
    evaluations = [json.loads(line) for line in (run_dir / "eval" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evaluations] == [0, 1, 2]
