"""The paper's comparison (iRe-VLA, Table I and the ablation) at CPU scale, resumable, over several seeds.

One language-conditioned VLA learns 4 Meta-World expert tasks from their instructions (two of them, faucet open and
faucet close, share one scene: only the instruction says which to do), then 2 RL tasks one after the other
(Algorithm 1), and is evaluated after every RL task on three groups:

  expert  button-press, drawer-open, faucet-open, faucet-close (the tasks of D_e)
  rl      button-press [button +15 cm] (a new position), drawer-open [red] (a new colour)
  unseen  button-press [hand +6 cm], drawer-open [hand +4,-4 cm] (variations never trained on) and drawer-close
          (a task/instruction never trained on, in a known scene)

Methods (the paper's, section V):

  sft-only          stage 0 alone (the row every method starts from)
  ire-vla           stage 1 (SAC on the head, VLM frozen) + stage 2 (LoRA + head on D_e + D_RL), per RL task
  ire-vla-freeze    the same with the VLM frozen in stage 2 too (the ablation "VLM frozen in both stages")
  stage1-only       stage 1 per RL task, no stage 2 (the RL head of task 1 goes on to task 2): forgetting shows here
  ppo               PPO on the whole tiny VLA (images re-encoded, nothing frozen), task by task, no stage 2
  ppo-replay        the same with a behaviour-cloning term on expert steps of D_e in every minibatch

Seeds: seed s sets the demos' draw, the SFT seed and the RL seed of every method. Methods that share a prefix share
its stages (every method of a seed starts from the same stage 0; ire-vla-freeze and stage1-only also share
ire-vla's first stage 1, which is the same run), so each seed runs stage 0 once.

Everything is resumable: each method is an `irevla iterate` run in ``<out>/seed-<s>/<method>/`` and rerunning the
same command continues every unfinished run where it stopped (a kill at any moment loses at most the stage under
way, which the loop itself resumes). Runs can be spread over sittings (``--seeds 0``, later ``--seeds 1 2``), and
``--report`` only rebuilds the table from what has finished. Writes ``<out>/results.json``, ``<out>/results.md``
(mean +- std over the seeds finished, per method and task group after every RL task, beside the paper's numbers)
and ``<out>/results_<group>.png``. The instruction check (``seed-<s>/instruction.json``): the stage-0 policy on
each expert task given another task's instruction.

    python bench/reproduce.py --out runs/reproduce                  # everything: 3 seeds x 6 methods
    python bench/reproduce.py --out runs/reproduce --seeds 0 --methods ire-vla ppo
    python bench/reproduce.py --out runs/reproduce --report         # the table from what has finished
    python bench/reproduce.py --out /tmp/r --smoke                  # a tiny version (make test runs it)

Budgets (the full setting, on a 2-core CPU): 30 demos per expert task, 2000 SFT steps at 64 px, stage 1 up to
16 000 env steps per RL task (the demo's settings), PPO the same env-step budget, stage 2 400 steps, 20 evaluation
episodes per task.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
METHODS = ("sft-only", "ire-vla", "ire-vla-freeze", "stage1-only", "ppo", "ppo-replay")
GROUPS = ("expert", "rl", "unseen")
EXPERT = ["button-press-v3", "drawer-open-v3", "faucet-open-v3", "faucet-close-v3"]
RL_TASKS = [{"task": "button-press-v3", "variation": "obj:0.15,0,0", "name": "button-press-v3 [button +15 cm]"},
            {"task": "drawer-open-v3", "variation": "color:red", "name": "drawer-open-v3 [red]"}]
UNSEEN = [{"task": "button-press-v3", "variation": "hand:0.06,0,0", "name": "button-press-v3 [hand +6 cm]"},
          {"task": "drawer-open-v3", "variation": "hand:0.04,-0.04,0", "name": "drawer-open-v3 [hand +4,-4 cm]"},
          {"task": "drawer-close-v3", "name": "drawer-close-v3 (never trained)"}]
# Each expert task evaluated with another one's instruction: the faucet pair swaps (same scene), the others too.
SWAPS = {"faucet-open-v3": "faucet-close-v3", "faucet-close-v3": "faucet-open-v3",
         "button-press-v3": "drawer-open-v3", "drawer-open-v3": "button-press-v3"}
# The paper (arXiv 2501.16664v1): Meta-World SFT and iRe-VLA per group; PPO-Replay; the ablation's frozen-VLM row.
PAPER = {"sft-only": {"expert": 0.83, "rl": 0.41, "unseen": 0.51},
         "ire-vla": {"expert": 0.84, "rl": 0.89, "unseen": 0.81},
         "ire-vla-freeze": {"expert": 0.75, "rl": 0.79, "unseen": 0.61},
         "ppo-replay": {"expert": 0.69, "rl": None, "unseen": 0.39}}


def settings(smoke: bool) -> dict:
    """The budgets; ``smoke``: a tiny version that exercises every method and stage in a few minutes."""
    if smoke:
        return {"image_size": 32, "demos": 2, "sft_steps": 8, "batch": 8, "rl_steps": 60, "episode_steps": 30,
                "eval_episodes": 1, "eval_steps": 100, "stage2_steps": 4, "final_rollouts": 1, "ppo_envs": 2,
                "demo_rollouts": 1, "expert": [EXPERT[0], EXPERT[2]], "rl": RL_TASKS, "unseen": UNSEEN[2:]}
    return {"image_size": 64, "demos": 30, "sft_steps": 2000, "batch": 32, "rl_steps": 16_000, "episode_steps": 200,
            "eval_episodes": 20, "eval_steps": 200, "stage2_steps": 400, "final_rollouts": 20, "ppo_envs": 8,
            "demo_rollouts": 10, "expert": EXPERT, "rl": RL_TASKS, "unseen": UNSEEN}


def loop_config(method: str, seed: int, run_dir: Path, base: Path, s: dict) -> dict:
    """The `irevla iterate` config of one method and seed (``base``: the seed's ire-vla run, for the others)."""
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    rl = {**demo["rl"], "seed": seed, "max_env_steps": s["rl_steps"], "max_episode_steps": s["episode_steps"],
          "final_rollouts": s["final_rollouts"], "demo_rollouts": s["demo_rollouts"],
          "demo_rollout_attempts": s["demo_rollouts"]}
    config: dict = {
        "run_dir": str(run_dir), "family": "metaworld", "sft_threads": 2,
        "sft_config": str(REPO / "config" / "sft.yaml"),
        "sft_overrides": {"train.steps": s["sft_steps"], "train.eval_every": max(1, s["sft_steps"] // 4),
                          "train.checkpoint_every": max(1, s["sft_steps"] // 8), "train.seed": seed,
                          "train.batch_size": s["batch"], "policy.backbone.image_size": s["image_size"],
                          # "turn the faucet handle to close it" is 34 bytes: the default 32 tokens cut it
                          "policy.backbone.max_text_tokens": 40},
        "rl_tasks": s["rl"], "unseen_tasks": s["unseen"], "rl": rl,
        "stage2": {"steps": s["stage2_steps"], "backbone_training": "lora",
                   "overrides": {"data.expert_fraction": 0.6}},
        "eval": {"episodes": s["eval_episodes"], "max_episode_steps": s["eval_steps"], "parallel_envs": 5},
    }
    if method == "ire-vla":
        config["demos"] = {"tasks": s["expert"], "episodes": s["demos"], "action_noise": 0.2, "seed": seed,
                           "render": {"image_size": s["image_size"], "fast": True}}
        return config
    config.update(init=str(base / "sft" / "policy"), expert_data=[str(base / "expert")],
                  expert_tasks=[{"task": t} for t in s["expert"]])
    if method == "ire-vla-freeze":
        config["stage2"]["freeze_vlm"] = True
    elif method in ("stage1-only", "ppo", "ppo-replay"):
        config["stage2"] = {"skip": True}
    if method in ("ppo", "ppo-replay"):
        config["rl"] = {"trains": "whole", "seed": seed, "max_env_steps": s["rl_steps"],
                        "max_episode_steps": s["episode_steps"],
                        "whole_ppo": {"rollout_episodes": s["ppo_envs"],
                                      "expert_replay": 1.0 if method == "ppo-replay" else 0.0}}
    return config


def shared_stages(method: str) -> tuple[str, ...]:
    """The stages a method takes from its seed's ire-vla run instead of running them again (identical runs)."""
    if method in ("ire-vla-freeze", "stage1-only"):
        return ("eval-0", "rl-1")
    if method in ("ppo", "ppo-replay"):
        return ("eval-0",)
    return ()


def fork(base: Path, run_dir: Path, stages: tuple[str, ...]) -> None:
    """Start `run_dir` with `base`'s finished `stages` (state.json entries; rl-K's D_RL episodes, hard-linked)."""
    if (run_dir / "state.json").is_file() or not stages:
        return
    state = json.loads((base / "state.json").read_text())["stages"]
    missing = [s for s in stages if s not in state]
    if missing:
        raise SystemExit(f"{base}: stages {missing} have not finished; run ire-vla of this seed first")
    for stage in stages:
        if stage.startswith("rl-"):
            (run_dir / "d_rl").mkdir(parents=True, exist_ok=True)
            from irevla.data.store import EpisodeStore

            for info in EpisodeStore(base / "d_rl").index():
                if info.metadata.get("stage") == stage:
                    target = run_dir / "d_rl" / info.path.name
                    if not target.exists():
                        os.link(info.path, target)
    run_dir.mkdir(parents=True, exist_ok=True)
    shared = {s: {**state[s], "shared_from": str(base)} for s in stages}
    (run_dir / "state.json").write_text(json.dumps({"stages": shared}, indent=1))


def run_method(method: str, seed: int, out: Path, s: dict, log) -> bool:
    """Run (or resume) one method of one seed; True when all its stages have finished."""
    seed_dir = out / f"seed-{seed}"
    base = seed_dir / "ire-vla"
    if method == "sft-only":
        return _done(base, "eval-0")
    run_dir = seed_dir / method
    config = loop_config(method, seed, run_dir, base, s)
    run_dir.mkdir(parents=True, exist_ok=True)
    fork(base, run_dir, shared_stages(method))
    config_path = run_dir.parent / f"{method}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.monotonic()
    log(f"seed {seed} {method}: irevla iterate --config {config_path} (log: {run_dir}.log)")
    with open(f"{run_dir}.log", "ab") as output:
        code = subprocess.run([sys.executable, "-m", "irevla", "iterate", "--config", str(config_path)],
                              stdout=output, stderr=subprocess.STDOUT, cwd=REPO,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if code != 0:
        log(f"seed {seed} {method}: exited with {code}; see {run_dir}.log (rerun to resume)")
        return False
    log(f"seed {seed} {method}: finished in {time.monotonic() - started:.0f} s")
    if method == "ire-vla":
        instruction_check(seed_dir, s, log)
    return True


def _done(run_dir: Path, stage: str) -> bool:
    path = run_dir / "state.json"
    return path.is_file() and stage in json.loads(path.read_text())["stages"]


def instruction_check(seed_dir: Path, s: dict, log) -> dict:
    """The stage-0 policy on each expert task, told another task's instruction (``SWAPS``)."""
    path = seed_dir / "instruction.json"
    if path.is_file():
        return json.loads(path.read_text())
    import torch

    from irevla.policy.checkpoint import load_policy
    from irevla.policy.rollout import evaluate_policy
    from irevla.sim.metaworld import INSTRUCTIONS
    from irevla.sim.registry import make_env_by_name

    torch.set_num_threads(1)
    policy = load_policy(seed_dir / "ire-vla" / "sft" / "policy")
    size = policy.observation_spec.cameras[policy.cameras[0]][0]
    own = json.loads((seed_dir / "ire-vla" / "state.json").read_text())["stages"]["eval-0"]["groups"]["expert"]
    result: dict = {}
    for task in s["expert"]:
        other = SWAPS[task]

        def make_env(name: str, other: str = other):
            return SwappedInstruction(make_env_by_name("metaworld", name, cameras=policy.cameras, image_size=size,
                                                       max_episode_steps=s["eval_steps"]), INSTRUCTIONS[other])

        report = evaluate_policy(policy, [task], episodes=s["eval_episodes"], max_episode_steps=s["eval_steps"],
                                 parallel_envs=min(10, s["eval_episodes"]), make_env=make_env)
        swapped = report.tasks[0].success_rate
        result[task] = {"own_instruction": own[task]["rate"], "told": INSTRUCTIONS[other], "swapped": swapped}
        log(f"  instruction check {task}: own {own[task]['rate']:.2f}, told '{INSTRUCTIONS[other]}' {swapped:.2f}")
    path.write_text(json.dumps(result, indent=1))
    return result


class SwappedInstruction:
    """A contract env whose observations carry another instruction (everything else is the env's own)."""

    def __init__(self, env, instruction: str) -> None:
        self.env, self.instruction = env, instruction
        self.task_spec = env.task_spec

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return {**obs, "instruction": self.instruction}, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return {**obs, "instruction": self.instruction}, reward, terminated, truncated, info

    def close(self) -> None:
        self.env.close()


# ------------------------------------------------------------------------------------------------------ report
def task_rates(run_dir: Path, stage: str) -> dict[str, dict[str, float]] | None:
    """Each task's success at `stage` (eval-K) of a run, by group, or None when it has not finished."""
    path = run_dir / "state.json"
    if not path.is_file():
        return None
    stages = json.loads(path.read_text())["stages"]
    if stage not in stages:
        return None
    return {g: {task: t["rate"] for task, t in stages[stage]["groups"].get(g, {}).items()} for g in GROUPS}


def group_rates(run_dir: Path, stage: str) -> dict[str, float] | None:
    """Mean success over each group's tasks at `stage` (eval-K) of a run, or None when it has not finished."""
    rates = task_rates(run_dir, stage)
    if rates is None:
        return None
    return {g: sum(tasks.values()) / len(tasks) for g, tasks in rates.items() if tasks}


def collect_tasks(out: Path, seeds: list[int], n_rl: int) -> dict:
    """per_task[method][after_k][task] = list of per-seed rates (the groups' tasks, in group order)."""
    per_task: dict = {m: {k: {} for k in range(n_rl + 1)} for m in METHODS}
    for seed in seeds:
        base = out / f"seed-{seed}" / "ire-vla"
        for method in METHODS:
            run_dir = base if method in ("sft-only", "ire-vla") else out / f"seed-{seed}" / method
            for k in range(n_rl + 1):
                rates = task_rates(run_dir, "eval-0" if method == "sft-only" else f"eval-{k}")
                for group_rates_ in (rates or {}).values():
                    for task, rate in group_rates_.items():
                        per_task[method][k].setdefault(task, []).append(rate)
    return per_task


def seeds_on_disk(out: Path) -> list[int]:
    """The seeds with a directory under `out` (started in this or an earlier sitting)."""
    return sorted(int(p.name.split("-", 1)[1]) for p in out.glob("seed-*") if p.is_dir()
                  and p.name.split("-", 1)[1].isdigit())


def collect(out: Path, seeds: list[int], n_rl: int) -> dict:
    """results[method][after_k][group] = list of per-seed rates (after_k 0: stage 0)."""
    results: dict = {m: {k: {g: [] for g in GROUPS} for k in range(n_rl + 1)} for m in METHODS}
    for seed in seeds:
        base = out / f"seed-{seed}" / "ire-vla"
        for method in METHODS:
            run_dir = base if method in ("sft-only", "ire-vla") else out / f"seed-{seed}" / method
            for k in range(n_rl + 1):
                rates = group_rates(run_dir if method != "sft-only" else base, "eval-0" if method == "sft-only"
                                    else f"eval-{k}")
                for group, rate in (rates or {}).items():
                    results[method][k][group].append(rate)
    return results


def _cell(values: list[float]) -> str:
    import numpy as np

    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} ({len(values)})"


def write_report(out: Path, seeds: list[int], s: dict) -> str:
    n_rl = len(s["rl"])
    # Every seed started here counts, whichever sitting ran it (`--seeds 2` alone must not drop seeds 0 and 1).
    asked = seeds
    seeds = sorted(set(seeds) | set(seeds_on_disk(out)))
    results = collect(out, seeds, n_rl)
    per_task = collect_tasks(out, seeds, n_rl)
    instructions = {seed: json.loads((out / f"seed-{seed}" / "instruction.json").read_text())
                    for seed in seeds if (out / f"seed-{seed}" / "instruction.json").is_file()}
    lines = [f"Mean ± std over the seeds finished (number of seeds in brackets); seeds started or asked: {seeds}"
             f" (this sitting: {asked}).", ""]
    for k in range(1, n_rl + 1):
        lines += [f"After RL task {k} ({s['rl'][k - 1]['name']}):", "",
                  "| method | expert | rl | unseen | paper (expert / rl / unseen) |", "|---|---|---|---|---|"]
        for method in METHODS:
            row = results[method][0 if method == "sft-only" else k]
            paper = PAPER.get(method)
            paper_text = " / ".join("-" if paper[g] is None else f"{paper[g]:.2f}" for g in GROUPS) if paper else "-"
            lines.append(f"| {method} | " + " | ".join(_cell(row[g]) for g in GROUPS) + f" | {paper_text} |")
        lines.append("")
    for k in range(1, n_rl + 1):
        tasks = list(per_task["sft-only"][0]) or list(per_task["ire-vla"][k])
        if not tasks:
            continue
        lines += [f"Per task after RL task {k} (mean over the seeds finished):", "",
                  "| task | " + " | ".join(METHODS) + " |", "|---|" + "---:|" * len(METHODS)]
        for task in tasks:
            cells = []
            for method in METHODS:
                values = per_task[method][0 if method == "sft-only" else k].get(task, [])
                cells.append(f"{sum(values) / len(values):.2f}" if values else "-")
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        lines.append("")
    if instructions:
        lines += ["Instruction check (stage-0 policy, per expert task: its own instruction vs another task's):", "",
                  "| task | told | own instruction | other instruction |", "|---|---|---|---|"]
        for task in s["expert"]:
            own = [instructions[seed][task]["own_instruction"] for seed in instructions]
            swapped = [instructions[seed][task]["swapped"] for seed in instructions]
            told = next(iter(instructions.values()))[task]["told"]
            lines.append(f"| {task} | {told} | {_cell(own)} | {_cell(swapped)} |")
        lines.append("")
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"seeds": seeds, "settings": s, "results": results,
                                                  "per_task": per_task,
                                                  "instruction_check": instructions, "paper": PAPER}, indent=1))
    _plot(out, results, n_rl)
    return text


