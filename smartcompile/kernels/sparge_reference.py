"""Pure-torch reference of Sparge block-map prediction and block-sparse Sage attention.

Settings: a SpargeConfig (kernels/config.py). Prediction, per (batch, q head):
  1. mean-pool Q per `block_q` tokens and K per `block_k` tokens;
  2. self-similarity of each block = mean pairwise cosine of its tokens; a Q block below
     `sim_threshold` keeps its whole row, a K block below it keeps its whole column;
  3. compressed attention softmax(pooled_q . pooled_k^T * scale) (causal: future blocks -inf);
  4. per Q block keep K blocks by cumulative mass (`cdf_threshold`) or by count
     (`topk`, or `sparsity_ratio` = fraction of valid blocks skipped); ties break by index;
  5. always: at least one block per row, the sink block 0 if `sink`, and in causal mode the
     blocks that cross the diagonal (computed with the exact element mask); never a future block.
With an element `mask`, a block holding no valid (query, key) pair is "empty" and treated like a
future block (out of the softmax, not counted, never kept, not re-added by sink, similarity or
diagonal), and every query row with a valid key keeps a block holding one of its valid keys.
Key flags (a mask whose query dim is 1: key padding, as the Triton path passes it) are read per K block
(its first valid key), without a (Sq, Sk) or (B, H, Sq, nK) tensor and without a host sync; they select
the same blocks as the same mask expanded to (B, H, Sq, Sk).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch

from ..masks import MaskType, Shape
from .config import SpargeConfig
from .exact_reference import attention_reference, causal_keep_mask, expand_kv_heads
from .sage_reference import padding_part, padding_keep, sage_attention_reference


def pool_and_similarity(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, H, S, D) -> pooled means (B, H, n, D), self-similarity (B, H, n)."""
    b, h, s, d = x.shape
    n = math.ceil(s / block)
    pad = n * block - s
    xf = x.float()
    valid = torch.ones(b, h, s, 1, device=x.device)
    if pad:
        xf = torch.nn.functional.pad(xf, (0, 0, 0, pad))
        valid = torch.nn.functional.pad(valid, (0, 0, 0, pad))
    xb, vb = xf.reshape(b, h, n, block, d), valid.reshape(b, h, n, block, 1)
    count = vb.sum(dim=3)  # (B, H, n, 1)
    pooled = xb.sum(dim=3) / count
    unit = xb / xb.norm(dim=-1, keepdim=True).clamp_min(1e-6) * vb
    sim = unit.sum(dim=3).pow(2).sum(dim=-1) / count[..., 0].pow(2)
    return pooled, sim


def _per_shape(fn):
    """Keep the tensors `fn` builds from shapes and a device only (read, never written, by its callers), so
    that a call does not rebuild them: at short sequences Sparge's selection is host-bound, and each is a few
    kernel launches. Not while a CUDA graph is being captured: a tensor made then holds no values until the
    graph replays."""
    cached = functools.lru_cache(maxsize=256)(fn)

    @functools.wraps(fn)
    def shape_constant(*args):
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return fn(*args)
        return cached(*args)
    return shape_constant


@_per_shape
def block_validity(n_q: int, n_k: int, block_q: int, block_k: int, sq: int, sk: int, is_causal: bool, device):
    """(future, diagonal) bool (n_q, n_k): blocks entirely after every query of the row, and
    blocks that the causal diagonal crosses. Top-left alignment, like SDPA. Kept per shape: never write them."""
    qi = torch.arange(n_q, device=device)[:, None]
    kj = torch.arange(n_k, device=device)[None, :]
    q_first, q_last = qi * block_q, torch.clamp((qi + 1) * block_q, max=sq) - 1
    k_first, k_last = kj * block_k, torch.clamp((kj + 1) * block_k, max=sk) - 1
    if not is_causal:
        z = torch.zeros(n_q, n_k, dtype=torch.bool, device=device)
        return z, z
    future = k_first > q_last
    diagonal = ~future & (k_last > q_first)
    return future, diagonal


def _valid_pairs(mask: torch.Tensor) -> torch.Tensor:
    """4-d bool: the pairs a bool keep-mask or an additive mask keeps; additive values <= finfo.min / 2
    (-inf, or the finfo.min fill models use) are masked."""
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    if mask.dtype == torch.bool:
        return mask
    m = mask if mask.is_floating_point() else mask.float()
    return ~(m <= torch.finfo(m.dtype).min / 2)  # NaN stays valid: it reaches the output as in the exact path


