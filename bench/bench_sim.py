"""Simulation throughput: env step + render frames/s, fast vs default rendering, per family and image size.

    python bench/bench_sim.py [--steps 40] [--default-steps 8] [--out bench/results/sim.json]

Each configuration resets once, then times `steps` env steps with random actions (each step renders every camera).
Default-quality rendering is ~10x slower on a CPU renderer, so it runs fewer steps. The JSON has frames/s per
configuration and the fast/default ratio per (family, size), which is the number to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from irevla.sim.registry import make_env_by_name

CASES = {"metaworld": "button-press-v3", "kitchen": "microwave-open"}


def measure(family: str, task: str, size: int, fast: bool, steps: int, repeats: int) -> tuple[float, float]:
    """Median and spread (max - min) of frames/s over `repeats` timed runs of `steps` steps in one env."""
    env = make_env_by_name(family, task, image_size=size, fast=fast)
    try:
        env.action_space.seed(0)
        env.reset(seed=0)
        env.step(env.action_space.sample())  # first frame builds GL state: keep it out of the timing
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                if terminated or truncated:
                    env.reset()
            rates.append(steps / (time.perf_counter() - start))
        return float(np.median(rates)), float(max(rates) - min(rates))
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed steps with fast rendering")
    parser.add_argument("--default-steps", type=int, default=8, help="timed steps with default rendering")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument("--families", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 224])
    parser.add_argument("--out", default="bench/results/sim.json")
    args = parser.parse_args()

    rows = []
    print(f"{'family':10s} {'task':18s} {'px':>4s} {'fast fps':>14s} {'default fps':>14s} {'ratio':>6s}")
    for family in args.families:
        for size in args.sizes:
            fast, fast_spread = measure(family, CASES[family], size, True, args.steps, args.repeats)
            default, default_spread = measure(family, CASES[family], size, False, args.default_steps, args.repeats)
            rows.append({"family": family, "task": CASES[family], "image_size": size, "fast_fps": fast,
                         "fast_fps_spread": fast_spread, "default_fps": default, "default_fps_spread": default_spread,
                         "fast_over_default": fast / default})
            print(f"{family:10s} {CASES[family]:18s} {size:4d} {fast:8.1f} ±{fast_spread / 2:4.1f} "
                  f"{default:8.2f} ±{default_spread / 2:4.2f} {fast / default:6.1f}")
    result = {"benchmark": "sim_step_render", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cpus": __import__("os").cpu_count()},
              "steps": {"fast": args.steps, "default": args.default_steps}, "repeats": args.repeats, "results": rows,
              "mean_fast_over_default": float(np.mean([r["fast_over_default"] for r in rows]))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
