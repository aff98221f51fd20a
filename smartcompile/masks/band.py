"""Masks that keep a band of diagonals: lo <= (i + offset) - j <= hi, with offset set by the alignment.

Top-left alignment (SDPA's `is_causal`): query i lines up with key i. Bottom-right (flash-attn,
decoding with a cache): the last query lines up with the last key, offset Sk - Sq."""
from __future__ import annotations

from typing import Optional

import torch

from .base import BlockKind, Shape, block_bounds

ALIGNMENTS = ("top_left", "bottom_right")


def offset(alignment: str, shape: Shape) -> int:
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment {alignment!r} is not one of {ALIGNMENTS}")
    return 0 if alignment == "top_left" else shape.kv_len - shape.q_len


def band_keep(i: torch.Tensor, j: torch.Tensor, off: int, lo: Optional[int], hi: Optional[int]) -> torch.Tensor:
    d = i + off - j
    keep = torch.ones((), dtype=torch.bool, device=d.device).expand(d.shape)
    if lo is not None:
        keep = keep & (d >= lo)
    if hi is not None:
        keep = keep & (d <= hi)
    return keep


def band_classify(shape: Shape, block_q: int, block_k: int, off: int, lo: Optional[int], hi: Optional[int],
                  device) -> torch.Tensor:
    """Exact: every diagonal between a block's extreme ones occurs in it, so comparing the block's
    range of (i + off - j) with [lo, hi] decides empty / full / partial."""
    q_first, q_last = block_bounds(shape.q_len, block_q, device)
    k_first, k_last = block_bounds(shape.kv_len, block_k, device)
    d_min = q_first.view(-1, 1) + off - k_last.view(1, -1)
    d_max = q_last.view(-1, 1) + off - k_first.view(1, -1)
    full = torch.ones_like(d_min, dtype=torch.bool)
    empty = torch.zeros_like(d_min, dtype=torch.bool)
    if lo is not None:
        full &= d_min >= lo
        empty |= d_max < lo
    if hi is not None:
        full &= d_max <= hi
        empty |= d_min > hi
    kind = torch.full(d_min.shape, int(BlockKind.PARTIAL), dtype=torch.int8, device=device)
    kind[full] = int(BlockKind.FULL)
    kind[empty] = int(BlockKind.EMPTY)
    return kind.view(1, 1, *kind.shape).expand(shape.batch, shape.heads, *kind.shape)
