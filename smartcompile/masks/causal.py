"""Causal: query i attends keys up to its own position, top-left or bottom-right aligned."""
from __future__ import annotations

import dataclasses

import torch

from .band import band_classify, band_keep, offset
from .base import MaskType, Shape


@dataclasses.dataclass(frozen=True)
class Causal(MaskType):
    alignment: str = "top_left"  # or "bottom_right"; see band.py

    def __post_init__(self) -> None:
        offset(self.alignment, Shape(1, 1, 1, 1))  # validates

    def keep_at(self, b, h, i, j, shape: Shape) -> torch.Tensor:
        return band_keep(i, j, offset(self.alignment, shape), 0, None)

    def classify(self, shape: Shape, block_q: int, block_k: int, device="cpu") -> torch.Tensor:
        return band_classify(shape, block_q, block_k, offset(self.alignment, shape), 0, None, device)

    def describe(self) -> str:
        return "causal" if self.alignment == "top_left" else "causal-br"
