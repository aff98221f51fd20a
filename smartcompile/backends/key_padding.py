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
MAX_SPLIT_BATCH = 16  # exact attention by spans launches up to 2 kernels per sequence


def _worth_a_sync(mask: Optional[torch.Tensor], q: torch.Tensor, k: torch.Tensor) -> bool:
    if mask is None or q.shape[2] * k.shape[2] < CHECK_MIN_SCORES or not is_key_padding(mask, q.shape[0], k.shape[2]):
        return False
    return not (q.is_cuda and torch.cuda.is_current_stream_capturing())


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


def host_spans(mask: Optional[torch.Tensor], q: torch.Tensor, k: torch.Tensor) -> Optional[list]:
    """Each sequence's kept keys as one [start, end) run, read to the host (one sync), or None: holes, a batch
    too large to split, or not worth a sync (see the module docstring)."""
    if not _worth_a_sync(mask, q, k) or q.shape[0] > MAX_SPLIT_BATCH:
        return None
    keep = mask[:, 0, 0, :].expand(q.shape[0], -1)
    j = torch.arange(keep.shape[-1], device=keep.device)
    start = torch.where(keep, j, keep.shape[-1]).amin(dim=-1)
    end = torch.where(keep, j + 1, 0).amax(dim=-1)
    one_run = keep.sum(dim=-1) == (end - start).clamp(min=0)
    rows = torch.cat([start[:, None], end[:, None], one_run[:, None]], dim=1).tolist()  # the one sync
    if not all(ok for _, _, ok in rows):
        return None
    return [(s, e) for s, e, _ in rows]
