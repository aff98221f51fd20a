"""Sage kernel benchmark (GPU): cuDNN SDPA, flash SDPA, sageattention (if installed) and ours.

Times with triton.testing.do_bench (median, after warm-up); our time includes quantization.
TFLOP/s = 4*B*H*N*N*D / time (halved for causal). Ratios are against cuDNN SDPA in the same run.

    python benchmarks/bench_sage.py --out results/         # full grid
    python benchmarks/bench_sage.py --quick                # a few shapes
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.bench.measure import attention_flops, do_bench_ms  # noqa: E402
from smartcompile.bench.quality import sliced_error  # noqa: E402
from smartcompile.kernels.config import SageConfig  # noqa: E402
from smartcompile.kernels.sage_triton import attend, quantize, sage_attention_triton  # noqa: E402


def sdpa_with(backend):
    def run(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def sageattention_pkg():
    try:
        from sageattention import sageattn
    except ImportError:
        return None
    return lambda q, k, v, causal: sageattn(q, k, v, tensor_layout="HND", is_causal=causal, smooth_k=False)


def ours(pv, block_k=128):
    return lambda q, k, v, causal: sage_attention_triton(q, k, v, None, causal, None, SageConfig(pv, block_k=block_k))


def bench(fn, q, k, v, causal):
    return do_bench_ms(lambda: fn(q, k, v, causal))


def accuracy(fn, q, k, v, causal):
    return sliced_error(fn(q, k, v, causal), q, k, v, causal, max_queries=4096)  # 2 heads x 4096 queries in fp32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="folder for CSV + JSON")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--lens", default="4096,8192,16384,32768")
    ap.add_argument("--batches", default="1x24,4x32", help="BxH pairs")
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    impls = {"cudnn": sdpa_with(SDPBackend.CUDNN_ATTENTION), "flash": sdpa_with(SDPBackend.FLASH_ATTENTION)}
    pkg = sageattention_pkg()
    if pkg is not None:
        impls["sageattn-1.0.6"] = pkg
    impls["ours-fp8"] = ours("fp8")
    impls["ours-fp16"] = ours("fp16")
    if args.quick:
        impls["ours-fp8-kernel-only"] = None  # the attention kernel alone, on pre-quantized inputs
    lens = [4096, 16384] if args.quick else [int(x) for x in args.lens.split(",")]
    bhs = [(1, 24)] if args.quick else [tuple(int(y) for y in x.split("x")) for x in args.batches.split(",")]
    dims = [int(x) for x in args.dims.split(",")]
    rows = []
    for b, h in bhs:
        for d in dims:
            for n in lens:
                for causal in (False, True):
                    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                    flops = attention_flops(b, h, n, n, d, causal)
                    res = {}
                    for name, fn in impls.items():
                        if fn is None:
                            pre = quantize(q, k, v, None, SageConfig("fp8"))
                            fn = lambda q, k, v, causal, pre=pre: attend(pre, causal, q.dtype)  # noqa: E731
                        try:
                            ms = bench(fn, q, k, v, causal)
                        except Exception as exc:  # a library that cannot run a shape: record and go on
                            print(f"  {name} failed at B{b} H{h} N{n} D{d} causal={causal}: {exc}", file=sys.stderr)
                            continue
                        res[name] = ms
                        err = accuracy(fn, q, k, v, causal) if name.startswith(("ours", "sage")) and "kernel-only" not in name else None
                        rows.append(dict(B=b, H=h, N=n, D=d, causal=causal, impl=name, ms=ms,
                                         tflops=flops / ms / 1e9, cosine=err.cosine if err else None,
                                         rel_l1=err.rel_l1 if err else None))
                    base = res.get("cudnn")
                    for r in rows[-len(res):]:
                        r["vs_cudnn"] = base / r["ms"] if base else None
                    print(f"B{b} H{h} D{d} N{n:>6} {'causal' if causal else 'full  '} " + "  ".join(
                        f"{r['impl']}={r['tflops']:.0f}TF({r['vs_cudnn']:.2f}x)" for r in rows[-len(res):]), flush=True)
                    del q, k, v
    meta = dict(device=dev, torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
                time=time.strftime("%Y-%m-%d %H:%M:%S"))
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        pass
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_sage.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        with open(os.path.join(args.out, "bench_sage.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(json.dumps(meta))
    print(f"\n{'shape':<34}" + "".join(f"{n:>16}" for n in impls))
    keys = sorted({(r['B'], r['H'], r['D'], r['N'], r['causal']) for r in rows})
    for key in keys:
        cells = {r["impl"]: r for r in rows if (r['B'], r['H'], r['D'], r['N'], r['causal']) == key}
        label = f"B{key[0]} H{key[1]} D{key[2]} N{key[3]} {'causal' if key[4] else 'full'}"
        print(f"{label:<34}" + "".join(
            f"{cells[n]['tflops']:>8.0f} {cells[n]['vs_cudnn']:>5.2f}x" if n in cells else f"{'-':>16}" for n in impls))
    errs = [r for r in rows if r["cosine"] is not None]
    for name in {r["impl"] for r in errs}:
        sel = [r for r in errs if r["impl"] == name]
        print(f"accuracy {name}: min cosine {min(r['cosine'] for r in sel):.5f}, max rel L1 {max(r['rel_l1'] for r in sel):.4f}")


if __name__ == "__main__":
    main()
