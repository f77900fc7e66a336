"""Timing helpers the benchmarks share: device-synchronised latency percentiles and peak GPU memory per phase."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np
import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency(function: Callable[[], object], iters: int, warmup: int, device: torch.device) -> dict:
    """p50 / p99 / mean / min milliseconds of `function` over `iters` calls after `warmup` calls, the device
    synchronised before and after each call; ``first_call_s`` is the first warm-up call (compilation, capture)."""
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        function()
    times = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "iters": iters, "first_call_s": first}


class Memory:
    """Peak device memory of a phase (CUDA); None on the CPU, where torch keeps no such counter."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None

    def allocated_mb(self) -> float | None:
        return torch.cuda.memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
