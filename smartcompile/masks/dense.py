"""Dense masks given as tensors: a bool keep-mask, or an additive bias (-inf drops a score).
Nothing is known about their structure, so classification reads every element."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .base import MaskType, Shape, classify_dense


@dataclasses.dataclass(frozen=True, eq=False)
class DenseBool(MaskType):
    keep: Any  # bool, broadcastable to (B, H, Sq, Sk); True = attend

    tensor_fields = ("keep",)

    def keep_at(self, b, h, i, j, shape: Shape) -> torch.Tensor:
        return self.keep.expand(*shape)[b, h, i, j]

    def dense(self, shape: Shape, device="cpu") -> torch.Tensor:
        return self.keep.to(device).expand(*shape)

    def classify(self, shape: Shape, block_q: int, block_k: int, device="cpu") -> torch.Tensor:
        return classify_dense(self.dense(shape, device), block_q, block_k)

    def describe(self) -> str:
        return "bool"


@dataclasses.dataclass(frozen=True, eq=False)
class DenseAdditive(MaskType):
    """The keep-mask is where the bias is not -inf; a kernel still adds the bias's values in
    every kept block, full ones included (`needs_values`)."""
    bias: Any  # float, broadcastable to (B, H, Sq, Sk)

    tensor_fields = ("bias",)
    needs_values = True

    def keep_at(self, b, h, i, j, shape: Shape) -> torch.Tensor:
        return self.bias.expand(*shape)[b, h, i, j] != float("-inf")

    def dense(self, shape: Shape, device="cpu") -> torch.Tensor:
        return (self.bias.to(device) != float("-inf")).expand(*shape)

    def dense_bias(self, shape: Shape, device="cpu") -> torch.Tensor:
        return self.bias.to(device=device, dtype=torch.float32).expand(*shape)

    def classify(self, shape: Shape, block_q: int, block_k: int, device="cpu") -> torch.Tensor:
        return classify_dense(self.dense(shape, device), block_q, block_k)

    def describe(self) -> str:
        return "additive"
