"""Benchmark the episode store: crash-safe writes, full reads, and random-access training samples, lzf vs gzip.

    python bench/bench_dataset.py [--episodes 30] [--steps 50] [--image-size 128] [--samples 2000]
                                  [--out bench/results/dataset.json]

What is measured, per kind of image and per compression (lzf, gzip level 4, and none as the baseline):

* write: episodes/s through `EpisodeStore.write` (HDF5 write + fsync + atomic rename + directory fsync), the size on
  disk and the compression ratio (raw array bytes / file bytes);
* read: full validated `read_episode` episodes/s (what `irevla data check` does);
* sample: random-access training samples/s through `EpisodeStepDataset` + `DataLoader` (batch 32, shuffled) with
  ``num_workers`` 0 and 2, counted after the first batch so worker start-up is excluded; plus the in-memory cache.
  Best of `--repeats` runs, because other load on a small machine makes single runs noisy. The main process runs
  torch with one thread: on a busy 2-core machine, OpenMP threads spinning in collate distort the numbers badly.

Images are synthetic, one 128x128 camera, a smooth gradient background with a moving object: ``render`` is
noise-free like a simulator render, ``camera`` adds +-2 levels of sensor noise like a real camera. Real images
compress somewhat differently, so treat size ratios as indicative. Numbers depend on the disk (fsync) and on other
load; the JSON records the parameters next to the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from irevla.data.episode import Episode  # noqa: E402
from irevla.data.episode_file import read_episode  # noqa: E402
from irevla.data.store import EpisodeStore  # noqa: E402
from irevla.spec import METAWORLD_PROPRIO, ActionSpec, ObservationSpec, TaskSpec  # noqa: E402

COMPRESSIONS = ("lzf", "gzip", "none")
IMAGE_KINDS = {"render": 0, "camera": 2}  # kind -> sensor noise amplitude in grey levels
WORKER_COUNTS = (0, 2)
BATCH_SIZE = 32


def synthetic_frames(rng: np.random.Generator, n_frames: int, size: int, noise: int) -> np.ndarray:
    """Frames of a smooth scene with a moving object, plus +-`noise` levels of sensor noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = np.stack([80 + 60 * x, 100 + 40 * y, 120 + 30 * (x + y)], axis=-1)
    frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    start, velocity = rng.uniform(0.2, 0.6, 2), rng.uniform(-0.005, 0.005, 2)
    colour = rng.uniform(0, 255, 3)
    half = max(size // 10, 1)
    for t in range(n_frames):
        frame = background.copy()
        cy, cx = ((start + velocity * t) * size).astype(int)
        frame[max(cy - half, 0):cy + half, max(cx - half, 0):cx + half] = colour
        if noise:
            frame += rng.integers(-noise, noise + 1, frame.shape)
        frames[t] = np.clip(frame, 0, 255)
    return frames


def make_episodes(n: int, n_steps: int, size: int, noise: int, seed: int = 0) -> list[Episode]:
    task = TaskSpec(name="button-press-v3", family="metaworld", instruction="press the button",
                    action_spec=ActionSpec.metaworld(),
                    observation_spec=ObservationSpec({"corner2": (size, size)}, METAWORLD_PROPRIO),
                    max_episode_steps=500)
    rng = np.random.default_rng(seed)
    created = datetime(2025, 1, 1, tzinfo=timezone.utc)
    return [Episode(images={"corner2": synthetic_frames(rng, n_steps + 1, size, noise)},
                    proprio=rng.standard_normal((n_steps + 1, 4)).astype(np.float32),
                    actions=rng.uniform(-1, 1, (n_steps, 4)).astype(np.float32),
                    rewards=np.zeros(n_steps, np.float32), success=True, instruction=task.instruction, task=task,
                    source="script", created=(created + timedelta(seconds=i)).isoformat(),
                    timestamps=np.arange(n_steps + 1) * 0.1, metadata={"seed": i})
            for i in range(n)]


def bench_write(episodes: list[Episode], directory: Path, compression: str) -> dict:
    store = EpisodeStore(directory, compression=compression)
    start = time.perf_counter()
    for episode in episodes:
        store.write(episode)
    seconds = time.perf_counter() - start
    file_bytes = sum(p.stat().st_size for p in store.paths())
    raw_bytes = sum(e.nbytes for e in episodes)
    return {"episodes_per_s": len(episodes) / seconds, "write_mb_per_s": raw_bytes / seconds / 1e6,
            "bytes_per_episode": file_bytes / len(episodes), "compression_ratio": raw_bytes / file_bytes}


def bench_full_read(directory: Path) -> dict:
    paths = EpisodeStore(directory).paths()
    start = time.perf_counter()
    for path in paths:
        read_episode(path)
    return {"read_episodes_per_s": len(paths) / (time.perf_counter() - start)}


def bench_samples(directory: Path, n_samples: int, num_workers: int, cache: bool = False, repeats: int = 2) -> float:
    return max(_samples_per_s(directory, n_samples, num_workers, cache) for _ in range(repeats))


def _samples_per_s(directory: Path, n_samples: int, num_workers: int, cache: bool) -> float:
    import torch
    from torch.utils.data import DataLoader

    from irevla.data.torch_dataset import EpisodeStepDataset

    dataset = EpisodeStepDataset(EpisodeStore(directory).paths(), cache=cache)
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0), persistent_workers=num_workers > 0)
    seen, start = 0, None
    while True:
        for batch in loader:
            if start is None:  # first batch: workers are up, files are open; start the clock now
                start = time.perf_counter()
                continue
            seen += len(batch["step"])
            if seen >= n_samples:
                return seen / (time.perf_counter() - start)


