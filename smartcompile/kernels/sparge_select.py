"""Sparge's block selection after the scores, and the kernel's block lists, in one launch.

Without an element mask, steps 4-5 of sparge_reference.select_blocks (keep by rank or by mass, similarity,
sink, causal diagonal, never a future block) and the compaction into per-row block lists are per-(head,
q block) work over one row of nK values: one program per row does them all. At short sequences the
selection is host-bound (one kernel launch per torch op): the scores and their softmax stay torch's (3-4
ops), the ~15 ops after them and the compaction's launch become one launch.

Same blocks as the reference, bit for bit: the scores and their softmax come from the reference's own
`block_scores` (the very same fp32 values), and the kernel ranks them exactly as its stable descending sort
does: the first `count` of the order are the values above the count-th largest, then the lowest-indexed
ones equal to it. Selection by cumulative mass (cdf_threshold) keeps the reference's sort and cumsum (a
scan's rounding is not reproducible in another kernel) and hands the kernel their keep map.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .config import SpargeConfig
from .exact_reference import expand_kv_heads
from .launch_cache import launch
from .sage_triton import BlockLists
from .sparge_reference import block_scores, block_validity, keep_by_mass

# Widest row (K blocks) the fused selection sorts in registers: 2048 blocks = 256k keys at block_k 128
FUSED_MAX_K_BLOCKS = 2048


@triton.jit
def write_block_lists(keep, offs, inside, row, LUT, COUNT, COUNT_FULL, RUN, n_q, n_k, full_k, block_q, block_k,
                      rows_per_batch, IS_CAUSAL: tl.constexpr, NK_PAD: tl.constexpr, HAS_RUN: tl.constexpr):
    """Compact one row's keep flags (int32, 0/1) into its list of kept indices, count and count_full."""
    pos = tl.cumsum(keep, axis=0) - keep  # exclusive prefix sum: each kept index's slot
    count = tl.sum(keep, axis=0)
    lut_row = LUT + row.to(tl.int64) * n_k
    tl.store(lut_row + pos, offs, mask=inside & (keep != 0))
    tl.store(lut_row + offs, tl.full([NK_PAD], -1, tl.int32), mask=inside & (offs >= count))
    full = full_k
    if IS_CAUSAL:
        full = tl.minimum(full, ((row % n_q) * block_q) // block_k)
    tl.store(COUNT + row, count)
    if HAS_RUN:  # key padding: [first, end) of the kept blocks in this batch row's run of fully kept blocks
        first = tl.load(RUN + 2 * (row // rows_per_batch))
        full = tl.minimum(full, tl.load(RUN + 2 * (row // rows_per_batch) + 1))
        before = tl.sum(keep * (offs < first).to(tl.int32), axis=0)
        in_run = tl.sum(keep * ((offs >= first) & (offs < full)).to(tl.int32), axis=0)
        tl.store(COUNT_FULL + 2 * row, before)
        tl.store(COUNT_FULL + 2 * row + 1, before + in_run)
    else:
        tl.store(COUNT_FULL + row, tl.sum(keep * (offs < full).to(tl.int32), axis=0))


@triton.jit
def _select_lists_kernel(PROBS, GIVEN, SIM_Q, SIM_K, KEEP, LUT, COUNT, COUNT_FULL, n_q, n_k, q_heads, group,
                         sq, sk, block_q, block_k, keep_frac, topk, sim_threshold,
                         IS_CAUSAL: tl.constexpr, BY_RANK: tl.constexpr, BY_TOPK: tl.constexpr,
                         SINK: tl.constexpr, NK_PAD: tl.constexpr):
    # one program per (batch*q head, q block) row
    row = tl.program_id(0)
    q_blk = row % n_q
    bh = row // n_q
    kv_row = (bh // q_heads) * (q_heads // group) + (bh % q_heads) // group  # q head h reads kv head h // group
    offs = tl.arange(0, NK_PAD)
    inside = offs < n_k
    base = row.to(tl.int64) * n_k
    if IS_CAUSAL:  # as block_validity: top-left aligned
        q_first = q_blk * block_q
        q_last = tl.minimum(q_first + block_q, sq) - 1
        k_first = offs * block_k
        future = k_first > q_last
        diagonal = (k_first <= q_last) & (tl.minimum(k_first + block_k, sk) - 1 > q_first)
    else:
        future = offs < 0
    if BY_RANK:
        # padding sorts after every probability (>= 0); future blocks hold 0 and come after the valid ones
        p = tl.load(PROBS + base + offs, mask=inside, other=-1.0)
        p = tl.where(p != p, float("inf"), p)  # torch's descending sort puts NaN first (ties: by index)
        n_valid = tl.sum((inside & ~future).to(tl.int32), axis=0)
        if BY_TOPK:
            count = tl.minimum(n_valid, topk)
        else:  # fp32, as the reference's ceil((1 - ratio) * n_valid.float())
            count = tl.ceil(keep_frac * n_valid.to(tl.float32)).to(tl.int32)
        count = tl.maximum(count, 1)
        ordered = tl.sort(p, descending=True)
        threshold = tl.max(tl.where(offs == count - 1, ordered, -2.0), axis=0)
        above = p > threshold
        tie = (p == threshold) & inside
        needed = count - tl.sum(above.to(tl.int32), axis=0)
        keep = above | (tie & (tl.cumsum(tie.to(tl.int32), axis=0) <= needed))  # stable: lower index first
    else:
        keep = tl.load(GIVEN + base + offs, mask=inside, other=0) != 0
    sim_q = tl.load(SIM_Q + row + offs * 0)  # this row's, as a vector (a scalar bool does not broadcast in |)
    sim_k = tl.load(SIM_K + kv_row.to(tl.int64) * n_k + offs, mask=inside, other=1.0)
    keep = keep | (sim_q < sim_threshold) | (sim_k < sim_threshold)
    if SINK:
        keep = keep | (offs == 0)
    if IS_CAUSAL:
        keep = (keep | diagonal) & ~future
    keep = keep & inside
    tl.store(KEEP + base + offs, keep.to(tl.int8), mask=inside)
    write_block_lists(keep.to(tl.int32), offs, inside, row, LUT, COUNT, COUNT_FULL, COUNT, n_q, n_k, sk // block_k,
                      block_q, block_k, 1, IS_CAUSAL=IS_CAUSAL, NK_PAD=NK_PAD, HAS_RUN=False)


def fused_selection_unsupported(mask: Optional[torch.Tensor], n_k: int) -> Optional[str]:
    """Why the fused selection cannot take this call (None: it can)."""
    if mask is not None:
        return "an element mask (key padding or dense) selects with the reference's torch ops"
    if n_k > FUSED_MAX_K_BLOCKS:
        return f"{n_k} K blocks > {FUSED_MAX_K_BLOCKS}, the widest row it sorts in registers"
    return None


def select_block_lists(pooled: tuple, q: torch.Tensor, k: torch.Tensor, scale: Optional[float], is_causal: bool,
                       config: SpargeConfig) -> tuple[torch.Tensor, BlockLists]:
    """(block map (B, Hq, nQ, nK) bool, the kernel's BlockLists): the blocks of
    sparge_reference.select_from_pooled with no mask, and sparge_triton.block_lists of them, from the pooled
    block statistics (pooled q, sim q, pooled k, sim k; K's per kv head). Callers check
    fused_selection_unsupported first."""
    pq, sim_q, pk, sim_k = pooled
    b, hq, n_q, _ = pq.shape
    hkv, n_k = pk.shape[1], pk.shape[2]
    sq, sk = q.shape[2], k.shape[2]
    why = fused_selection_unsupported(None, n_k)
    if why is not None:
        raise ValueError(f"select_block_lists: {why}")
    if sim_q.dtype != torch.float32 or sim_k.dtype != torch.float32:  # compared in fp32, as torch compares fp32
        raise ValueError(f"select_block_lists: similarities must be float32, got {sim_q.dtype} / {sim_k.dtype}")
    block_q, block_k = config.block_q, config.block_k
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    excluded = None
    if is_causal:
        excluded = block_validity(n_q, n_k, block_q, block_k, sq, sk, True, pq.device)[0]
    _, probs = block_scores(pq, expand_kv_heads(pk, hq), scale, excluded)  # as select_from_pooled: same values
    by_mass = config.cdf_threshold is not None
    given = keep_by_mass(probs, probs, config.cdf_threshold) if by_mass else None
    dev = pq.device
    keep = torch.empty((b, hq, n_q, n_k), dtype=torch.int8, device=dev)
    lut = torch.empty((b * hq, n_q, n_k), dtype=torch.int32, device=dev)
    count = torch.empty((b * hq * n_q,), dtype=torch.int32, device=dev)
    count_full = torch.empty((b * hq * n_q,), dtype=torch.int32, device=dev)
    nk_pad = max(16, triton.next_power_of_2(n_k))
    keep_frac = 1.0 - config.sparsity_ratio if config.sparsity_ratio is not None else 1.0
    launch(_select_lists_kernel, (b * hq * n_q,),
           (probs, given if by_mass else probs, sim_q.contiguous(), sim_k.contiguous(), keep, lut, count, count_full,
            n_q, n_k, hq, hq // hkv, sq, sk, block_q, block_k, keep_frac,
            config.topk if config.topk is not None else 0, config.sim_threshold),
           dict(IS_CAUSAL=is_causal, BY_RANK=not by_mass, BY_TOPK=config.topk is not None, SINK=config.sink,
                NK_PAD=nk_pad, num_warps=4 if nk_pad <= 1024 else 8))
    return keep.view(torch.bool), BlockLists(lut, count, count_full)
