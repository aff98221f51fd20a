"""Document (block-diagonal) mask: packed sequences; a query attends the keys of its own segment."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from .base import BlockKind, MaskType, Shape, block_bounds, expand_kinds


def _presence(seg: torch.Tensor, length: int, block: int, n_ids: int) -> torch.Tensor:
    """(B, n_blocks, n_ids): how many positions of each block carry each segment id."""
    B = seg.shape[0]
    n_blocks = -(-length // block)
    padded = torch.full((B, n_blocks * block), n_ids, dtype=torch.int64, device=seg.device)
    padded[:, :length] = seg
    onehot = F.one_hot(padded, n_ids + 1)[..., :n_ids]  # the pad id falls off
    return onehot.view(B, n_blocks, block, n_ids).sum(dim=2)


@dataclasses.dataclass(frozen=True, eq=False)
class Document(MaskType):
    q_segments: Any  # int (B, Sq), ids >= 0
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
        n_ids = int(max(qs.max(), ks.max())) + 1
        pq, pk = _presence(qs, shape.q_len, block_q, n_ids), _presence(ks, shape.kv_len, block_k, n_ids)
        shared = torch.einsum("bqs,bks->bqk", (pq > 0).float(), (pk > 0).float())
        single_q, single_k = (pq > 0).sum(-1) == 1, (pk > 0).sum(-1) == 1
        kind = torch.full(shared.shape, int(BlockKind.PARTIAL), dtype=torch.int8, device=device)
        kind[shared == 0] = int(BlockKind.EMPTY)
        kind[(shared > 0) & single_q.unsqueeze(-1) & single_k.unsqueeze(-2)] = int(BlockKind.FULL)
        return expand_kinds(kind.unsqueeze(1), shape, block_q, block_k)

    def describe(self) -> str:
        return "document"
