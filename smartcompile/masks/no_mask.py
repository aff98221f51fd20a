"""No mask: every query attends every key."""
from __future__ import annotations

import dataclasses

import torch

from .base import BlockKind, MaskType, Shape, expand_kinds


@dataclasses.dataclass(frozen=True)
class NoMask(MaskType):
    def keep_at(self, b, h, i, j, shape: Shape) -> torch.Tensor:
        shape_out = torch.broadcast_shapes(b.shape, h.shape, i.shape, j.shape)
        return torch.ones((), dtype=torch.bool, device=i.device).expand(shape_out)

    def classify(self, shape: Shape, block_q: int, block_k: int, device="cpu") -> torch.Tensor:
        full = torch.full((1, 1, 1, 1), int(BlockKind.FULL), dtype=torch.int8, device=device)
        return expand_kinds(full, shape, block_q, block_k)

    def describe(self) -> str:
        return "none"
