"""One launch of the Sage attention kernel for Nsight Compute (pre-quantized inputs).

    ncu --clock-control none -k regex:_sage_fwd -c 1 --section SpeedOfLight ... \
        python benchmarks/profile_sage_kernel.py --d 128 --n 16384
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.kernels.config import SageConfig  # noqa: E402
from smartcompile.kernels.sage_triton import attend, quantize  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--d", type=int, default=128)
ap.add_argument("--n", type=int, default=16384)
ap.add_argument("--pv", default="fp8")
args = ap.parse_args()
q, k, v = (torch.randn(1, 24, args.n, args.d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
pre = quantize(q, k, v, None, SageConfig(args.pv))
attend(pre, False, q.dtype, launch=dict(num_warps=4, num_stages=3))  # compile outside the profiled launch
torch.cuda.synchronize()
attend(pre, False, q.dtype, launch=dict(num_warps=4, num_stages=3))
torch.cuda.synchronize()
