"""Prefix-LM: the first `prefix` keys are seen by every query (bidirectional prefix), the rest causally
(top-left aligned)."""
from __future__ import annotations

import dataclasses

import torch

from .base import BlockKind, MaskType, Shape, block_bounds


@dataclasses.dataclass(frozen=True)
class PrefixLM(MaskType):
    prefix: int

    def keep_at(self, b, h, i, j, shape: Shape) -> torch.Tensor:
        return ((j <= i) | (j < self.prefix)).expand(torch.broadcast_shapes(b.shape, h.shape, i.shape, j.shape))

    def classify(self, shape: Shape, block_q: int, block_k: int, device="cpu") -> torch.Tensor:
        """Keys below the prefix are all kept; the block is full when its keys at or past the prefix
        are all causally visible, empty when it has none below the prefix and none causally visible."""
        q_first, q_last = block_bounds(shape.q_len, block_q, device)
        k_first, k_last = block_bounds(shape.kv_len, block_k, device)
        past_prefix_seen = k_last.view(1, -1) <= q_first.view(-1, 1)
        full = (k_last.view(1, -1) < self.prefix) | past_prefix_seen
        empty = (k_first.view(1, -1) >= self.prefix) & (k_first.view(1, -1) > q_last.view(-1, 1))
        kind = torch.full(full.shape, int(BlockKind.PARTIAL), dtype=torch.int8, device=device)
        kind[full] = int(BlockKind.FULL)
        kind[empty] = int(BlockKind.EMPTY)
        return kind.view(1, 1, *kind.shape).expand(shape.batch, shape.heads, *kind.shape)

    def describe(self) -> str:
        return f"prefix-lm({self.prefix})"
