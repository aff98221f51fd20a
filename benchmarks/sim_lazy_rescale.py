"""Would FA4's lazy O rescaling work with Sage's FP8 P? A CPU simulation of the Gluon kernel's numerics (issue 13).

FA4 skips O's rescale (one FMUL per O element and tile with one-level accumulation: 64 of a D128 consumer
thread's ~539 instructions per tile) while a row's running max has grown by at most `tau` (log2 units) since it
was last applied: P is then computed against the stale max and may reach 2^tau times its usual top. With bf16 P
that is harmless; Sage's P is FP8 e4m3 scaled into [0, 448], so it needs headroom: P scaled into [0, 448 / 2^tau],
which moves small probabilities towards FP8's subnormals (2^-9) and below. In the kernel the skip must be uniform
over a consumer warpgroup's 64 rows (one branch), so a tile skips only when no row of the 64 grew by more than tau.

This script runs the online softmax tile by tile in torch, exactly as kernels/sage_reference.py does (INT8 Q/K per
block, smoothed K, V per channel in FP8, P rounded to e4m3, fp32 accumulation), with the lazy rule added, and
reports against fp32 attention: cosine and relative L1 per tau, and the share of (64-row group, tile) steps that
skip the rescale. tau = 0 is the reference's arithmetic (a group rescales whenever a row's max moved, and a row
whose max did not move is rescaled by 1).

    python benchmarks/sim_lazy_rescale.py --taus 0,1,2,3,4,8 --kv-len 16384
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from smartcompile.kernels.constants import FP8_E4M3_MAX, LOG2E  # noqa: E402
from smartcompile.kernels.exact_reference import attention_reference  # noqa: E402
from smartcompile.kernels.quantization import (quantize_int8_per_block, round_fp8_e4m3,  # noqa: E402
                                               scale_v_per_channel, smooth_k)
from smartcompile.metrics import error_stats  # noqa: E402
from smartcompile.synthetic import random_qkv, structured_qkv  # noqa: E402

GROUP = 64  # query rows per consumer warpgroup: the skip is one branch for all of them
BLOCK_Q, BLOCK_K = 64, 128  # the Gluon kernel's Q scale block and K/V tile


def lazy_sage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: float) -> tuple[torch.Tensor, float]:
    """Sage attention (FP8 P.V) with lazy rescaling at threshold `tau`: (output, share of skipped rescales)."""
    b, h, sq, d = q.shape
    sk = k.shape[2]
    scale = d ** -0.5
    qi, q_scale = quantize_int8_per_block(q.float() * (scale * LOG2E), BLOCK_Q)
    ki, k_scale = quantize_int8_per_block(smooth_k(k.float()), BLOCK_K)
    vs, v_scale = scale_v_per_channel(v.float(), FP8_E4M3_MAX)
    vq = round_fp8_e4m3(vs)
    p_mult = FP8_E4M3_MAX / 2.0 ** tau  # headroom: P against a max up to tau stale stays <= 448
    m = torch.full((b, h, sq), float("-inf"))
    l = torch.zeros((b, h, sq))
    acc = torch.zeros((b, h, sq, d))
    skipped = steps = 0
    for j0 in range(0, sk, BLOCK_K):
        j1 = min(j0 + BLOCK_K, sk)
        s = (qi @ ki[:, :, j0:j1].transpose(-2, -1)) * q_scale[..., None] * k_scale[:, :, None, j0:j1]
        m_new = torch.maximum(m, s.amax(dim=-1))
        grown = (m_new - m).nan_to_num(nan=0.0, posinf=math.inf)  # first tile: -inf -> finite is inf growth
        need = (grown > tau).reshape(b, h, sq // GROUP, GROUP).any(dim=-1)  # one branch per warpgroup
        if j0 > 0:
            skipped += int((~need).sum())
            steps += need.numel()
        need_rows = need.repeat_interleave(GROUP, dim=-1)
        m_used = torch.where(need_rows, m_new, m)
        alpha = torch.where(need_rows, torch.exp2(m - m_used).nan_to_num(nan=0.0), torch.ones_like(m))
        p = torch.exp2(s - m_used[..., None])
        pq = round_fp8_e4m3(p * p_mult)
        assert pq.max() <= FP8_E4M3_MAX, "P past FP8's range: the headroom did not hold"
        l = l * alpha + p.sum(dim=-1)
        acc = acc * alpha[..., None] + pq @ vq[:, :, j0:j1]
        m = m_used
    out = acc * (v_scale / p_mult) / l[..., None]
    return out, skipped / max(steps, 1)


def inputs(kind: str, heads: int, sq: int, sk: int, d: int, gen: torch.Generator):
    """q (sq rows) and k/v (sk rows): random (temperature t: q scaled by t) or structured (strength s)."""
    name, value = kind.split("=")
    if name == "random":
        q, k, v = random_qkv(1, heads, heads, sk, d, generator=gen)
        return q[:, :, :sq] * float(value), k, v
    side = int(round((sk / 16) ** 0.5))
    q, k, v = structured_qkv(1, heads, heads, (sk // (side * side), side, side), d, strength=float(value),
                             generator=gen)
    return q[:, :, :sq], k, v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--taus", default="0,1,2,3,4,8")
    ap.add_argument("--kinds", default="random=1,random=2,random=4,structured=3,structured=6")
    ap.add_argument("--kv-len", type=int, default=16384)
    ap.add_argument("--q-len", type=int, default=1024, help="query rows simulated (a multiple of 64)")
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.q_len % GROUP:
        raise SystemExit(f"--q-len {args.q_len}: must be a multiple of {GROUP}")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    taus = [float(t) for t in args.taus.split(",")]
    print(f"H{args.heads} Sq{args.q_len} Sk{args.kv_len} D{args.dim}; cos / relL1 vs fp32, share of skipped rescales")
    print(f"{'inputs':<14}" + "".join(f"  tau={t:<4g} {'':<24}" for t in taus))
    for kind in args.kinds.split(","):
        gen = torch.Generator().manual_seed(args.seed)
        q, k, v = inputs(kind, args.heads, args.q_len, args.kv_len, args.dim, gen)
        exact = attention_reference(q, k, v)
        cells = []
        for tau in taus:
            out, skip = lazy_sage(q, k, v, tau)
            err = error_stats(out, exact)
            cells.append(f"{err.cosine:.6f} {err.rel_l1:.4f} {skip:5.1%}")
        print(f"{kind:<14}" + "".join(f"  {c:<30}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
