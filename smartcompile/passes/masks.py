"""Mask helpers: fill values, and recognising a top-left causal mask built with tril/triu."""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch
from torch.fx import Node
from torch.fx.experimental.symbolic_shapes import guard_float, guard_int

from .normalize import canon, is_cast, meta_tensor

# masked_fill / where values at or below this mean "masked out" (-inf, finfo.min, -1e9, -1e4)
MASK_FILL_LIMIT = -1e4


def literal_number(value: Any) -> Optional[float]:
    """A Python number, or the value of torch.full([], x) / torch.tensor(x) in the graph."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Node) and value.op == "call_function":
        if value.target is torch.full and value.args and tuple(value.args[0]) == () and len(value.args) > 1:
            return literal_number(value.args[1])
        if value.target is torch.tensor and value.args:
            return literal_number(value.args[0])
    return None


def symbolic_scalar(value: Any) -> Optional[Union[torch.SymFloat, torch.SymInt]]:
    """The symbolic value of a scalar computed from symbolic sizes (e.g. q.shape[-1] ** -0.5 under
    dynamic=True), without guarding on it; None for anything else."""
    if not isinstance(value, Node):
        return None
    v = value.meta.get("example_value", value.meta.get("val"))
    return v if isinstance(v, (torch.SymFloat, torch.SymInt)) else None


def symbolic_hint(value: Union[torch.SymFloat, torch.SymInt]) -> Optional[float]:
    """The example value behind a symbolic scalar, read without a guard (None if it has none)."""
    hint = value.node.hint
    return None if hint is None else float(hint)


def concrete_number(value: Union[torch.SymFloat, torch.SymInt]) -> float:
    """Made concrete with a guard: a call with other sizes recompiles instead of reusing a wrong constant."""
    return guard_float(value) if isinstance(value, torch.SymFloat) else float(guard_int(value))


def is_mask_fill(value: Any) -> bool:
    x = literal_number(value)
    return x is not None and (x <= MASK_FILL_LIMIT or math.isinf(x) and x < 0)


def _is_ones(node: Any) -> bool:
    if not isinstance(node, Node) or node.op not in ("call_function", "call_method"):
        return False
    t = node.target
    if t in (torch.ones, torch.ones_like) or t in ("new_ones",):
        return True
    if t is torch.full and len(node.args) > 1:
        return literal_number(node.args[1]) == 1.0
    return False


def causal_polarity(node: Any, q_len: int, kv_len: int) -> Optional[str]:
    """"keep" if `node` is True exactly on and below the diagonal of a (q_len, kv_len) grid
    (top-left alignment), "drop" if it is True exactly above it; None otherwise."""
    if not isinstance(node, Node):
        return None
    t = meta_tensor(node)
    if t is None or t.dim() < 2 or tuple(t.shape[-2:]) != (q_len, kv_len) or any(s != 1 for s in t.shape[:-2]):
        return None
    flip = False
    cur = node
    while True:
        c = canon(cur)
        if c is None:
            return None
        if is_cast(c):
            cur = c.get("input")
            continue
        if c.op == "logical_not":
            flip, cur = not flip, c.get("input")
            continue
        if c.op == "eq" and literal_number(c.get("other")) == 0.0:
            flip, cur = not flip, c.get("input")
            continue
        if c.op == "getitem" and _is_top_left_slice(c.get("index")):
            cur = c.get("input")
            continue
        if c.op in ("tril", "triu") and _is_ones(c.get("input")):
            diag = c.get("diagonal")
            if c.op == "tril" and diag == 0:
                return "drop" if flip else "keep"
            if c.op == "triu" and diag == 1:
                return "keep" if flip else "drop"
        return None


def _is_top_left_slice(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    for i in items:
        if i is None or i is Ellipsis:
            continue
        if not isinstance(i, slice) or i.step not in (None, 1) or i.start not in (None, 0):
            return False
    return True
