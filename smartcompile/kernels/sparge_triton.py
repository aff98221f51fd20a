"""Triton Sparge attention: predicted block map, then the Sage kernel over the kept K blocks only.

Reference: kernels/sparge_reference.py. Prediction = the block statistics (mean token and
self-similarity, i.e. mean pairwise cosine) computed by the quantization pass while each tile is
in registers (or by `_pool_blocks` standalone), then the reference's own selection
(`select_blocks`) on the small pooled tensors, so GPU and reference choose the same blocks, then
one kernel that compacts the map into per-row block lists (with no mask, sparge_select.py does the
selection after the scores and the compaction in one launch). The attention is
`sage_triton.attend` in its SPARSE mode.

Key padding (the forms sage_attention_triton takes) comes as sage_reference.key_spans without a host
sync: the selection reads the (B, 1, 1, Sk) key flags, so a K block with no kept key is never selected and
every row with a kept key keeps a block holding one (as the reference with the same mask); the kernel
walks unmasked only the kept blocks in each batch row's first run of K blocks whose every key is kept
(`full_block_run`), and masks the others by span or flags as the dense kernel masks its edge tiles.

A dense bool mask (a sliding window, documents, any bool tensor): the selection chooses among the blocks the
mask leaves, then kernels/mask_blocks.py lists each row's FULL tiles, then its PARTIAL ones (two launches
instead of the one that compacts the map), and the kernel masks only the PARTIAL ones.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .config import SpargeConfig
from .launch_cache import launch
from .mask_blocks import dense_mask_lists
from .sage_reference import KeySpans
from .sage_quantize import _load_tile, _pool_stats, quantize, recycle
from .sage_triton import BlockLists, attend, kernel_mask, unsmoothed_lse
from .sparge_reference import block_map_to_lists, select_from_pooled
from .sparge_select import fused_selection_unsupported, select_block_lists, write_block_lists


@triton.jit
def _pool_blocks(X, POOLED, SIM, stride_b, stride_h, stride_n, stride_d, n_heads, seq_len, n_blocks,
                 D: tl.constexpr, D_PAD: tl.constexpr, BLOCK: tl.constexpr):
    x, rows, cols, inside = _load_tile(X, stride_b, stride_h, stride_n, stride_d, n_heads, seq_len, D, D_PAD, BLOCK)
    pooled, sim = _pool_stats(x, rows, seq_len)
    out = tl.program_id(1) * n_blocks + tl.program_id(0)
    tl.store(POOLED + out.to(tl.int64) * D + cols, pooled, mask=cols < D)
    tl.store(SIM + out, sim)


def pool_and_similarity_triton(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Same as sparge_reference.pool_and_similarity, in one read of x: (B, H, n, D), (B, H, n)."""
    b, h, s, d = x.shape
    n = triton.cdiv(s, block)
    pooled = torch.empty((b, h, n, d), dtype=torch.float32, device=x.device)
    sim = torch.empty((b, h, n), dtype=torch.float32, device=x.device)
    launch(_pool_blocks, (n, b * h), (x, pooled, sim, *x.stride(), h, s, n),
           dict(D=d, D_PAD=triton.next_power_of_2(d), BLOCK=block))
    return pooled, sim


def key_flags(spans: KeySpans, kv_len: int) -> torch.Tensor:
    """(B, Sk) bool: the keys each batch row keeps (its flags, or its span for a KeyLengths)."""
    if spans.keep is not None:
        return spans.keep != 0
    j = torch.arange(kv_len, device=spans.spans.device)
    return (j >= spans.spans[:, :1]) & (j < spans.spans[:, 1:])


def full_block_run(flags: torch.Tensor, block_k: int) -> torch.Tensor:
    """int32 (B, 2): [first, end) of each batch row's first run of K blocks whose every key is kept (the
    partial tail block is never one): the kernel walks the kept ones there without element masks.
    One run, so that the kept blocks before, in and after it stay in ascending order (the reference's)."""
    b, sk = flags.shape
    n_k = triton.cdiv(sk, block_k)
    full = torch.nn.functional.pad(flags, (0, n_k * block_k - sk), value=False).reshape(b, n_k, block_k).all(dim=-1)
    j = torch.arange(n_k, device=flags.device)
    first = torch.where(full, j, n_k).amin(dim=-1)
    end = torch.where(~full & (j >= first[:, None]), j, n_k).amin(dim=-1)
    return torch.stack([first, end], dim=1).to(torch.int32)


