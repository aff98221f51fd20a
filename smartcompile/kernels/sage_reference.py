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
`mask`: None, a bool keep-mask or an additive bias tensor, or a mask type from smartcompile.masks
(KeyLengths / KeyPadding: key padding as structure, what the kernels take; any other type through
its dense form). A query row with no kept key outputs 0 (LSE -inf), never NaN.
Used on CPU, as the oracle for the Triton kernels, and by the profiler.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from ..masks import And, Causal, KeyLengths, KeyPadding, MaskType, NoMask, Shape
from .config import SageConfig
from .constants import FP8_E4M3_MAX, FP16_V_RANGE, LOG2E
from .exact_reference import causal_keep_mask, expand_kv_heads
from .quantization import quantize_int8_per_block, round_fp8_e4m3, round_fp16, scale_v_per_channel, smooth_k


def _log2_bias(mask: torch.Tensor) -> torch.Tensor:
    """An additive mask in log2 units, kept finite: finfo(fp32).min * log2(e) would overflow to -inf, and a row
    whose every key holds that finite fill would then be empty (0) where eager gives every key the same weight
    (the mean of V)."""
    m = mask.float()
    bias = m * LOG2E
    return torch.where(torch.isneginf(bias) & torch.isfinite(m), torch.finfo(torch.float32).min, bias)  # -inf stays


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
    if isinstance(mask, (KeyLengths, KeyPadding)):
        keep = padding_keep(mask, b, sk, q.device, "sage_attention_reference")[:, None, None, :]
    elif isinstance(mask, MaskType) and mask.needs_values:  # an additive bias given as a mask type
        bias = _log2_bias(mask.dense_bias(Shape(b, hq, sq, sk), q.device))
    elif isinstance(mask, MaskType):
        keep = None if isinstance(mask, NoMask) else mask.dense(Shape(b, hq, sq, sk), q.device)
    elif mask is not None:
        if mask.dtype == torch.bool:
            keep = mask
        else:
            bias = _log2_bias(mask)
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


# ---- key padding as structure (shared with the Triton kernel) ---------------------------------------
ALLOWED_MASKS = ("None, KeyLengths (lengths (B,)), KeyPadding (keep (B, Sk) or (1, Sk)), a bool (B, 1, 1, Sk) or "
                 "(1, 1, 1, Sk) tensor of key flags, or And(Causal('top_left'), KeyLengths or KeyPadding)")


def padding_keep(mask, batch: int, kv_len: int, device, who: str) -> torch.Tensor:
    """The (B, Sk) bool keep-flags of a KeyLengths / KeyPadding, after checking its tensor's shape
    (lengths (B,) of integers; keep (B, Sk) or (1, Sk), bool or 0/1 integers)."""
    if isinstance(mask, KeyLengths):
        n = torch.as_tensor(mask.lengths, device=device)
        if n.dim() != 1 or n.shape[0] != batch or n.is_floating_point() or n.dtype == torch.bool:
            raise ValueError(f"{who}: KeyLengths.lengths must be an integer tensor of shape ({batch},) "
                             f"(one length per batch row); got {tuple(n.shape)} {n.dtype}")
        return torch.arange(kv_len, device=device)[None, :] < n[:, None]
    if isinstance(mask, KeyPadding):
        keep = torch.as_tensor(mask.keep, device=device)
        if keep.dim() != 2 or keep.shape[1] != kv_len or keep.shape[0] not in (1, batch) or keep.is_floating_point():
            raise ValueError(f"{who}: KeyPadding.keep must be a bool (or 0/1 integer) tensor of shape "
                             f"({batch}, {kv_len}); got {tuple(keep.shape)} {keep.dtype}")
        return keep.to(torch.bool).expand(batch, kv_len)
    raise ValueError(f"{who}: expected KeyLengths or KeyPadding, got {type(mask).__name__}")


def padding_form(mask, is_causal: bool, batch: int, kv_len: int):
    """(KeyLengths/KeyPadding or None, is_causal) when `mask` is no mask or key padding in a form the span
    kernels take; None when it is anything else."""
    if mask is None or isinstance(mask, NoMask):
        return None, is_causal
    if isinstance(mask, (KeyLengths, KeyPadding)):
        return mask, is_causal
    if isinstance(mask, torch.Tensor):
        # the compiled graph's form of key padding: keep flags broadcast over heads and queries
        if (mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[0] in (1, batch) and mask.shape[1:3] == (1, 1)
                and mask.shape[3] == kv_len):
            return KeyPadding(mask[:, 0, 0, :]), is_causal
    elif isinstance(mask, And):
        pads = [p for p in mask.parts if isinstance(p, (KeyLengths, KeyPadding))]
        others = [p for p in mask.parts if not isinstance(p, (KeyLengths, KeyPadding, NoMask))]
        if len(pads) == 1 and all(isinstance(p, Causal) and p.alignment == "top_left" for p in others):
            return pads[0], is_causal or bool(others)
    return None


def padding_part(mask, is_causal: bool, batch: int, kv_len: int, who: str):
    """(KeyLengths/KeyPadding or None, is_causal) from a mask the span kernels accept, else ValueError."""
    form = padding_form(mask, is_causal, batch, kv_len)
    if form is not None:
        return form
    what = (f"a {tuple(mask.shape)} {mask.dtype} tensor mask (key flags here: bool ({batch}, 1, 1, {kv_len}) or "
            f"(1, 1, 1, {kv_len}))" if isinstance(mask, torch.Tensor)
            else f"a {type(mask).__name__} mask ({mask.describe()})" if isinstance(mask, MaskType)
            else f"a {type(mask).__name__}")
    raise ValueError(f"{who}: got {what}; allowed: {ALLOWED_MASKS} (with is_causal for causal). "
                     f"Use the reference for other masks")


@dataclasses.dataclass(frozen=True)
class KeySpans:
    """Key padding as the Triton kernel takes it: int32 (B, 2) [start, end) of each batch row's kept keys
    (the tiles it visits) and, for a KeyPadding, its int32 (B, Sk) flags (holes inside a span; int32
    loads cost the kernel less than bytes); None for KeyLengths, whose span is exact."""
    spans: torch.Tensor
    keep: Optional[torch.Tensor] = None


def key_spans(mask, is_causal: bool, batch: int, kv_len: int, device, who: str):
    """(KeySpans or None without key padding, is_causal) on `device`, computed there without a host sync
    (CUDA-graph capturable, no stall per call): the data is never read on the host, so its only check is
    the tensors' shapes. KeyLengths gives [0, min(len, Sk)); a KeyPadding gives [first kept key, last + 1)
    plus its flags, so padding on any side and holes anywhere are exact. A row with no kept key gets [0, 0).
    Anything else is a ValueError naming `who`, the mask and what is allowed."""
    pad, is_causal = padding_part(mask, is_causal, batch, kv_len, who)
    if pad is None:
        return None, is_causal
    keep = padding_keep(pad, batch, kv_len, device, who)
    if isinstance(pad, KeyLengths):
        end = torch.as_tensor(pad.lengths, device=device).clamp(0, kv_len)
        return KeySpans(torch.stack([torch.zeros_like(end), end], dim=1).to(torch.int32)), is_causal
    j = torch.arange(kv_len, device=device)
    start = torch.where(keep, j, kv_len).amin(dim=1)  # kv_len for a row with no kept key
    end = torch.where(keep, j + 1, 0).amax(dim=1)  # 0 for a row with no kept key
    spans = torch.stack([torch.minimum(start, end), end], dim=1).to(torch.int32)  # [0, 0) for an empty row
    return KeySpans(spans, keep.to(torch.int32).contiguous()), is_causal
