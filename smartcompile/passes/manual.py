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

from .guards import finish_site
from .masks import MASK_FILL_LIMIT, is_mask_fill, literal_number, symbolic_hint, symbolic_scalar
from .normalize import Canon, canon, is_cast, is_inplace, meta_tensor, ndim, norm_dim
from .site import AttentionSite, MaskTerm


@dataclasses.dataclass
class _Peel:
    scale: float = 1.0
    masks: list = dataclasses.field(default_factory=list)
    chain: list = dataclasses.field(default_factory=list)
    spelled: list = dataclasses.field(default_factory=list)
    symbolic: list = dataclasses.field(default_factory=list)  # SymFloat/SymInt factors of the scale
    problem: Optional[str] = None  # attention-shaped, but not rewritten: why (the site is reported with it)

    def trial(self) -> "_Peel":
        """A copy to peel one alternative with (its lists are its own)."""
        return dataclasses.replace(self, masks=list(self.masks), chain=list(self.chain), spelled=list(self.spelled),
                                   symbolic=list(self.symbolic))


def _factor_text(x) -> str:
    v = literal_number(x)
    if v is not None:
        return f"{v:g}"
    return x.name if isinstance(x, Node) else type(x).__name__


def _effective_fill_problem(value, outer: float) -> Optional[str]:
    """Why a masked_fill / where value does not mask scores out once the scale after it is applied (None: it
    does). Eager's softmax sees value * outer: -1e4 divided by 1000 is -10, which keeps real weight."""
    x = literal_number(value)
    if x is None or math.isinf(x) or x * outer <= MASK_FILL_LIMIT:
        return None
    return (f"masked_fill/where value {x:g} is scaled by {outer:g} after it ({x * outer:g} reaches the softmax): "
            f"not a mask (at most {MASK_FILL_LIMIT:g} is)")


def _positive_scalar(x, symbolic: list) -> Optional[float]:
    """A positive literal, or the example value of a scalar from symbolic sizes (appended to
    `symbolic`: finish_site decides whether it may be made concrete with a guard)."""
    v = literal_number(x)
    if v is None:
        sym = symbolic_scalar(x)
        v = symbolic_hint(sym) if sym is not None else None
        if v is not None and v > 0:
            symbolic.append(sym)
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
        orders = ((c.get("input"), c.get("other")), (c.get("other"), c.get("input")))
        for a, b in orders:
            s = _positive_scalar(b, st.symbolic)
            if s is not None:
                st.scale *= s
                st.spelled.append("mul")
                return _peel(a, st, outer * s)
        # a factor that is not a positive constant (a learned temperature, a negative literal, a tensor): the
        # site is still reported, not rewritten. One such factor per chain: each would try both operands
        if st.problem is not None:
            return None
        for a, b in orders:
            trial = st.trial()
            trial.problem = trial.problem or f"scores multiplied by {_factor_text(b)}: not a positive constant"
            trial.spelled.append("mul")
            found = _peel(a, trial, outer)
            if found is not None:
                return found
        return None
    if c.op == "div":
        s = _positive_scalar(c.get("other"), st.symbolic)
        if s is None or c.get("rounding_mode") is not None:
            how = (f"by {_factor_text(c.get('other'))}: not a positive constant" if s is None
                   else f"with rounding_mode {c.get('rounding_mode')!r}")
            st.problem = st.problem or f"scores divided {how}"
            st.spelled.append("div")
            return _peel(c.get("input"), st, outer)
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
                trial.spelled, trial.symbolic = st.spelled + ["add"], list(st.symbolic)
                found = _peel(scores, trial, outer)
                if found is not None:
                    return found
        return None
    if c.op == "masked_fill" and is_mask_fill(c.get("value")) and isinstance(c.get("mask"), Node):
        st.masks.append(MaskTerm(c.get("mask"), "drop", fill=_fill_in(c.get("value"), node)))
        st.spelled.append("masked_fill")
        st.problem = st.problem or _effective_fill_problem(c.get("value"), outer)
        return _peel(c.get("input"), st, outer)
    if c.op == "where" and isinstance(c.get("condition"), Node):
        cond, a, b = c.get("condition"), c.get("input"), c.get("other")
        if is_mask_fill(b):
            st.masks.append(MaskTerm(cond, "keep", fill=_fill_in(b, node)))
            st.spelled.append("where")
            st.problem = st.problem or _effective_fill_problem(b, outer)
            return _peel(a, st, outer)
        if is_mask_fill(a):
            st.masks.append(MaskTerm(cond, "drop", fill=_fill_in(a, node)))
            st.spelled.append("where")
            st.problem = st.problem or _effective_fill_problem(a, outer)
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


