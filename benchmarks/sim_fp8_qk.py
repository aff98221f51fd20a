"""Would an FP8 Q K^T keep Sage's accuracy? A CPU simulation of the kernel's numerics with Q and K in e4m3 (issue 13).

FA3-FP8 and cuDNN's FP8 SDPA multiply Q K^T in FP8: the scores come out of the wgmma as fp32, so the kernel would
skip the int32 -> fp32 conversion Sage's INT8 Q K^T needs per score (~1 of ~4.5 issued instructions per score in the
Gluon kernel's softmax). cuDNN FP8 (per-tensor scales) measured cosine 0.998 against fp32 on random inputs, under
issue 13's 0.999 bound. This script runs kernels/sage_reference.py's arithmetic (smoothed K, V per channel in FP8,
P rounded to e4m3 in [0, 448], fp32 accumulation, tiles of 128 keys) with the Q/K quantization swapped:

- `int8`: the shipped one: INT8 per block (Q per 64 rows with the softmax scale and log2(e) folded in, K per 128);
- `fp8-block`: e4m3 with the same blocks, each scaled so its amax lands on 448;
- `fp8-tensor`: e4m3 with one scale per (batch, head) (close to cuDNN's per-tensor recipe; Sage's K smoothing kept);
- `fp8-block-nosmooth`: `fp8-block` without smoothing K.

and reports cosine / relative L1 against fp32 attention on random, peaked (q x 4), biased-K (a per-channel offset
of 4 standard deviations: what smoothing is for) and structured (local, video-like) inputs. The products are
accumulated in exact fp32 (Hopper's FP8 wgmma accumulates with less precision: the real kernel would do no better)
and no Hadamard rotation is applied (FA3's FP8 path can rotate Q and K to spread outliers; not modelled).
Structured inputs use whole frames of 1,024 tokens (kv-len rounded down).

    python benchmarks/sim_fp8_qk.py [--kv-len 4096] [--heads 4] [--dims 64,128]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from smartcompile.kernels.constants import FP8_E4M3_MAX, LOG2E  # noqa: E402
from smartcompile.kernels.exact_reference import attention_reference  # noqa: E402
from smartcompile.kernels.quantization import (quantize_int8_per_block, round_fp8_e4m3,  # noqa: E402
                                               scale_v_per_channel, smooth_k)
from smartcompile.metrics import error_stats  # noqa: E402
from smartcompile.synthetic import structured_qkv  # noqa: E402

SCHEMES = ("int8", "fp8-block", "fp8-tensor", "fp8-block-nosmooth")


def quantize_fp8_per_block(x: torch.Tensor, block: int) -> tuple:
    """e4m3 per block of `block` tokens: (values in float32, per-token scale (B, H, S)), amax -> 448."""
    b, h, s, d = x.shape
    nblk = -(-s // block)
    xp = torch.nn.functional.pad(x, (0, 0, 0, nblk * block - s)).reshape(b, h, nblk, block, d)
    scale = (xp.abs().amax(dim=(-2, -1), keepdim=True) / FP8_E4M3_MAX).clamp_min(1e-12)
    values = round_fp8_e4m3(xp / scale).reshape(b, h, nblk * block, d)[:, :, :s]
    return values, scale.expand(b, h, nblk, block, 1).reshape(b, h, nblk * block)[:, :, :s]


def quantize_fp8_per_tensor(x: torch.Tensor) -> tuple:
    scale = (x.abs().amax(dim=(-2, -1), keepdim=True) / FP8_E4M3_MAX).clamp_min(1e-12)
    return round_fp8_e4m3(x / scale), scale[..., 0].expand(x.shape[:-1])


def simulated_attention(q, k, v, scheme: str, block_q: int = 64, block_k: int = 128) -> torch.Tensor:
    """sage_reference's arithmetic (no mask, Hq == Hkv, FP8 P V) with the Q/K quantization `scheme`."""
    d = q.shape[-1]
    qs = q.float() * (d ** -0.5 * LOG2E)
    kf = k.float() if scheme == "fp8-block-nosmooth" else smooth_k(k.float())
    if scheme == "int8":
        qi, q_scale = quantize_int8_per_block(qs, block_q)
        ki, k_scale = quantize_int8_per_block(kf, block_k)
    elif scheme in ("fp8-block", "fp8-block-nosmooth"):
        qi, q_scale = quantize_fp8_per_block(qs, block_q)
        ki, k_scale = quantize_fp8_per_block(kf, block_k)
    elif scheme == "fp8-tensor":
        qi, q_scale = quantize_fp8_per_tensor(qs)
        ki, k_scale = quantize_fp8_per_tensor(kf)
    else:
        raise ValueError(f"scheme {scheme!r}: allowed {SCHEMES}")
    vs, v_scale = scale_v_per_channel(v.float(), FP8_E4M3_MAX)
    vq = round_fp8_e4m3(vs)
    b, h, sq, _ = q.shape
    m = torch.full((b, h, sq), float("-inf"))
    l = torch.zeros((b, h, sq))
    acc = torch.zeros((b, h, sq, v.shape[-1]))
    for j0 in range(0, k.shape[2], block_k):
        j1 = min(j0 + block_k, k.shape[2])
        s = (qi @ ki[:, :, j0:j1].transpose(-2, -1)) * q_scale[..., None] * k_scale[:, :, None, j0:j1]
        m_new = torch.maximum(m, s.amax(dim=-1))
        p = torch.exp2(s - m_new[..., None])
        alpha = torch.exp2(m - m_new)
        l = l * alpha + p.sum(dim=-1)
        acc = acc * alpha[..., None] + round_fp8_e4m3(p * FP8_E4M3_MAX) @ vq[:, :, j0:j1]
        m = m_new
    return acc * (v_scale / FP8_E4M3_MAX) / l[..., None]


def inputs(kind: str, h: int, n: int, d: int, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    if kind.startswith("structured"):
        strength = float(kind.split("-")[1])
        frames = max(n // 1024, 1)
        return structured_qkv(1, h, h, (frames, 32, 32), d, strength=strength, generator=g)
    q, k, v = (torch.randn(1, h, n, d, generator=g) for _ in range(3))
    if kind == "peaked":
        q = q * 4
    elif kind == "biased-k":
        k = k + 4 * torch.randn(1, h, 1, d, generator=g)
    return q, k, v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kv-len", type=int, default=4096)
    ap.add_argument("--q-len", type=int, default=512, help="query rows simulated (the last ones)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--kinds", default="random,peaked,biased-k,structured-3,structured-6")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    print(f"{'inputs':<14} {'D':>4} " + " ".join(f"{s:>22}" for s in SCHEMES) + "   (cos / rel L1 vs fp32)")
    for d in (int(x) for x in args.dims.split(",")):
        for kind in args.kinds.split(","):
            q, k, v = inputs(kind, args.heads, args.kv_len, d, args.seed + d)
            q = q[:, :, -args.q_len:]
            ref = attention_reference(q.float(), k.float(), v.float())
            cells = []
            for scheme in SCHEMES:
                e = error_stats(simulated_attention(q, k, v, scheme), ref)
                cells.append(f"{e.cosine:.6f} / {e.rel_l1:.4f}")
            print(f"{kind:<14} {d:>4} " + " ".join(f"{c:>22}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
