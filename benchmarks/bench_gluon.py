"""The sm90 Gluon Sage kernel against cuDNN SDPA and our Triton Sage kernel, in one run (GPU).

1. Correctness: each Gluon launch variant and sage_triton against the fp32 reference (cosine, rel L1)
   on a slice of the queries, plus Gluon vs sage_triton on the same quantized inputs.
2. Timing (triton.testing.do_bench, median, after warm-up): cuDNN SDPA (bf16), sage_triton and the
   Gluon variants end to end (quantization included), and both attention kernels alone on
   pre-quantized inputs. TFLOP/s = 4*B*H*N*N*D / time (halved for causal); ratios against cuDNN
   and against sage_triton in the same run.

    python benchmarks/bench_gluon.py --out $OUT                   # the grid of issue 13
    python benchmarks/bench_gluon.py --quick                       # B1 H24, D64/D128, 16k + causal
    python benchmarks/bench_gluon.py --batches 1x24 --variants ws2-nopp-split-s4,ws2-nopp-split-c3-s4   # step 2
    python benchmarks/bench_gluon.py --dims 64 --lens 16384 --causal-dims 64,128 --causal-lens 4096,16384
    ncu --clock-control none -k regex:_sage_fwd --launch-skip 3 --launch-count 6 \
        python benchmarks/bench_gluon.py --profile --dims 128,64 --variants ws2-nopp-split-s4,ws2-nopp-split-c3-s4
Variants and their measured outcomes: benchmarks/gluon_notes.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.kernels.exact_reference import attention_reference  # noqa: E402
from smartcompile.kernels.sage_gluon import (GLUON_CONFIG, attend_gluon, default_launch,  # noqa: E402
                                             gluon_unavailable_reason, sage_attention_gluon)
from smartcompile.kernels.sage_triton import attend, quantize, sage_attention_triton  # noqa: E402
from smartcompile.metrics import error_stats  # noqa: E402
from smartcompile.synthetic import structured_qkv  # noqa: E402

VARIANTS = {  # name -> launch of attend_gluon (every other argument at its default, DEFAULT_LAUNCH's)
    # step 2: 64-row consumer warpgroups as separate partitions + one TMA producer warp. Step 1's kernels
    # (w8-overlap, ws-w8-p1, ...) are gone from the package (gluon_notes.md, step 4): their names stay in old results
    "ws2-pp-s4": dict(pingpong=True, split=False, consumers=2),
    "ws2-pp-s3": dict(stages=3, pingpong=True, split=False, consumers=2),
    "ws2-nopp-s4": dict(split=False, consumers=2),
    "ws2-pp-intra-s4": dict(pingpong=True, intra=True, split=False, consumers=2),
    "ws2-nopp-intra-s4": dict(intra=True, split=False, consumers=2),
    # three consumer warpgroups per CTA (non-causal D64; elsewhere the 2-consumer kernel), 160 registers each
    "ws2-pp-c3-s4": dict(pingpong=True, split=False),
    "ws2-nopp-c3-s4": dict(split=False),
    "ws2-pp-c3-s3": dict(stages=3, pingpong=True, split=False),
    # P_j V_j waited for (and folded into O) before S_{j+1}: the O update runs under the Q K^T wgmma
    "ws2-nopp-split-s4": dict(consumers=2),
    "ws2-pp-split-s4": dict(pingpong=True, consumers=2),
    "ws2-nopp-split-c3-s4": dict(),  # DEFAULT_LAUNCH
    # the next round's K/V waits moved next to the slot release (two partition barriers fewer per tile)
    "ws2-nopp-split-early-s4": dict(early=True, consumers=2),
    "ws2-pp-split-early-s4": dict(pingpong=True, early=True, consumers=2),
    "ws2-nopp-split-early-c3-s4": dict(early=True),
    # 64-key K/V tiles (session 10, compile-checked only): INTRA at D128 spilled 1360 bytes with 128-key tiles
    # (P_j carried in fp32, 64 registers) and spills none with 64; three consumers at D128 still spill (916 bytes)
    "ws2-nopp-intra-bn64-s4": dict(intra=True, split=False, consumers=2, block_n=64),
    "ws2-pp-intra-bn64-s4": dict(pingpong=True, intra=True, split=False, consumers=2, block_n=64),
    "ws2-nopp-split-bn64-s4": dict(consumers=2, block_n=64),
    "ws2-nopp-split-c3-bn64-s4": dict(block_n=64),  # D64: three consumers, as the default there
    # the same prefetch depth in keys as 4 stages of 128 (148 KB of shared memory at D128); at D64 three
    # consumers with INTRA (with 128-key tiles they spill 1,372 bytes; with 64 none)
    "ws2-nopp-intra-bn64-s8": dict(intra=True, split=False, consumers=2, block_n=64, stages=8),
    "ws2-pp-intra-bn64-s8": dict(pingpong=True, intra=True, split=False, consumers=2, block_n=64, stages=8),
    "ws2-nopp-intra-c3-bn64-s8": dict(intra=True, split=False, block_n=64, stages=8),
    # DIRECT (session 11): FA3's one-level accumulation (P V onto O in the FP8 wgmma) under INTRA's overlap
    "ws2-nopp-intra-direct-s4": dict(intra=True, split=False, consumers=2, direct=True),
    "ws2-pp-intra-direct-s4": dict(pingpong=True, intra=True, split=False, consumers=2, direct=True),
    "ws2-nopp-intra-direct-c3-s4": dict(intra=True, split=False, direct=True),
    "ws2-nopp-split-direct-s4": dict(consumers=2, direct=True),
    "ws2-nopp-split-direct-c3-s4": dict(direct=True),  # three consumers at D64 (at D128 two: three serialise, C7512)
    # SUM_MMA (session 11): P's row sums by a wgmma against ones instead of FADDs. Wrong on the GPU in sessions 13-14
    # while the ones tile was written from registers; right since it is loaded by TMA (session 14). Shipped by
    # sage_attention_gluon's default_launch: `sum` at D128 non-causal, `direct-sum` at D64 and causal.
    # LAZY (session 12, removed in 13: exact, slower everywhere it ran) and KV1 (session 14, one ready-barrier per K/V
    # slot: 0.96-1.03x, removed): gluon_notes.md, steps 10-11
    "ws2-nopp-split-sum-c3-s4": dict(sum_mma=True),
    "ws2-nopp-split-direct-sum-c3-s4": dict(direct=True, sum_mma=True),
    # PAIR (session 17): rounds of two 128-key tiles (FA3-FP8 runs 224 keys per round at D128), one-level
    # accumulation and row sums by wgmma; two consumers; `stages` counts rounds (2 tiles each)
    "ws2-pair-s2": dict(pair=True, direct=True, sum_mma=True, consumers=2, stages=2),
    "ws2-pair-s3": dict(pair=True, direct=True, sum_mma=True, consumers=2, stages=3),
    # QFOLD (session 18): each consumer quantizes its own Q rows (the quantization launch skips Q)
    "ws2-pair-s2-foldq": dict(pair=True, direct=True, sum_mma=True, consumers=2, stages=2, fold_q=True),
    # one warpgroup barrier per round instead of three (session 18)
    "ws2-pair-s2-lean": dict(pair=True, direct=True, sum_mma=True, consumers=2, stages=2, lean_sync=True),
    "ws2-pair-s2-lean-foldq": dict(pair=True, direct=True, sum_mma=True, consumers=2, stages=2, lean_sync=True,
                                   fold_q=True),
    "ws2-nopp-split-direct-sum-c3-s4-foldq": dict(direct=True, sum_mma=True, fold_q=True),
    "ws2-nopp-split-c3-s4-foldq": dict(fold_q=True),
    "ws2-nopp-split-sum-c3-s4-foldq": dict(sum_mma=True, fold_q=True),
    "default": None,  # sage_attention_gluon's default_launch for each shape (what the sage backend runs)
}


def resolved(launch, xg, causal: bool) -> dict:
    """attend_gluon's keyword arguments: `launch`, or default_launch's for these quantized inputs."""
    return launch if launch is not None else default_launch(xg.q8.shape[-1], causal, False, xg.shape[4])


def folded(q, launch):
    """attend_gluon's q: the raw Q for a launch that quantizes it in the kernel (fold_q), else None. (The kernel
    then still reads xg's K/V; Q's INT8 copy in xg goes unread: '-kernel' times include Q's quantization.)"""
    return q if launch is not None and launch.get("fold_q") else None


