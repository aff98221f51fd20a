"""Hand-written attention: softmax(scale * q @ k^T + mask) @ v, in its many spellings.

Matching starts at each softmax over the last dim, walks forward through casts and dropout to
the P @ V product, and backward through casts, scales and masks to the Q @ K^T product.
Every intermediate must be used only inside the pattern, or the site is not rewritten.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Optional

import torch
from torch.fx import Node

from .kv_heads import unrepeat_kv
from .masks import causal_polarity, is_mask_fill, literal_number, symbolic_number
from .normalize import Canon, canon, is_cast, is_inplace, meta_tensor, ndim, norm_dim
from .site import AttentionSite, MaskTerm


@dataclasses.dataclass
class _Peel:
    scale: float = 1.0
    masks: list = dataclasses.field(default_factory=list)
    chain: list = dataclasses.field(default_factory=list)
    spelled: list = dataclasses.field(default_factory=list)


def _positive_scalar(x) -> Optional[float]:
    v = literal_number(x)
    if v is None:
        v = symbolic_number(x)
    return v if v is not None and v > 0 else None


def _parse_einsum(eq: str):
    """'bhqd,bhkd->bhqk' -> (lhs operand strings, output) with '...' as one symbol."""
    eq = eq.replace(" ", "").replace("...", "#")
    if "->" not in eq:
        return None
    lhs, out = eq.split("->")
    ops = lhs.split(",")
    return (ops, out) if len(ops) == 2 else None


def _einsum_qk_form(c: Canon) -> Optional[bool]:
    """None if not Q K^T; else whether the second operand is pre-transposed (..., D, Sk)."""
    parsed = _parse_einsum(c.get("equation"))
    if parsed is None:
        return None
    (a, b), o = parsed
    if not (len(a) == len(b) == len(o) >= 3 and a[:-2] == b[:-2] == o[:-2]):
        return None
    i, ch = a[-2], a[-1]
    if b[-1] == ch and o[-2:] == i + b[-2] and len({i, ch, b[-2]}) == 3:
        return False
    if b[-2] == ch and o[-2:] == i + b[-1] and len({i, ch, b[-1]}) == 3:
        return True
    return None


def _einsum_pv_form(c: Canon) -> bool:
    parsed = _parse_einsum(c.get("equation"))
    if parsed is None:
        return False
    (a, b), o = parsed
    return len(a) == len(b) == len(o) >= 3 and a[:-2] == b[:-2] == o[:-2] and b[-2] == a[-1] and o[-2:] == a[-2] + b[-1] and len({a[-2], a[-1], b[-1]}) == 3


def _pv_of(node: Node, user: Node) -> bool:
    c = canon(user)
    if c is None:
        return False
    if c.op == "matmul":
        return c.get("input") is node and c.get("other") is not node
    if c.op == "einsum":
        ops = c.get("operands")
        return len(ops) == 2 and ops[0] is node and _einsum_pv_form(c)
    return False


def _forward(node: Node, path: list):
    """Yield (pv node, path of casts/dropouts) reachable from the probabilities `node`."""
    for user in node.users:
        c = canon(user)
        if _pv_of(node, user):
            yield user, path
        elif is_cast(c) or (c is not None and c.op == "dropout" and c.get("input") is node):
            yield from _forward(user, path + [user])


def _peel(node, st: _Peel, outer: float) -> Optional[tuple[Node, _Peel]]:
    """Walk from the softmax input back to the Q K^T product. `outer` = scale applied after."""
    if not isinstance(node, Node):
        return None
    c = canon(node)
    if c is None:
        return None
    if c.op in ("matmul", "baddbmm") or (c.op == "einsum" and _einsum_qk_form(c) is not None):
        return node, st
    st.chain.append(node)
    if is_cast(c):
        return _peel(c.get("input"), st, outer)
    if c.op == "mul":
        for a, b in ((c.get("input"), c.get("other")), (c.get("other"), c.get("input"))):
            s = _positive_scalar(b)
            if s is not None:
                st.scale *= s
                st.spelled.append("mul")
                return _peel(a, st, outer * s)
        return None
    if c.op == "div":
        s = _positive_scalar(c.get("other"))
        if s is None or c.get("rounding_mode") is not None:
            return None
        st.scale /= s
        st.spelled.append("div")
        return _peel(c.get("input"), st, outer / s)
    if c.op == "add" and c.get("alpha") == 1:
        a, b = c.get("input"), c.get("other")
        # x.add_(m) / x += m writes into x: only x can be the scores
        orders = ((a, b),) if is_inplace(node) else ((a, b), (b, a))
        for scores, mask in orders:
            mt, out = meta_tensor(mask), meta_tensor(node)
            if isinstance(mask, Node) and mt is not None and out is not None:
                # a bool / integer tensor added to the scores is arithmetic (+1 where True), not a keep-mask
                cast = None if mt.dtype == out.dtype else out.dtype
                trial = copy.copy(st)
                trial.masks, trial.chain = st.masks + [MaskTerm(mask, "additive", outer, cast_to=cast)], list(st.chain)
                trial.spelled = st.spelled + ["add"]
                found = _peel(scores, trial, outer)
                if found is not None:
                    return found
        return None
    if c.op == "masked_fill" and is_mask_fill(c.get("value")) and isinstance(c.get("mask"), Node):
        st.masks.append(MaskTerm(c.get("mask"), "drop", fill=_fill_in(c.get("value"), node)))
        st.spelled.append("masked_fill")
        return _peel(c.get("input"), st, outer)
    if c.op == "where" and isinstance(c.get("condition"), Node):
        cond, a, b = c.get("condition"), c.get("input"), c.get("other")
        if is_mask_fill(b):
            st.masks.append(MaskTerm(cond, "keep", fill=_fill_in(b, node)))
            st.spelled.append("where")
            return _peel(a, st, outer)
        if is_mask_fill(a):
            st.masks.append(MaskTerm(cond, "drop", fill=_fill_in(a, node)))
            st.spelled.append("where")
            return _peel(b, st, outer)
    return None


def _fill_in(value, node: Node) -> float:
    """The fill value as the scores hold it: -1e9 in fp16 is -inf, finfo(fp32).min stays finite."""
    x = literal_number(value)
    out = meta_tensor(node)
    if x is None or out is None or not out.is_floating_point():
        return float("-inf")
    return float(torch.tensor(x, dtype=torch.float64).to(out.dtype).item())


def _k_from_transposed(kt: Node, rank: int) -> tuple[Node, bool]:
    """(K, False) when `kt` is a transpose of K's last two dims, else (kt, True)."""
    c = canon(kt)
    if c is not None and c.op == "transpose":
        dims = {norm_dim(c.get("dim0"), rank), norm_dim(c.get("dim1"), rank)}
        if dims == {rank - 2, rank - 1}:
            return c.get("input"), False
    if c is not None and c.op == "permute":
        sizes = [norm_dim(d, rank) for d in c.get("sizes")]
        if sizes == list(range(rank - 2)) + [rank - 1, rank - 2]:
            return c.get("input"), False
    return kt, True


