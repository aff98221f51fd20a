"""Pure-torch reference of the Sage numerics, structured like the GPU kernel.

The loop walks K/V blocks in order with an online softmax in exp2, so quantization of P
happens against the running row max exactly as a kernel does (settings: a SageConfig, kernels/config.py):
  * K smoothed (mean over tokens subtracted); softmax scale and log2(e) folded into Q;
  * Q per `block_q` tokens, K per `block_k` tokens, symmetric INT8; S = int dot * scales;
  * P in FP8 e4m3 (scaled by 448) or FP16; V scaled per channel into FP8/FP16 range;
  * accumulation in FP32.
Optional `block_mask` (B, Hq, nQ, nK) skips K blocks per query block (Sparge), and
`pv_threshold` skips P.V for a block whose row maxima all trail the running max by more than
the threshold (log2 units) in its query block.
Used on CPU, as the oracle for the Triton kernels, and by the profiler.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .config import SageConfig
from .constants import FP8_E4M3_MAX, FP16_V_RANGE, LOG2E
from .exact_reference import causal_keep_mask, expand_kv_heads
from .quantization import quantize_int8_per_block, round_fp8_e4m3, round_fp16, scale_v_per_channel, smooth_k


def sage_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    is_causal: bool,
    scale: Optional[float],
    config: SageConfig,
    *,
    block_mask: Optional[torch.Tensor] = None,
    pv_threshold: Optional[float] = None,
    return_lse: bool = False,
):
    """Output (B, Hq, Sq, Dv); with return_lse also the natural-log LSE (B, Hq, Sq). `block_mask` and
    `pv_threshold`: Sparge's skipping (sparge_attention_reference passes them)."""
    pv_precision, smooth, block_q, block_k = config.pv_precision, config.smooth, config.block_q, config.block_k
    b, hq, sq, d = q.shape
    sk = k.shape[2]
    sm_scale = scale if scale is not None else d ** -0.5

    kf = k.float()
    if smooth:
        kf = smooth_k(kf)
    qi, q_scale = quantize_int8_per_block(q.float() * (sm_scale * LOG2E), block_q)
    ki, k_scale = quantize_int8_per_block(kf, block_k)
    ki, k_scale = expand_kv_heads(ki, hq), expand_kv_heads(k_scale[..., None], hq)[..., 0]

    vmax = FP8_E4M3_MAX if pv_precision == "fp8" else FP16_V_RANGE
    vs, v_scale = scale_v_per_channel(expand_kv_heads(v.float(), hq), vmax)
    vq = round_fp8_e4m3(vs) if pv_precision == "fp8" else round_fp16(vs)
    p_mult = FP8_E4M3_MAX if pv_precision == "fp8" else 1.0
    round_p = round_fp8_e4m3 if pv_precision == "fp8" else round_fp16

    keep = None  # element keep-mask broadcastable to (B, Hq, Sq, Sk), or an additive bias
    bias = None
    if mask is not None:
        if mask.dtype == torch.bool:
            keep = mask
        else:
            bias = mask.float() * LOG2E
    if is_causal:
        c = causal_keep_mask(sq, sk, q.device)
        keep = c if keep is None else keep & c

    m = torch.full((b, hq, sq), float("-inf"), device=q.device)
    l = torch.zeros((b, hq, sq), device=q.device)
    acc = torch.zeros((b, hq, sq, v.shape[-1]), device=q.device)
    n_qblk = math.ceil(sq / block_q)
    for j0 in range(0, sk, block_k):
        j1 = min(j0 + block_k, sk)
        s = (qi @ ki[:, :, j0:j1].transpose(-2, -1)) * q_scale[..., None] * k_scale[:, :, None, j0:j1]
        if bias is not None:
            s = s + bias.expand(b, hq, sq, sk)[..., j0:j1]
        if keep is not None:
            s = s.masked_fill(~keep.expand(b, hq, sq, sk)[..., j0:j1], float("-inf"))
        if block_mask is not None:
            rows = block_mask[:, :, :, j0 // block_k].repeat_interleave(block_q, dim=-1)[..., :sq]
            s = s.masked_fill(~rows[..., None], float("-inf"))
        m_blk = s.amax(dim=-1)
        m_new = torch.maximum(m, m_blk)
        m_safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp2(s - m_safe[..., None])
        alpha = torch.exp2(m - m_safe)
        l = l * alpha + p.sum(dim=-1)
        pv = round_p(p * p_mult) @ vq[:, :, j0:j1]
        if pv_threshold is not None:
            trailing = ((m_blk - m_new) < -pv_threshold) | torch.isneginf(m_blk)  # rows with no key here: trailing
            pad = n_qblk * block_q - sq
            t = torch.nn.functional.pad(trailing, (0, pad), value=True) if pad else trailing
            skip = t.reshape(b, hq, n_qblk, block_q).all(dim=-1).repeat_interleave(block_q, dim=-1)[..., :sq]
            pv = pv.masked_fill(skip[..., None], 0.0)
        acc = acc * alpha[..., None] + pv
        m = m_new
    out = acc * (v_scale / p_mult) / torch.where(l == 0, torch.ones_like(l), l)[..., None]
    out = out.to(q.dtype)
    if not return_lse:
        return out
    m_safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    lse = (m_safe + torch.log2(l)) / LOG2E  # natural-log LSE of the scaled scores; -inf for empty rows
    if smooth:  # smoothing shifted each row by q . mean(k) * scale: add it back
        k_mean = expand_kv_heads(k.float().mean(dim=-2, keepdim=True), hq)
        lse = lse + (q.float() @ k_mean.transpose(-2, -1))[..., 0] * sm_scale
    return out, lse
