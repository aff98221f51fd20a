"""Where Sage's host time goes at 4k tokens (GPU): host us per call of each piece, and a cProfile.

Our pieces run through Triton's usual launch path, then through our launch cache (kernels/launch_cache.py), and
the entry points a third time with their intermediate buffers reused (kernels/scratch.py); the Gluon pieces once
more with the launch cache's cached TMA encodings off (kernels/tma_launch.py: "no-tma").
Each piece is called 200 times back to back and timed before the synchronize (host us per call; the GPU
queue does not fill at these counts), and with triton.testing.do_bench (end to end, median, after
warm-up); cuDNN SDPA (bf16) is the anchor. Then cProfile of sage_attention_gluon, by own time.

    python benchmarks/bench_host.py --out DIR
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.bench.measure import do_bench_ms, host_us  # noqa: E402
from smartcompile.kernels import launch_cache, scratch, tma_launch  # noqa: E402
from smartcompile.kernels.sage_gluon import (GLUON_CONFIG, attend_gluon, gluon_unavailable_reason,  # noqa: E402
                                             make_descriptors, sage_attention_gluon)
from smartcompile.kernels.sage_quantize import quantize_fused  # noqa: E402
from smartcompile.kernels.sage_triton import attend, sage_attention_triton  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--shapes", default="1x24x4096x64,1x24x4096x128", help="BxHxNxD list")
    args = ap.parse_args()
    why = gluon_unavailable_reason()
    if why is not None:
        sys.exit(f"Gluon kernel unavailable: {why}")
    rows, profiles = [], {}
    saved_scratch = scratch.ENABLED
    for spec in args.shapes.split(","):
        b, h, n, d = (int(x) for x in spec.split("x"))
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        label = f"B{b} H{h} N{n} D{d}"
        xg = quantize_fused(q, k, v, None, GLUON_CONFIG, v_wgmma_order=True)
        xt = quantize_fused(q, k, v, None, GLUON_CONFIG)

        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v)

        pieces = {
            "cudnn SDPA": cudnn,
            "11 x torch.empty": lambda: [torch.empty(64, device="cuda") for _ in range(11)],
            "quantize_fused (2 launches)": lambda: quantize_fused(q, k, v, None, GLUON_CONFIG, v_wgmma_order=True),
            "make_descriptors (3 TmaArg)": lambda: make_descriptors(xg, 64),
            "attend_gluon (quantized in)": lambda: attend_gluon(xg, False, q.dtype),
            "attend triton (quantized in)": lambda: attend(xt, False, q.dtype),
            "sage_attention_gluon": lambda: sage_attention_gluon(q, k, v, None, False, None, GLUON_CONFIG),
            "sage_attention_triton": lambda: sage_attention_triton(q, k, v, None, False, None, GLUON_CONFIG),
        }
        base = do_bench_ms(cudnn)
        for name, fn in pieces.items():
            ours = name not in ("cudnn SDPA", "11 x torch.empty", "make_descriptors (3 TmaArg)")
            entry = name.startswith("sage_attention")
            gluon = "gluon" in name
            variants = ["usual", "cache"] + (["reuse"] if entry else []) if ours else [""]
            variants += ["reuse-no-tma" if entry else "cache-no-tma"] if gluon else []
            for tag in variants:
                launch_cache.ENABLED = tag != "usual"  # Triton's usual launch path, then our launch cache
                scratch.ENABLED = tag.startswith("reuse")  # ... and the entry point's buffers reused (scratch.py)
                tma_launch.ENABLED = not tag.endswith("no-tma")  # ... with cached TMA encodings (tma_launch.py)
                fn()
                row = dict(shape=label, piece=name, variant=tag, host_us=host_us(fn), ms=do_bench_ms(fn))
                rows.append(row)
                print(f"{label:<20} {name:<30} {tag:<12} host {row['host_us']:7.1f} us   {row['ms']:.3f} ms "
                      f"({base / row['ms']:.2f}x cuDNN)", flush=True)
            scratch.clear()
        launch_cache.ENABLED, scratch.ENABLED, tma_launch.ENABLED = True, saved_scratch, True
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(200):
            sage_attention_gluon(q, k, v, None, False, None, GLUON_CONFIG)
        prof.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
        profiles[label] = text.getvalue()
    import triton

    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                python=platform.python_version())
    print(json.dumps(meta))
    for label, text in profiles.items():
        print(f"\ncProfile, 200 calls of sage_attention_gluon, {label} (own time):\n{text}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "host.json"), "w") as f:
            json.dump(dict(meta=meta, rows=rows, profiles=profiles), f, indent=1)


if __name__ == "__main__":
    main()
