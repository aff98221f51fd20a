"""Key padding at run time, in its cheapest form for the kernels.

The op receives key padding as a (B|1, 1, 1, Sk) bool mask (passes/mask_form.py). transformers hands an
all-ones `attention_mask` it cannot drop while tracing, and prefill batches are usually right-padded, but
whether flags keep every key or a prefix is data: knowing it costs one host sync. That is paid only where
attention costs far more (Sq * Sk >= CHECK_MIN_SCORES: prefill, not decode) and never during CUDA-graph
capture; otherwise the flags go to the kernels as they are (all of which handle any flags).
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from ..masks import KeyLengths
from ..spec import is_key_padding

CHECK_MIN_SCORES = 1 << 20  # Sq * Sk


def _worth_a_sync(mask: Optional[torch.Tensor], q: torch.Tensor, k: torch.Tensor) -> bool:
    if mask is None or q.shape[2] * k.shape[2] < CHECK_MIN_SCORES or not is_key_padding(mask, q.shape[0], k.shape[2]):
        return False
    return not (q.is_cuda and torch.cuda.is_current_stream_capturing())


def all_kept(mask: Optional[torch.Tensor], q: torch.Tensor, k: torch.Tensor) -> bool:
    """True when `mask` is key padding that keeps every key (checked only where worth a sync)."""
    return _worth_a_sync(mask, q, k) and bool(mask.all())


def simplest(mask: Optional[torch.Tensor], q: torch.Tensor, k: torch.Tensor) -> Union[None, torch.Tensor, KeyLengths]:
    """None when every key is kept, KeyLengths when each sequence keeps a prefix (right padding), else `mask`."""
    if not _worth_a_sync(mask, q, k):
        return mask
    keep = mask[:, 0, 0, :]
    n = keep.sum(dim=-1)
    prefix = torch.arange(keep.shape[-1], device=keep.device) < n[:, None]
    every, right = torch.stack([keep.all(), (prefix == keep).all()]).tolist()  # one sync for both
    if every:
        return None
    return KeyLengths(n.expand(q.shape[0]).contiguous()) if right else mask
