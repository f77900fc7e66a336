"""CPU benchmark of the VLA policy: act latency, encode and head throughput, SFT step rate, checkpoint cost.

    python bench/bench_policy.py [--kinds blip2 qwen2_vl] [--image-size 64] [--threads 1] [--repeats 20]
                                 [--out bench/results/policy.json]

Per backbone kind, with the small random-weight models the tests and the simulated demo use (config/sft.yaml's
sizes; no download):

* ``act_ms``: one `VLAPolicy.act(observation)` (the robot loop's call), median over `repeats`;
* ``encode_per_s``: latents/s of `encode` at batch 32 (stage 1 encodes every observation once);
* ``head_train_per_s``: samples/s of a head forward + backward + AdamW step on stored latents at batch 256 (what
  stage-1 RL trains; the VLM is not involved);
* ``sft_lora_per_s`` / ``sft_full_per_s``: samples/s of one SFT step (augmentation, forward, masked MSE, backward,
  AdamW) at batch 32 with LoRA and with the whole backbone training;
* ``save_s`` / ``load_s`` / ``checkpoint_mb``: `save_policy` / `load_policy` (hash-verified) of the full-training
  policy and its size on disk.

Medians of several runs after a warm-up, because other load on a small machine makes single runs noisy. Torch runs
with `--threads` threads (default 1: on a busy 2-core machine two OpenMP threads are often slower than one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from irevla.data.stats import stats_from_arrays
from irevla.policy.checkpoint import load_policy, save_policy
from irevla.policy.config import BackboneConfig, PolicyConfig
from irevla.policy.images import random_shift
from irevla.policy.sft import masked_mse
from irevla.policy.vla import VLAPolicy
from irevla.spec import METAWORLD_PROPRIO, ActionSpec, Observation, ObservationSpec

INSTRUCTION = "press the button"


def make_policy(kind: str, image_size: int, training: str) -> VLAPolicy:
    rng = np.random.default_rng(0)
    stats = stats_from_arrays([rng.uniform(-1, 1, (50, 4))], [rng.normal(size=(51, 4))],
                              ActionSpec.metaworld().names, METAWORLD_PROPRIO)
    config = PolicyConfig(backbone=BackboneConfig(kind=kind, image_size=image_size), backbone_training=training)
    return VLAPolicy.build(config, ActionSpec.metaworld(),
                           ObservationSpec({"corner2": (image_size, image_size)}, METAWORLD_PROPRIO), stats)


def timed(function, repeats: int, warmup: int = 2) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_kind(kind: str, image_size: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    result: dict = {"kind": kind, "image_size": image_size}
    policy = make_policy(kind, image_size, "lora")
    counts = policy.parameter_counts()
    result.update(backbone_params=counts["backbone"], head_params=counts["head"],
                  latent_shape=list(policy.latent_shape))

    observation = Observation(images={"corner2": rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)},
                              proprio=np.zeros(4, np.float32), instruction=INSTRUCTION)
    result["act_ms"] = 1000 * timed(lambda: policy.act(observation), repeats)

    images = {"corner2": torch.randint(0, 256, (32, image_size, image_size, 3), dtype=torch.uint8)}
    with torch.no_grad():
        result["encode_per_s"] = 32 / timed(lambda: policy.encode(images, [INSTRUCTION] * 32), max(3, repeats // 4))
        latent = policy.encode(images, [INSTRUCTION] * 32)
    tokens = latent.tokens.repeat(8, 1, 1)  # batch 256
    mask = latent.mask.repeat(8, 1)
    proprio, target = torch.randn(256, 4), torch.rand(256, 1, 4) * 2 - 1
    head_optimizer = torch.optim.AdamW(policy.head.parameters(), lr=1e-4)

    def head_step():
        loss = ((policy.head(tokens, mask, proprio) - target) ** 2).mean()
        head_optimizer.zero_grad()
        loss.backward()
        head_optimizer.step()

    result["head_train_per_s"] = 256 / timed(head_step, max(3, repeats // 4))

    for training in ("lora", "full"):
        train_policy = policy if training == "lora" else make_policy(kind, image_size, "full")
        backbone_params, head_params = train_policy.parameter_groups()
        optimizer = torch.optim.AdamW([{"params": backbone_params, "lr": 1e-4}, {"params": head_params}], lr=1e-3)
        batch_images = {"corner2": torch.randint(0, 256, (32, image_size, image_size, 3), dtype=torch.uint8)}
        actions, action_mask = torch.rand(32, 1, 4) * 2 - 1, torch.ones(32, 1, dtype=torch.bool)
        generator = torch.Generator().manual_seed(0)

        def sft_step(p=train_policy, o=optimizer, images=batch_images, actions=actions, mask=action_mask,
                     generator=generator):
            shifted = {c: random_shift(v, 4, generator) for c, v in images.items()}
            loss = masked_mse(p(shifted, [INSTRUCTION] * 32, torch.zeros(32, 4)), actions, mask)
            o.zero_grad()
            loss.backward()
            o.step()

        result[f"sft_{training}_per_s"] = 32 / timed(sft_step, max(3, repeats // 4))
        if training == "full":
            directory = Path(tempfile.mkdtemp())
            try:
                target = directory / "ckpt"
                result["save_s"] = timed(lambda p=train_policy, t=target: save_policy(p, t), 3, warmup=1)
                result["load_s"] = timed(lambda t=target: load_policy(t), 3, warmup=1)
                result["checkpoint_mb"] = sum(f.stat().st_size for f in (directory / "ckpt").iterdir()) / 1e6
            finally:
                shutil.rmtree(directory)
    return result


def print_table(results: list[dict]) -> None:
    columns = ("kind", "act_ms", "encode_per_s", "head_train_per_s", "sft_lora_per_s", "sft_full_per_s", "save_s",
               "load_s", "checkpoint_mb")
    print("  ".join(f"{c:>16s}" for c in columns))
    for row in results:
        print("  ".join(f"{row[c]:>16.4g}" if isinstance(row[c], float) else f"{row[c]:>16}" for c in columns))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", default=["blip2", "qwen2_vl"], choices=("blip2", "qwen2_vl"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "policy.json"))
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = [bench_kind(kind, args.image_size, args.repeats) for kind in args.kinds]
    report = {
        "benchmark": "policy_cpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": args.threads},
        "parameters": {"image_size": args.image_size, "repeats": args.repeats, "sft_batch": 32, "encode_batch": 32,
                       "head_batch": 256},
        "results": results,
    }
    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
