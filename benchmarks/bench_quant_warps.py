"""quantize_fused under several launch configurations (GPU): the main launch's (`_quantize_all`) warps, slice size
(elements of one (tokens, D_PAD) slice of a tile) and whether the next slice is prefetched, and optionally
the stats launch's (`_kv_stats`) prefetch of its next rows and its warps, and the fewest tokens per V slice; quantize_staged in
the same run as the anchor (what `quantize` takes on large inputs). GPU time per call, host cost aside
(CUDA-graph replays, triton.testing.do_bench_cudagraph), bf16, FP8 V in wgmma key order (the Gluon kernel's
inputs: block_q 64, block_k 128) and the Triton kernel's default blocks.

    python benchmarks/bench_quant_warps.py --configs 4:1024:1,4:1024:1:1,4:1024:1:0:8,4:1024:1:1:8,4:1024:1:0:4:16 --out DIR
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from triton.testing import do_bench_cudagraph

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.bench.measure import write_rows  # noqa: E402
from smartcompile.kernels import sage_quantize  # noqa: E402
from smartcompile.kernels.config import SageConfig  # noqa: E402
from smartcompile.kernels.sage_gluon import GLUON_CONFIG  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1x24x4096x64,1x24x4096x128,1x24x16384x128", help="BxHxNxD list")
    ap.add_argument("--configs", default="8:1024:1,8:2048:1,4:1024:1,8:1024:0",
                    help="warps:slice elements:prefetch (0/1)[:stats prefetch (0/1), default 0[:stats warps, "
                         "default 4[:fewest V rows per slice, default 32]]] list")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    defaults = (0, 4, 32)  # the optional fields' defaults: the shipped configuration's
    configs = [(tuple(int(x) for x in c.split(":")) + defaults[len(c.split(":")) - 3:])[:6]
               for c in args.configs.split(",")]
    rows = []
    for spec in args.shapes.split(","):
        b, h, n, d = (int(x) for x in spec.split("x"))
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        for cfg_name, cfg, order in (("gluon", GLUON_CONFIG, True), ("triton", SageConfig(), False)):
            for pool in (False, True):
                times = {"staged": do_bench_cudagraph(
                    lambda: sage_quantize.quantize_staged(q, k, v, None, cfg, pool=pool, v_wgmma_order=order),
                    return_mode="median")}
                for warps, elems, prefetch, stats_prefetch, stats_warps, v_rows in configs:
                    # read at each launch
                    sage_quantize._QUANT_WARPS, sage_quantize._QUANT_SLICE = warps, elems
                    sage_quantize._QUANT_PREFETCH, sage_quantize._STATS_PREFETCH = bool(prefetch), bool(stats_prefetch)
                    sage_quantize._STATS_WARPS, sage_quantize._V_MIN_ROWS = stats_warps, v_rows
                    name = (f"{warps}w/{elems}/{'pf' if prefetch else 'nopf'}"
                            f"/stats-{stats_warps}w{'-pf' if stats_prefetch else ''}/v{v_rows}")
                    times[name] = do_bench_cudagraph(
                        lambda: sage_quantize.quantize_fused(q, k, v, None, cfg, pool=pool, v_wgmma_order=order),
                        return_mode="median")
                rows.append(dict(shape=spec, blocks=cfg_name, pool=pool, ms=times))
                print(f"{spec:<15} {cfg_name:<6} pool={pool!s:<5} "
                      + "  ".join(f"{name} {t * 1e3:6.1f}" for name, t in times.items()), flush=True)
    if args.out:
        write_rows(args.out, "quant_configs.json", rows)


if __name__ == "__main__":
    main()
