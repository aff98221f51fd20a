"""Synthetic attention inputs for tests and benchmarks. Documented as synthetic: no model made them.

`structured_qkv` puts tokens on a T x H x W grid (video latents) and draws q and k from smooth
random fields over that grid plus noise, so nearby tokens attend to each other the way image and
video tokens do and block sparsity has something to find; `random_qkv` is plain N(0, 1).
"""
from __future__ import annotations

import torch


def random_qkv(b, hq, hkv, n, d, *, device="cpu", dtype=torch.float32, generator=None):
    shape_q, shape_kv = (b, hq, n, d), (b, hkv, n, d)
    q = torch.randn(shape_q, generator=generator)
    k, v = torch.randn(shape_kv, generator=generator), torch.randn(shape_kv, generator=generator)
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def structured_qkv(b, hq, hkv, grid: tuple, d, *, smoothness: float = 0.15, noise: float = 0.3, strength: float = 3.0,
                   device="cpu", dtype=torch.float32, generator=None):
    """q/k (B, H, T*H*W, D) from random Fourier features of grid positions (low frequencies:
    smooth fields) plus noise; v random. Larger `strength` = more local attention."""
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in grid], indexing="ij")
    pos = torch.stack([a.reshape(-1) for a in axes], dim=-1)  # (N, 3)
    n = pos.shape[0]

    def field(heads):
        freqs = torch.randn(heads, pos.shape[1], d // 2, generator=generator) * smoothness
        phase = torch.randn(heads, 1, d // 2, generator=generator) * 3.14159
        ang = pos @ freqs + phase  # (heads, N, d/2)
        return torch.cat([ang.sin(), ang.cos()], dim=-1) * strength

    fk = field(hkv)
    fq = fk.repeat_interleave(hq // hkv, dim=0)  # queries look for keys of the same field
    q = fq[None] + noise * torch.randn(b, hq, n, d, generator=generator)
    k = fk[None] + noise * torch.randn(b, hkv, n, d, generator=generator)
    v = torch.randn(b, hkv, n, d, generator=generator)
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)
