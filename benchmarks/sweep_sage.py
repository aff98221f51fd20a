"""Sweep launch configurations of the Sage attention kernel alone (pre-quantized inputs) on a GPU.

    python benchmarks/sweep_sage.py [--n 16384] [--dims 64,128]
Prints TFLOP/s per (block_q, block_k, warps, stages) and cuDNN SDPA for reference.
"""
import argparse
import itertools
import os
import sys

import torch
import torch.nn.functional as F
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.kernels.config import SageConfig  # noqa: E402
from smartcompile.kernels.sage_triton import attend, quantize  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--heads", type=int, default=24)
    args = ap.parse_args()
    for d in (int(x) for x in args.dims.split(",")):
        q, k, v = (torch.randn(1, args.heads, args.n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * args.heads * args.n * args.n * d
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            ms = triton.testing.do_bench(lambda: F.scaled_dot_product_attention(q, k, v), warmup=50, rep=200)
        base = flops / ms / 1e9
        print(f"D{d} N{args.n} cudnn {base:.0f} TF", flush=True)
        results = []
        for bq, bk in ((128, 128), (128, 64), (64, 128), (64, 64)):
            pre = quantize(q, k, v, None, SageConfig("fp8", block_q=bq, block_k=bk))
            for warps, stages in itertools.product((4, 8), (2, 3, 4)):
                if bq == 64 and warps == 8:
                    continue
                launch = dict(num_warps=warps, num_stages=stages)
                try:
                    ms = triton.testing.do_bench(lambda: attend(pre, False, q.dtype, launch=launch), warmup=25, rep=100)
                except Exception as exc:  # out of shared memory / registers for this configuration
                    print(f"  bq{bq} bk{bk} w{warps} s{stages}: {type(exc).__name__}", flush=True)
                    continue
                tf = flops / ms / 1e9
                results.append((tf, bq, bk, warps, stages))
                print(f"  bq{bq} bk{bk} w{warps} s{stages}: {tf:.0f} TF ({tf / base:.2f}x)", flush=True)
        results.sort(reverse=True)
        print(f"D{d} best: " + ", ".join(f"{r[0]:.0f}TF bq{r[1]} bk{r[2]} w{r[3]} s{r[4]}" for r in results[:4]))


if __name__ == "__main__":
    main()
