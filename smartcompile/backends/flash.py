"""Flash: exact attention. torch SDPA everywhere; flash_attn on CUDA when importable."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from ..kernels.exact_reference import causal_keep_mask
from .base import Accuracy, Backend, Implementation
from .capabilities import Capabilities
from . import key_padding


def _sdpa(q, k, v, mask, is_causal: bool, scale: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale,
                                          enable_gqa=q.shape[1] != k.shape[1])


def sdpa_by_spans(q, k, v, spans: list, is_causal: bool, scale: float) -> torch.Tensor:
    """Key padding as SDPA calls without a mask (its flash/cuDNN paths), per sequence on its kept run
    [s, e): top-left causal, query i sees keys [s, min(i, e - 1)], so queries [s, e) are causal over the run
    and queries from e on see all of it; queries before s see no key and output 0 (the op's contract)."""
    out = q.new_zeros(q.shape[:3] + (v.shape[-1],))
    for b, (s, e) in enumerate(spans):
        if e <= s:
            continue
        kb, vb = k[b:b + 1, :, s:e], v[b:b + 1, :, s:e]
        if not is_causal:
            out[b:b + 1] = _sdpa(q[b:b + 1], kb, vb, None, False, scale)
            continue
        mid = min(e, q.shape[2])
        if mid > s:
            out[b:b + 1, :, s:mid] = _sdpa(q[b:b + 1, :, s:mid], kb, vb, None, True, scale)
        if mid < q.shape[2]:
            out[b:b + 1, :, mid:] = _sdpa(q[b:b + 1, :, mid:], kb, vb, None, False, scale)
    return out


def run_sdpa(q, k, v, mask: Optional[torch.Tensor], is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    spans = key_padding.host_spans(mask, q, k)
    if spans is not None:  # no dense (B, 1, Sq, Sk) mask, no masked kernel: 1.0x-or-better than the graph's own
        if all(s == 0 and e == k.shape[2] for s, e in spans):
            return _sdpa(q, k, v, None, is_causal, scale)  # transformers' all-ones attention_mask
        return sdpa_by_spans(q, k, v, spans, is_causal, scale)
    if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)  # SDPA wants an additive mask in the query dtype
    if mask is not None and is_causal:  # the op's "mask AND causal" (key padding); SDPA takes one or the other
        causal = causal_keep_mask(q.shape[2], k.shape[2], q.device)
        mask = mask & causal if mask.dtype == torch.bool else mask.masked_fill(~causal, float("-inf"))
        is_causal = False
    return _sdpa(q, k, v, mask, is_causal, scale)


def run_flash_attn(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    from flash_attn import flash_attn_func  # optional; availability checked by Capabilities.requires

    # flash_attn wants (B, S, H, D); transposes are views. Causal alignment is bottom-right
    # there, equal to SDPA's top-left only when Sq == Sk, which the capabilities enforce.
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=is_causal)
    return out.transpose(1, 2)


def run_flash_attn3(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    from flash_attn_interface import flash_attn_func  # FlashAttention-3 (Hopper)

    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=is_causal)
    out = out[0] if isinstance(out, tuple) else out  # some versions also return the LSE
    return out.transpose(1, 2)


# FlashAttention 2 and 3: no mask tensors, and causal only where their bottom-right alignment
# equals SDPA's top-left one (Sq == Sk)
FLASH_ATTN_CAPS = Capabilities(
    devices=frozenset({"cuda"}), min_compute_capability=(8, 0), dtypes=frozenset({torch.float16, torch.bfloat16}),
    max_head_dim=256, head_dim_multiple=8, mask_kinds=frozenset({"none", "causal"}), causal_q_ne_k=False,
    different_v_dim=False, requires="flash_attn",
)

FLASH = Backend(
    name="flash",
    description="exact attention",
    params={},
    implementations=(
        Implementation(
            name="flash_attn3",
            capabilities=dataclasses.replace(FLASH_ATTN_CAPS, min_compute_capability=(9, 0), requires="flash_attn_interface"),
            run=run_flash_attn3,
            description="FlashAttention-3 (flash_attn_interface, Hopper)",
        ),
        Implementation(
            name="flash_attn",
            capabilities=FLASH_ATTN_CAPS,
            run=run_flash_attn,
            description="FlashAttention 2 (flash_attn package)",
        ),
        Implementation(
            name="sdpa",
            capabilities=Capabilities(),
            run=run_sdpa,
            description="torch scaled_dot_product_attention (cuDNN / flash / memory-efficient / math, chosen by torch)",
        ),
    ),
    accuracy=Accuracy(min_cosine=0.99999, max_rel_l1=2e-3),
    exact=True,
)
