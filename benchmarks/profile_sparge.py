"""GPU time of each kernel of one Sparge call (torch.profiler, CUDA activity), against dense Sage's: what the
prediction costs on the GPU itself, host cost aside (the CUDA-graph numbers of bench_sparge.py --graphs).

    python benchmarks/profile_sparge.py --shapes 1x24x4096x128,1x24x4096x64 --out DIR
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.kernels.config import SageConfig, SpargeConfig  # noqa: E402
from smartcompile.kernels.sage_triton import sage_attention_triton  # noqa: E402
from smartcompile.kernels.sparge_triton import sparge_attention_triton  # noqa: E402
from smartcompile.synthetic import structured_qkv  # noqa: E402

CALLS = 20


def kernel_us(fn) -> dict:
    """Mean GPU microseconds per call of each kernel name over CALLS calls, after a warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            fn()
        torch.cuda.synchronize()
    total = collections.Counter()
    for row in prof.key_averages():  # kernels are the rows with GPU time of their own
        us = getattr(row, "self_device_time_total", 0) or getattr(row, "self_cuda_time_total", 0)
        if us > 0:
            total[row.key] += us / CALLS
    return dict(total.most_common())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1x24x4096x128,1x24x4096x64", help="BxHxNxD list")
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    result = {}
    for spec in args.shapes.split(","):
        b, h, n, d = (int(x) for x in spec.split("x"))
        side = int(round((n // 8) ** 0.5))
        q, k, v = structured_qkv(b, h, h, (n // (side * side), side, side), d, device="cuda", dtype=torch.bfloat16)
        config = SpargeConfig(sparsity_ratio=1.0 - args.density, sim_threshold=-1.0)
        rows = {"sparge": kernel_us(lambda: sparge_attention_triton(q, k, v, None, False, None, config)),
                "sage": kernel_us(lambda: sage_attention_triton(q, k, v, None, False, None, SageConfig()))}
        label = f"B{b} H{h} N{q.shape[2]} D{d}"
        result[label] = rows
        for name, kernels in rows.items():
            print(f"{label} {name}: {sum(kernels.values()):.1f} us of GPU time per call")
            for kernel, us in kernels.items():
                print(f"    {us:8.1f} us  {kernel[:110]}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "profile_sparge.json"), "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
