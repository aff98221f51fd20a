"""AttentionSpec of a site, from Dynamo's fake tensors (symbolic sizes read by their hint)."""
from __future__ import annotations

import torch
from torch.fx.experimental.symbolic_shapes import guard_int

from ..spec import AttentionSpec
from .mask_form import op_mask
from .normalize import meta_tensor
from .site import AttentionSite


def _size(x) -> int:
    """A length or batch size: symbolic ones are read by their hint (no guard: kernels take any)."""
    if isinstance(x, torch.SymInt):
        hint = x.node.hint
        return int(hint) if hint is not None else -1
    return int(x)


def _exact(x) -> int:
    """Head counts and head dims decide the scale and which kernel can run: symbolic ones are made
    concrete with a guard, so a call with other values recompiles instead of reusing this choice."""
    return guard_int(x) if isinstance(x, torch.SymInt) else int(x)


def spec_from_site(site: AttentionSite) -> AttentionSpec:
    q, k, v = meta_tensor(site.q), meta_tensor(site.k), meta_tensor(site.v)
    heads = (1,) if site.rank == 4 else ()  # rank 3: dim 0 is batch*heads, any value runs
    pick = lambda shape: [_exact(s) if i in heads or i == len(shape) - 1 else _size(s) for i, s in enumerate(shape)]
    qs, ks, vs = pick(q.shape), pick(k.shape), pick(v.shape)
    kv_len = ks[-1] if site.k_transposed else ks[-2]
    if site.rank == 3:
        batch, hq, hkv = 1, qs[0], ks[0]
    else:
        batch, hq, hkv = qs[0], qs[1], ks[1]
    form = op_mask(site)
    if form is not None:
        kind = form.kind
    elif site.is_causal:
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
        causal_alignment="top_left" if kind in ("causal", "causal-padded") else None, dropout=site.dropout, scale=site.scale,
        requires_grad=grad,
    )
