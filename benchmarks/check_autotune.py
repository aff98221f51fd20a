"""Which launch configuration the Sage kernel's autotuner picks, against each configuration timed alone (GPU).

For one shape (default the FP8 D64 4k outlier of `smartcompile bench`, B1 H24 bf16): the tuned choice after a
first call, each `_autotune_configs()` entry timed on the same quantized inputs, and the end-to-end call timed
five times (median of do_bench each), for FP8 and FP16 P·V.

    python benchmarks/check_autotune.py [--n 4096] [--dim 64] [--causal]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.bench.measure import do_bench_ms  # noqa: E402
from smartcompile.kernels.config import SageConfig  # noqa: E402
from smartcompile.kernels.sage_triton import _autotune_configs, _tuned_kernel, attend, quantize, sage_attention_triton  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--causal", action="store_true")
    a = ap.parse_args()
    q, k, v = (torch.randn(1, a.heads, a.n, a.dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    for pv in ("fp8", "fp16"):
        cfg = SageConfig(pv_precision=pv)
        sage_attention_triton(q, k, v, None, a.causal, None, cfg)
        tuned = _tuned_kernel()
        best = getattr(tuned, "best_config", None)
        e2e = [do_bench_ms(lambda: sage_attention_triton(q, k, v, None, a.causal, None, cfg)) for _ in range(5)]
        pre = quantize(q, k, v, None, cfg)
        quant = do_bench_ms(lambda: quantize(q, k, v, None, cfg))
        print(f"{pv}: tuned choice {best}; end to end {', '.join(f'{t:.3f}' for t in e2e)} ms; quantize {quant:.3f} ms")
        for c in _autotune_configs():
            launch = dict(num_warps=c.num_warps, num_stages=c.num_stages)
            ms = do_bench_ms(lambda: attend(pre, a.causal, q.dtype, launch=launch))
            print(f"  kernel w{c.num_warps} s{c.num_stages}: {ms:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
