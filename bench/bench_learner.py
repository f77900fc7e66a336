"""Benchmark of the stage-1 learner: SAC updates/s on cached latents, and what re-encoding images would cost instead.

    python bench/bench_learner.py [--quick] [--device auto|cpu|gpu] [--threads 1] [--repeats 5]
                                  [--out bench/results/learner.json]

The head is config/sft.yaml's tiny VLA (random-weight Qwen2-VL, 64 px, one camera: latents 50 x 128, token_dim 128,
MLP [256, 256], proprio 4, action 4), in both latent modes (`HeadSpec.latent`):

* ``updates_per_s``: `SACTrainer.step()` -- sample a 50/50 demo/online batch from two `LatentReplay` buffers (random
  latents) and run one jitted SAC/REDQ update (``utd`` critic steps + one actor step), batch 256, 10 critics, at
  utd 4 (the default) and utd 1; ``transitions_per_s`` = updates/s x utd x 256 (critic-step samples);
* ``encode_s``: the time the frozen VLM (torch, `VLAPolicy.encode`, no grad) needs for the images of one update's
  batch -- observation and next observation of utd x 256 transitions -- which is what an RL step on images instead
  of cached latents would add; ``reencode_ratio`` = (update + encode) / update, the slowdown avoided by caching;
* ``ensembles``: config/demo.yaml's learner (pooled latents, utd 2, batch 128) with REDQ's 10 critics at the head's
  width against the demo's 4 critics 128 wide, and the speed-up between them (same run).

Medians over `repeats` timed calls after a warm-up (the first call compiles), because other load on a small machine
makes single calls noisy. JAX and torch run with `--threads` threads (default 1: on a busy 2-core machine one thread
is fastest). `--device` picks JAX's platform (auto: a GPU when jax has one) and the report records
``jax.devices()``; the VLM's encode always runs on torch's CPU here. `--quick` is a smoke test (utd 1, pooled
latents and one repeat only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

INSTRUCTION = "press the button"
BATCH = 256
CRITICS = 10


def configure(device: str, threads: int) -> None:
    """JAX's platform and thread count must be set before jax is imported."""
    flags = (f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
             f"intra_op_parallelism_threads={threads}")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    if device != "auto":
        os.environ["JAX_PLATFORMS"] = {"cpu": "cpu", "gpu": "cuda"}[device]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(function, repeats: int, warmup: int = 1) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_vla():
    """config/sft.yaml's policy (random weights, no download) for Meta-World's corner2 camera."""
    import numpy as np
    import yaml

    from irevla.config import validate_config
    from irevla.data.stats import stats_from_arrays
    from irevla.policy.config import PolicyConfig
    from irevla.policy.vla import VLAPolicy
    from irevla.spec import METAWORLD_PROPRIO, ActionSpec, ObservationSpec

    settings = yaml.safe_load((ROOT / "config" / "sft.yaml").read_text())["policy"]
    config = validate_config(settings, PolicyConfig, "config/sft.yaml: policy")
    size = config.backbone.image_size
    rng = np.random.default_rng(0)
    stats = stats_from_arrays([rng.uniform(-1, 1, (50, 4))], [rng.normal(size=(51, 4))],
                              ActionSpec.metaworld().names, METAWORLD_PROPRIO)
    policy = VLAPolicy.build(config, ActionSpec.metaworld(), ObservationSpec({"corner2": (size, size)},
                                                                             METAWORLD_PROPRIO), stats)
    policy.eval()
    return policy


