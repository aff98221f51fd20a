"""Dense keep-masks at block granularity for the Sage and Sparge Triton kernels.

A mask the kernels cannot take as structure (a sliding window, documents, prefix-LM, any bool tensor)
arrives as a bool tensor broadcastable to (B, Hq, Sq, Sk). Per call, one launch classifies each
(query block, key block) tile as EMPTY (skipped), FULL (no element mask) or PARTIAL (the mask's tile is
loaded and applied in the kernel), and a second compacts the non-empty tiles of each row into the
list the kernel walks: the FULL tiles ascending, then the PARTIAL ones ascending, so that each part is a
loop of its own with no per-tile branch (on an H200 a branch per tile made the walk ~2x slower).
No host sync, so a call can be captured in a CUDA graph. Sparge's selection is intersected with it
(its blocks come from sparge_reference.select_blocks, which reads the same mask).

The cost over no mask: one read of the mask (B'·H'·Sq·Sk bytes, once per call; transformers builds it
once per forward, every layer pays the read) and, in PARTIAL tiles only, a load of the tile's mask.
FULL means every key of the tile is kept for every query row of the tile that exists, no key is past
Sk (the tail tile of Sk is never FULL: the kernel would read padding) and, causal, none is in the future.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import triton
import triton.language as tl

from ..masks import BlockKind, MaskType, Shape
from .launch_cache import launch



@dataclasses.dataclass(frozen=True)
class DenseKeep:
    """A bool keep-mask as the kernels read it: 4-d, size 1 (stride 0) on broadcast batch/head/query dims."""
    keep: torch.Tensor  # bool (B|1, Hq|1, Sq|1, Sk), any strides

    def strides(self) -> tuple:
        """Element strides (batch, head, query, key), 0 along broadcast dims."""
        return tuple(0 if n == 1 else s for n, s in zip(self.keep.shape, self.keep.stride()))


def dense_keep(mask, batch: int, heads: int, q_len: int, kv_len: int, device, who: str) -> DenseKeep:
    """`mask` (a bool tensor broadcastable to (B, Hq, Sq, Sk), or a mask type, densified) as a DenseKeep;
    a ValueError naming `who`, the mask and what is allowed otherwise (an additive float mask among them)."""
    if isinstance(mask, MaskType):
        if mask.needs_values:
            raise ValueError(f"{who}: a {mask.describe()} mask adds values to the scores, which this kernel does not "
                             "(its keep-mask alone would drop them); additive masks run on the exact path")
        keep = mask.dense(Shape(batch, heads, q_len, kv_len), device)
    elif isinstance(mask, torch.Tensor):
        keep = mask
    else:
        raise ValueError(f"{who}: mask must be a bool tensor or a mask type; got {type(mask).__name__}")
    want, dev = (batch, heads, q_len, kv_len), torch.device(device)
    on_device = keep.device.type == dev.type and (dev.index is None or keep.device.index == dev.index)
    if keep.dtype != torch.bool or keep.dim() > 4 or not on_device:
        raise ValueError(f"{who}: a dense mask must be a bool tensor of at most 4 dims on {device} broadcastable to "
                         f"{want} (an additive mask runs on the exact path); got {tuple(keep.shape)} {keep.dtype} on "
                         f"{keep.device}")
    keep = keep.reshape((1,) * (4 - keep.dim()) + tuple(keep.shape)) if keep.dim() < 4 else keep
    if any(n not in (1, w) for n, w in zip(keep.shape, want)):
        raise ValueError(f"{who}: a dense mask must broadcast to (batch, heads, q_len, kv_len) = {want} with each dim "
                         f"1 or that size; got {tuple(keep.shape)}")
    # an expanded batch or head dim (stride 0, as mask types' dense() and graphs' .expand give) holds one copy:
    # classify it once, not once per (batch, head)
    for dim in (0, 1):
        if keep.shape[dim] > 1 and keep.stride(dim) == 0:
            keep = keep.narrow(dim, 0, 1)
    return DenseKeep(keep)


# ---- classification ------------------------------------------------------------------------------------
@triton.jit
def _classify_tiles(MASK, KIND, s_b, s_h, s_q, s_k, n_h, seq_q, seq_k, n_qblk, n_kblk, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, IS_CAUSAL: tl.constexpr):
    # one program per tile (query block, key block, mask batch*head); future tiles load nothing
    qb = tl.program_id(0)
    kb = tl.program_id(1)
    bh = tl.program_id(2)
    rows = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    inside = (rows[:, None] < seq_q) & (cols[None, :] < seq_k)
    if IS_CAUSAL:
        inside = inside & (rows[:, None] >= cols[None, :])
    base = MASK + (bh // n_h).to(tl.int64) * s_b + (bh % n_h).to(tl.int64) * s_h
    keep = tl.load(base + rows[:, None].to(tl.int64) * s_q + cols[None, :].to(tl.int64) * s_k, mask=inside, other=0)
    kept = tl.sum(tl.sum((keep != 0).to(tl.int32), axis=1), axis=0)
    full = tl.minimum(seq_q - qb * BLOCK_M, BLOCK_M) * BLOCK_N
    kind = tl.where(kept == 0, 0, tl.where(kept == full, 2, 1))
    tl.store(KIND + (bh * n_qblk + qb).to(tl.int64) * n_kblk + kb, kind.to(tl.int8))


def classify_tiles(dense: DenseKeep, q_len: int, kv_len: int, block_q: int, block_k: int,
                   is_causal: bool) -> torch.Tensor:
    """int8 BlockKind per tile, (B', H', nQ, nK) with the mask's broadcast dims (one launch)."""
    keep = dense.keep
    b, h = keep.shape[0], keep.shape[1]
    n_q, n_k = triton.cdiv(q_len, block_q), triton.cdiv(kv_len, block_k)
    kind = torch.empty((b, h, n_q, n_k), dtype=torch.int8, device=keep.device)
    launch(_classify_tiles, (n_q, n_k, b * h), (keep, kind, *dense.strides(), h, q_len, kv_len, n_q, n_k),
           dict(BLOCK_M=block_q, BLOCK_N=block_k, IS_CAUSAL=is_causal))
    return kind


