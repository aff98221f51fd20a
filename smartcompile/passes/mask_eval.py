"""Evaluate a mask's producer subgraph over symbolic values (mask_values), never over its data:
aranges become positions, +/- shift them, comparisons and `&`/`~` build conditions, indexing a (B, S)
tensor by (batch, position) becomes key padding (bool) or gathered ids (int). Unknown: None."""
from __future__ import annotations

import dataclasses
import operator
from typing import Any, Optional

import torch
from torch.fx import Node

from .mask_values import (BATCH_AXIS, KV_AXIS, Q_AXIS, Cond, Lin, Pos, Tok, compare, linear, root)
from .normalize import meta_tensor

MAX_NODES = 256  # producer subgraphs of real masks have ~30 nodes; a bigger one is not a mask we know

_COMPARE = {operator.eq: "eq", operator.le: "le", operator.lt: "lt", operator.ge: "ge", operator.gt: "gt",
            torch.eq: "eq", torch.le: "le", torch.lt: "lt", torch.ge: "ge", torch.gt: "gt",
            "eq": "eq", "le": "le", "lt": "lt", "ge": "ge", "gt": "gt",
            "__eq__": "eq", "__le__": "le", "__lt__": "lt", "__ge__": "ge", "__gt__": "gt"}
_AND = {operator.and_, torch.logical_and, torch.bitwise_and, "__and__", "logical_and", "bitwise_and"}
_NOT = {operator.invert, torch.logical_not, torch.bitwise_not, "__invert__", "logical_not", "bitwise_not"}
_ADD = {operator.add, torch.add, "add", "__add__", "__radd__"}
_SUB = {operator.sub, torch.sub, "sub", "__sub__"}
_PASS = {"to", "contiguous", "bool", "expand", "expand_as"}  # value-preserving (dtype checked from meta)


def cond_of(node: Any) -> Optional[Cond]:
    v = evaluate(node, {})
    return v if isinstance(v, Cond) else None


def dtype_is(node: Node, kind: str) -> bool:
    t = meta_tensor(node)
    if t is None:
        return False
    if kind == "bool":
        return t.dtype == torch.bool
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def evaluate(node: Any, seen: dict):
    """A Pos, Tok, Lin, Cond or int for what this node computes, or None. `seen` memoises per node,
    so shared subexpressions are read once, and bounds the walk."""
    if isinstance(node, bool):
        return None
    if isinstance(node, int):
        return node
    if not isinstance(node, Node) or node.op not in ("call_function", "call_method"):
        return None
    if node not in seen:
        full = len(seen) >= MAX_NODES
        seen[node] = None  # entered: counts towards the bound before its inputs are read
        if not full:
            seen[node] = _evaluate(node, seen)
    return seen[node]


def _evaluate(node: Node, seen: dict):
    t, args = node.target, node.args
    if t is torch.arange:
        return _arange(node)
    if t in _PASS or t is torch.Tensor.to:
        v = evaluate(args[0], seen)
        ok = (isinstance(v, Pos) and dtype_is(node, "int")) or (isinstance(v, Cond) and dtype_is(node, "bool"))
        return v if ok else None
    if t == "new_ones" or t is torch.ones:
        return Cond() if dtype_is(node, "bool") else None
    if t in _ADD or t in _SUB:
        return _shift(evaluate(args[0], seen), evaluate(args[1], seen), -1 if t in _SUB else 1) if len(args) == 2 else None
    if t in _COMPARE and len(args) == 2:
        return compare(_COMPARE[t], evaluate(args[0], seen), evaluate(args[1], seen))
    if t in _AND and len(args) == 2:
        a, b = evaluate(args[0], seen), evaluate(args[1], seen)
        return a & b if isinstance(a, Cond) and isinstance(b, Cond) else None
    if t in _NOT and len(args) == 1:
        a = evaluate(args[0], seen)
        return a.negated() if isinstance(a, Cond) else None
    if t is operator.getitem and len(args) == 2:
        return _getitem(args[0], args[1], seen)
    if (t == "unsqueeze" or t is torch.unsqueeze) and len(args) == 2:
        return _unsqueeze(evaluate(args[0], seen), args[1])
    return None


