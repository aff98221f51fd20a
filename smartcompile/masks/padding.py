"""Key padding: which keys of each sequence are real. `KeyPadding` holds a flag per key (any
padding side, as transformers' `attention_mask`); `KeyLengths` the number of real keys per sequence
(right padding, what varlen kernels take)."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from .base import MaskType, Shape, block_bounds, expand_kinds, kinds_from_counts


def _classify_keys(keep_bk: torch.Tensor, shape: Shape, block_q: int, block_k: int) -> torch.Tensor:
    """Kinds from a (B, Sk) keep-flag per key: the same for every query block."""
    first, last = block_bounds(shape.kv_len, block_k, keep_bk.device)
    counts = torch.cumsum(torch.nn.functional.pad(keep_bk.to(torch.int64), (1, 0)), dim=1)
    kept = counts[:, last + 1] - counts[:, first]  # (B, nk)
    kind = kinds_from_counts(kept.view(shape.batch, 1, 1, -1), (last - first + 1).view(1, 1, 1, -1))
    return expand_kinds(kind, shape, block_q, block_k)


@dataclasses.dataclass(frozen=True, eq=False)
class KeyPadding(MaskType):
    keep: Any  # bool (B, Sk): True for a real key (a graph reference before `bind`)

    tensor_fields = ("keep",)

    def keep_at(self, b, h, i, j, shape: Shape) -> torch.Tensor:
        keep = self.keep.to(torch.bool).expand(shape.batch, shape.kv_len)
        return keep[b, j].expand(torch.broadcast_shapes(b.shape, h.shape, i.shape, j.shape))

    def classify(self, shape: Shape, block_q: int, block_k: int, device="cpu") -> torch.Tensor:
        return _classify_keys(self.keep.to(device=device, dtype=torch.bool).expand(shape.batch, shape.kv_len),
                              shape, block_q, block_k)

    def lengths(self) -> Optional[torch.Tensor]:
        """Keys per sequence when every sequence is right-padded (real keys first), else None."""
        keep = self.keep.to(torch.bool)
        n = keep.sum(dim=-1)
        right = torch.arange(keep.shape[-1], device=keep.device) < n.unsqueeze(-1)
        return n if bool((right == keep).all()) else None

    def describe(self) -> str:
        return "padded"


@dataclasses.dataclass(frozen=True, eq=False)
class KeyLengths(MaskType):
    lengths: Any  # int (B,): keys [0, lengths[b]) are real

    tensor_fields = ("lengths",)

    def keep_at(self, b, h, i, j, shape: Shape) -> torch.Tensor:
        return (j < self.lengths.to(j.device)[b]).expand(torch.broadcast_shapes(b.shape, h.shape, i.shape, j.shape))

    def classify(self, shape: Shape, block_q: int, block_k: int, device="cpu") -> torch.Tensor:
        j = torch.arange(shape.kv_len, device=device).view(1, -1)
        return _classify_keys(j < self.lengths.to(device).view(-1, 1), shape, block_q, block_k)

    def describe(self) -> str:
        return "varlen"