def classify_tiles_torch(dense: DenseKeep, q_len: int, kv_len: int, block_q: int, block_k: int,
                         is_causal: bool) -> torch.Tensor:
    """Pure-torch reference of classify_tiles (same arguments, same result)."""
    keep = dense.keep.expand(-1, -1, q_len, kv_len)
    b, h = keep.shape[:2]
    n_q, n_k = -(-q_len // block_q), -(-kv_len // block_k)
    if is_causal:
        keep = keep & (torch.arange(q_len, device=keep.device)[:, None] >= torch.arange(kv_len, device=keep.device))
    padded = torch.zeros(b, h, n_q * block_q, n_k * block_k, dtype=torch.int32, device=keep.device)
    padded[..., :q_len, :kv_len] = keep.to(torch.int32)
    kept = padded.view(b, h, n_q, block_q, n_k, block_k).sum(dim=(3, 5))
    rows = torch.clamp(q_len - torch.arange(n_q, device=keep.device) * block_q, max=block_q)
    full = (rows * block_k).view(-1, 1)
    kind = torch.full_like(kept, int(BlockKind.PARTIAL))
    kind[kept == 0] = int(BlockKind.EMPTY)
    kind[kept == full] = int(BlockKind.FULL)
    return kind.to(torch.int8)


# ---- block lists -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MaskLists:
    """The kernel's walk under a dense mask: per list row, the FULL tiles ascending then the PARTIAL ones
    ascending (-1 after the last), their count and how many are FULL. Rows are (batch, head, query block)
    over the list's batch and head dims; the kernel finds its row as (b * row_b + h * row_h) * nQ + query block."""
    lut: torch.Tensor  # int32 (rows, nK)
    count: torch.Tensor  # int32 (rows,)
    count_full: torch.Tensor  # int32 (rows,)
    row_b: int
    row_h: int


@triton.jit
def _compact_tiles(KIND, MAP, LUT, COUNT, COUNT_FULL, k_sb, k_sh, n_h, n_qblk, n_kblk, NK_PAD: tl.constexpr,
                   HAS_MAP: tl.constexpr):
    # one program per list row (batch, head, query block): compact its non-empty (and selected) tiles
    row = tl.program_id(0)
    bh = row // n_qblk
    offs = tl.arange(0, NK_PAD)
    inside = offs < n_kblk
    kind_row = KIND + (bh // n_h).to(tl.int64) * k_sb + (bh % n_h).to(tl.int64) * k_sh + (row % n_qblk) * n_kblk
    kind = tl.load(kind_row + offs, mask=inside, other=0).to(tl.int32)
    keep = kind != 0
    if HAS_MAP:  # Sparge's selection (B, Hq, nQ, nK): a list row per (batch, head, query block)
        keep = keep & (tl.load(MAP + row.to(tl.int64) * n_kblk + offs, mask=inside, other=0) != 0)
    full = (keep & (kind == 2)).to(tl.int32)
    part = (keep & (kind == 1)).to(tl.int32)
    n_full = tl.sum(full, axis=0)
    count = n_full + tl.sum(part, axis=0)
    # exclusive prefix sums: the FULL tiles' slots, then the PARTIAL ones' after them
    pos = tl.where(full != 0, tl.cumsum(full, axis=0) - full, n_full + tl.cumsum(part, axis=0) - part)
    lut_row = LUT + row.to(tl.int64) * n_kblk
    tl.store(lut_row + pos, offs, mask=inside & keep)
    tl.store(lut_row + offs, tl.full([NK_PAD], -1, tl.int32), mask=inside & (offs >= count))
    tl.store(COUNT + row, count)
    tl.store(COUNT_FULL + row, n_full)


def _list_layout(kind: torch.Tensor, block_map: Optional[torch.Tensor]):
    """(list batch, list heads, kind's element strides over them (0 where broadcast))."""
    b, h, n_q, n_k = kind.shape
    if block_map is None:
        return b, h, (h * n_q * n_k if b > 1 else 0), (n_q * n_k if h > 1 else 0)
    lb, lh = block_map.shape[0], block_map.shape[1]
    return lb, lh, (h * n_q * n_k if b > 1 else 0), (n_q * n_k if h > 1 else 0)


def _row_strides(lb: int, lh: int) -> tuple:
    return (lh if lb > 1 else 0), (1 if lh > 1 else 0)


def mask_lists(kind: torch.Tensor, block_map: Optional[torch.Tensor] = None) -> MaskLists:
    """The kernel's block lists from classify_tiles' kinds (one launch); with Sparge's `block_map`
    (bool (B, Hq, nQ, nK)) only its selected tiles, one row per (batch, head, query block)."""
    n_q, n_k = kind.shape[2], kind.shape[3]
    lb, lh, k_sb, k_sh = _list_layout(kind, block_map)
    rows = lb * lh * n_q
    lut = torch.empty((rows, n_k), dtype=torch.int32, device=kind.device)
    count = torch.empty((rows,), dtype=torch.int32, device=kind.device)
    count_full = torch.empty((rows,), dtype=torch.int32, device=kind.device)
    bmap = None if block_map is None else block_map.contiguous()
    launch(_compact_tiles, (rows,), (kind, bmap, lut, count, count_full, k_sb, k_sh, lh, n_q, n_k),
           dict(NK_PAD=max(16, triton.next_power_of_2(n_k)), HAS_MAP=block_map is not None))
    return MaskLists(lut, count, count_full, *_row_strides(lb, lh))


def mask_lists_torch(kind: torch.Tensor, block_map: Optional[torch.Tensor] = None) -> MaskLists:
    """Pure-torch reference of mask_lists (same arguments, same result)."""
    n_q, n_k = kind.shape[2], kind.shape[3]
    lb, lh, _, _ = _list_layout(kind, block_map)
    kind = kind.expand(lb, lh, n_q, n_k).reshape(-1, n_k).long()
    keep = kind != int(BlockKind.EMPTY)
    if block_map is not None:
        keep = keep & block_map.reshape(-1, n_k)
    idx = torch.arange(n_k, device=kind.device).expand_as(kind)
    full = keep & (kind == int(BlockKind.FULL))
    # FULL tiles ascending, then PARTIAL ones ascending, then the others
    order = torch.sort(torch.where(full, idx, torch.where(keep, idx + n_k, idx + 2 * n_k)), dim=-1).values
    lut = torch.where(order < 2 * n_k, order % n_k, -1).to(torch.int32)
    return MaskLists(lut, keep.sum(dim=-1).to(torch.int32), full.sum(dim=-1).to(torch.int32), *_row_strides(lb, lh))


def dense_mask_lists(dense: DenseKeep, q_len: int, kv_len: int, block_q: int, block_k: int, is_causal: bool,
                     block_map: Optional[torch.Tensor] = None) -> MaskLists:
    """classify_tiles then mask_lists: two launches, no host sync."""
    return mask_lists(classify_tiles(dense, q_len, kv_len, block_q, block_k, is_causal), block_map)
