"""Sage's quantization: sage_quantize.quantize_staged (6-7 launches) against quantize_fused (2), GPU.

Per shape (bf16): each quantization alone and the attention end to end (quantization + sage_triton.attend, and
the sm90 Gluon kernel's launch where it runs),
device time by triton.testing.do_bench (median after warm-up), and the host cost per call: wall time of 200
calls enqueued back to back, divided by 200 (the GPU runs behind, so this is the Python + launch cost).
Ratios are against cuDNN SDPA in the same run.

    python benchmarks/bench_quantize.py [--shapes 1x24x4096x64,1x24x16384x128]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.bench.measure import do_bench_ms, host_us  # noqa: E402
from smartcompile.kernels.config import SageConfig  # noqa: E402
from smartcompile.kernels.sage_gluon import (DEFAULT_LAUNCH, GLUON_CONFIG, attend_gluon,  # noqa: E402
                                             gluon_unavailable_reason)
from smartcompile.kernels.sage_quantize import quantize_fused, quantize_staged  # noqa: E402
from smartcompile.kernels.sage_triton import attend  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1x24x4096x64,1x24x8192x64,1x24x4096x128,1x24x8192x128,1x24x16384x128,"
                                        "4x32x4096x128", help="BxHxNxD, comma-separated")
    args = ap.parse_args()
    cfg = SageConfig(pv_precision="fp8")
    gluon = gluon_unavailable_reason() is None
    print("| shape | cuDNN ms | staged ms (host us) | fused ms (host us) | triton e2e staged / fused (x cuDNN) "
          "| gluon e2e staged / fused (x cuDNN) |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        b, h, n, d = (int(x) for x in shape.split("x"))
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            base = do_bench_ms(lambda: F.scaled_dot_product_attention(q, k, v))
        x, y = quantize_staged(q, k, v, None, cfg), quantize_fused(q, k, v, None, cfg)
        same = torch.equal(x.q8, y.q8) and torch.equal(x.v, y.v) and (x.k8.int() - y.k8.int()).abs().max().item() <= 1
        runs = {"staged": lambda: quantize_staged(q, k, v, None, cfg),
                "fused": lambda: quantize_fused(q, k, v, None, cfg),
                "t-staged": lambda: attend(quantize_staged(q, k, v, None, cfg), False, q.dtype),
                "t-fused": lambda: attend(quantize_fused(q, k, v, None, cfg), False, q.dtype)}
        if gluon:
            ordered = dict(v_wgmma_order=True)  # the Gluon kernel's V key order
            runs["g-staged"] = lambda: attend_gluon(quantize_staged(q, k, v, None, GLUON_CONFIG, **ordered), False,
                                                    q.dtype, **DEFAULT_LAUNCH)
            runs["g-fused"] = lambda: attend_gluon(quantize_fused(q, k, v, None, GLUON_CONFIG, **ordered), False,
                                                   q.dtype, **DEFAULT_LAUNCH)
        t = {name: (do_bench_ms(fn), host_us(fn)) for name, fn in runs.items()}

        def e2e(kind):
            if kind + "-staged" not in t:
                return "-"
            s_ms, f_ms = t[kind + "-staged"][0], t[kind + "-fused"][0]
            return f"{s_ms:.3f} ({base / s_ms:.2f}x) / {f_ms:.3f} ({base / f_ms:.2f}x)"

        print(f"| B{b} H{h} N{n} D{d} | {base:.3f} | {t['staged'][0]:.3f} ({t['staged'][1]:.0f}) | {t['fused'][0]:.3f} "
              f"({t['fused'][1]:.0f}) | {e2e('t')} | {e2e('g')} |" + ("" if same else " OUTPUTS DIFFER"), flush=True)
        del q, k, v, x, y
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