def _fold_scalar(node: Node, user: Node) -> tuple[Node, float]:
    """Fold q * c, q / c (used only by `user`) into the scale."""
    factor = 1.0
    while isinstance(node, Node) and len(node.users) == 1 and user in node.users:
        c = canon(node)
        if c is None or c.op not in ("mul", "div") or is_inplace(node):  # q.mul_(c) stays: it is a side effect
            break
        if c.op == "mul":
            pair = next(((a, s) for a, b in ((c.get("input"), c.get("other")), (c.get("other"), c.get("input")))
                         if (s := _positive_scalar(b)) is not None and isinstance(a, Node)), None)
        else:
            s = _positive_scalar(c.get("other"))
            pair = (c.get("input"), 1.0 / s) if s is not None and c.get("rounding_mode") is None else None
        if pair is None:
            break
        user, node = node, pair[0]
        factor *= pair[1]
    return node, factor


def match_softmax(sm: Node) -> Optional[AttentionSite]:
    """The attention site around softmax node `sm`, or None if it is not attention."""
    c = canon(sm)
    rank = ndim(c.get("input"))
    if rank is None or rank < 3 or norm_dim(c.get("dim"), rank) != rank - 1:
        return None
    pv, post = next(_forward(sm, []), (None, None))
    if pv is None:
        return None
    peeled = _peel(c.get("input"), _Peel(), 1.0)
    if peeled is None:
        return None
    qk, st = peeled
    qc = canon(qk)
    site = AttentionSite(pattern="", output=pv, q=None, k=None, v=None, core=[qk, sm, pv])
    chain_inner = [qk] + st.chain[::-1] + [sm] + post  # everything between Q K^T and P V
    forms = []
    if qc.op == "einsum":
        q, kt = qc.get("operands")
        pre = _einsum_qk_form(qc)
        k, k_transposed = (_k_from_transposed(kt, rank) if pre else (kt, False))
        forms.append("einsum")
    else:
        q = qc.get("batch1") if qc.op == "baddbmm" else qc.get("input")
        kt = qc.get("batch2") if qc.op == "baddbmm" else qc.get("other")
        k, k_transposed = _k_from_transposed(kt, rank)
        forms.append(qc.op)
        if qc.op == "baddbmm":
            alpha, beta = _positive_scalar(qc.get("alpha")), literal_number(qc.get("beta"))
            if alpha is None or beta is None:
                return _reject(site, "baddbmm with non-literal alpha/beta")
            if beta != 0:  # (beta * bias + alpha * q k^T) * outer: the bias is scaled by outer too
                st.masks.append(MaskTerm(qc.get("input"), "additive", beta * st.scale))
            st.scale *= alpha
    q, q_factor = _fold_scalar(q, qk)
    k_user = kt if k is not kt else qk
    k, k_factor = _fold_scalar(k, k_user)
    scale = st.scale * q_factor * k_factor
    pvc = canon(pv)
    v = pvc.get("other") if pvc.op == "matmul" else pvc.get("operands")[1]
    forms += st.spelled + ["softmax"] + (["dropout"] if any(canon(n).op == "dropout" for n in post) else []) + [
        "einsum" if pvc.op == "einsum" else "matmul"
    ]
    site.pattern = "/".join(f for i, f in enumerate(forms) if i == 0 or f != forms[i - 1])
    site.q, site.k, site.v, site.k_transposed, site.scale = q, k, v, k_transposed, scale
    site.masks, site.chain, site.rank = st.masks, chain_inner, rank

    # dropout in training mode changes the random stream: leave such sites alone
    for n in post:
        dc = canon(n)
        if dc.op == "dropout":
            p, training = dc.get("p"), dc.get("training")
            if not isinstance(p, (int, float)) or not isinstance(training, bool):
                return _reject(site, "dropout with non-literal p/training")
            if training and p > 0:
                site.dropout = float(p)
                return _reject(site, f"dropout p={p} in training mode (left to Inductor)")
    inside = set(chain_inner) | {pv}  # uses inside the pattern (e.g. type_as(scores)) are replaced too
    for node in chain_inner:
        others = [u for u in node.users if u not in inside]
        if others:
            what = "attention probabilities" if chain_inner.index(node) >= chain_inner.index(sm) else "attention scores"
            return _reject(site, f"{what} ({node.name}) also used by {', '.join(u.name for u in others)}")
    if rank not in (3, 4):
        return _reject(site, f"rank {rank} attention (only 3-D and 4-D are rewritten)")
    return _finish_kv_and_causal(site)


