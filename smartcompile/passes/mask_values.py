"""Symbolic values of the nodes that build a mask, and how comparisons combine them.

Indices: i (query), j (key). A comparison of positions becomes bounds on the diagonal d = i - j; of
gathered position ids, bounds on pos[i] - pos[j]; equality of gathered segment ids, a document."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from torch.fx import Node

Q_AXIS, KV_AXIS, BATCH_AXIS = -2, -1, -4  # dims of the (B, H, Sq, Sk) scores, counted from the end
FLIP = {"le": "ge", "lt": "gt", "ge": "le", "gt": "lt", "eq": "eq"}


@dataclasses.dataclass(frozen=True)
class Pos:
    """arange(length) + offset, laid along one dim (from the end) of a tensor of `rank` dims."""
    axis: int
    rank: int
    offset: int
    length: int


@dataclasses.dataclass(frozen=True)
class Tok:
    """values[batch_idx, q_idx or kv_idx] + offset of an integer (B, S) tensor (position ids, segment ids)."""
    root: Node
    axis: int
    offset: int = 0


@dataclasses.dataclass(frozen=True)
class Cond:
    """Keep where lo <= i - j <= hi (None: open), every key flag in `pads` is set, query and key carry
    the same id in each of `docs`, and plo <= pos[i] - pos[j] <= phi for the position ids `pos`."""
    lo: Optional[int] = None
    hi: Optional[int] = None
    pads: tuple = ()  # Nodes of bool (B, Sk) tensors
    lengths: frozenset = frozenset()  # (axis, length) of every position compared
    docs: tuple = ()  # Nodes of int (B, S) segment ids
    plo: Optional[int] = None
    phi: Optional[int] = None
    pos: frozenset = frozenset()  # Nodes of the position ids plo / phi compare

    def __and__(self, other: "Cond") -> "Cond":
        once = lambda a, b: tuple(dict.fromkeys(a + b))  # m & m names one padding, not two
        return Cond(max_of(self.lo, other.lo), min_of(self.hi, other.hi), once(self.pads, other.pads),
                    self.lengths | other.lengths, once(self.docs, other.docs), max_of(self.plo, other.plo),
                    min_of(self.phi, other.phi), self.pos | other.pos)

    def negated(self) -> Optional["Cond"]:
        """The complement of one half-plane is a half-plane; of anything else, not a Cond."""
        if self.pads or self.docs or self.pos or (self.lo is None) == (self.hi is None):
            return None
        if self.lo is not None:
            return Cond(hi=self.lo - 1, lengths=self.lengths)
        return Cond(lo=self.hi + 1, lengths=self.lengths)


def max_of(a, b):
    return max((x for x in (a, b) if x is not None), default=None)


def min_of(a, b):
    return min((x for x in (a, b) if x is not None), default=None)


@dataclasses.dataclass(frozen=True)
class Lin:
    """ci * i + cj * j + c over query index i and key index j."""
    ci: int
    cj: int
    c: int
    lengths: frozenset = frozenset()  # (axis, length) of the positions it was made from


def linear(v) -> Optional[Lin]:
    if isinstance(v, Lin):
        return v
    if isinstance(v, int):
        return Lin(0, 0, v)
    if isinstance(v, Pos) and v.axis in (Q_AXIS, KV_AXIS):
        q = v.axis == Q_AXIS
        return Lin(int(q), int(not q), v.offset, frozenset({(v.axis, v.length)}))
    return None


def compare(op: str, a, b) -> Optional[Cond]:
    if isinstance(a, Tok) or isinstance(b, Tok):
        return compare_tokens(op, a, b)
    la, lb = linear(a), linear(b)
    if la is None or lb is None:
        return None
    ci, cj, c = la.ci - lb.ci, la.cj - lb.cj, la.c - lb.c  # (a - b) = ci*i + cj*j + c, compared with 0
    lengths = la.lengths | lb.lengths
    if (ci, cj) == (-1, 1):  # -(i - j) + c op 0  <=>  (i - j) flipped-op c
        op = FLIP[op]
    elif (ci, cj) == (1, -1):  # (i - j) + c op 0  <=>  (i - j) op -c
        c = -c
    elif (ci == 0) != (cj == 0) and abs(ci + cj) == 1:  # one index against a number: must always hold
        axis = Q_AXIS if ci else KV_AXIS
        sizes = [n for ax, n in lengths if ax == axis]
        if len(sizes) != 1 or op == "eq":
            return None
        holds = lambda x: {"le": x <= 0, "lt": x < 0, "ge": x >= 0, "gt": x > 0}[op]
        return Cond(lengths=lengths) if holds(c) and holds((ci + cj) * (sizes[0] - 1) + c) else None
    else:
        return None
    lo, hi = bounds(op, c)
    return Cond(lo, hi, lengths=lengths)


def bounds(op: str, c: int) -> tuple:
    """(lo, hi) of x from `x op c`."""
    return {"le": (None, c), "lt": (None, c - 1), "ge": (c, None), "gt": (c + 1, None), "eq": (c, c)}[op]


def compare_tokens(op: str, a, b) -> Optional[Cond]:
    """ids[b, q] == ids[b, kv]: a document mask; pos[b, kv] <= pos[b, q] + c and the like: bounds on
    pos[q] - pos[kv] (see _positions_as_indices)."""
    if not (isinstance(a, Tok) and isinstance(b, Tok)) or a.root is not b.root or {a.axis, b.axis} != {Q_AXIS, KV_AXIS}:
        return None
    if op == "eq":
        return Cond(docs=(a.root,)) if a.offset == b.offset else None
    c = a.offset - b.offset  # (a - b) = +-(pos[q] - pos[kv]) + c, compared with 0
    if a.axis == KV_AXIS:
        op = FLIP[op]
    else:
        c = -c
    lo, hi = bounds(op, c)
    return Cond(plo=lo, phi=hi, pos=frozenset({a.root}))


def root(node: Any) -> Any:
    """The tensor behind broadcasting views (expand, contiguous), which keep every value."""
    while isinstance(node, Node) and node.target in ("expand", "contiguous") and node.args:
        node = node.args[0]
    return node
