"""Stage 1 with a learned success detector against stage 1 with the simulator's reward, same budget (issue 15 item 6).

From a run directory where the demo's stage 0 has finished (``irevla iterate --config config/demo.yaml`` up to
``sft``; a finished ``make demo`` run will do), on the demo's RL task:

1. ``rollouts``: the SFT policy's own rollouts on the RL task (deterministic head; the env's success is recorded per
   step, and a success runs on for a few steps, so the detector sees what "done" looks like for a while);
2. ``detector``: ``irevla reward train`` on those rollouts + the expert demos of the base task -- nothing from the
   RL stage, and no frame the detector will be judged on;
3. ``env`` and ``classifier``: stage 1 of `irevla iterate` from the SFT checkpoint, once with ``rl.reward.source:
   env`` and once with the detector (the env's success is then only recorded), the demo's stage-1 settings and
   budget, ``final_rollouts`` episodes of the final head on fresh seeds, judged by the simulator in both runs;
4. the table: the final head's success in each run, and for the detector run its precision and recall on the RL
   episodes it labelled, and false successes per 100 episodes.

Every step is resumable: rerun the same command and finished steps are kept (the loop resumes its own stages).
Writes ``<out>/reward.json`` (and prints the table)::

    python bench/bench_reward.py --base runs/demo --out runs/bench_reward [--rollouts 60] [--final-rollouts 40]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def collect_rollouts(policy_dir: Path, ref: dict, out: Path, episodes: int, max_steps: int, run_on: int,
                     seed: int = 70_000) -> dict:
    """`episodes` rollouts of the policy's mean on task `ref`, each success running on for `run_on` steps, every
    step's reward the env's success after it (the per-step truth `irevla.reward.labels` reads)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from irevla.data.episode import EpisodeBuilder
    from irevla.data.store import EpisodeStore
    from irevla.iterate.actor import DetectorDecides
    from irevla.policy.checkpoint import load_policy
    from irevla.sim.registry import make_env_by_name
    from irevla.spec import Observation

    torch.set_num_threads(1)
    store = EpisodeStore(out)
    done = {info.metadata.get("rollout") for info in store.index()}
    policy = load_policy(policy_dir)
    size = policy.observation_spec.cameras[policy.cameras[0]][0]
    env = DetectorDecides(make_env_by_name("metaworld", ref["task"], cameras=policy.cameras, image_size=size,
                                           max_episode_steps=max_steps, variation=ref.get("variation", ""),
                                           variation_seed=ref.get("variation_seed", 0)))
    try:
        for index in tqdm(range(episodes), desc="SFT rollouts", unit="ep"):
            if index in done:
                continue
            obs, info = env.reset(seed=seed + index)
            builder = EpisodeBuilder(env.task_spec, source="rl", round=0,
                                     metadata={"rollout": index, "seed": seed + index, "policy": str(policy_dir)})
            first_success, step = None, 0
            while step < max_steps and (first_success is None or step < first_success + run_on):
                observation = Observation.from_gym(obs)
                action = env.task_spec.action_spec.clip(policy.act(observation).values)
                obs, _, _, _, info = env.step(action)
                step += 1
                success = bool(info.get("success", False))
                builder.add(observation, action, float(success))
                if success and first_success is None:
                    first_success = step
            store.write(builder.finish(Observation.from_gym(obs), success=first_success is not None))
    finally:
        env.close()
    infos = store.index()
    return {"episodes": len(infos), "successes": sum(i.success for i in infos),
            "rate": float(np.mean([i.success for i in infos])) if infos else None}