def _reject(site: AttentionSite, why: str) -> AttentionSite:
    site.rejected = why
    return site


def _finish_kv_and_causal(site: AttentionSite) -> AttentionSite:
    """Shared by every matcher: undo GQA repetition, detect a causal mask, check dtypes."""
    if site.rank == 4 and not site.k_transposed:
        k0, rk = unrepeat_kv(site.k)
        v0, rv = unrepeat_kv(site.v)
        if rk == rv and rk > 1:
            site.k, site.v = k0, v0
            site.pattern += "/repeat_kv"
    qt, vt = meta_tensor(site.q), meta_tensor(site.v)
    kt = meta_tensor(site.k)
    if qt is None or kt is None or vt is None:
        return _reject(site, "q/k/v without tensor metadata")
    if not (qt.dtype == kt.dtype == vt.dtype) or not qt.is_floating_point():
        return _reject(site, f"q/k/v dtypes differ or are not floating ({qt.dtype}, {kt.dtype}, {vt.dtype})")
    if len(site.masks) == 1 and site.masks[0].kind in ("keep", "drop"):
        sk = kt.shape[-1] if site.k_transposed else kt.shape[-2]
        pol = causal_polarity(site.masks[0].node, qt.shape[-2], sk)
        if pol is not None and pol == site.masks[0].kind:
            site.masks, site.is_causal = [], True
            site.pattern += "/causal-tril"
    why = _operand_problem(site, qt, kt, vt) or _mutation_problem(site)
    if why is not None:
        return _reject(site, why)
    if site.pattern != "sdpa":  # SDPA's own fully-masked rows are what the op gives: 0
        why = _set_masked_rows(site)
        if why is not None:
            return _reject(site, why)
    return site


