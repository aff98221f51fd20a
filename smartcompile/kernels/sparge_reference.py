"""Pure-torch reference of Sparge block-map prediction and block-sparse Sage attention.

Prediction, per (batch, q head):
  1. mean-pool Q per `block_q` tokens and K per `block_k` tokens;
  2. self-similarity of each block = mean pairwise cosine of its tokens; a Q block below
     `sim_threshold` keeps its whole row, a K block below it keeps its whole column;
  3. compressed attention softmax(pooled_q . pooled_k^T * scale) (causal: future blocks -inf);
  4. per Q block keep K blocks by cumulative mass (`cdf_threshold`) or by count
     (`topk`, or `sparsity_ratio` = fraction of valid blocks skipped); ties break by index;
  5. always: at least one block per row, the sink block 0 if `sink`, and in causal mode the
     blocks that cross the diagonal (computed with the exact element mask); never a future block.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .exact_reference import expand_kv_heads
from .sage_reference import sage_attention_reference


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


def block_validity(n_q: int, n_k: int, block_q: int, block_k: int, sq: int, sk: int, is_causal: bool, device):
    """(future, diagonal) bool (n_q, n_k): blocks entirely after every query of the row, and
    blocks that the causal diagonal crosses. Top-left alignment, like SDPA."""
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
    block_q: int,
    block_k: int,
    sim_threshold: float,
    cdf_threshold: Optional[float],
    topk: Optional[int],
    sparsity_ratio: Optional[float],
    sink: bool,
) -> torch.Tensor:
    """Steps 3-5 from pooled blocks (pq (B, Hq, nQ, D), pk (B, Hq, nK, D) and their self-similarity).
    Shared by the reference and the GPU predictor, so both select the same blocks."""
    chosen = [n for n, val in (("cdf_threshold", cdf_threshold), ("topk", topk), ("sparsity_ratio", sparsity_ratio)) if val is not None]
    if len(chosen) != 1:
        raise ValueError(f"predict_block_map: give exactly one of cdf_threshold, topk, sparsity_ratio (got {chosen or 'none'})")
    n_q, n_k = pq.shape[2], pk.shape[2]
    scores = (pq @ pk.transpose(-2, -1)) * scale
    if is_causal:
        future, diagonal = block_validity(n_q, n_k, block_q, block_k, sq, sk, is_causal, pq.device)
        scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    order = torch.sort(probs, dim=-1, descending=True, stable=True)
    if cdf_threshold is not None:
        mass_before = torch.cumsum(order.values, dim=-1) - order.values
        keep = torch.zeros_like(order.indices, dtype=torch.bool).scatter_(-1, order.indices, mass_before < cdf_threshold)
        keep = keep.scatter_(-1, order.indices[..., :1], True)  # every row keeps its top block
    else:
        n_valid = (~future).sum(dim=-1) if is_causal else torch.full((n_q,), n_k, device=pq.device)
        if topk is not None:
            count = torch.clamp(n_valid, max=topk)
        else:
            count = torch.ceil((1.0 - sparsity_ratio) * n_valid.float()).long()
        # the first `count` of the descending order (at least one), put back in place
        kept_sorted = torch.arange(n_k, device=pq.device) < count.clamp_min(1)[:, None]
        keep = torch.zeros_like(order.indices, dtype=torch.bool).scatter_(-1, order.indices, kept_sorted.expand_as(order.indices))
    keep = keep | (sim_q < sim_threshold)[..., None] | (sim_k < sim_threshold)[..., None, :]
    if sink:
        keep[..., 0] = True
    return (keep | diagonal) & ~future if is_causal else keep


def predict_block_map(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    scale: Optional[float] = None,
    is_causal: bool = False,
    block_q: int = 64,
    block_k: int = 128,
    sim_threshold: float = 0.6,
    cdf_threshold: Optional[float] = None,
    topk: Optional[int] = None,
    sparsity_ratio: Optional[float] = None,
    sink: bool = False,
) -> torch.Tensor:
    """Bool map (B, Hq, nQ, nK) of K blocks kept for each Q block. Exactly one of
    cdf_threshold / topk / sparsity_ratio selects."""
    pq, sim_q = pool_and_similarity(q, block_q)
    pk, sim_k = pool_and_similarity(k, block_k)
    return select_from_pooled(
        (pq, sim_q, pk, sim_k), q, k, scale=scale, is_causal=is_causal, block_q=block_q, block_k=block_k,
        sim_threshold=sim_threshold, cdf_threshold=cdf_threshold, topk=topk, sparsity_ratio=sparsity_ratio, sink=sink,
    )


def select_from_pooled(pooled: tuple, q: torch.Tensor, k: torch.Tensor, *, scale: Optional[float], is_causal: bool,
                       block_q: int, block_k: int, sim_threshold: float, cdf_threshold: Optional[float],
                       topk: Optional[int], sparsity_ratio: Optional[float], sink: bool) -> torch.Tensor:
    """The block map from block statistics (pooled q, sim q, pooled k, sim k; K's per kv head, expanded
    here), whoever computed them: the reference, `_pool_blocks` or the quantization pass."""
    pq, sim_q, pk, sim_k = pooled
    hq = q.shape[1]
    pk, sim_k = expand_kv_heads(pk, hq), expand_kv_heads(sim_k[..., None], hq)[..., 0]
    return select_blocks(
        pq, sim_q, pk, sim_k, sq=q.shape[2], sk=k.shape[2], scale=scale if scale is not None else q.shape[-1] ** -0.5,
        is_causal=is_causal, block_q=block_q, block_k=block_k, sim_threshold=sim_threshold,
        cdf_threshold=cdf_threshold, topk=topk, sparsity_ratio=sparsity_ratio, sink=sink,
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
    mask: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    scale: Optional[float] = None,
    *,
    pv_precision: str = "fp8",
    block_q: int = 64,
    block_k: int = 128,
    sim_threshold: float = 0.6,
    cdf_threshold: Optional[float] = None,
    topk: Optional[int] = None,
    sparsity_ratio: Optional[float] = None,
    pv_threshold: Optional[float] = None,
    sink: bool = False,
    return_block_map: bool = False,
    return_lse: bool = False,
):
    """Output; with return_lse also the LSE over the kept blocks; with return_block_map also the map."""
    block_map = predict_block_map(
        q, k, scale=scale, is_causal=is_causal, block_q=block_q, block_k=block_k,
        sim_threshold=sim_threshold, cdf_threshold=cdf_threshold, topk=topk,
        sparsity_ratio=sparsity_ratio, sink=sink,
    )
    out = sage_attention_reference(
        q, k, v, mask, is_causal, scale, pv_precision=pv_precision, block_q=block_q,
        block_k=block_k, block_mask=block_map, pv_threshold=pv_threshold, return_lse=return_lse,
    )
    out = out if return_lse else (out,)
    out = out + (block_map,) if return_block_map else out
    return out if len(out) > 1 else out[0]
