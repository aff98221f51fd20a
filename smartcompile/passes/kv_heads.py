"""Undo GQA head repetition (repeat_kv / repeat_interleave) so the op sees kv heads."""
from __future__ import annotations

from typing import Optional

from torch.fx import Node

from .normalize import canon, meta_tensor, norm_dim


def unrepeat_kv(node: Node) -> tuple[Node, int]:
    """(tensor before repetition, repeats); (node, 1) when `node` is not a head repetition."""
    t = meta_tensor(node)
    if t is None or t.dim() != 4:
        return node, 1
    c = canon(node)
    if c is None:
        return node, 1
    if c.op == "repeat_interleave":
        reps, dim = c.get("repeats"), norm_dim(c.get("dim"), 4)
        src = meta_tensor(c.get("input"))
        if isinstance(reps, int) and dim == 1 and src is not None and src.dim() == 4:
            return c.get("input"), reps
        return node, 1
    if c.op == "reshape":
        inner = canon(c.get("input")) if isinstance(c.get("input"), Node) else None
        if inner is None or inner.op != "expand":
            return node, 1
        e = meta_tensor(inner.node)
        src = _unsqueezed_source(inner.get("input"))
        s = meta_tensor(src) if src is not None else None
        if e is None or s is None or e.dim() != 5 or s.dim() != 4:
            return node, 1
        b, hkv, n, sl, d = e.shape
        if tuple(s.shape) == (b, hkv, sl, d) and tuple(t.shape) == (b, hkv * n, sl, d):
            return src, int(n)
    return node, 1


def _unsqueezed_source(node) -> Optional[Node]:
    """x from x[:, :, None, :, :] or x.unsqueeze(2)."""
    c = canon(node) if isinstance(node, Node) else None
    if c is None:
        return None
    if c.op == "unsqueeze" and norm_dim(c.get("dim"), 5) == 2:
        return c.get("input")
    if c.op == "getitem":
        idx = c.get("index")
        if isinstance(idx, tuple) and idx.count(None) == 1 and idx.index(None) == 2:
            rest = [i for i in idx if i is not None and i is not Ellipsis]
            if all(isinstance(i, slice) and i == slice(None) for i in rest):
                return c.get("input")
    return None