def cudnn(q, k, v, causal):
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def bench(fn):
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def accuracy(fn, q, k, v, causal):
    n = min(q.shape[2], 4096)  # fp32 reference on a slice of the queries keeps memory small
    out = fn(q, k, v, causal)[:, :2, :n].float()
    ref = attention_reference(q[:, :2, :n].float(), k[:, :2].float(), v[:, :2].float(), None, causal)
    return error_stats(out, ref)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="folder for gluon_bench.json")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--lens", default="4096,16384,32768")
    ap.add_argument("--batches", default="1x24,4x32", help="BxH pairs")
    ap.add_argument("--causal-dims", default="128", help="head dims of the causal shapes ('' for none)")
    ap.add_argument("--causal-lens", default="16384", help="lengths of the causal shapes")
    ap.add_argument("--inputs", default="random", choices=("random", "structured"),
                    help="structured: smartcompile.synthetic.structured_qkv (local attention: row maxima settle)")
    ap.add_argument("--profile", action="store_true",
                    help="launch each kernel twice on B1 H24 N16k per --dims (for ncu -k regex:_sage_fwd), no timing")
    args = ap.parse_args()
    why = gluon_unavailable_reason()
    if why is not None:
        sys.exit(f"Gluon kernel unavailable: {why}")
    variants = {n: VARIANTS[n] for n in args.variants.split(",")}
    if args.inputs == "structured" and any(int(n) % 1024 for n in args.lens.split(",")):
        sys.exit(f"--inputs structured: --lens must be multiples of 1024 (frames of 32 x 32), got {args.lens}")
    if args.profile:
        for d in [int(x) for x in args.dims.split(",")]:
            q, k, v = (torch.randn(1, 24, 16384, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            x, xg = quantize(q, k, v, None, GLUON_CONFIG), quantize(q, k, v, None, GLUON_CONFIG, v_wgmma_order=True)
            for _ in range(2):  # the first launch compiles; ncu's --launch-skip can drop it
                attend(x, False, q.dtype, launch=dict(num_warps=4, num_stages=3))
                for launch in variants.values():
                    attend_gluon(xg, False, q.dtype, q=folded(q, launch), **resolved(launch, xg, False))
            torch.cuda.synchronize()
        return
    bhs = [(1, 24)] if args.quick else [tuple(int(y) for y in x.split("x")) for x in args.batches.split(",")]
    lens = [16384] if args.quick else [int(x) for x in args.lens.split(",")]
    dims = [int(x) for x in args.dims.split(",")]
    shapes = [(b, h, d, n, False) for b, h in bhs for d in dims for n in lens]
    shapes += [(b, h, d, n, True) for b, h in bhs for d in (int(x) for x in args.causal_dims.split(",") if x)
               for n in ([16384] if args.quick else [int(x) for x in args.causal_lens.split(",")])]

    impls = {"cudnn": cudnn,
             "triton": lambda q, k, v, c: sage_attention_triton(q, k, v, None, c, None, GLUON_CONFIG)}
    for name, launch in variants.items():
        impls["gluon:" + name] = lambda q, k, v, c, launch=launch: sage_attention_gluon(
            q, k, v, None, c, None, GLUON_CONFIG, launch=launch)

    rows, acc_rows = [], []
    for b, h, d, n, causal in shapes:
        torch.manual_seed(n + d + b)
        if args.inputs == "structured":  # frames of 32 x 32 tokens (a video DiT's latent grid)
            q, k, v = structured_qkv(b, h, h, (max(n // 1024, 1), 32, 32), d, device="cuda", dtype=torch.bfloat16)
        else:
            q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * b * h * n * n * d / (2 if causal else 1)
        label = f"B{b} H{h} D{d} N{n} {'causal' if causal else 'full'}"
        # the same quantized values; V's keys in each kernel's order
        x, xg = quantize(q, k, v, None, GLUON_CONFIG), quantize(q, k, v, None, GLUON_CONFIG, v_wgmma_order=True)
        fns = dict(impls)
        fns["triton-kernel"] = lambda q, k, v, c: attend(x, c, q.dtype)
        for name, launch in variants.items():
            fns["gluon-kernel:" + name] = lambda q, k, v, c, launch=launch: attend_gluon(
                xg, c, q.dtype, q=folded(q, launch), **resolved(launch, xg, c))
        res = {}
        for name, fn in fns.items():
            if name != "cudnn" and "kernel" not in name and n <= 16384 and b == 1:
                e = accuracy(fn, q, k, v, causal)
                acc_rows.append(dict(shape=label, impl=name, cosine=e.cosine, rel_l1=e.rel_l1, finite=e.finite))
            try:
                res[name] = bench(lambda: fn(q, k, v, causal))
            except Exception as exc:  # a variant that cannot run a shape: record and go on
                print(f"  {name} failed at {label}: {type(exc).__name__}: {exc}", file=sys.stderr)
        for name in variants:  # same quantized inputs, two kernels: how far apart
            g = attend_gluon(xg, causal, q.dtype, q=folded(q, variants[name]),
                             **resolved(variants[name], xg, causal))[:, :2].float()
            t = attend(x, causal, q.dtype)[:, :2].float()
            e = error_stats(g, t)
            acc_rows.append(dict(shape=label, impl=f"gluon:{name} vs triton (same inputs)", cosine=e.cosine,
                                 rel_l1=e.rel_l1, finite=e.finite))
        for name, ms in res.items():
            rows.append(dict(shape=label, B=b, H=h, D=d, N=n, causal=causal, impl=name, ms=ms, tflops=flops / ms / 1e9,
                             vs_cudnn=res["cudnn"] / ms if "cudnn" in res else None,
                             vs_triton=(res["triton-kernel" if "kernel" in name else "triton"] / ms)
                             if name.startswith("gluon") else None))
        best = max((r for r in rows[-len(res):] if r["impl"].startswith("gluon:")), key=lambda r: r["tflops"], default=None)
        print(f"{label:<28} cudnn {flops / res['cudnn'] / 1e9:6.0f} TF | triton {flops / res['triton'] / 1e9:6.0f} TF "
              f"({res['cudnn'] / res['triton']:.2f}x) | best gluon {best['impl'] if best else '-'} "
              f"{best['tflops'] if best else 0:6.0f} TF ({best['vs_cudnn'] if best else 0:.2f}x cuDNN, "
              f"{best['vs_triton'] if best else 0:.2f}x triton)", flush=True)
        del q, k, v, x
        torch.cuda.empty_cache()

    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                python=platform.python_version(), time=time.strftime("%Y-%m-%d %H:%M:%S"), variants=variants)
    import triton
    meta["triton"] = triton.__version__
    meta["inputs"] = args.inputs
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gluon_bench.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows, "accuracy": acc_rows}, f, indent=1)
    print(json.dumps({k: v for k, v in meta.items() if k != "variants"}))
    print("\naccuracy vs fp32 (first 2 heads, <= 4096 queries) and gluon vs triton on the same quantized inputs")
    for r in acc_rows:
        print(f"  {r['shape']:<28} {r['impl']:<44} cos {r['cosine']:.6f} relL1 {r['rel_l1']:.4f}"
              + ("" if r["finite"] else " NON-FINITE"))
    names = list(dict.fromkeys(r["impl"] for r in rows))
    print("\nTFLOP/s (x cuDNN) [x triton]; '-kernel' = attention kernel alone on pre-quantized inputs")
    for shape in dict.fromkeys(r["shape"] for r in rows):
        print(shape)
        for name in names:
            r = next((r for r in rows if r["shape"] == shape and r["impl"] == name), None)
            if r is None:
                continue
            extra = f" [{r['vs_triton']:.2f}x]" if r["vs_triton"] else ""
            print(f"    {name:<30} {r['ms']:9.3f} ms {r['tflops']:6.0f} TF ({r['vs_cudnn']:.2f}x){extra}")


if __name__ == "__main__":
    main()