def _plot(out: Path, results: dict, n_rl: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    for group in GROUPS:
        figure, axes = plt.subplots(figsize=(6, 4))
        for method in METHODS:
            xs, means, stds = [], [], []
            for k in range(n_rl + 1):
                values = results[method][0 if method == "sft-only" else k][group] if k or method == "sft-only" \
                    else results["sft-only"][0][group]
                if values:
                    xs.append(k)
                    means.append(float(np.mean(values)))
                    stds.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
            if xs:
                axes.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=method)
        axes.set(title=f"{group} tasks", xlabel="after RL task", ylabel="success", ylim=(-0.05, 1.05),
                 xticks=range(n_rl + 1))
        axes.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out / f"results_{group}.png", dpi=100)
        plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="results directory (reruns resume)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--smoke", action="store_true", help="tiny budgets (every method and stage, minutes)")
    parser.add_argument("--report", action="store_true", help="only rebuild results.md/json/png from what finished")
    args = parser.parse_args(argv)
    s = settings(args.smoke)
    args.out.mkdir(parents=True, exist_ok=True)
    settings_file = args.out / "settings.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != json.loads(json.dumps(s)):
        raise SystemExit(f"{settings_file}: this directory was started with other settings (--smoke or not); use "
                         f"another --out")
    settings_file.write_text(json.dumps(s, indent=1))

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    failed = []
    if not args.report:
        # ire-vla first (the others start from its stage 0), then the baselines the paper compares against most
        order = ["ire-vla", "ppo-replay", "ppo", "stage1-only", "ire-vla-freeze"]
        for seed in args.seeds:
            for method in order:
                if method not in args.methods and not (method == "ire-vla" and set(args.methods) - {"ire-vla"}):
                    continue
                if not run_method(method, seed, args.out, s, log):
                    failed.append(f"seed {seed} {method}")
                    if method == "ire-vla":
                        break  # the seed's other methods start from its stage 0
    print(write_report(args.out, args.seeds, s))
    if failed:
        print(f"not finished: {', '.join(failed)} (rerun the same command to resume)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
