"""quantize_fused's main launch at 8 vs 16 warps (GPU): sm_90a compiles of `_quantize_all` at D128 need 246
registers at 8 warps (one CTA of 8 warps per SM for a memory-bound kernel) and 255 plus a 256-byte spill with
Sparge's pooling; 118 (128 plus 128 bytes) at 16 warps. GPU time per call, host cost aside (CUDA-graph replays,
triton.testing.do_bench_cudagraph), bf16, FP8 V.

    python benchmarks/bench_quant_warps.py --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from triton.testing import do_bench_cudagraph

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.kernels import sage_quantize  # noqa: E402
from smartcompile.kernels.config import SageConfig  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1x24x4096x64,1x24x4096x128,1x24x16384x128", help="BxHxNxD list")
    ap.add_argument("--warps", default="8,16")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for spec in args.shapes.split(","):
        b, h, n, d = (int(x) for x in spec.split("x"))
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        for pool in (False, True):
            times = {}
            for warps in (int(w) for w in args.warps.split(",")):
                sage_quantize._QUANT_WARPS = warps  # read at each launch
                times[warps] = do_bench_cudagraph(lambda: sage_quantize.quantize_fused(q, k, v, None, SageConfig(), pool=pool),
                                                  return_mode="median")
            rows.append(dict(shape=spec, pool=pool, ms=times))
            print(f"{spec:<16} pool={pool!s:<5} " + "  ".join(f"{w} warps {t * 1e3:7.1f} us" for w, t in times.items()),
                  flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "quant_warps.json"), "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
