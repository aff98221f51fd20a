"""Recover a mask's structure (causal, sliding window, key padding) from the graph that builds it.

transformers 5.x under torch.compile hands SDPA a dense bool mask built from position comparisons,
e.g. `(kv_idx <= q_idx) & (kv_idx > q_idx - window) & attention_mask[batch_idx, kv_idx]` then
`.expand(...)`. The producer subgraph is read symbolically (never the values): aranges become
positions along the query or key axis, comparisons of a key position with a query position become
bounds on the diagonal d = i - j, and indexing a (B, Sk) bool tensor by (batch, key) positions becomes
key padding. Anything else, or anything ambiguous, yields None: recognition only ever reports."""
from __future__ import annotations

import dataclasses
import operator
from typing import Any, Optional

import torch
from torch.fx import Node

from ..masks import Causal, KeyPadding, MaskType, SlidingWindow, intersect
from .masks import is_mask_fill, literal_number
from .normalize import meta_tensor

Q_AXIS, KV_AXIS, BATCH_AXIS = -2, -1, -4  # dims of the (B, H, Sq, Sk) scores, counted from the end
MAX_DEPTH = 64  # producer chains of real masks are ~10 nodes deep


@dataclasses.dataclass(frozen=True)
class _Pos:
    """arange(length) + offset, laid along one dim (from the end) of a tensor of `rank` dims."""
    axis: int
    rank: int
    offset: int
    length: int


@dataclasses.dataclass(frozen=True)
class _Cond:
    """Keep where lo <= i - j <= hi (None: open) and every key flag in `pads` is set."""
    lo: Optional[int] = None
    hi: Optional[int] = None
    pads: tuple = ()  # Nodes of bool (B, Sk) tensors
    lengths: frozenset = frozenset()  # (axis, length) of every position compared

    def __and__(self, other: "_Cond") -> "_Cond":
        lo = max((x for x in (self.lo, other.lo) if x is not None), default=None)
        hi = min((x for x in (self.hi, other.hi) if x is not None), default=None)
        return _Cond(lo, hi, self.pads + other.pads, self.lengths | other.lengths)

    def negated(self) -> Optional["_Cond"]:
        """The complement of one half-plane is a half-plane; of anything else, not a _Cond."""
        if self.pads or (self.lo is None) == (self.hi is None):
            return None
        if self.lo is not None:
            return _Cond(hi=self.lo - 1, lengths=self.lengths)
        return _Cond(lo=self.hi + 1, lengths=self.lengths)


_COMPARE = {operator.le: "le", operator.lt: "lt", operator.ge: "ge", operator.gt: "gt",
            torch.le: "le", torch.lt: "lt", torch.ge: "ge", torch.gt: "gt",
            "le": "le", "lt": "lt", "ge": "ge", "gt": "gt", "__le__": "le", "__lt__": "lt", "__ge__": "ge", "__gt__": "gt"}
_FLIP = {"le": "ge", "lt": "gt", "ge": "le", "gt": "lt"}
_AND = {operator.and_, torch.logical_and, torch.bitwise_and, "__and__", "logical_and", "bitwise_and"}
_NOT = {operator.invert, torch.logical_not, torch.bitwise_not, "__invert__", "logical_not", "bitwise_not"}
_ADD = {operator.add, torch.add, "add", "__add__", "__radd__"}
_SUB = {operator.sub, torch.sub, "sub", "__sub__"}
_PASS = {"to", "contiguous", "bool", "expand", "expand_as"}  # value-preserving (dtype checked from meta)


def recognise_mask(site_masks: tuple, is_causal: bool, q: Node, k: Node, k_transposed: bool) -> Optional[MaskType]:
    """The structure of the site's combined mask, or None when any term is not understood."""
    qt, kt = meta_tensor(q), meta_tensor(k)
    if not site_masks or qt is None or kt is None:
        return None
    sq, sk = qt.shape[-2], (kt.shape[-1] if k_transposed else kt.shape[-2])
    if not isinstance(sq, int) or not isinstance(sk, int):
        return None
    cond = _Cond()
    for term in site_masks:
        c = _term_cond(term)
        if c is None:
            return None
        cond = cond & c
    if cond.pads and (qt.dim() != 4 or any(meta_tensor(p).shape[0] not in (1, qt.shape[0]) for p in cond.pads)):
        return None
    if any(n != (sq if axis == Q_AXIS else sk) for axis, n in cond.lengths if axis in (Q_AXIS, KV_AXIS)):
        return None
    parts = [Causal()] if is_causal else []
    structure = _structure(cond, sq, sk)
    return None if structure is None else intersect(*parts, structure)


