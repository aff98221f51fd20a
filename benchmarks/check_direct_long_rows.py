"""Is the one-level accumulation (`direct`) accurate on long rows? (GPU; issue 13, DIRECT_MAX_KEYS)

`default_launch` uses `direct` (P V accumulated onto O by the FP8 wgmma itself) at D64 and causal only up to
DIRECT_MAX_KEYS = 16k keys: against sage_triton on the same inputs its rel L1 was 0.0014 at 4k keys and 0.0028 at
16k (H200, session 14), growing with the row. This script measures, per shape, four launches of the Gluon kernel
on the same quantized inputs against an fp32 reference of the rows that see the most keys (the last `--rows`
queries; every row sees all keys without causal):

- `fadd`: DEFAULT_LAUNCH (two-level accumulation, FADD row sums: what an LSE call runs);
- `sum`: the row sums by wgmma, two-level accumulation (what default_launch runs beyond DIRECT_MAX_KEYS);
- `direct-sum`: the row sums by wgmma with the one-level accumulation (what it runs below);
- `pair`: PAIR_LAUNCH, rounds of two 128-key tiles, one-level (default_launch's at D128 non-causal since session 17).

and times the four kernels alone (do_bench, median). A shape passes when `direct-sum`'s cosine is >= 0.999 and
its rel L1 against fp32 is at most `--tolerance` times `sum`'s: then DIRECT_MAX_KEYS may be lifted to that length
(where `direct-sum` is also faster).

    python benchmarks/check_direct_long_rows.py --out $OUT [--lens 16384,32768,65536] [--dims 64,128]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.kernels.sage_gluon import (DEFAULT_LAUNCH, GLUON_CONFIG, PAIR_LAUNCH, attend_gluon,  # noqa: E402
                                             gluon_unavailable_reason)
from smartcompile.kernels.sage_triton import quantize  # noqa: E402
from smartcompile.metrics import error_stats  # noqa: E402
from smartcompile.synthetic import structured_qkv  # noqa: E402

LAUNCHES = {"fadd": dict(DEFAULT_LAUNCH), "sum": {**DEFAULT_LAUNCH, "sum_mma": True},
            "direct-sum": {**DEFAULT_LAUNCH, "sum_mma": True, "direct": True}, "pair": dict(PAIR_LAUNCH)}


ONE_LEVEL = ("direct-sum", "pair")


def reference_rows(q, k, v, rows: slice, causal: bool) -> torch.Tensor:
    """fp32 attention of the query rows `rows` (Sq == Sk, causal: key j <= query i), one head at a time."""
    out = torch.empty(q.shape[0], q.shape[1], rows.stop - rows.start, q.shape[-1], device=q.device)
    scale = q.shape[-1] ** -0.5
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            s = (q[b, h, rows].float() @ k[b, h].float().T) * scale
            if causal:
                i = torch.arange(rows.start, rows.stop, device=q.device)[:, None]
                s.masked_fill_(torch.arange(k.shape[2], device=q.device)[None, :] > i, float("-inf"))
            out[b, h] = torch.softmax(s, dim=-1) @ v[b, h].float()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lens", default="16384,32768,65536")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--causal", default="0,1", help="comma-separated 0/1")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--rows", type=int, default=512, help="query rows checked against fp32 (the last ones)")
    ap.add_argument("--inputs", default="random", choices=("random", "structured"))
    ap.add_argument("--tolerance", type=float, default=1.10,
                    help="direct-sum's rel L1 against fp32 may be this many times sum's")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--out", default=None, help="folder for direct_long_rows.json")
    args = ap.parse_args()
    why = gluon_unavailable_reason()
    if why is not None:
        sys.exit(f"Gluon kernel unavailable: {why}")
    import triton.testing

    rows_out = []
    for d in (int(x) for x in args.dims.split(",")):
        for n in (int(x) for x in args.lens.split(",")):
            for causal in (bool(int(c)) for c in args.causal.split(",")):
                torch.manual_seed(n + d + causal)
                h = args.heads
                if args.inputs == "structured":
                    q, k, v = structured_qkv(1, h, h, (n // 1024, 32, 32), d, device="cuda", dtype=torch.bfloat16)
                else:
                    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                xg = quantize(q, k, v, None, GLUON_CONFIG, v_wgmma_order=True)
                rows = slice(n - args.rows, n)
                ref = reference_rows(q, k, v, rows, causal)
                flops = 4 * h * n * n * d / (2 if causal else 1)
                label = f"H{h} D{d} N{n} {'causal' if causal else 'full'}"
                res = {}
                for name, launch in LAUNCHES.items():
                    out = attend_gluon(xg, causal, q.dtype, **launch)
                    e = error_stats(out[:, :, rows].float(), ref)
                    ms = None if args.no_timing else triton.testing.do_bench(
                        lambda launch=launch: attend_gluon(xg, causal, q.dtype, **launch), warmup=25, rep=100,
                        return_mode="median")
                    res[name] = dict(cosine=e.cosine, rel_l1=e.rel_l1, finite=e.finite, ms=ms,
                                     tflops=None if ms is None else flops / ms / 1e9)
                    del out
                base = res["sum"]
                # the one-level launches (`direct-sum`, and `pair`: rounds of two tiles, session 17)
                ok = {name: (res[name]["finite"] and res[name]["cosine"] >= 0.999
                             and res[name]["rel_l1"] <= args.tolerance * base["rel_l1"]) for name in ONE_LEVEL}
                rows_out.append(dict(shape=label, D=d, N=n, H=h, causal=causal, launches=res, passes=ok["direct-sum"],
                                     passes_by_launch=ok))
                print(f"{label:<24} " + " | ".join(
                    f"{name} cos {r['cosine']:.6f} relL1 {r['rel_l1']:.4f}"
                    + ("" if r["ms"] is None else f" {r['tflops']:.0f} TF") for name, r in res.items())
                    + "".join(f" | {name} {'PASSES' if v else 'FAILS'}" for name, v in ok.items()), flush=True)
                del q, k, v, xg, ref
                torch.cuda.empty_cache()
    import triton
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                python=platform.python_version(), time=time.strftime("%Y-%m-%d %H:%M:%S"), inputs=args.inputs,
                rows=args.rows, tolerance=args.tolerance)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "direct_long_rows.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows_out}, f, indent=1)
    print(json.dumps(meta))
    for d, causal in dict.fromkeys((r["D"], r["causal"]) for r in rows_out):
        longest = None  # the longest length up to which every length of this (D, causal) passes
        for r in sorted((r for r in rows_out if (r["D"], r["causal"]) == (d, causal)), key=lambda r: r["N"]):
            if not r["passes"]:
                break
            longest = r["N"]
        print(f"D{d} {'causal' if causal else 'full'}: direct passes up to {longest or 'none of the lengths'}")


if __name__ == "__main__":
    main()