def _selection_inputs(mask, is_causal: bool, q, k, who: str):
    """(KeySpans or None, DenseKeep or None, is_causal, the element mask the selection reads or None): key
    padding as (B, 1, 1, Sk) flags, a dense mask as its (B|1, Hq|1, Sq|1, Sk) bool tensor."""
    spans, dense, is_causal = kernel_mask(mask, is_causal, q, k, who)
    if spans is not None:
        return spans, None, is_causal, key_flags(spans, k.shape[2])[:, None, None]
    return None, dense, is_causal, None if dense is None else dense.keep


def predict_block_map_triton(q, k, mask, is_causal: bool, scale: Optional[float], config: SpargeConfig) -> torch.Tensor:
    """Same arguments and blocks as sparge_reference.predict_block_map; `mask` as sparge_attention_triton's."""
    _, _, is_causal, selection = _selection_inputs(mask, is_causal, q, k, "predict_block_map_triton")
    pooled = (*pool_and_similarity_triton(q, config.block_q), *pool_and_similarity_triton(k, config.block_k))
    return select_from_pooled(pooled, q, k, scale, is_causal, config, selection)


def block_lists_torch(block_map: torch.Tensor, seq_k: int, block_q: int, block_k: int, is_causal: bool,
                      full_run: Optional[torch.Tensor] = None) -> BlockLists:
    """Kernel form of a block map: kept indices ascending, counts, and how many need no element mask
    (those left of the diagonal in causal mode and before the partial tail block); with key padding's
    `full_run` (full_block_run), [first, end) of the kept blocks that need none: those also in the run.
    Pure torch: the reference of `block_lists`."""
    b, h, n_q, n_k = block_map.shape
    lut, count = block_map_to_lists(block_map)
    kept = lut >= 0
    end = _full_blocks(n_q, seq_k, block_q, block_k, is_causal, block_map.device)[:, None]
    if full_run is None:
        count_full = (kept & (lut < end)).sum(dim=-1).to(torch.int32).reshape(-1)
    else:
        first = full_run[:, 0].view(b, 1, 1, 1)
        end = torch.minimum(end, full_run[:, 1].view(b, 1, 1, 1))
        before = (kept & (lut < first)).sum(dim=-1)
        count_full = torch.stack([before, before + (kept & (lut >= first) & (lut < end)).sum(dim=-1)], dim=-1)
        count_full = count_full.to(torch.int32).reshape(-1, 2)
    return BlockLists(lut.reshape(b * h, n_q, n_k).contiguous(), count.reshape(-1).contiguous(),
                      count_full.contiguous())