def mask_row_blocks(mask: torch.Tensor, sq: int, sk: int, block_k: int, is_causal: bool) -> torch.Tensor:
    """(B', H', Sq', nK) bool: does K block j hold a valid key of query row i. `mask` is a bool
    keep-mask or an additive mask broadcastable to (B, Hq, Sq, Sk) (see `_valid_pairs`). Broadcast
    batch/head/query dims stay 1."""
    valid = _valid_pairs(mask)
    if is_causal:
        valid = valid & causal_keep_mask(sq, sk, mask.device)
    valid = valid.expand(*valid.shape[:3], sk)
    n_k = math.ceil(sk / block_k)
    valid = torch.nn.functional.pad(valid, (0, n_k * block_k - sk), value=False)
    return valid.reshape(*valid.shape[:3], n_k, block_k).any(dim=-1)


def _block_first_keys(flags: torch.Tensor, sk: int, block_k: int) -> torch.Tensor:
    """(B', H', 1, nK): the first valid key of each K block under key flags (B', H', 1, Sk or 1); sk where none.
    Query row i has a valid key in block j iff that key is visible to it (<= i when causal): the blocks
    holding one are the non-empty blocks up to the last whose first key it sees."""
    n_k = math.ceil(sk / block_k)
    first = torch.where(flags.expand(*flags.shape[:3], sk), torch.arange(sk, device=flags.device), sk)
    first = torch.nn.functional.pad(first, (0, n_k * block_k - sk), value=sk)
    return first.reshape(*first.shape[:3], n_k, block_k).amin(dim=-1)


@_per_shape
def _row_limits(n_q: int, block_q: int, sq: int, sk: int, is_causal: bool, device):
    """(nQ, 1) each: the last key the first and the last row of each q block may see (< sk: a block's
    first key is sk where it has none). Kept per shape: never write them."""
    if not is_causal:
        last = torch.full((n_q, 1), sk - 1, device=device)
        return last, last
    first = torch.arange(n_q, device=device)[:, None] * block_q
    return first.clamp(max=sk - 1), torch.clamp(first + block_q, max=min(sq, sk)) - 1


def valid_block_map(mask: Optional[torch.Tensor], is_causal: bool, sq: int, sk: int, block_q: int, block_k: int,
                    device) -> torch.Tensor:
    """(B', H', nQ, nK) bool, broadcastable to the block map: the blocks holding a valid (query, key) pair
    under causality and `mask` (a tensor), the ones selection chooses among (as `select_blocks` excludes)."""
    n_q, n_k = math.ceil(sq / block_q), math.ceil(sk / block_k)
    future, _ = block_validity(n_q, n_k, block_q, block_k, sq, sk, is_causal, device)
    if mask is None:
        return ~future[None, None]
    valid = _valid_pairs(mask)
    if valid.shape[2] == 1:  # key flags: no (Sq, Sk) temporary
        return _block_first_keys(valid, sk, block_k) <= _row_limits(n_q, block_q, sq, sk, is_causal, device)[1]
    return ~future & _pool_rows(mask_row_blocks(valid, sq, sk, block_k, is_causal), block_q)


def _pool_rows(row_blocks: torch.Tensor, block_q: int) -> torch.Tensor:
    """(B', H', Sq', nK) -> (B', H', nQ', nK): any row of the q block (a broadcast query dim stays 1)."""
    b, h, sq, n_k = row_blocks.shape
    if sq == 1:
        return row_blocks
    n_q = math.ceil(sq / block_q)
    padded = torch.nn.functional.pad(row_blocks, (0, 0, 0, n_q * block_q - sq), value=False)
    return padded.reshape(b, h, n_q, block_q, n_k).any(dim=3)


# (B, H, rows, nK) elements per step of _cover_rows: its per-row tensors are made a few q blocks at a time, so
# their memory stays bounded (B4 H32 at 32k tokens would need ~1G elements at once); steps depend on shapes only
_COVER_STEP_ELEMENTS = 1 << 26


