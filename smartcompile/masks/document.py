"""Document (block-diagonal) mask: packed sequences; a query attends the keys of its own segment."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .base import BlockKind, MaskType, Shape, block_bounds, expand_kinds


def _presence(seg: torch.Tensor, length: int, block: int, n_ids: int) -> torch.Tensor:
    """(B, n_blocks, n_ids) bool: which (compacted) segment ids occur in each block."""
    B = seg.shape[0]
    n_blocks = -(-length // block)
    padded = torch.full((B, n_blocks * block), n_ids, dtype=torch.int64, device=seg.device)
    padded[:, :length] = seg
    seen = torch.zeros(B, n_blocks, n_ids + 1, dtype=torch.bool, device=seg.device)
    seen.scatter_(2, padded.view(B, n_blocks, block), True)
    return seen[..., :n_ids]  # the pad id falls off


@dataclasses.dataclass(frozen=True, eq=False)
class Document(MaskType):
    q_segments: Any  # int (B, Sq): segment id of each query
    kv_segments: Any  # int (B, Sk)

    tensor_fields = ("q_segments", "kv_segments")

    def keep_at(self, b, h, i, j, shape: Shape) -> torch.Tensor:
        q = self.q_segments.expand(shape.batch, shape.q_len)[b, i]
        k = self.kv_segments.expand(shape.batch, shape.kv_len)[b, j]
        return (q == k).expand(torch.broadcast_shapes(b.shape, h.shape, i.shape, j.shape))

    def classify(self, shape: Shape, block_q: int, block_k: int, device="cpu") -> torch.Tensor:
        """Per block, from which segment ids occur in it (not from elements): empty when the query
        block and key block share no id, full when both hold one and the same id."""
        qs = self.q_segments.to(device).expand(shape.batch, shape.q_len)
        ks = self.kv_segments.to(device).expand(shape.batch, shape.kv_len)
        ids, compact = torch.unique(torch.cat([qs.flatten(), ks.flatten()]), return_inverse=True)  # ids 0..n-1
        qc, kc = compact[:qs.numel()].view(qs.shape), compact[qs.numel():].view(ks.shape)
        pq, pk = _presence(qc, shape.q_len, block_q, len(ids)), _presence(kc, shape.kv_len, block_k, len(ids))
        shared = torch.einsum("bqs,bks->bqk", pq.float(), pk.float())
        single_q, single_k = pq.sum(-1) == 1, pk.sum(-1) == 1
        kind = torch.full(shared.shape, int(BlockKind.PARTIAL), dtype=torch.int8, device=device)
        kind[shared == 0] = int(BlockKind.EMPTY)
        kind[(shared > 0) & single_q.unsqueeze(-1) & single_k.unsqueeze(-2)] = int(BlockKind.FULL)
        return expand_kinds(kind.unsqueeze(1), shape, block_q, block_k)

    def describe(self) -> str:
        return "document"
