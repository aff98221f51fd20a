"""Sliding window: query i attends keys from `left` positions before to `right` after its own
(after alignment); None leaves that side open. Sliding(w, 0) is causal with a window of w + 1 keys."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from .band import band_classify, band_keep, offset
from .base import MaskType, Shape


@dataclasses.dataclass(frozen=True)
class SlidingWindow(MaskType):
    left: Optional[int]
    right: Optional[int]
    alignment: str = "top_left"

    def __post_init__(self) -> None:
        offset(self.alignment, Shape(1, 1, 1, 1))
        for side in (self.left, self.right):
            if side is not None and side < 0:
                raise ValueError(f"SlidingWindow: window sides must be >= 0 or None, got ({self.left}, {self.right})")

    def _bounds(self):
        return (None if self.right is None else -self.right), self.left

    def keep_at(self, b, h, i, j, shape: Shape) -> torch.Tensor:
        return band_keep(i, j, offset(self.alignment, shape), *self._bounds())

    def classify(self, shape: Shape, block_q: int, block_k: int, device="cpu") -> torch.Tensor:
        return band_classify(shape, block_q, block_k, offset(self.alignment, shape), *self._bounds(), device)

    def describe(self) -> str:
        side = lambda x: "inf" if x is None else str(x)
        return f"sliding({side(self.left)},{side(self.right)})" + ("" if self.alignment == "top_left" else "-br")