def _term_cond(term) -> Optional[_Cond]:
    if term.kind == "keep":
        return _cond(term.node)
    if term.kind == "drop":
        c = _cond(term.node)
        return None if c is None else c.negated()
    return _additive_cond(term.node)  # additive: where(keep, 0, -inf) and friends


def _additive_cond(node: Any, depth: int = 0) -> Optional[_Cond]:
    if not isinstance(node, Node) or depth > MAX_DEPTH:
        return None
    if node.target in ("to", "contiguous", "expand") or (node.target is torch.Tensor.to):
        return _additive_cond(node.args[0], depth + 1)
    if node.target is torch.where and len(node.args) == 3:
        cond, yes, no = node.args
        if literal_number(yes) == 0.0 and is_mask_fill(no):
            return _cond(cond)
        if is_mask_fill(yes) and literal_number(no) == 0.0:
            c = _cond(cond)
            return None if c is None else c.negated()
    return None


def _structure(cond: _Cond, sq: int, sk: int) -> Optional[MaskType]:
    lo = None if cond.lo is None or cond.lo <= -(sk - 1) else cond.lo  # i - j >= -(Sk-1) always holds
    hi = None if cond.hi is None or cond.hi >= sq - 1 else cond.hi
    parts = []
    if lo is not None or hi is not None:
        band = _band(lo, hi, sq, sk)
        if band is None:
            return None
        parts.append(band)
    parts.extend(KeyPadding(p) for p in cond.pads)
    return intersect(*parts)


def _band(lo: Optional[int], hi: Optional[int], sq: int, sk: int) -> Optional[MaskType]:
    """lo <= i - j <= hi as causal or a sliding window, in the alignment where it reads naturally."""
    if lo is not None and hi is not None and lo > hi:
        return None
    fits = []
    for order, (alignment, off) in enumerate((("top_left", 0), ("bottom_right", sk - sq))):
        left = None if hi is None else hi + off
        right = None if lo is None else -(lo + off)
        if all(x is None or x >= 0 for x in (left, right)):
            fits.append((right != 0, order, alignment, left, right))
    if not fits:
        return None
    *_, alignment, left, right = min(fits)  # prefer right == 0 (causal-like), then top-left
    return Causal(alignment) if right == 0 and left is None else SlidingWindow(left, right, alignment)


def _cond(node: Any) -> Optional[_Cond]:
    v = _eval(node, 0)
    return v if isinstance(v, _Cond) else None


def _dtype_is(node: Node, kind: str) -> bool:
    t = meta_tensor(node)
    if t is None:
        return False
    return t.dtype == torch.bool if kind == "bool" else (not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool)


def _eval(node: Any, depth: int):
    """A _Pos, _Cond or int for what this node computes, or None."""
    if isinstance(node, bool):
        return None
    if isinstance(node, int):
        return node
    if not isinstance(node, Node) or depth > MAX_DEPTH or node.op not in ("call_function", "call_method"):
        return None
    t, args, d = node.target, node.args, depth + 1
    if t is torch.arange:
        return _arange(node)
    if t in _PASS or t is torch.Tensor.to:
        v = _eval(args[0], d)
        ok = (isinstance(v, _Pos) and _dtype_is(node, "int")) or (isinstance(v, _Cond) and _dtype_is(node, "bool"))
        return v if ok else None
    if t == "new_ones" or t is torch.ones:
        return _Cond() if _dtype_is(node, "bool") else None
    if t in _ADD or t in _SUB:
        return _shift(_eval(args[0], d), _eval(args[1], d), -1 if t in _SUB else 1) if len(args) == 2 else None
    if t in _COMPARE and len(args) == 2:
        return _compare(_COMPARE[t], _eval(args[0], d), _eval(args[1], d))
    if t in _AND and len(args) == 2:
        a, b = _eval(args[0], d), _eval(args[1], d)
        return a & b if isinstance(a, _Cond) and isinstance(b, _Cond) else None
    if t in _NOT and len(args) == 1:
        a = _eval(args[0], d)
        return a.negated() if isinstance(a, _Cond) else None
    if t is operator.getitem and len(args) == 2:
        return _getitem(args[0], args[1], d)
    if (t == "unsqueeze" or t is torch.unsqueeze) and len(args) == 2:
        return _unsqueeze(_eval(args[0], d), args[1])
    return None


