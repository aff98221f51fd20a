"""Sage's quantization: sage_triton.quantize (6-7 launches) against sage_quantize.quantize_fused (2), GPU.

Per shape (B1, bf16): each quantization alone and the attention end to end (quantization + sage_triton.attend),
device time by triton.testing.do_bench (median after warm-up), and the host cost per call: wall time of 200
calls enqueued back to back, divided by 200 (the GPU runs behind, so this is the Python + launch cost).
Ratios are against cuDNN SDPA in the same run.

    python benchmarks/bench_quantize.py [--shapes 24x4096x64,24x4096x128,24x16384x128]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.bench.measure import do_bench_ms  # noqa: E402
from smartcompile.kernels.config import SageConfig  # noqa: E402
from smartcompile.kernels.sage_quantize import quantize_fused  # noqa: E402
from smartcompile.kernels.sage_triton import attend, quantize  # noqa: E402


def host_us(fn, calls: int = 200) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="24x4096x64,24x4096x128,24x16384x128")
    args = ap.parse_args()
    cfg = SageConfig(pv_precision="fp8")
    print("| shape | cuDNN ms | quantize ms (host us) | fused ms (host us) | e2e ms (vs cuDNN) | e2e fused ms (vs cuDNN) |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        h, n, d = (int(x) for x in shape.split("x"))
        q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            base = do_bench_ms(lambda: F.scaled_dot_product_attention(q, k, v))
        a, b = quantize(q, k, v, None, cfg), quantize_fused(q, k, v, None, cfg)
        same = torch.equal(a.q8, b.q8) and torch.equal(a.v, b.v) and (a.k8.int() - b.k8.int()).abs().max().item() <= 1
        times = {}
        for name, fn in (("q", lambda: quantize(q, k, v, None, cfg)), ("f", lambda: quantize_fused(q, k, v, None, cfg)),
                         ("e", lambda: attend(quantize(q, k, v, None, cfg), False, q.dtype)),
                         ("ef", lambda: attend(quantize_fused(q, k, v, None, cfg), False, q.dtype))):
            times[name] = (do_bench_ms(fn), host_us(fn))
        print(f"| H{h} N{n} D{d} | {base:.3f} | {times['q'][0]:.3f} ({times['q'][1]:.0f}) | {times['f'][0]:.3f} "
              f"({times['f'][1]:.0f}) | {times['e'][0]:.3f} ({base / times['e'][0]:.2f}x) | {times['ef'][0]:.3f} "
              f"({base / times['ef'][0]:.2f}x) |" + ("" if same else " OUTPUTS DIFFER"), flush=True)


if __name__ == "__main__":
    main()