def _full_blocks(n_q: int, seq_k: int, block_q: int, block_k: int, is_causal: bool, device) -> torch.Tensor:
    full = torch.full((n_q,), seq_k // block_k, device=device)
    if is_causal:
        full = torch.minimum(full, (torch.arange(n_q, device=device) * block_q) // block_k)
    return full


@triton.jit
def _block_lists_kernel(KEEP, LUT, COUNT, COUNT_FULL, RUN, n_q, n_k, full_k, block_q, block_k, rows_per_batch,
                        IS_CAUSAL: tl.constexpr, NK_PAD: tl.constexpr, HAS_RUN: tl.constexpr):
    # one program per (batch*head, query block) row: compact the kept indices in one pass
    row = tl.program_id(0)
    offs = tl.arange(0, NK_PAD)
    inside = offs < n_k
    keep = tl.load(KEEP + row.to(tl.int64) * n_k + offs, mask=inside, other=0).to(tl.int32)
    write_block_lists(keep, offs, inside, row, LUT, COUNT, COUNT_FULL, RUN, n_q, n_k, full_k, block_q, block_k,
                      rows_per_batch, IS_CAUSAL=IS_CAUSAL, NK_PAD=NK_PAD, HAS_RUN=HAS_RUN)


def block_lists(block_map: torch.Tensor, seq_k: int, block_q: int, block_k: int, is_causal: bool,
                full_run: Optional[torch.Tensor] = None) -> BlockLists:
    """Same as block_lists_torch in one launch (the torch version is ~20 small kernels)."""
    b, h, n_q, n_k = block_map.shape
    keep = block_map.contiguous()
    lut = torch.empty((b * h, n_q, n_k), dtype=torch.int32, device=keep.device)
    count = torch.empty((b * h * n_q,), dtype=torch.int32, device=keep.device)
    count_full = torch.empty((b * h * n_q,) if full_run is None else (b * h * n_q, 2), dtype=torch.int32,
                             device=keep.device)
    run = None if full_run is None else full_run.to(device=keep.device, dtype=torch.int32).contiguous()
    launch(_block_lists_kernel, (b * h * n_q,),
           (keep, lut, count, count_full, run, n_q, n_k, seq_k // block_k, block_q, block_k, h * n_q),
           dict(IS_CAUSAL=is_causal, NK_PAD=max(16, triton.next_power_of_2(n_k)), HAS_RUN=full_run is not None))
    return BlockLists(lut, count, count_full)


def sparge_attention_triton(q, k, v, mask, is_causal: bool, scale: Optional[float], config: SpargeConfig, *,
                            return_block_map: bool = False, return_lse: bool = False):
    """Same arguments and numerics as sparge_reference.sparge_attention_reference. `mask`: as
    sage_attention_triton takes it: None, key padding (KeyLengths, KeyPadding, optionally And'ed with a top-left
    Causal, or bool (B|1, 1, 1, Sk) key flags), or any bool keep-mask or mask type (selection among the tiles
    it leaves, its PARTIAL tiles masked in the kernel); an additive mask, or a dense mask with
    config.pv_threshold, is a ValueError (the kernel walks a row's FULL tiles before its PARTIAL ones, so P.V
    skipping, which depends on the running max, would skip other blocks than the reference's ascending walk).
    Rows with no kept key output 0. Output (B, Hq, Sq, D); with return_lse also the natural-log LSE over the
    kept blocks (B, Hq, Sq), with return_block_map also the kept-block map (B, Hq, nQ, nK); in that order."""
    spans, dense, is_causal, selection = _selection_inputs(mask, is_causal, q, k, "sparge_attention_triton")
    if dense is not None and config.pv_threshold is not None:
        raise ValueError(f"sparge_attention_triton: pv_threshold={config.pv_threshold} with a dense mask: P.V "
                         "skipping would differ from the reference's (tile order); pv_threshold is allowed with no "
                         "mask, causal or key padding")
    # the quantization pass also pools the blocks (one read of Q and K for both)
    x = quantize(q, k, v, scale, config, pool=True, reuse_buffers=True)
    if fused_selection_unsupported(selection, x.pooled[2].shape[2]) is None:  # no mask: one launch, same blocks
        block_map, lists = select_block_lists(x.pooled, q, k, scale, is_causal, config)
        res = attend(x, is_causal, q.dtype, blocks=lists, pv_threshold=config.pv_threshold, return_lse=return_lse)
    else:
        block_map = select_from_pooled(x.pooled, q, k, scale, is_causal, config, selection)
        if dense is not None:
            tiles = dense_mask_lists(dense, q.shape[2], k.shape[2], config.block_q, config.block_k, is_causal,
                                     block_map)
            res = attend(x, is_causal, q.dtype, pv_threshold=config.pv_threshold, return_lse=return_lse,
                         dense=dense, tiles=tiles)
        else:
            lists = block_lists(block_map, k.shape[2], config.block_q, config.block_k, is_causal,
                                None if spans is None else full_block_run(selection[:, 0, 0], config.block_k))
            res = attend(x, is_causal, q.dtype, blocks=lists, pv_threshold=config.pv_threshold,
                         return_lse=return_lse, spans=spans)
    out = (res[0], unsmoothed_lse(res[1], q, x)) if return_lse else (res,)
    recycle(x)  # every kernel reading x is enqueued
    out = out + (block_map,) if return_block_map else out
    return out if len(out) > 1 else out[0]


