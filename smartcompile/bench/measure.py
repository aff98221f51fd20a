"""Timing, FLOPs and peak memory of one attention call (shared with benchmarks/bench_*.py).

GPU: triton.testing.do_bench (median, after warm-up; it flushes L2 between calls), or CUDA events
(smartcompile.timing) when Triton is missing. CPU: wall-clock median (smartcompile.timing), which
says nothing about GPU speed (Sage and Sparge run reference numerics there), so every CPU result
carries CPU_NOTE.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..timing import cuda_time_ms, wall_seconds

Timer = Callable[[Callable[[], object], str], float]  # (call, row label) -> ms; the label lets tests fake times
CPU_NOTE = "CPU: reference numerics, times not meaningful"
CPU_REPEATS = 3


def attention_flops(batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, causal: bool) -> float:
    """4*B*H*Nq*Nk*D (two matmuls, multiply-add = 2), halved for causal: the dense work, also
    for sparse kernels (their TFLOP/s is dense-equivalent)."""
    return 4.0 * batch * heads * q_len * kv_len * head_dim / (2 if causal else 1)


def do_bench_ms(fn: Callable[[], object]) -> float:
    """Median ms of `fn` on the GPU after warm-up (the benchmarks' settings)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")


def host_us(fn: Callable[[], object], calls: int = 200) -> float:
    """Host microseconds per call of `fn` on the GPU: `calls` calls enqueued back to back, timed before the
    synchronize (the launch queue does not fill at these counts for sub-millisecond calls)."""
    import time

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def timing_method(device: str) -> str:
    if device != "cuda":
        return f"wall clock, median of {CPU_REPEATS} calls after one warm-up call"
    from ..backends.hardware import library_import_error

    if library_import_error("triton") is None:
        return "triton.testing.do_bench (median, warm-up 50 ms, 200 ms of repeats)"
    return "CUDA events, median after warm-up (smartcompile.timing.cuda_time_ms; triton not importable)"


def default_timer(device: str) -> Timer:
    if device != "cuda":
        return lambda fn, label: wall_seconds(fn, device, CPU_REPEATS) * 1e3
    from ..backends.hardware import library_import_error

    if library_import_error("triton") is None:
        return lambda fn, label: do_bench_ms(fn)
    return lambda fn, label: cuda_time_ms(fn)


def run_measuring_memory(fn: Callable[[], object], device: str) -> tuple[object, Optional[float], Optional[float]]:
    """(output, peak MiB, MiB above what was allocated before the call); memory is None off CUDA."""
    if device != "cuda":
        return fn(), None, None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return out, peak / 2 ** 20, (peak - before) / 2 ** 20


def write_rows(folder: str, name: str, rows: list) -> None:
    """`rows` as `folder`/`name` (JSON), with the GPU and the torch they were measured with."""
    import json
    import os

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)