def filled_buffers(spec, rng, transitions: int):
    """Demo and online `LatentReplay`s holding `transitions` random transitions each (20-step episodes)."""
    import numpy as np

    from irevla.learner.replay import LatentReplay

    buffers = []
    for _ in range(2):
        replay = LatentReplay(transitions + transitions // 20 + 1, spec.latent_shape, spec.proprio_dim,
                              spec.action_dim, with_mask=spec.latent == "tokens")
        steps = 20
        for _ in range(transitions // steps):
            latents = rng.normal(size=(steps + 1, *spec.latent_shape)).astype(np.float16)
            masks = np.ones((steps + 1, spec.latent_length), bool) if spec.latent == "tokens" else None
            replay.add_episode(latents, masks, rng.normal(size=(steps + 1, spec.proprio_dim)).astype(np.float32),
                               rng.uniform(-1, 1, (steps, spec.action_dim)).astype(np.float32),
                               success=bool(rng.integers(2)))
        buffers.append(replay)
    return buffers


def bench_updates(spec, utd: int, repeats: int, critics: int = CRITICS, batch: int = BATCH,
                  critic_hidden: tuple[int, ...] | None = None) -> dict:
    import numpy as np

    from irevla.learner.sac import SACAgent, SACConfig, SACTrainer

    rng = np.random.default_rng(0)
    agent = SACAgent(spec, SACConfig(num_critics=critics, batch_size=batch, utd=utd, critic_hidden=critic_hidden))
    demo, online = filled_buffers(spec, rng, 4000)
    trainer = SACTrainer(agent, agent.init(None), demo, online, rng)
    start = time.perf_counter()
    trainer.step()  # compiles
    compile_s = time.perf_counter() - start
    seconds = timed(trainer.step, repeats, warmup=1)  # step() returns floats: the update has finished
    return {"latent": spec.latent, "latent_shape": list(spec.latent_shape), "utd": utd, "batch": batch,
            "critics": critics, "critic_hidden": list(critic_hidden or spec.hidden), "update_s": seconds,
            "updates_per_s": 1 / seconds, "transitions_per_s": utd * batch / seconds, "compile_s": compile_s}


# config/demo.yaml's stage-1 learner before and after it moved to a smaller ensemble (pooled latents, utd 2, batch
# 128): the ratio is what the demo's learner gained in updates per CPU second.
ENSEMBLES = ({"critics": 10, "critic_hidden": None}, {"critics": 4, "critic_hidden": (128, 128)})


def bench_ensembles(spec, repeats: int) -> list[dict]:
    rows = [bench_updates(spec, 2, repeats, batch=128, **ensemble) for ensemble in ENSEMBLES]
    for row in rows:
        row["speedup_vs_first"] = rows[0]["update_s"] / row["update_s"]
    return rows


def bench_encode(policy, images: int, repeats: int, chunk: int = 256) -> float:
    """Seconds for the frozen VLM to encode `images` observations (in chunks of `chunk`)."""
    import torch

    size = policy.config.backbone.image_size
    frames = {"corner2": torch.randint(0, 256, (chunk, size, size, 3), dtype=torch.uint8)}

    def encode_all():
        with torch.no_grad():
            done = 0
            while done < images:
                count = min(chunk, images - done)
                policy.encode({k: v[:count] for k, v in frames.items()}, [INSTRUCTION] * count)
                done += count

    return timed(encode_all, repeats, warmup=1)


def print_table(updates: list[dict], reencode: list[dict]) -> None:
    columns = ("latent", "utd", "update_s", "updates_per_s", "transitions_per_s", "compile_s")
    print("  ".join(f"{c:>17s}" for c in columns))
    for row in updates:
        print("  ".join(f"{row[c]:>17.4g}" if isinstance(row[c], float) else f"{row[c]:>17}" for c in columns))
    print()
    columns = ("latent", "utd", "images", "update_s", "encode_s", "reencode_ratio")
    print("  ".join(f"{c:>17s}" for c in columns))
    for row in reencode:
        print("  ".join(f"{row[c]:>17.4g}" if isinstance(row[c], float) else f"{row[c]:>17}" for c in columns))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: utd 1, pooled latents, one repeat")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"),
                        help="JAX platform (auto: GPU when jax has one); the report records jax.devices()")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "learner.json"))
    args = parser.parse_args(argv)
    configure(args.device, args.threads)

    import jax
    import torch

    from irevla.learner.flax_head import HeadSpec

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    devices = [str(d) for d in jax.devices()]
    print(f"jax devices: {devices}")
    repeats = 1 if args.quick else args.repeats
    latents = ("pooled",) if args.quick else ("pooled", "tokens")
    utds = (1,) if args.quick else (4, 1)

    policy = tiny_vla()
    updates, reencode = [], []
    for latent in latents:
        spec = HeadSpec.from_policy(policy, latent=latent)
        for utd in utds:
            row = bench_updates(spec, utd, repeats)
            updates.append(row)
            print(f"{latent} utd {utd}: {row['updates_per_s']:.3g} updates/s", flush=True)
    encode_s = {utd: bench_encode(policy, 2 * utd * BATCH, max(1, repeats // 2)) for utd in utds}
    for row in updates:
        seconds = encode_s[row["utd"]]
        reencode.append({"latent": row["latent"], "utd": row["utd"], "images": 2 * row["utd"] * BATCH,
                         "update_s": row["update_s"], "encode_s": seconds,
                         "reencode_ratio": (row["update_s"] + seconds) / row["update_s"]})
    ensembles = [] if args.quick else bench_ensembles(HeadSpec.from_policy(policy, latent="pooled"), repeats)
    report = {
        "benchmark": "learner",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "jax": jax.__version__, "jax_devices": devices, "torch": torch.__version__,
                    "threads": args.threads, "load_average": list(os.getloadavg())},
        "parameters": {"quick": args.quick, "repeats": repeats, "batch": BATCH, "critics": CRITICS,
                       "head": HeadSpec.from_policy(policy).to_dict() | {"proprio_mean": None, "proprio_std": None},
                       "vlm": {"kind": policy.config.backbone.kind, "image_size": policy.config.backbone.image_size,
                               "latent_shape": list(policy.latent_shape)}},
        "updates": updates,
        "reencode": reencode,
        "ensembles": ensembles,
    }
    print_table(updates, reencode)
    if ensembles:
        print("\nconfig/demo.yaml's learner (pooled, utd 2, batch 128):")
        for row in ensembles:
            print(f"  {row['critics']:>2} critics {str(row['critic_hidden']):>12}: {row['updates_per_s']:7.3g} "
                  f"updates/s  ({row['speedup_vs_first']:.2f}x the first)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