def _arange(node: Node) -> Optional[Pos]:
    args = list(node.args)
    if node.kwargs.get("dtype") not in (None, torch.int64, torch.int32) or "step" in node.kwargs:
        return None
    if len(args) == 3 and args[2] == 1:
        args = args[:2]
    if len(args) == 1:
        args = [0] + args
    if len(args) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args) or args[1] <= args[0]:
        return None
    return Pos(KV_AXIS, 1, args[0], args[1] - args[0])


def _shift(a, b, sign: int):
    """a + sign * b: a position moved by a number stays a position (it may still be indexed);
    sums of query and key positions become linear forms."""
    if isinstance(a, Pos) and isinstance(b, int):
        return dataclasses.replace(a, offset=a.offset + sign * b)
    if sign == 1 and isinstance(a, int) and isinstance(b, Pos):
        return dataclasses.replace(b, offset=b.offset + a)
    if isinstance(a, int) and isinstance(b, int):
        return a + sign * b
    if isinstance(a, Tok) and isinstance(b, int):
        return dataclasses.replace(a, offset=a.offset + sign * b)
    la, lb = linear(a), linear(b)
    if la is None or lb is None:
        return None
    return Lin(la.ci + sign * lb.ci, la.cj + sign * lb.cj, la.c + sign * lb.c, la.lengths | lb.lengths)


def _getitem(base: Any, index: Any, seen: dict):
    if isinstance(index, tuple) and len(index) == 2 and all(isinstance(x, Node) for x in index):
        batch, idx = evaluate(index[0], seen), evaluate(index[1], seen)
        return _key_padding(base, batch, idx) if dtype_is(base, "bool") else _token(base, batch, idx)
    v = evaluate(base, seen)
    if not isinstance(v, Pos) or v.rank != 1:
        return None
    items = index if isinstance(index, tuple) else (index,)
    if Ellipsis in items or any(x is not None and x != slice(None) for x in items):
        return None
    slices = [n for n, x in enumerate(items) if x is not None]
    if len(slices) != 1:
        return None
    return dataclasses.replace(v, axis=slices[0] - len(items), rank=len(items))


def _unsqueeze(v, dim: Any) -> Optional[Pos]:
    if not isinstance(v, Pos) or v.rank != 1 or not isinstance(dim, int):
        return None
    if dim in (0, -2):
        return dataclasses.replace(v, rank=2)
    if dim in (1, -1):
        return dataclasses.replace(v, axis=Q_AXIS, rank=2)
    return None


def _key_padding(base: Any, batch, keys) -> Optional[Cond]:
    """flags[batch_idx, kv_idx] of a bool (B, Sk) tensor, batch along dim -4 and keys along -1."""
    t = meta_tensor(base)
    if t is None or t.dtype != torch.bool or t.dim() != 2 or not isinstance(batch, Pos) or not isinstance(keys, Pos):
        return None
    if (batch.axis, batch.offset, keys.axis, keys.offset) != (BATCH_AXIS, 0, KV_AXIS, 0):
        return None
    if tuple(t.shape) != (batch.length, keys.length):
        return None
    return Cond(pads=(base,), lengths=frozenset({(KV_AXIS, keys.length)}))


def _token(base: Any, batch, idx) -> Optional[Tok]:
    """values[batch_idx, q_idx or kv_idx] of an integer (B, S) tensor, S the full length of that axis."""
    t = meta_tensor(base)
    if t is None or not dtype_is(base, "int") or t.dim() != 2 or not isinstance(batch, Pos) or not isinstance(idx, Pos):
        return None
    if (batch.axis, batch.offset, idx.offset) != (BATCH_AXIS, 0, 0) or idx.axis not in (Q_AXIS, KV_AXIS):
        return None
    if tuple(t.shape) != (batch.length, idx.length):
        return None
    return Tok(root(base), idx.axis)