def stage1_config(base: Path, out: Path, source: str, detector: Path | None, final_rollouts: int) -> dict:
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    rl = demo["rl"]
    rl["final_rollouts"] = final_rollouts
    rl["reward"] = {"source": source, **({"detector": str(detector)} if detector else {})}
    return {"run_dir": str(out), "family": "metaworld", "init": str(base / "sft" / "policy"),
            "expert_data": [str(base / "expert")], "expert_tasks": [], "rl_tasks": demo["rl_tasks"],
            "unseen_tasks": [], "rl": rl, "stage2": {"skip": True},
            "eval": {"episodes": 10, "max_episode_steps": demo["eval"]["max_episode_steps"], "parallel_envs": 10},
            "threads": 1}


def run_stage1(config: dict, path: Path) -> dict:
    from irevla.config import validate_config
    from irevla.iterate.config import IterateConfig
    from irevla.iterate.loop import run_iterate

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    state = run_iterate(validate_config(config, IterateConfig, str(path)))
    return state.output("rl-1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, type=Path, help="run dir with expert/ and sft/policy")
    parser.add_argument("--out", required=True, type=Path, help="where everything goes (resumable)")
    parser.add_argument("--rollouts", type=int, default=60, help="SFT rollouts on the RL task for the detector")
    parser.add_argument("--run-on", type=int, default=5, help="steps a rollout runs on after its success")
    parser.add_argument("--final-rollouts", type=int, default=40, help="fresh-seed episodes of each final head")
    parser.add_argument("--target-precision", type=float, default=0.99)
    parser.add_argument("--confirm-frames", type=int, nargs="+", default=[2],
                        help="detector runs: consecutive frames above the threshold before a success (one run each)")
    args = parser.parse_args(argv)

    from irevla.reward.train import train_detector

    started = time.monotonic()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    ref = demo["rl_tasks"][0]
    policy = args.base / "sft" / "policy"
    rollouts = collect_rollouts(policy, ref, out / "rollouts", args.rollouts, demo["rl"]["max_episode_steps"],
                                args.run_on)
    print(f"SFT rollouts on {ref.get('name', ref['task'])}: {rollouts['successes']}/{rollouts['episodes']}")
    results: dict = {"rollouts": rollouts}
    labels = ["env"]
    for confirm in args.confirm_frames:
        suffix = "" if confirm == 1 else f"-confirm{confirm}"
        detector = out / f"detector{suffix}"
        if not (detector / "report.json").is_file():
            train_detector([args.base / "expert", out / "rollouts"], policy, detector, task=ref["task"],
                           target_precision=args.target_precision, confirm_frames=confirm, threads=1)
        detector_report = json.loads((detector / "report.json").read_text())
        results[f"detector{suffix}"] = {k: detector_report[k] for k in (
            "inputs", "candidates", "threshold", "target_met", "val_frames", "val_episode_counts", "frames",
            "episodes")}
        labels.append(f"classifier{suffix}")
    for label in labels:
        detector = None if label == "env" else out / label.replace("classifier", "detector")
        config = stage1_config(args.base, out / f"stage1-{label}", "env" if label == "env" else "classifier",
                               detector, args.final_rollouts)
        results[label] = run_stage1(config, out / f"stage1-{label}.yaml")
    results["seconds"] = round(time.monotonic() - started, 1)
    from irevla.atomic_io import atomic_write_text

    atomic_write_text(out / "reward.json", json.dumps(results, indent=1))
    print(format_table(results))
    return 0


def format_table(results: dict) -> str:
    rows = ["| stage-1 reward | final head (fresh seeds) | RL episodes | labelled successes | detector precision | "
            "detector recall | false successes / 100 episodes |", "|---|---|---|---|---|---|---|"]
    for source in [key for key in results if key == "env" or key.startswith("classifier")]:
        out = results[source]
        reward = out.get("reward", {})

        def figure(key: str, reward: dict = reward) -> str:
            value = reward.get(key)
            return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

        rows.append(f"| {source} | {out['final_successes']}/{out['final_rollouts']} ({out['final_success']:.2f}) | "
                    f"{out['episodes']} | {out['successes']} | {figure('precision')} | {figure('recall')} | "
                    f"{figure('false_successes_per_100')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
