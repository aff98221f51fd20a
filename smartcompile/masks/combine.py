"""Intersection of mask types (e.g. causal & key padding): a score is kept when every part keeps it."""
from __future__ import annotations

import dataclasses

import torch

from .base import BlockKind, MaskType, Shape
from .no_mask import NoMask


@dataclasses.dataclass(frozen=True, eq=False)
class And(MaskType):
    parts: tuple  # tuple[MaskType, ...], at least two

    def __post_init__(self) -> None:
        if len(self.parts) < 2 or not all(isinstance(p, MaskType) for p in self.parts):
            raise ValueError("And: needs two or more mask types")

    @property
    def needs_values(self) -> bool:
        return any(p.needs_values for p in self.parts)

    def keep_at(self, b, h, i, j, shape: Shape) -> torch.Tensor:
        keep = self.parts[0].keep_at(b, h, i, j, shape)
        for p in self.parts[1:]:
            keep = keep & p.keep_at(b, h, i, j, shape)
        return keep

    def dense_bias(self, shape: Shape, device="cpu") -> torch.Tensor:
        bias = self.parts[0].dense_bias(shape, device)
        for p in self.parts[1:]:
            bias = bias + p.dense_bias(shape, device)
        return bias

    def classify(self, shape: Shape, block_q: int, block_k: int, device="cpu") -> torch.Tensor:
        """Any part empty: empty; all full: full. Where parts disagree the intersection may still be
        empty or full (two partial bands that do not overlap), so those blocks' elements are checked."""
        kind = self.parts[0].classify(shape, block_q, block_k, device)
        for p in self.parts[1:]:
            kind = torch.minimum(kind, p.classify(shape, block_q, block_k, device))
        kind = kind.clone()
        partial = (kind == int(BlockKind.PARTIAL)).nonzero()  # (P, 4): b, h, qb, kb
        if len(partial):
            kind[tuple(partial.T)] = self._refine(partial, shape, block_q, block_k, device)
        return kind

    def _refine(self, partial: torch.Tensor, shape: Shape, block_q: int, block_k: int, device) -> torch.Tensor:
        i = partial[:, 2:3] * block_q + torch.arange(block_q, device=device)  # (P, bq)
        j = partial[:, 3:4] * block_k + torch.arange(block_k, device=device)  # (P, bk)
        valid = (i < shape.q_len).unsqueeze(2) & (j < shape.kv_len).unsqueeze(1)
        i, j = i.clamp(max=shape.q_len - 1).unsqueeze(2), j.clamp(max=shape.kv_len - 1).unsqueeze(1)
        keep = self.keep_at(partial[:, 0, None, None], partial[:, 1, None, None], i, j, shape)
        kept = (keep & valid).flatten(1).sum(1)
        out = torch.full_like(kept, int(BlockKind.PARTIAL), dtype=torch.int8)
        out[kept == 0] = int(BlockKind.EMPTY)
        out[kept == valid.flatten(1).sum(1)] = int(BlockKind.FULL)
        return out

    def bind(self, value_of) -> "And":
        return And(tuple(p.bind(value_of) for p in self.parts))

    def describe(self) -> str:
        return "-".join(p.describe() for p in self.parts)


def intersect(*parts: MaskType) -> MaskType:
    """The intersection, flattened, without NoMask parts; a single part is returned as is."""
    flat = []
    for p in parts:
        flat.extend(p.parts if isinstance(p, And) else (p,))
    flat = [p for p in flat if not isinstance(p, NoMask)]
    if not flat:
        return NoMask()
    return flat[0] if len(flat) == 1 else And(tuple(flat))