def _operand_problem(site: AttentionSite, qt, kt, vt) -> Optional[str]:
    """Why q/k/v/masks cannot be handed to the op as they are (broadcasting, ranks), or None."""
    if not (qt.dim() == kt.dim() == vt.dim() == site.rank):
        return f"q/k/v ranks differ ({qt.dim()}, {kt.dim()}, {vt.dim()}): broadcasting operands are left to Inductor"
    sk = kt.shape[-1] if site.k_transposed else kt.shape[-2]
    if site.rank == 4 and not (qt.shape[0] == kt.shape[0] == vt.shape[0] and kt.shape[1] == vt.shape[1]):
        return f"q/k/v batch or head sizes broadcast ({tuple(qt.shape)}, {tuple(kt.shape)}, {tuple(vt.shape)})"
    if site.rank == 3 and not (qt.shape[0] == kt.shape[0] == vt.shape[0]):
        return f"q/k/v batch sizes broadcast ({tuple(qt.shape)}, {tuple(kt.shape)}, {tuple(vt.shape)})"
    if vt.shape[-2] != sk:
        return f"v has {vt.shape[-2]} keys, k has {sk}"
    if site.rank == 4 and kt.shape[1] and qt.shape[1] % kt.shape[1]:
        return f"q heads ({qt.shape[1]}) are not a multiple of kv heads ({kt.shape[1]})"
    scores = tuple(qt.shape[:-1]) + (sk,)
    for m in site.masks:
        mt = meta_tensor(m.node)
        if mt is None or mt.dim() > site.rank:
            return f"mask {m.node.name} has no tensor metadata or more dims than the scores"
        for ms, ss in zip(tuple(mt.shape)[::-1], scores[::-1]):
            if ms != 1 and ms != ss:
                return f"mask {m.node.name} {tuple(mt.shape)} widens the scores {scores} by broadcasting"
    return None


def _mutation_problem(site: AttentionSite) -> Optional[str]:
    """An in-place op on q/k/v/a mask between the site's first node and its output would be read
    at a different time once the site is one op: leave such sites alone."""
    members = set(site.chain) | set(site.core)
    order = {n: i for i, n in enumerate(site.output.graph.nodes)}
    first, last = min(order[n] for n in members), order[site.output]
    for x in [site.q, site.k, site.v] + [m.node for m in site.masks]:
        for u in x.users if isinstance(x, Node) else ():
            if u not in members and is_inplace(u) and first <= order[u] < last:
                return f"{x.name} is modified in place by {u.name} inside the attention"
    return None


def _set_masked_rows(site: AttentionSite) -> Optional[str]:
    """Record what eager gives for rows whose every key is masked; None, or why it cannot be kept."""
    if not site.masks:
        return None
    finite = [m for m in site.masks if m.kind in ("keep", "drop") and math.isfinite(m.fill)]
    if finite and len(site.masks) > 1:
        return (f"masked_fill/where with the finite value {finite[0].fill:g} combined with another mask: "
                "rows it masks entirely would not keep eager's values")
    site.masked_rows = "uniform" if finite else "nan"
    return None
