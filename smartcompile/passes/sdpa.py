"""F.scaled_dot_product_attention calls, however their arguments were passed."""
from __future__ import annotations

from typing import Optional

import torch
from torch.fx import Node

from .guards import finish_site
from .masks import symbolic_hint, symbolic_scalar
from .mha import EXPANDED_FROM
from .normalize import canon, meta_tensor, ndim
from .site import AttentionSite, MaskTerm


def match_sdpa(node: Node) -> Optional[AttentionSite]:
    c = canon(node)
    q, k, v = c.get("query"), c.get("key"), c.get("value")
    mask, dropout_p = c.get("attn_mask"), _constant_float(c.get("dropout_p", 0.0))
    is_causal, scale = c.get("is_causal", False), c.get("scale")
    rank = ndim(q) or 0
    scale_symbols = ()
    sym = symbolic_scalar(scale)
    if sym is not None and symbolic_hint(sym) is not None:  # from symbolic sizes: see finish_site
        scale, scale_symbols = symbolic_hint(sym), (sym,)
    masks = ()
    if isinstance(mask, Node):
        masks = (MaskTerm(mask, "keep" if _is_bool(mask) else "additive"),)
    site = AttentionSite(
        pattern="sdpa/mha" if node.meta.get(EXPANDED_FROM) else "sdpa", output=node, q=q, k=k, v=v,
        chain=(node,), core=(node,), rank=rank, masks=masks, scale_symbols=scale_symbols,
        is_causal=is_causal if isinstance(is_causal, bool) else False,
        scale=float(scale) if isinstance(scale, (int, float)) else None,
        dropout=float(dropout_p) if isinstance(dropout_p, (int, float)) else 0.0,
    )
    if not isinstance(dropout_p, (int, float)) or not isinstance(is_causal, bool):
        return site.rejecting("dropout_p / is_causal are not literals")
    if scale is not None and not isinstance(scale, (int, float)):
        return site.rejecting("scale is not a literal")
    if dropout_p:
        return site.rejecting(f"dropout_p={dropout_p} (training-mode dropout is left to stock SDPA)")
    if rank not in (3, 4):
        return site.rejecting(f"rank {rank} attention (only 3-D and 4-D are rewritten)")
    if mask is not None and not isinstance(mask, Node):
        return site.rejecting(f"attn_mask is a constant {type(mask).__name__}")
    return finish_site(site)


def _constant_float(value):
    """A float argument as Dynamo may give it under dynamic=True: a float default (diffusers' dispatch_attention_fn
    dropout_p=0.0) read as a 0-dim tensor and `.item()`ed, a symbolic float whose expression is a constant. Its
    number then (no guard needed); anything else as it is."""
    sym = symbolic_scalar(value)
    if isinstance(sym, torch.SymFloat) and not sym.node.expr.free_symbols:
        return float(sym.node.expr)
    return value


def _is_bool(node: Node) -> bool:
    t = meta_tensor(node)
    return t is not None and t.dtype == torch.bool
