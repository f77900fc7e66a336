"""The run report of `irevla iterate`: success per task and group after SFT and after every round.

Written after every evaluation and RL stage, from ``state.json`` alone (so a resumed run's report is complete):

* ``report.json`` -- every evaluation (per task: successes / episodes / rate; per group: mean rate), RL stages
  (episodes, env steps, success while exploring) and stage timings;
* ``report.md``   -- the same as Markdown tables, the one a researcher reads in the morning;
* ``report.png``  -- success vs round per group, and each RL task's learning curve (rolling success of the
  actor's episodes vs env steps).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from irevla.atomic_io import atomic_write_bytes, atomic_write_text

GROUPS = ("expert", "rl", "unseen")
GROUP_TITLES = {"expert": "expert tasks", "rl": "RL tasks", "unseen": "unseen tasks"}


def _evaluations(state) -> list[tuple[str, dict]]:
    return [(name, out) for name, out in state.data["stages"].items() if name.startswith("eval-")]


def _round_label(name: str) -> str:
    return "SFT" if name == "eval-0" else f"round {name.split('-')[1]}"


def group_rate(groups: dict, group: str) -> float | None:
    tasks = groups.get(group) or {}
    if not tasks:
        return None
    return float(np.mean([t["rate"] for t in tasks.values()]))


def learning_curve(run_dir: Path, k: int, window: int = 10) -> tuple[list[int], list[float]]:
    progress = run_dir / f"rl-{k}" / "actor.json"
    if not progress.is_file():
        return [], []
    history = json.loads(progress.read_text())["history"]
    steps, rates = [], []
    for i in range(len(history)):
        recent = history[max(0, i - window + 1): i + 1]
        steps.append(history[i]["env_steps"])
        rates.append(float(np.mean([h["success"] for h in recent])))
    return steps, rates


def build_report(config, state, run_dir: Path) -> dict:
    evaluations = []
    for name, out in _evaluations(state):
        evaluations.append({"stage": name, "label": _round_label(name), "policy": out["policy"],
                            "groups": out["groups"],
                            "group_rates": {g: group_rate(out["groups"], g) for g in GROUPS}})
    rl = {name: {k: v for k, v in out.items() if k != "policy"}
          for name, out in state.data["stages"].items() if name.startswith("rl-")}
    summary = {}
    if len(evaluations) >= 2:
        first, last = evaluations[0]["group_rates"], evaluations[-1]["group_rates"]
        summary = {g: {"sft": first[g], "final": last[g],
                       "change_points": None if first[g] is None else round(100 * (last[g] - first[g]), 1)}
                   for g in GROUPS}
    return {"run_dir": str(run_dir), "evaluations": evaluations, "rl": rl, "summary": summary,
            "stage_seconds": {name: out.get("seconds") for name, out in state.data["stages"].items()},
            "episodes_per_task": config.eval.episodes}


def format_markdown(report: dict) -> str:
    lines = [f"# iRe-VLA run: {report['run_dir']}", ""]
    evaluations = report["evaluations"]
    if evaluations:
        labels = [e["label"] for e in evaluations]
        lines += [f"Success rate per task ({report['episodes_per_task']} episodes each, fixed seeds).", "",
                  "| group | task | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
        for group in GROUPS:
            tasks = list(evaluations[0]["groups"].get(group, {}))
            for task in tasks:
                cells = []
                for e in evaluations:
                    result = e["groups"].get(group, {}).get(task)
                    cells.append("" if result is None else f"{result['rate']:.2f} ({result['successes']}/"
                                                           f"{result['episodes']})")
                lines.append(f"| {group} | {task} | " + " | ".join(cells) + " |")
            rates = [e["group_rates"][group] for e in evaluations]
            if any(r is not None for r in rates):
                lines.append(f"| **{group}** | **mean** | " + " | ".join(
                    "" if r is None else f"**{r:.2f}**" for r in rates) + " |")
        lines.append("")
    if report["summary"]:
        lines += ["| group | after SFT | final | change |", "|---|---|---|---|"]
        for group, values in report["summary"].items():
            if values["sft"] is None:
                continue
            lines.append(f"| {GROUP_TITLES[group]} | {values['sft']:.2f} | {values['final']:.2f} | "
                         f"{values['change_points']:+.1f} points |")
        lines.append("")
    if report["rl"]:
        lines += ["| RL stage | episodes | env steps | successes | success while exploring | final head "
                  "(deterministic) | seconds |", "|---|---|---|---|---|---|---|"]
        for name, out in report["rl"].items():
            explore, final = out.get("explore_success"), out.get("final_success")
            final_text = "" if final is None else f"{final:.2f} ({out['final_successes']}/{out['final_rollouts']})"
            lines.append(f"| {name} | {out['episodes']} | {out['env_steps']} | {out['successes']} | "
                         f"{'' if explore is None else f'{explore:.2f}'} | {final_text} | "
                         f"{out.get('seconds', '')} |")
        lines.append("")
        for name, out in report["rl"].items():
            reward = out.get("reward") or {}
            if reward.get("source", "env") == "env":
                continue
            line = f"{name}: episodes labelled by the success detector ({reward['source']})"
            if reward.get("episodes"):  # the env's truth was recorded beside each label (simulation)
                precision, recall = reward.get("precision"), reward.get("recall")
                line += (f"; against the simulator's success: precision "
                         f"{'n/a' if precision is None else f'{precision:.3f}'}, recall "
                         f"{'n/a' if recall is None else f'{recall:.3f}'}, {reward['false_successes']} false "
                         f"successes in {reward['episodes']} episodes ({reward['false_successes_per_100']:.1f} per 100)")
            lines += [line, ""]
    lines += ["Stage times (s): " + ", ".join(f"{k} {v}" for k, v in report["stage_seconds"].items()), ""]
    return "\n".join(lines)


def plot_report(report: dict, run_dir: Path, rl_stages: list[int]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels = [e["label"] for e in report["evaluations"]]
    for group in GROUPS:
        rates = [e["group_rates"][group] for e in report["evaluations"]]
        if any(r is not None for r in rates):
            axes[0].plot(labels, [np.nan if r is None else r for r in rates], marker="o", label=GROUP_TITLES[group])
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("success rate")
    axes[0].set_title("success per group")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    for k in rl_stages:
        steps, rates = learning_curve(run_dir, k)
        if steps:
            axes[1].plot(steps, rates, label=f"rl-{k}")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel("env steps")
    axes[1].set_ylabel("rolling success (10 episodes)")
    axes[1].set_title("stage 1 learning curves")
    if rl_stages:
        axes[1].legend()
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def write_report(config, state, run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    report = build_report(config, state, run_dir)
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=1))
    atomic_write_text(run_dir / "report.md", format_markdown(report))
    rl_stages = [int(name.split("-")[1]) for name in state.data["stages"] if name.startswith("rl-")]
    atomic_write_bytes(run_dir / "report.png", plot_report(report, run_dir, rl_stages))
    return report
