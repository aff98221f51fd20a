"""Masks on the fast paths (GPU): what a mask costs each kernel, against SDPA with the same mask in the same run.

Cases at B1, bf16 (default H24 D128 N16384): causal given as is_causal, as the structure (`Causal()`, which the
kernels take as is_causal) and as a dense bool tensor (classified per tile, kernels/mask_blocks.py); a
causal sliding window; causal documents; prefix-LM. Rows: SDPA (torch's default dispatch, the dense mask as
`attn_mask`), sage_triton (FP8 P·V) and sparge_triton (50% of the valid blocks, no similarity check). Times
are triton.testing.do_bench medians after warm-up, ours including quantization, classification and
selection; `tiles` is the classification + block lists alone. Accuracy: cosine vs fp32 on 2 heads x 1024
queries with the same mask.

    python benchmarks/bench_masks.py --out $OUT
    python benchmarks/bench_masks.py --n 4096 --heads 24 --dim 64
    TRITON_INTERPRET=1 python benchmarks/bench_masks.py --device cpu --n 256 --heads 2 --dim 64   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.bench.measure import do_bench_ms  # noqa: E402
from smartcompile.kernels.config import SageConfig, SpargeConfig  # noqa: E402
from smartcompile.kernels.exact_reference import attention_reference  # noqa: E402
from smartcompile.kernels.mask_blocks import dense_keep, dense_mask_lists  # noqa: E402
from smartcompile.kernels.sage_triton import sage_attention_triton  # noqa: E402
from smartcompile.kernels.sparge_triton import sparge_attention_triton  # noqa: E402
from smartcompile.masks import Causal, Document, PrefixLM, Shape, SlidingWindow  # noqa: E402
from smartcompile.metrics import error_stats  # noqa: E402
from smartcompile.timing import median_call_ms  # noqa: E402

SAGE = SageConfig(pv_precision="fp8")
SPARGE = SpargeConfig(pv_precision="fp8", sparsity_ratio=0.5, sim_threshold=-1.0)


def cases(n: int, device):
    """(name, mask given to our kernels, is_causal, dense bool (1, 1, n, n) for SDPA and the reference or None)."""
    causal = torch.ones(n, n, device=device, dtype=torch.bool).tril()[None, None]
    seg = (torch.arange(n, device=device) // (n // 4))[None]
    window = min(4096, n // 4)
    yield "causal (is_causal)", None, True, None
    yield "causal (structure)", Causal(), False, None
    yield "causal (dense)", causal, False, causal
    yield f"sliding {window} causal (dense)", (SlidingWindow(window, 0).dense(Shape(1, 1, n, n), device)), False, \
        SlidingWindow(window, 0).dense(Shape(1, 1, n, n), device)
    docs = Document(seg, seg).dense(Shape(1, 1, n, n), device) & causal
    yield "4 documents causal (dense)", docs, False, docs
    prefix = PrefixLM(n // 8).dense(Shape(1, 1, n, n), device)
    yield f"prefix-LM {n // 8} (dense)", prefix, False, prefix


def sdpa(q, k, v, dense, causal):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=dense, is_causal=causal and dense is None)


def sliced_cosine(out, q, k, v, dense, causal, queries=1024):
    rows = slice(q.shape[2] - queries, q.shape[2])
    qs, ks, vs = q[:1, :2, rows].float(), k[:1, :2].float(), v[:1, :2].float()
    keep = None
    if dense is not None:
        keep = dense[..., rows, :]
    elif causal:
        keep = torch.ones(q.shape[2], k.shape[2], device=q.device, dtype=torch.bool).tril()[None, None, rows]
    ref = attention_reference(qs, ks, vs, keep, False)
    return error_stats(out[:1, :2, rows].float(), ref).cosine


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run under TRITON_INTERPRET=1")
    args = ap.parse_args()
    dev = torch.device(args.device)
    timed = do_bench_ms if args.device == "cuda" else lambda fn: median_call_ms(fn, "cpu", 1)
    n, h, d = args.n, args.heads, args.dim
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, n, d, device=dev, dtype=torch.bfloat16) for _ in range(3))
    rows = []
    base_causal = None
    for name, mask, causal, dense in cases(n, dev):
        runs = {
            "sdpa": lambda: sdpa(q, k, v, dense, causal or mask is not None and dense is None),
            "sage_triton": lambda: sage_attention_triton(q, k, v, mask, causal, None, SAGE),
            "sparge_triton 50%": lambda: sparge_attention_triton(q, k, v, mask, causal, None, SPARGE),
        }
        if dense is not None:
            keep = dense_keep(mask, 1, h, n, n, dev, "bench")
            runs["tiles (classify + lists)"] = lambda: dense_mask_lists(keep, n, n, SAGE.block_q, SAGE.block_k, False)
        times = {}
        for impl, fn in runs.items():
            ms = timed(fn)
            times[impl] = ms
            cos = None if impl.startswith("tiles") else sliced_cosine(fn(), q, k, v, dense, causal or mask is not None)
            rows.append(dict(case=name, impl=impl, ms=ms, cosine=cos))
        if name.startswith("causal (is_causal)"):
            base_causal = times["sdpa"]
        for r in rows:
            if r["case"] == name:
                r["vs_sdpa_same_mask"] = times["sdpa"] / r["ms"]
                r["vs_sdpa_is_causal"] = base_causal / r["ms"] if base_causal and name.startswith("causal") else None
        print(f"{name}: " + ", ".join(f"{i} {t:.3f} ms" for i, t in times.items()), flush=True)
    meta = dict(gpu=torch.cuda.get_device_name() if args.device == "cuda" else "cpu (smoke run)", torch=torch.__version__, triton=__import__("triton").__version__,
                python=platform.python_version(), shape=dict(B=1, H=h, N=n, D=d), dtype="bfloat16")
    lines = [f"{meta['gpu']}, torch {meta['torch']}, Triton {meta['triton']}; B1 H{h} N{n} D{d} bf16", "",
             "| mask | implementation | ms | vs SDPA, same mask | vs SDPA is_causal | cosine vs fp32 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        vs_c = f"{r['vs_sdpa_is_causal']:.2f}x" if r.get("vs_sdpa_is_causal") else ""
        cos = f"{r['cosine']:.5f}" if r["cosine"] is not None else ""
        lines.append(f"| {r['case']} | {r['impl']} | {r['ms']:.3f} | {r['vs_sdpa_same_mask']:.2f}x | {vs_c} | {cos} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "masks.json"), "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
        with open(os.path.join(args.out, "masks.md"), "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