def _fold_scalar(node: Node, user: Node, symbolic: list) -> tuple[Node, float]:
    """Fold q * c, q / c (used only by `user`) into the scale."""
    factor = 1.0
    while isinstance(node, Node) and len(node.users) == 1 and user in node.users:
        c = canon(node)
        if c is None or c.op not in ("mul", "div") or is_inplace(node):  # q.mul_(c) stays: it is a side effect
            break
        if c.op == "mul":
            pair = next(((a, s) for a, b in ((c.get("input"), c.get("other")), (c.get("other"), c.get("input")))
                         if (s := _positive_scalar(b, symbolic)) is not None and isinstance(a, Node)), None)
        else:
            s = _positive_scalar(c.get("other"), symbolic)
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
    chain_inner = [qk] + st.chain[::-1] + [sm] + post  # everything between Q K^T and P V
    forms, why = [], None
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
            alpha, beta = _positive_scalar(qc.get("alpha"), st.symbolic), literal_number(qc.get("beta"))
            if alpha is None or beta is None:
                why = (f"baddbmm with alpha {_factor_text(qc.get('alpha'))} (a positive constant is rewritten)"
                       if alpha is None else f"baddbmm with non-literal beta {_factor_text(qc.get('beta'))}")
            else:
                if beta != 0:  # (beta * bias + alpha * q k^T) * outer: the bias is scaled by outer too
                    st.masks.append(MaskTerm(qc.get("input"), "additive", beta * st.scale))
                st.scale *= alpha
    q, q_factor = _fold_scalar(q, qk, st.symbolic)
    k_user = kt if k is not kt else qk
    k, k_factor = _fold_scalar(k, k_user, st.symbolic)
    pvc = canon(pv)
    v = pvc.get("other") if pvc.op == "matmul" else pvc.get("operands")[1]
    forms += st.spelled + ["softmax"] + (["dropout"] if any(canon(n).op == "dropout" for n in post) else []) + [
        "einsum" if pvc.op == "einsum" else "matmul"
    ]
    dropout, dropout_why = _training_dropout(post)
    site = AttentionSite(
        pattern="/".join(f for i, f in enumerate(forms) if i == 0 or f != forms[i - 1]), output=pv, q=q, k=k, v=v,
        core=(qk, sm, pv), chain=tuple(chain_inner), k_transposed=k_transposed, masks=tuple(st.masks),
        scale=st.scale * q_factor * k_factor, dropout=dropout, rank=rank, scale_symbols=tuple(st.symbolic),
    )
    why = st.problem or why or dropout_why or _outside_use(chain_inner, pv, sm)
    if why is None and rank not in (3, 4):
        why = f"rank {rank} attention (only 3-D and 4-D are rewritten)"
    return site.rejecting(why) if why is not None else finish_site(site)


def _training_dropout(post: list) -> tuple[float, Optional[str]]:
    """(p, why not rewritten): dropout in training mode changes the random stream: left alone."""
    for n in post:
        dc = canon(n)
        if dc.op == "dropout":
            p, training = dc.get("p"), dc.get("training")
            if not isinstance(p, (int, float)) or not isinstance(training, bool):
                return 0.0, "dropout with non-literal p/training"
            if training and p > 0:
                return float(p), f"dropout p={p} in training mode (left to Inductor)"
    return 0.0, None


def _outside_use(chain_inner: list, pv: Node, sm: Node) -> Optional[str]:
    """Scores or probabilities used outside the pattern (e.g. attention weights returned)."""
    inside = set(chain_inner) | {pv}  # uses inside the pattern (e.g. type_as(scores)) are replaced too
    for node in chain_inner:
        others = [u for u in node.users if u not in inside]
        if others:
            what = "attention probabilities" if chain_inner.index(node) >= chain_inner.index(sm) else "attention scores"
            return f"{what} ({node.name}) also used by {', '.join(u.name for u in others)}"
    return None
