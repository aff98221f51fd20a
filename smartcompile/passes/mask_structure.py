"""Recover a mask's structure (causal, sliding window, key padding, documents) from the graph that
builds it.

transformers 5.x under torch.compile hands SDPA a dense bool mask built from position comparisons,
e.g. `(kv_idx <= q_idx) & (kv_idx > q_idx - window) & attention_mask[batch_idx, kv_idx]` then
`.expand(...)`; packed sequences add `seg[b, q_idx] == seg[b, kv_idx]`. mask_eval reads that
producer subgraph symbolically (never the values); this module turns the result into a masks.MaskType.
Anything else, or anything ambiguous, yields None: recognition only ever reports."""
from __future__ import annotations

import operator
from typing import Any, Optional

import torch
from torch.fx import Node

from ..masks import Causal, Document, KeyPadding, MaskType, SlidingWindow, intersect
from .mask_eval import cond_of
from .mask_values import KV_AXIS, Q_AXIS, Cond, max_of, min_of, root
from .masks import is_mask_fill, literal_number
from .normalize import meta_tensor


def recognise_mask(site_masks: tuple, is_causal: bool, q: Node, k: Node, k_transposed: bool) -> Optional[MaskType]:
    """The structure of the site's combined mask, or None when any term is not understood."""
    qt, kt = meta_tensor(q), meta_tensor(k)
    if not site_masks or qt is None or kt is None:
        return None
    sq, sk = qt.shape[-2], (kt.shape[-1] if k_transposed else kt.shape[-2])
    if not isinstance(sq, int) or not isinstance(sk, int):
        return None
    cond = Cond()
    for term in site_masks:
        c = _term_cond(term)
        if c is None:
            return None
        cond = cond & c
    if cond.pads and (qt.dim() != 4 or any(meta_tensor(p).shape[0] not in (1, qt.shape[0]) for p in cond.pads)):
        return None
    if any(n != (sq if axis == Q_AXIS else sk) for axis, n in cond.lengths if axis in (Q_AXIS, KV_AXIS)):
        return None
    doc_shapes = ((1, sq), (qt.shape[0], sq))  # segment ids per token, one row or one per sequence
    if cond.docs and (sq != sk or qt.dim() != 4 or any(tuple(meta_tensor(d).shape) not in doc_shapes for d in cond.docs)):
        return None
    if cond.pos:
        cond = _positions_as_indices(cond)
        if cond is None:
            return None
    parts = [Causal()] if is_causal else []
    structure = _structure(cond, sq, sk)
    return None if structure is None else intersect(*parts, structure)


def _positions_as_indices(cond: Cond) -> Optional[Cond]:
    """Bounds on position ids (transformers' packed sequences compare position_ids[b, q] with
    position_ids[b, kv]) equal the same bounds on indices inside a segment whose ids come from breaks
    in those positions: within one, positions step by 1. Across segments the document mask drops them."""
    (pos,) = cond.pos if len(cond.pos) == 1 else (None,)
    if pos is None or not any(_segments_follow(d, pos) for d in cond.docs):
        return None
    return Cond(max_of(cond.lo, cond.plo), min_of(cond.hi, cond.phi), cond.pads, cond.lengths, cond.docs)


def _segments_follow(seg: Node, pos: Node) -> bool:
    """seg = (diff(pos, prepend=...) != 1).cumsum(-1): a new id wherever positions do not step by 1."""
    if seg.target != "cumsum" or len(seg.args) != 2 or seg.args[1] not in (-1, 1):
        return False
    ne = seg.args[0]
    if not isinstance(ne, Node) or ne.target not in (operator.ne, torch.ne, "ne") or ne.args[1:] != (1,):
        return False
    diff = ne.args[0]
    if not isinstance(diff, Node) or diff.target is not torch.diff or len(diff.args) != 1:
        return False
    st, pt = meta_tensor(seg), meta_tensor(pos)
    return (diff.kwargs.get("dim", -1) in (-1, 1) and diff.kwargs.get("n", 1) == 1 and root(diff.args[0]) is pos
            and st is not None and pt is not None and st.shape == pt.shape)


def _term_cond(term) -> Optional[Cond]:
    if term.kind == "keep":
        return cond_of(term.node)
    if term.kind == "drop":
        c = cond_of(term.node)
        return None if c is None else c.negated()
    if not term.factor > 0:  # a negative factor would turn -inf into +inf
        return None
    return _additive_cond(term.node)  # additive: where(keep, 0, -inf) and friends


def _additive_cond(node: Any) -> Optional[Cond]:
    while isinstance(node, Node) and (node.target in ("to", "contiguous", "expand") or node.target is torch.Tensor.to):
        node = node.args[0]
    if not isinstance(node, Node):
        return None
    if node.target is torch.where and len(node.args) == 3:
        cond, yes, no = node.args
        if _is_zero(yes) and is_mask_fill(no):
            return cond_of(cond)
        if is_mask_fill(yes) and _is_zero(no):
            c = cond_of(cond)
            return None if c is None else c.negated()
    return None


def additive_fill(node: Any) -> Optional[float]:
    """The value an additive `where(keep, 0, fill)` (or `where(drop, fill, 0)`) mask puts on masked scores,
    or None when the node is not of that form."""
    while isinstance(node, Node) and (node.target in ("to", "contiguous", "expand") or node.target is torch.Tensor.to):
        node = node.args[0]
    if not isinstance(node, Node) or node.target is not torch.where or len(node.args) != 3:
        return None
    _, yes, no = node.args
    fill = no if _is_zero(yes) else yes if _is_zero(no) else None
    return literal_number(fill) if fill is not None and is_mask_fill(fill) else None


def _is_zero(value: Any) -> bool:
    """0, or a 0-d zeros tensor made in the graph (transformers' eager masks: torch.zeros(()))"""
    if isinstance(value, Node) and value.op == "call_function" and value.target is torch.zeros:
        size = value.args[0] if value.args else value.kwargs.get("size")
        return len(value.args) <= 1 and isinstance(size, (tuple, list)) and len(size) == 0
    return literal_number(value) == 0.0


def _structure(cond: Cond, sq: int, sk: int) -> Optional[MaskType]:
    lo = None if cond.lo is None or cond.lo <= -(sk - 1) else cond.lo  # i - j >= -(Sk-1) always holds
    hi = None if cond.hi is None or cond.hi >= sq - 1 else cond.hi
    parts = []
    if lo is not None or hi is not None:
        band = _band(lo, hi, sq, sk)
        if band is None:
            return None
        parts.append(band)
    parts.extend(KeyPadding(p) for p in cond.pads)
    parts.extend(Document(d, d) for d in cond.docs)
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
