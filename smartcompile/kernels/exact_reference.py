"""Exact attention in fp32 (the oracle every other implementation is compared with)."""
from __future__ import annotations

from typing import Optional

import torch


def expand_kv_heads(x: torch.Tensor, q_heads: int) -> torch.Tensor:
    """(B, Hkv, S, D) -> (B, Hq, S, D): query head h reads kv head h // (Hq // Hkv)."""
    kv_heads = x.shape[1]
    if kv_heads == q_heads:
        return x
    if q_heads % kv_heads:
        raise ValueError(f"q heads ({q_heads}) must be a multiple of kv heads ({kv_heads})")
    return x.repeat_interleave(q_heads // kv_heads, dim=1)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32, or fp64 when the input is fp64 (tests use fp64 oracles)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def causal_keep_mask(q_len: int, kv_len: int, device: torch.device) -> torch.Tensor:
    """Top-left aligned causal mask (SDPA's convention): query i sees keys j <= i."""
    i = torch.arange(q_len, device=device)[:, None]
    j = torch.arange(kv_len, device=device)[None, :]
    return j <= i


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v in fp32 (fp64 for fp64 inputs); rows with every key masked give 0, not NaN."""
    _, _, vf, p = _probabilities(q, k, v, mask, is_causal, scale)
    return (p @ vf).to(q.dtype)


def _probabilities(q, k, v, mask, is_causal, scale):
    """(q, k, v in the compute dtype with kv heads expanded, softmax probabilities; 0 for rows with no key)."""
    hq = q.shape[1]
    ct = compute_dtype(q)
    qf, kf, vf = q.to(ct), expand_kv_heads(k.to(ct), hq), expand_kv_heads(v.to(ct), hq)
    s = (qf @ kf.transpose(-2, -1)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.to(ct)
    if is_causal:
        s = s.masked_fill(~causal_keep_mask(q.shape[2], k.shape[2], q.device), float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    denom = p.sum(dim=-1, keepdim=True)
    return qf, kf, vf, p / torch.where(denom == 0, torch.ones_like(denom), denom)


def _sum_to_shape(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reduce a broadcast result back to `shape` (the gradient of a broadcast)."""
    while x.dim() > len(shape):
        x = x.sum(dim=0)
    for i, n in enumerate(shape):
        if n == 1 and x.shape[i] != 1:
            x = x.sum(dim=i, keepdim=True)
    return x


def attention_reference_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    scale: Optional[float] = None,
    mask_grad: bool = False,
):
    """Exact gradients (dq, dk, dv, dmask or None) of attention_reference, in fp32.

    dS = P * (dP - rowsum(P * dP)); GQA gradients are summed over each kv head's q heads.
    """
    b, hq, sq, d = q.shape
    hkv = k.shape[1]
    sm = scale if scale is not None else d ** -0.5
    qf, kf, vf, p = _probabilities(q, k, v, mask, is_causal, scale)
    ct = qf.dtype
    go = grad_out.to(ct)
    dv = p.transpose(-2, -1) @ go
    dp = go @ vf.transpose(-2, -1)
    # rowsum(P * dP), as autograd's softmax backward: FlashAttention's rowsum(dO * O) is the same sum but
    # cancels badly when softmax saturates (large scores: 20% error on dK measured, tests/test_fuzz.py)
    ds = p * (dp - (p * dp).sum(dim=-1, keepdim=True))
    dq = (ds @ kf) * sm
    dk = (ds.transpose(-2, -1) @ qf) * sm
    if hkv != hq:
        g = hq // hkv
        dk = dk.reshape(b, hkv, g, *dk.shape[2:]).sum(dim=2)
        dv = dv.reshape(b, hkv, g, *dv.shape[2:]).sum(dim=2)
    dmask = _sum_to_shape(ds, mask.shape).to(mask.dtype) if mask_grad and mask is not None else None
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dmask
