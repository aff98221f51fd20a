"""Quantization helpers shared by the Sage/Sparge references (pure torch)."""
from __future__ import annotations

import torch

from .constants import INT8_MAX


def smooth_k(k: torch.Tensor) -> torch.Tensor:
    """Subtract the per-head mean over tokens. Exact for softmax: it shifts each score row
    by a constant (q . mean_k). Returns a new tensor; the caller's k is untouched."""
    return k - k.mean(dim=-2, keepdim=True)


def quantize_int8_per_block(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric INT8 per block of `block` tokens (per batch and head).

    x: (B, H, S, D) float. Returns (integer values held in float32, per-token scale (B, H, S)),
    the scale being the block's amax / 127, repeated over its tokens.
    """
    b, h, s, d = x.shape
    nblk = -(-s // block)
    pad = nblk * block - s
    xp = torch.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x
    amax = xp.reshape(b, h, nblk, block * d).abs().amax(dim=-1)
    scale = (amax / INT8_MAX).clamp_min(1e-12)
    scale_tok = scale.repeat_interleave(block, dim=-1)[..., :s]
    y = x / scale_tok[..., None]
    xi = (torch.sign(y) * torch.floor(y.abs() + 0.5)).clamp(-INT8_MAX, INT8_MAX)  # half away from zero, as the kernels
    return xi, scale_tok


def scale_v_per_channel(v: torch.Tensor, target: float) -> tuple[torch.Tensor, torch.Tensor]:
    """v / s with s = amax over tokens per channel / target; returns (scaled v, s (B, H, 1, D))."""
    s = (v.abs().amax(dim=-2, keepdim=True) / target).clamp_min(1e-12)
    return v / s, s


def round_fp8_e4m3(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float8_e4m3fn).float()


def round_fp16(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()
