"""The contract every mask type keeps: a keep-predicate over (batch, head, query, key) indices,
from which the dense reference, the per-block classification and partial blocks' element masks follow.

A mask type is shape-free: the sizes (B, H, Sq, Sk) are given when it is evaluated, so one recognised
structure serves every call of a compiled graph. Tensor-valued fields (padding flags, segment ids,
dense masks) may hold a graph reference until `bind` replaces them with the running values."""
from __future__ import annotations

import abc
import dataclasses
import enum
from typing import Any, Callable, NamedTuple

import torch


class BlockKind(enum.IntEnum):
    """Ordered so that the kind of an intersection is at most the minimum of its parts' kinds."""
    EMPTY = 0  # no element kept: the block is skipped
    PARTIAL = 1  # some kept: the element mask is applied in the block
    FULL = 2  # every element kept: no element mask needed


class Shape(NamedTuple):
    batch: int
    heads: int
    q_len: int
    kv_len: int


class MaskType(abc.ABC):
    """Base of the mask types; subclasses are frozen dataclasses."""

    tensor_fields: tuple = ()  # fields that hold tensors (or graph references before `bind`)
    # True when the mask also carries values a kernel must add to the scores (an additive bias): its keep-mask
    # (`dense`) alone is not the mask
    needs_values: bool = False

    @abc.abstractmethod
    def keep_at(self, b: torch.Tensor, h: torch.Tensor, i: torch.Tensor, j: torch.Tensor, shape: Shape) -> torch.Tensor:
        """True where query i of (batch b, head h) attends key j; the index tensors broadcast together."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Short name for explain, e.g. "causal-padded"."""

    def classify(self, shape: Shape, block_q: int, block_k: int, device: Any = "cpu") -> torch.Tensor:
        """BlockKind per (batch, head, query block, key block), int8 (B, H, ceil(Sq/bq), ceil(Sk/bk)).
        This default evaluates every element (what dense types must do); structured types override it
        with bounds computed per block."""
        return classify_elementwise(self, shape, block_q, block_k, device)

    def dense(self, shape: Shape, device: Any = "cpu") -> torch.Tensor:
        """The reference: bool keep-mask (B, H, Sq, Sk)."""
        b, h, i, j = grid(shape, device)
        return self.keep_at(b, h, i, j, shape).expand(*shape)

    def dense_bias(self, shape: Shape, device: Any = "cpu") -> torch.Tensor:
        """The mask as an additive float32 bias (B, H, Sq, Sk): 0 where kept, -inf where dropped, plus the values
        of a mask that carries them (`needs_values`)."""
        zero = torch.zeros((), dtype=torch.float32, device=device)
        return torch.where(self.dense(shape, device), zero, float("-inf"))

    def block(self, shape: Shape, block_q: int, block_k: int, qb: int, kb: int, device: Any = "cpu") -> torch.Tensor:
        """Element mask (B, H, rows, cols) of block (qb, kb); edge blocks are cut at Sq / Sk."""
        b, h, _, _ = grid(shape, device)
        i = torch.arange(qb * block_q, min((qb + 1) * block_q, shape.q_len), device=device).view(1, 1, -1, 1)
        j = torch.arange(kb * block_k, min((kb + 1) * block_k, shape.kv_len), device=device).view(1, 1, 1, -1)
        return self.keep_at(b, h, i, j, shape).expand(shape.batch, shape.heads, i.shape[2], j.shape[3])

    def bind(self, value_of: Callable[[Any], Any]) -> "MaskType":
        """A copy whose tensor fields are replaced by `value_of(field)` (graph reference -> running tensor)."""
        return dataclasses.replace(self, **{f: value_of(getattr(self, f)) for f in self.tensor_fields})


def grid(shape: Shape, device: Any):
    """Index tensors (B,1,1,1), (1,H,1,1), (1,1,Sq,1), (1,1,1,Sk)."""
    b = torch.arange(shape.batch, device=device).view(-1, 1, 1, 1)
    h = torch.arange(shape.heads, device=device).view(1, -1, 1, 1)
    i = torch.arange(shape.q_len, device=device).view(1, 1, -1, 1)
    j = torch.arange(shape.kv_len, device=device).view(1, 1, 1, -1)
    return b, h, i, j


def block_bounds(length: int, block: int, device: Any):
    """First and last (inclusive) index of every block along one axis."""
    first = torch.arange(0, length, block, device=device)
    last = torch.clamp(first + block - 1, max=length - 1)
    return first, last


def kinds_from_counts(kept: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    kind = torch.full(torch.broadcast_shapes(kept.shape, total.shape), int(BlockKind.PARTIAL), dtype=torch.int8,
                      device=kept.device)
    kind[(kept == 0).expand_as(kind)] = int(BlockKind.EMPTY)
    kind[(kept == total).expand_as(kind)] = int(BlockKind.FULL)
    return kind


def classify_dense(keep: torch.Tensor, block_q: int, block_k: int) -> torch.Tensor:
    """Classification of a dense (B, H, Sq, Sk) keep-mask: pad to whole blocks and count."""
    B, H, Sq, Sk = keep.shape
    nq, nk = -(-Sq // block_q), -(-Sk // block_k)
    padded = torch.zeros(B, H, nq * block_q, nk * block_k, dtype=torch.int32, device=keep.device)
    padded[..., :Sq, :Sk] = keep.to(torch.int32)
    kept = padded.view(B, H, nq, block_q, nk, block_k).sum(dim=(3, 5))
    rows = torch.clamp(Sq - torch.arange(nq, device=keep.device) * block_q, max=block_q)
    cols = torch.clamp(Sk - torch.arange(nk, device=keep.device) * block_k, max=block_k)
    return kinds_from_counts(kept, rows.view(-1, 1) * cols.view(1, -1))


def classify_elementwise(mask: MaskType, shape: Shape, block_q: int, block_k: int, device: Any) -> torch.Tensor:
    return classify_dense(mask.dense(shape, device), block_q, block_k)


def expand_kinds(kind: torch.Tensor, shape: Shape, block_q: int, block_k: int) -> torch.Tensor:
    nq, nk = -(-shape.q_len // block_q), -(-shape.kv_len // block_k)
    return kind.expand(shape.batch, shape.heads, nq, nk)
