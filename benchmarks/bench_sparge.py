"""Sparge benchmark (GPU): our sparse kernel (prediction included) vs our dense Sage kernel vs cuDNN SDPA.

Densities 1.0 / 0.75 / 0.5 / 0.25 (sparsity_ratio = 1 - density, similarity check off so the
density is what was asked), on structured (synthetic, local) and random inputs. Reports
dense-equivalent TFLOP/s (4*B*H*N*N*D / time), ratios, the block-map prediction's share of the
sparse time (the whole call minus quantize + attend with the same block lists given: what
prediction adds, including its pooling inside the quantization pass), and relative L1 against
exact fp32 attention on a slice of queries.

    python benchmarks/bench_sparge.py --out DIR [--lens 8192,16384,32768] [--dims 64,128] [--graphs]
        [--impls triton,triton128,gluon128]

--impls: `triton` is sparge_triton with the default config (query blocks of 64), `triton128` the same kernel with
query blocks of 128, `gluon128` sparge_gluon (sm90, query blocks of 128: the same blocks as triton128) with the
FADD row sums (SPARSE_LAUNCH), `gluon128-sum` with the row sums by wgmma (`sum_mma`, what `sparse_launch` ships).
The prediction share is measured for `triton` only.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import torch
import torch.nn.functional as F
import triton.testing
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.bench.measure import attention_flops, do_bench_ms  # noqa: E402
from smartcompile.bench.quality import sliced_error  # noqa: E402
from smartcompile.kernels.config import SageConfig, SpargeConfig  # noqa: E402
from smartcompile.kernels.sage_triton import attend, quantize, sage_attention_triton  # noqa: E402
from smartcompile.kernels.sparge_gluon import SPARSE_LAUNCH, SPARSE_PAIR_LAUNCH, sparge_attention_gluon  # noqa: E402
from smartcompile.kernels.sparge_triton import block_lists, sparge_attention_triton  # noqa: E402
from smartcompile.synthetic import random_qkv, structured_qkv  # noqa: E402


GRAPHS = False  # --graphs: time CUDA-graph replays (what mode="reduce-overhead" runs): GPU time, no host cost


def bench(fn):
    if GRAPHS:
        fn()  # compile and autotune outside the capture
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        fn = graph.replay
    return do_bench_ms(fn)


def rel_l1(out, q, k, v):
    return sliced_error(out, q, k, v, max_queries=2048).rel_l1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--lens", default="8192,16384,32768")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--densities", default="1.0,0.75,0.5,0.25")
    ap.add_argument("--kinds", default="structured,random")
    ap.add_argument("--graphs", action="store_true", help="time CUDA-graph replays (no host launch cost)")
    ap.add_argument("--impls", default="triton", help="triton, triton128, gluon128, gluon128-sum, gluon128-pair (comma-separated)")
    args = ap.parse_args()
    global GRAPHS
    GRAPHS = args.graphs
    rows = []
    h = args.heads
    for d in (int(x) for x in args.dims.split(",")):
        for n in (int(x) for x in args.lens.split(",")):
            side = int(round((n // 8) ** 0.5))
            for kind in args.kinds.split(","):
                if kind == "structured":
                    q, k, v = structured_qkv(1, h, h, (n // (side * side), side, side), d, device="cuda", dtype=torch.bfloat16)
                else:
                    q, k, v = random_qkv(1, h, h, n, d, device="cuda", dtype=torch.bfloat16)
                flops = attention_flops(1, h, q.shape[2], q.shape[2], d, False)
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    t_cudnn = bench(lambda: F.scaled_dot_product_attention(q, k, v))
                t_dense = bench(lambda: sage_attention_triton(q, k, v, None, False, None, SageConfig()))
                for density in (float(x) for x in args.densities.split(",")):
                    for impl in args.impls.split(","):
                        block_q = 64 if impl == "triton" else 128
                        config = SpargeConfig(sparsity_ratio=1.0 - density, sim_threshold=-1.0, block_q=block_q)
                        if impl.startswith("gluon128"):  # -sum: the row sums by wgmma (session 14); -pair: s17
                            launch = {"gluon128": SPARSE_LAUNCH, "gluon128-sum": {**SPARSE_LAUNCH, "sum_mma": True},
                                      "gluon128-pair": SPARSE_PAIR_LAUNCH}[impl]
                            run = functools.partial(sparge_attention_gluon, launch=launch)
                        else:
                            run = sparge_attention_triton
                        t_sparse = bench(lambda: run(q, k, v, None, False, None, config))
                        out, block_map = run(q, k, v, None, False, None, config, return_block_map=True)
                        t_pred = None
                        if impl == "triton":
                            lists = block_lists(block_map, k.shape[2], 64, 128, False)
                            t_given = bench(lambda: attend(quantize(q, k, v), False, q.dtype, blocks=lists))
                            t_pred = max(t_sparse - t_given, 0.0)
                        row = dict(D=d, N=q.shape[2], H=h, inputs=kind, density=density, impl=impl, graphs=GRAPHS,
                                   ms_sparse=t_sparse, ms_dense_sage=t_dense, ms_cudnn=t_cudnn, ms_predict=t_pred,
                                   tflops_equiv=flops / t_sparse / 1e9, vs_dense_sage=t_dense / t_sparse,
                                   vs_cudnn=t_cudnn / t_sparse,
                                   predict_share=None if t_pred is None else t_pred / t_sparse,
                                   rel_l1=rel_l1(out, q, k, v))
                        rows.append(row)
                        pred = "" if t_pred is None else f", predict {100 * row['predict_share']:.1f}%"
                        print(f"D{d} N{row['N']:>6} {kind:<10} density {density:.2f} {impl:<9}: "
                              f"{row['tflops_equiv']:.0f} TF-equiv, {row['vs_dense_sage']:.2f}x dense sage, "
                              f"{row['vs_cudnn']:.2f}x cuDNN{pred}, rel L1 {row['rel_l1']:.4f}", flush=True)
                del q, k, v
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                triton=triton.__version__)
    print(json.dumps(meta))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        name = "bench_sparge_graphs.json" if GRAPHS else "bench_sparge.json"
        with open(os.path.join(args.out, name), "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
