"""Timing a callable: CUDA-event kernel times and wall-clock times, as medians after warm-up."""
from __future__ import annotations

import time
from typing import Callable

import torch


def cuda_time_ms(fn: Callable[[], object], warmup: int = 3, budget_ms: float = 50.0, max_samples: int = 25,
                 calls_per_sample: int = 4) -> float:
    """Median milliseconds per call of `fn()` on the current CUDA stream, after warm-up (which also
    absorbs Triton autotuning). Each sample times a few back-to-back calls, as a model runs them:
    launches queue behind running kernels, so host launch cost counts only where it is not hidden."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    total = 0.0
    while len(times) < max_samples and (total < budget_ms or len(times) < 5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls_per_sample):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls_per_sample)
        total += times[-1] * calls_per_sample
    times.sort()
    return times[len(times) // 2]


def wall_seconds(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median wall seconds per call after one warm-up call (synchronizing CUDA)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def median_call_ms(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median milliseconds of `repeats` single calls (whole-model forwards; the caller warms up): CUDA
    events on a GPU, the wall clock elsewhere."""
    if not device.startswith("cuda"):
        return wall_seconds(fn, device, repeats) * 1e3
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def first_call(fn: Callable[[], object], device: str) -> tuple[object, float]:
    """(`fn()`, its wall seconds, synchronizing CUDA): a compiled model's first call, compilation included."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0