def _arange(node: Node) -> Optional[_Pos]:
    args = list(node.args)
    if node.kwargs.get("dtype") not in (None, torch.int64, torch.int32) or "step" in node.kwargs:
        return None
    if len(args) == 3 and args[2] == 1:
        args = args[:2]
    if len(args) == 1:
        args = [0] + args
    if len(args) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args) or args[1] <= args[0]:
        return None
    return _Pos(KV_AXIS, 1, args[0], args[1] - args[0])


def _shift(a, b, sign: int):
    if isinstance(a, _Pos) and isinstance(b, int):
        return dataclasses.replace(a, offset=a.offset + sign * b)
    if sign == 1 and isinstance(a, int) and isinstance(b, _Pos):
        return dataclasses.replace(b, offset=b.offset + a)
    if isinstance(a, int) and isinstance(b, int):
        return a + sign * b
    return None


def _linear(v) -> Optional[tuple]:
    """(coefficient of i, coefficient of j, constant) of a query position, key position or number."""
    if isinstance(v, int):
        return (0, 0, v)
    if isinstance(v, _Pos) and v.axis == Q_AXIS:
        return (1, 0, v.offset)
    if isinstance(v, _Pos) and v.axis == KV_AXIS:
        return (0, 1, v.offset)
    return None


def _compare(op: str, a, b) -> Optional[_Cond]:
    la, lb = _linear(a), _linear(b)
    if la is None or lb is None:
        return None
    ci, cj, c = la[0] - lb[0], la[1] - lb[1], la[2] - lb[2]  # (a - b) = ci*i + cj*j + c, compared with 0
    lengths = frozenset((p.axis, p.length) for p in (a, b) if isinstance(p, _Pos))
    if (ci, cj) == (-1, 1):  # -(i - j) + c op 0  <=>  (i - j) flipped-op c
        op = _FLIP[op]
    elif (ci, cj) == (1, -1):  # (i - j) + c op 0  <=>  (i - j) op -c
        c = -c
    elif (ci == 0) != (cj == 0) and abs(ci + cj) == 1:  # one position against a number
        (length,) = [p.length for p in (a, b) if isinstance(p, _Pos)]
        coef = ci + cj
        holds = lambda x: {"le": x <= 0, "lt": x < 0, "ge": x >= 0, "gt": x > 0}[op]
        return _Cond(lengths=lengths) if holds(c) and holds(coef * (length - 1) + c) else None
    else:
        return None
    bound = {"le": (None, c), "lt": (None, c - 1), "ge": (c, None), "gt": (c + 1, None)}[op]
    return _Cond(bound[0], bound[1], lengths=lengths)


def _getitem(base: Any, index: Any, depth: int):
    if isinstance(index, tuple) and len(index) == 2 and all(isinstance(x, Node) for x in index):
        return _key_padding(base, _eval(index[0], depth), _eval(index[1], depth))
    v = _eval(base, depth)
    if not isinstance(v, _Pos) or v.rank != 1:
        return None
    items = index if isinstance(index, tuple) else (index,)
    if Ellipsis in items or any(x is not None and x != slice(None) for x in items):
        return None
    slices = [n for n, x in enumerate(items) if x is not None]
    if len(slices) != 1:
        return None
    return dataclasses.replace(v, axis=slices[0] - len(items), rank=len(items))


def _unsqueeze(v, dim: Any) -> Optional[_Pos]:
    if not isinstance(v, _Pos) or v.rank != 1 or not isinstance(dim, int):
        return None
    if dim in (0, -2):
        return dataclasses.replace(v, rank=2)
    if dim in (1, -1):
        return dataclasses.replace(v, axis=Q_AXIS, rank=2)
    return None


def _key_padding(base: Any, batch, keys) -> Optional[_Cond]:
    """flags[batch_idx, kv_idx] of a bool (B, Sk) tensor, batch along dim -4 and keys along -1."""
    t = meta_tensor(base)
    if t is None or t.dtype != torch.bool or t.dim() != 2 or not isinstance(batch, _Pos) or not isinstance(keys, _Pos):
        return None
    if (batch.axis, batch.offset, keys.axis, keys.offset) != (BATCH_AXIS, 0, KV_AXIS, 0):
        return None
    if tuple(t.shape) != (batch.length, keys.length):
        return None
    return _Cond(pads=(base,), lengths=frozenset({(KV_AXIS, keys.length)}))
