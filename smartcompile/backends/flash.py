"""Flash: exact attention. torch SDPA everywhere; flash_attn on CUDA when importable."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from ..kernels.exact_reference import causal_keep_mask
from .base import Accuracy, Backend, Implementation
from .capabilities import Capabilities
from .key_padding import all_kept


def run_sdpa(q, k, v, mask: Optional[torch.Tensor], is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    if all_kept(mask, q, k):  # transformers' all-ones attention_mask: SDPA's mask-free (flash/cuDNN) path
        mask = None
    if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)  # SDPA wants an additive mask in the query dtype
    if mask is not None and is_causal:  # the op's "mask AND causal" (key padding); SDPA takes one or the other
        causal = causal_keep_mask(q.shape[2], k.shape[2], q.device)
        mask = mask & causal if mask.dtype == torch.bool else mask.masked_fill(~causal, float("-inf"))
        is_causal = False
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )


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
