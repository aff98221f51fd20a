"""AttentionSpec of a site, from Dynamo's fake tensors (symbolic sizes read by their hint)."""
from __future__ import annotations

import torch

from ..spec import AttentionSpec
from .normalize import meta_tensor
from .site import AttentionSite


def _size(x) -> int:
    if isinstance(x, torch.SymInt):
        hint = x.node.hint
        return int(hint) if hint is not None else -1
    return int(x)


def spec_from_site(site: AttentionSite) -> AttentionSpec:
    q, k, v = meta_tensor(site.q), meta_tensor(site.k), meta_tensor(site.v)
    qs, ks, vs = [_size(s) for s in q.shape], [_size(s) for s in k.shape], [_size(s) for s in v.shape]
    kv_len = ks[-1] if site.k_transposed else ks[-2]
    if site.rank == 3:
        batch, hq, hkv = 1, qs[0], ks[0]
    else:
        batch, hq, hkv = qs[0], qs[1], ks[1]
    if site.is_causal:
        kind = "causal"
    elif not site.masks:
        kind = "none"
    elif len(site.masks) == 1 and site.masks[0].kind in ("keep", "drop"):
        kind = "bool"
    else:
        kind = "additive"
    grad = any(t is not None and t.requires_grad for t in (q, k, v)) or any(
        (mt := meta_tensor(m.node)) is not None and mt.requires_grad for m in site.masks
    )
    return AttentionSpec(
        batch=batch, q_heads=hq, kv_heads=hkv, q_len=qs[-2], kv_len=kv_len, head_dim=qs[-1], v_head_dim=vs[-1],
        dtype=q.dtype, device=str(q.device), mask_kind=kind,
        causal_alignment="top_left" if site.is_causal else None, dropout=site.dropout, scale=site.scale,
        requires_grad=grad,
    )