def _cover_rows(keep: torch.Tensor, scores: torch.Tensor, row_blocks: torch.Tensor, block_q: int, sq: int) -> torch.Tensor:
    """A q block is selected as a whole, but a row may have its valid keys only in blocks the
    selection skipped (it would come out all-zero): for each such row also keep the highest-scoring
    block holding one of its valid keys (judged against the selection before any forcing; ties: the
    lowest, as argmax). Whole-tensor ops, no host sync (no nonzero): a call can be CUDA-graph captured.
    Rows go in steps of whole q blocks (_COVER_STEP_ELEMENTS)."""
    b, h, n_q, n_k = keep.shape
    step = max(1, _COVER_STEP_ELEMENTS // (b * h * block_q * n_k))  # q blocks per step
    if step >= n_q:
        return _cover_step(keep, scores, row_blocks, block_q, sq)
    scores = scores.expand(b, h, n_q, n_k)
    parts = []
    for q0 in range(0, n_q, step):
        q1 = min(n_q, q0 + step)
        r0, r1 = q0 * block_q, min(sq, q1 * block_q)
        rows = row_blocks if row_blocks.shape[-2] == 1 else row_blocks[..., r0:r1, :]
        parts.append(_cover_step(keep[:, :, q0:q1], scores[:, :, q0:q1], rows, block_q, r1 - r0))
    return torch.cat(parts, dim=2)


def _cover_step(keep: torch.Tensor, scores: torch.Tensor, row_blocks: torch.Tensor, block_q: int,
                sq: int) -> torch.Tensor:
    """_cover_rows on the q blocks of `keep`, whose rows are row_blocks' first sq (or its one row, broadcast)."""
    b, h, n_q, n_k = keep.shape
    q_block = torch.arange(sq, device=keep.device) // block_q
    rows = row_blocks.expand(b, h, sq, n_k)
    uncovered = rows.any(dim=-1) & ~(keep[:, :, q_block] & rows).any(dim=-1)  # (b, h, sq)
    best = scores.expand(b, h, n_q, n_k)[:, :, q_block].masked_fill(~rows, float("-inf")).argmax(dim=-1)
    added = torch.zeros_like(rows).scatter_(-1, best[..., None], uncovered[..., None])  # (b, h, sq, nK)
    added = torch.nn.functional.pad(added, (0, 0, 0, n_q * block_q - sq))  # rows -> their q blocks
    return keep | added.reshape(b, h, n_q, block_q, n_k).any(dim=3)


def _cover_flag_rows(keep: torch.Tensor, scores: torch.Tensor, first_keys: torch.Tensor, limits: tuple,
                     sk: int) -> torch.Tensor:
    """`_cover_rows` for key flags, per q block. Row i of a q block holds valid keys in the non-empty blocks
    up to p(i) (the last whose first key it sees); p rises over the block's rows through every non-empty
    block from p(first row) to p(last row). The row is covered iff a kept block is <= p(i); if not, it adds
    the best-scoring block <= p(i) (ties: the lowest, as argmax), i.e. the running argmax at p(i)."""
    n_k = keep.shape[-1]
    j = torch.arange(n_k, device=keep.device)
    p_first, p_last = (torch.where(first_keys <= lim, j, -1).amax(dim=-1, keepdim=True) for lim in limits)
    first_kept = torch.where(keep, j, n_k).amin(dim=-1, keepdim=True)
    # p(i) values of rows that see a key but no kept block
    uncovered = (first_keys < sk) & (j >= p_first) & (j <= p_last) & (j < first_kept)
    running_max = scores.cummax(dim=-1).values
    best = torch.searchsorted(running_max, running_max)  # first index reaching each running max
    # the blocks to add, best[p] for uncovered p, come in ascending order: their running max lists each once,
    # so membership is a sorted search (no scatter: deterministic, and no host sync)
    added = torch.where(uncovered, best, -1).cummax(dim=-1).values
    at = torch.searchsorted(added, j.expand_as(added).contiguous()).clamp(max=n_k - 1)
    return keep | (added.gather(-1, at) == j)


def block_scores(pq: torch.Tensor, pk: torch.Tensor, scale: float,
                 excluded: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 3: scores of the pooled blocks (excluded ones -inf) and their softmax per q block. The fused
    selection (sparge_select.py) calls this too, so that both rank the very same fp32 values."""
    scores = (pq @ pk.transpose(-2, -1)) * scale
    if excluded is not None:
        scores = scores.masked_fill(excluded, float("-inf"))
    return scores, torch.softmax(scores, dim=-1)


def keep_by_mass(probs: torch.Tensor, sort_key: torch.Tensor, cdf_threshold: float) -> torch.Tensor:
    """Step 4 by cumulative mass: in descending `sort_key` order (ties: lower index first), keep a block while
    the mass before it is below cdf_threshold; every row keeps its top block."""
    order = torch.sort(sort_key, dim=-1, descending=True, stable=True)
    ordered = probs.gather(-1, order.indices)
    mass_before = torch.cumsum(ordered, dim=-1) - ordered
    keep = torch.zeros_like(order.indices, dtype=torch.bool).scatter_(-1, order.indices, mass_before < cdf_threshold)
    return keep.scatter_(-1, order.indices[..., :1], True)


def select_blocks(
    pq: torch.Tensor,
    sim_q: torch.Tensor,
    pk: torch.Tensor,
    sim_k: torch.Tensor,
    *,
    sq: int,
    sk: int,
    scale: float,
    is_causal: bool,
    config: SpargeConfig,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Steps 3-5 from pooled blocks (pq (B, Hq, nQ, D), pk (B, Hq, nK, D) and their self-similarity).
    Shared by the reference and the GPU predictor, so both select the same blocks. `mask`: the
    element mask (see `mask_row_blocks`); without one, the selection is the mask-free one."""
    block_q, block_k, sim_threshold, sink = config.block_q, config.block_k, config.sim_threshold, config.sink
    cdf_threshold, topk, sparsity_ratio = config.cdf_threshold, config.topk, config.sparsity_ratio
    n_q, n_k = pq.shape[2], pk.shape[2]
    future, diagonal = block_validity(n_q, n_k, block_q, block_k, sq, sk, is_causal, pq.device)
    excluded = future if is_causal else None  # blocks that can hold no valid (query, key) pair
    first_keys = None
    if mask is not None:
        valid = _valid_pairs(mask)
        if valid.shape[2] == 1:  # key flags: each K block's first valid key decides for all rows at once
            first_keys = _block_first_keys(valid, sk, block_k)
            limits = _row_limits(n_q, block_q, sq, sk, is_causal, pq.device)
            excluded = first_keys > limits[1]
        else:
            row_blocks = mask_row_blocks(valid, sq, sk, block_k, is_causal)
            excluded = future | ~_pool_rows(row_blocks, block_q)
    scores, probs = block_scores(pq, pk, scale, excluded)
    sort_key = probs
    if mask is not None:
        # a q block with no valid pair at all has nothing to weigh (its softmax is NaN); empty blocks
        # sort after valid ones even where a valid block's probability underflows to 0
        probs = torch.where(excluded.all(dim=-1, keepdim=True), torch.zeros_like(probs), probs)
        sort_key = probs.masked_fill(excluded, -1.0)
    if cdf_threshold is not None:
        keep = keep_by_mass(probs, sort_key, cdf_threshold)
    else:
        order = torch.sort(sort_key, dim=-1, descending=True, stable=True)
        n_valid = (~excluded).sum(dim=-1) if excluded is not None else torch.full((n_q,), n_k, device=pq.device)
        if topk is not None:
            count = torch.clamp(n_valid, max=topk)
        else:
            count = torch.ceil((1.0 - sparsity_ratio) * n_valid.float()).long()
        # the first `count` of the descending order (at least one), put back in place
        kept_sorted = torch.arange(n_k, device=pq.device) < count.clamp_min(1)[..., None]
        keep = torch.zeros_like(order.indices, dtype=torch.bool).scatter_(-1, order.indices, kept_sorted.expand_as(order.indices))
    keep = keep | (sim_q < sim_threshold)[..., None] | (sim_k < sim_threshold)[..., None, :]
    if sink:
        keep[..., 0] = True
    if is_causal:
        keep = keep | diagonal
    if excluded is None:
        return keep
    keep = keep & ~excluded  # after sink, similarity and diagonal: none of them re-adds an excluded block
    if mask is None:
        return keep
    if first_keys is not None:
        return _cover_flag_rows(keep, scores, first_keys, limits, sk)
    return _cover_rows(keep, scores, row_blocks, block_q, sq)


def selection_mask(mask, is_causal: bool, q: torch.Tensor, k: torch.Tensor):
    """(mask tensor or None, is_causal) as the selection reads them: key padding given as a mask type
    (KeyLengths, KeyPadding, And'ed with a top-left Causal) becomes (B, 1, 1, Sk) flags plus is_causal,
    exactly as the Triton path selects; other mask types their dense form (an additive float bias for one that
    carries values, e.g. DenseAdditive); a tensor stays as it is."""
    if not isinstance(mask, MaskType):
        return mask, is_causal
    b, hq, sq, sk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    try:
        pad, is_causal = padding_part(mask, is_causal, b, sk, "sparge_attention_reference")
    except ValueError:  # not key padding: the dense form, as an additive bias where the mask carries values
        shape = Shape(b, hq, sq, sk)
        return (mask.dense_bias(shape, q.device) if mask.needs_values else mask.dense(shape, q.device)), is_causal
    return (None if pad is None else padding_keep(pad, b, sk, q.device, "sparge_attention_reference")[:, None, None, :],
            is_causal)


def predict_block_map(q: torch.Tensor, k: torch.Tensor, mask: Optional[torch.Tensor], is_causal: bool,
                      scale: Optional[float], config: SpargeConfig) -> torch.Tensor:
    """Bool map (B, Hq, nQ, nK) of K blocks kept for each Q block; `mask` is the attention's element mask
    (a tensor, or a mask type: see `selection_mask`)."""
    mask, is_causal = selection_mask(mask, is_causal, q, k)
    pq, sim_q = pool_and_similarity(q, config.block_q)
    pk, sim_k = pool_and_similarity(k, config.block_k)
    return select_from_pooled((pq, sim_q, pk, sim_k), q, k, scale, is_causal, config, mask)


def select_from_pooled(pooled: tuple, q: torch.Tensor, k: torch.Tensor, scale: Optional[float], is_causal: bool,
                       config: SpargeConfig, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The block map from block statistics (pooled q, sim q, pooled k, sim k; K's per kv head, expanded
    here), whoever computed them: the reference, `_pool_blocks` or the quantization pass. `mask`: the
    element mask (a tensor), if any; the Triton path passes key padding as (B, 1, 1, Sk) flags."""
    pq, sim_q, pk, sim_k = pooled
    hq = q.shape[1]
    pk, sim_k = expand_kv_heads(pk, hq), expand_kv_heads(sim_k[..., None], hq)[..., 0]
    return select_blocks(
        pq, sim_q, pk, sim_k, sq=q.shape[2], sk=k.shape[2], scale=scale if scale is not None else q.shape[-1] ** -0.5,
        is_causal=is_causal, config=config, mask=mask,
    )


def block_map_to_lists(block_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Compact form for kernels: (kept K-block indices ascending, padded with -1; counts)."""
    n_k = block_map.shape[-1]
    idx = torch.arange(n_k, device=block_map.device).expand_as(block_map)
    key = torch.where(block_map, idx, idx + n_k)
    sorted_idx = torch.sort(key, dim=-1).values
    lists = torch.where(sorted_idx < n_k, sorted_idx, torch.full_like(sorted_idx, -1)).to(torch.int32)
    return lists, block_map.sum(dim=-1).to(torch.int32)


def sparge_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    is_causal: bool,
    scale: Optional[float],
    config: SpargeConfig,
    *,
    return_block_map: bool = False,
    return_lse: bool = False,
):
    """Output; with return_lse also the LSE over the kept blocks; with return_block_map also the map.
    `mask`: None, a bool or additive tensor, or a mask type (see `selection_mask`)."""
    mask, is_causal = selection_mask(mask, is_causal, q, k)
    block_map = predict_block_map(q, k, mask, is_causal, scale, config)
    out = sage_attention_reference(
        q, k, v, mask, is_causal, scale, config, block_mask=block_map, pv_threshold=config.pv_threshold,
        return_lse=return_lse,
    )
    out = out if return_lse else (out,)
    out = _finite_fill_rows_as_eager(out, q, k, v, mask, is_causal, scale)
    out = out + (block_map,) if return_block_map else out
    return out if len(out) > 1 else out[0]


def _finite_fill_rows_as_eager(out: tuple, q, k, v, mask, is_causal: bool, scale: Optional[float]) -> tuple:
    """(output[, lse]) with the rows that an additive mask masks entirely, with at least one finite fill
    (finfo.min), as eager computes them: a softmax over the fills (every key the same weight: the mean of V),
    where the block selection keeps no block for them (0). -inf-only rows keep the kernel's 0."""
    if not isinstance(mask, torch.Tensor) or not mask.is_floating_point():
        return out
    b, hq, sq, sk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    m4 = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape)).expand(b, hq, sq, sk)
    if is_causal:  # the future keys are -inf: they take no weight in eager either
        m4 = m4.masked_fill(~causal_keep_mask(sq, sk, q.device), float("-inf"))
    rows = ~_valid_pairs(m4).any(dim=-1) & torch.isfinite(m4).any(dim=-1)
    if not bool(rows.any()):
        return out
    fixed = (torch.where(rows[..., None], attention_reference(q, k, v, m4, False, scale), out[0]),)
    if len(out) > 1:  # the LSE of those rows: logsumexp of the masked scores, as eager's softmax normalises
        s = (q.float() @ expand_kv_heads(k.float(), hq).transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None
                                                                               else scale) + m4.float()
        fixed += (torch.where(rows, torch.logsumexp(s, dim=-1), out[1]),)
    return fixed
