"""F.scaled_dot_product_attention calls, however their arguments were passed."""
from __future__ import annotations

from typing import Optional

import torch
from torch.fx import Node

from .manual import _finish_kv_and_causal, _reject
from .normalize import canon, meta_tensor, ndim
from .site import AttentionSite, MaskTerm


def match_sdpa(node: Node) -> Optional[AttentionSite]:
    c = canon(node)
    q, k, v = c.get("query"), c.get("key"), c.get("value")
    site = AttentionSite(pattern="sdpa", output=node, q=q, k=k, v=v, chain=[node], core=[node])
    rank = ndim(q)
    site.rank = rank or 0
    mask, dropout_p = c.get("attn_mask"), c.get("dropout_p", 0.0)
    is_causal, scale = c.get("is_causal", False), c.get("scale")
    if not isinstance(dropout_p, (int, float)) or not isinstance(is_causal, bool):
        return _reject(site, "dropout_p / is_causal are not literals")
    if scale is not None and not isinstance(scale, (int, float)):
        return _reject(site, "scale is not a literal")
    site.scale = None if scale is None else float(scale)
    site.is_causal = is_causal
    if dropout_p:
        site.dropout = float(dropout_p)
        return _reject(site, f"dropout_p={dropout_p} (training-mode dropout is left to stock SDPA)")
    if rank not in (3, 4):
        return _reject(site, f"rank {rank} attention (only 3-D and 4-D are rewritten)")
    if isinstance(mask, Node):
        site.masks = [MaskTerm(mask, "keep" if _is_bool(mask) else "additive")]
    return _finish_kv_and_causal(site)


def _is_bool(node: Node) -> bool:
    t = meta_tensor(node)
    return t is not None and t.dtype == torch.bool