def print_table(results: dict) -> None:
    columns = ("images", "compression", "write ep/s", "write MB/s", "MiB/episode", "ratio", "read ep/s",
               *(f"samples/s w={w}" for w in WORKER_COUNTS), "samples/s cache")
    rows = []
    for kind, by_compression in results.items():
        rows += [(kind, compression, f"{r['episodes_per_s']:.1f}", f"{r['write_mb_per_s']:.0f}",
                     f"{r['bytes_per_episode'] / 2**20:.2f}", f"{r['compression_ratio']:.2f}",
                     f"{r['read_episodes_per_s']:.1f}",
                     *(f"{r['samples_per_s'][str(w)]:.0f}" for w in WORKER_COUNTS),
                  f"{r['samples_per_s_cached']:.0f}") for compression, r in by_compression.items()]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=30, help="episodes written per image kind and compression")
    parser.add_argument("--steps", type=int, default=50, help="steps per episode")
    parser.add_argument("--image-size", type=int, default=128, help="square image side (one camera)")
    parser.add_argument("--samples", type=int, default=2000, help="training samples read per configuration")
    parser.add_argument("--repeats", type=int, default=2, help="sample-rate runs per configuration (best kept)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir, removed)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/dataset.json"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="irevla-bench-", dir=args.dir))
    results: dict[str, dict[str, dict]] = {}
    try:
        for kind, noise in IMAGE_KINDS.items():
            episodes = make_episodes(args.episodes, args.steps, args.image_size, noise)
            results[kind] = {}
            for compression in COMPRESSIONS:
                directory = root / kind / compression
                result = bench_write(episodes, directory, compression)
                result.update(bench_full_read(directory))
                result["samples_per_s"] = {str(w): bench_samples(directory, args.samples, w, repeats=args.repeats)
                                           for w in WORKER_COUNTS}
                result["samples_per_s_cached"] = bench_samples(directory, args.samples, 0, cache=True,
                                                               repeats=args.repeats)
                results[kind][compression] = result
                print(f"{kind}/{compression}: done", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    ratios = {}
    for kind, by_compression in results.items():
        lzf, gzip = by_compression["lzf"], by_compression["gzip"]
        ratios[kind] = {
            "gzip_size_over_lzf_size": gzip["bytes_per_episode"] / lzf["bytes_per_episode"],
            "lzf_write_speed_over_gzip": lzf["episodes_per_s"] / gzip["episodes_per_s"],
            "lzf_read_speed_over_gzip": lzf["read_episodes_per_s"] / gzip["read_episodes_per_s"],
            **{f"lzf_samples_speed_over_gzip_w{w}": lzf["samples_per_s"][str(w)] / gzip["samples_per_s"][str(w)]
               for w in WORKER_COUNTS},
            "lzf_compression_ratio": lzf["compression_ratio"],
            "gzip_compression_ratio": gzip["compression_ratio"],
        }
    report = {
        "benchmark": "dataset",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": {"episodes": args.episodes, "steps": args.steps, "image_size": args.image_size, "cameras": 1,
                   "samples": args.samples, "repeats": args.repeats, "batch_size": BATCH_SIZE, "gzip_level": 4,
                   "image_noise": IMAGE_KINDS, "torch_threads_main_process": 1},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "results": results,
        "ratios": ratios,
    }
    print_table(results)
    for kind, kind_ratios in ratios.items():
        print(f"{kind} ratios: " + ", ".join(f"{k}={v:.2f}" for k, v in kind_ratios.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
