"""How a site's mask reaches the op: as `is_causal` and/or key-padding flags where the structure allows.

transformers under torch.compile materialises `causal & attention_mask[b, kv]` as a dense (B, 1, Sq, Sk)
bool tensor. When mask_structure recovered it from the producer subgraph, the op gets `mask=None,
is_causal=True` (stock exact kernels take their causal fast path; Sage skips future blocks) or the
key flags as a (B|1, 1, 1, Sk) bool mask, with `is_causal` meaning "and causal" (the op's contract:
mask AND causal). The dense tensor is then never built for the kernel. A bool mask that is already
(B|1, 1, 1, Sk) is key padding by its shape alone. Anything else keeps the dense mask (kind bool/additive).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
from torch.fx import Node

from ..masks import And, Causal, KeyPadding
from .mask_structure import additive_fill
from .normalize import meta_tensor
from .site import AttentionSite


@dataclasses.dataclass(frozen=True)
class OpMask:
    kind: str  # the spec's mask kind: "causal", "padded" or "causal-padded"
    causal: bool
    keep: Optional[Node]  # (B|1, Sk) key flags from the structure (padded kinds); None: causal only
    compact: Optional[Node] = None  # the site's own mask, already (B|1, 1, 1, Sk) bool: used as is


def _sizes(site: AttentionSite):
    qt, kt = meta_tensor(site.q), meta_tensor(site.k)
    sk = kt.shape[-1] if site.k_transposed else kt.shape[-2]
    return qt.shape[0], qt.shape[-2], sk


def _top_left(c: Causal, sq, sk) -> bool:
    """SDPA's is_causal is top-left; bottom-right is the same only when Sq == Sk."""
    return c.alignment == "top_left" or (isinstance(sq, int) and sq == sk)


def _compact_key_mask(site: AttentionSite, batch, sk) -> Optional[Node]:
    """The site's lone keep-mask when its shape is already (B|1, 1, 1, Sk) bool."""
    if len(site.masks) != 1 or site.masks[0].kind != "keep" or site.is_causal:
        return None
    mt = meta_tensor(site.masks[0].node)
    if mt is None or mt.dtype != torch.bool or mt.dim() != 4:
        return None
    b, h, i, j = mt.shape
    return site.masks[0].node if h == 1 and i == 1 and j == sk and b in (1, batch) else None


def _finite_fill(site: AttentionSite) -> bool:
    """Some term masks with a finite value (or one not read): a fully masked row is then not empty in eager."""
    for term in site.masks:
        fill = term.fill if term.kind in ("keep", "drop") else additive_fill(term.node)
        if fill is None or math.isfinite(fill):
            return True
    return False


def op_mask(site: AttentionSite) -> Optional[OpMask]:
    """The structured form of the site's mask, or None (no mask, or it stays dense)."""
    if site.rank != 4 or not site.masks:
        return None
    batch, sq, sk = _sizes(site)
    compact = _compact_key_mask(site, batch, sk)
    if compact is not None and site.masked_rows is None:
        return OpMask("padded", False, None, compact)
    s = site.mask_structure
    if s is None:
        return None
    parts = s.parts if isinstance(s, And) else (s,)
    causal = [p for p in parts if isinstance(p, Causal)]
    pads = [p for p in parts if isinstance(p, KeyPadding)]
    if len(causal) + len(pads) != len(parts) or len(causal) > 1 or len(pads) > 1:
        return None
    if causal and not _top_left(causal[0], sq, sk):
        return None
    keep = None
    if pads:
        # a sequence's empty rows: eager's value (NaN, or a softmax over every key under a finite fill such as
        # finfo.min) follows from the dense mask, so it stays; with -inf fills SDPA gives 0, as the op
        if site.masked_rows is not None or _finite_fill(site):
            return None
        keep = pads[0].keep
        mt = meta_tensor(keep) if isinstance(keep, Node) else None
        if mt is None or mt.dim() != 2 or mt.shape[1] != sk or mt.shape[0] not in (1, batch) or mt.is_floating_point():
            return None
    kind = "causal-padded" if causal and pads else "causal" if causal else "padded"
    return OpMask(kind, bool(causal), keep)
