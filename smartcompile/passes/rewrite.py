"""Replace one attention site by a single torch.ops.smartattn.attention call."""
from __future__ import annotations

import operator
from typing import Optional

import torch
from torch.fx import GraphModule, Node
from torch.fx.experimental.symbolic_shapes import guard_or_false

from .graph_build import add_node
from .mask_form import op_mask
from .normalize import canon, is_inplace, meta_tensor
from .site import AttentionSite

# besides what normalize.canon knows: mask builders (index comparisons, logical ops, indexing), so that a
# dense mask the op no longer reads is erased with the site (transformers' causal & padding)
_PURE_TARGETS = {torch.ones, torch.ones_like, torch.full, torch.tensor, torch.arange, torch.zeros, torch.zeros_like,
                 operator.and_, operator.or_, operator.invert, operator.le, operator.lt, operator.ge, operator.gt,
                 operator.eq, operator.ne, operator.getitem, operator.sub, operator.add, torch.logical_and,
                 torch.logical_or, torch.logical_not}


def _new(graph, site: AttentionSite, kind: str, target, args: tuple) -> Node:
    return add_node(graph, site.output, kind, target, args)


def _mask_node(graph, site: AttentionSite):
    """One mask for the op: a bool keep-mask, an additive float mask, or None."""
    terms = []
    for term in site.masks:
        if term.kind == "keep":
            node = term.node
        elif term.kind == "drop":
            node = _new(graph, site, "function", torch.logical_not, (term.node,))
        else:
            node = term.node
            if term.cast_to is not None:  # bool/int added to scores: arithmetic, as in eager
                node = _new(graph, site, "method", "to", (node, term.cast_to))
            if term.factor != 1.0:
                node = _new(graph, site, "function", torch.mul, (node, term.factor))
        terms.append((term.kind, node))
    if not terms:
        return None
    if len(terms) == 1:
        return terms[0][1]
    total = None
    for kind, node in terms:
        if kind != "additive":
            node = _new(graph, site, "function", torch.where, (node, 0.0, float("-inf")))
        total = node if total is None else _new(graph, site, "function", torch.add, (total, node))
    return total


def rewrite_site(gm: GraphModule, site: AttentionSite, op, choice_args: tuple) -> Node:
    """Replace the site by `op(q, k, v, mask, is_causal, scale, *choice_args)` (the compiler
    picks the op: a literal choice, or one made per module instance at run time)."""
    graph = gm.graph
    spec = site.spec
    with graph.inserting_before(site.output):
        q, k, v = site.q, site.k, site.v
        if site.k_transposed:
            k = _new(graph, site, "method", "transpose", (k, -2, -1))
        is_causal, dense = site.is_causal, None
        form = op_mask(site)
        if form is None:
            mask = dense = _mask_node(graph, site)
        else:  # structure: is_causal and/or (B|1, 1, 1, Sk) key flags, no dense mask for the kernel
            is_causal, mask = form.causal, form.compact
            if form.keep is not None:
                keep = _new(graph, site, "method", "to", (form.keep, torch.bool))
                mask = _new(graph, site, "method", "unsqueeze", (_new(graph, site, "method", "unsqueeze", (keep, 1)), 1))
        if site.rank == 3:
            q, k, v = (_new(graph, site, "method", "unsqueeze", (t, 0)) for t in (q, k, v))
            if mask is not None and meta_tensor(mask).dim() == 3:
                mask = _new(graph, site, "method", "unsqueeze", (mask, 0))
        op_args = (q, k, v, mask, is_causal, float(spec.effective_scale)) + tuple(choice_args)
        out = _new(graph, site, "function", op, op_args)
        if site.masked_rows is not None and dense is not None:  # structured forms empty no row (mask_form)
            out = _keep_masked_rows(graph, site, out, dense, q, k, v)
        if site.rank == 3:
            out = _new(graph, site, "method", "squeeze", (out, 0))
        want = meta_tensor(site.output)
        if want is not None and want.dtype != spec.dtype:
            out = _new(graph, site, "method", "to", (out, want.dtype))
        if _needs_contiguous(want, meta_tensor(out)):
            out = _new(graph, site, "method", "contiguous", (out,))
    site.output.replace_all_uses_with(out)
    _erase_dead([site.output] + list(reversed(site.chain)), graph)
    return out


def _needs_contiguous(want: Optional[torch.Tensor], got: Optional[torch.Tensor]) -> bool:
    """The op stores its output token-major, as SDPA does on strided inputs; where the site's own output was
    contiguous (a matmul-softmax-matmul, SDPA on contiguous inputs), the graph after it may `view` it in ways
    only that layout allows, so the rewrite restores it (one copy, the cost the site had before)."""
    if want is None or got is None:
        return False
    return guard_or_false(want.is_contiguous()) and not guard_or_false(got.is_contiguous())


def _keep_masked_rows(graph, site: AttentionSite, out: Node, mask: Node, q: Node, k: Node, v: Node) -> Node:
    """Rows whose every key is masked: the op gives 0 (as SDPA); eager gives NaN (softmax of
    all -inf) or, for a finite fill value, equal weights on every key (the mean of V)."""
    if meta_tensor(mask).dtype == torch.bool:
        live = _new(graph, site, "method", "any", (mask, -1, True))
    else:
        dead = _new(graph, site, "function", torch.isneginf, (mask,))
        live = _new(graph, site, "function", torch.logical_not, (_new(graph, site, "method", "all", (dead, -1, True)),))
    # head counts are guarded for the spec already: concrete ints here (a raw SymInt in the graph
    # would be baked in as its example value)
    hq, hkv = int(meta_tensor(out).shape[1]), int(meta_tensor(v).shape[1])

    def per_query_head(x):  # (B, Hkv, ...) -> (B, Hq, ...)
        return x if hq == hkv else _new(graph, site, "method", "repeat_interleave", (x, hq // hkv, 1))

    if site.masked_rows == "nan":
        # NaN built from the operands, so that backward is NaN where eager's is too: V always (its
        # gradient sums the NaN rows of P), Q, K and the mask when the mask is added to the scores.
        parts = [per_query_head(_new(graph, site, "method", "sum", (v, (-2, -1), True)))]
        if any(m.kind == "additive" for m in site.masks):
            parts += [_new(graph, site, "method", "sum", (q, -1, True)),
                      per_query_head(_new(graph, site, "method", "sum", (k, (-2, -1), True))),
                      _new(graph, site, "method", "sum", (mask, -1, True))]
        total = parts[0]
        for part in parts[1:]:
            total = _new(graph, site, "function", operator.add, (total, part))
        # NaN only on the dead rows, also in backward: a plain `total * nan` would have NaN gradients
        # on live rows too (0 * nan), so the factor is 0 there
        factor = _new(graph, site, "function", torch.where, (live, 0.0, float("nan")))
        nan_rows = _new(graph, site, "function", operator.mul, (total, factor))
        nan_rows = _new(graph, site, "method", "to", (nan_rows, meta_tensor(out).dtype))
        return _new(graph, site, "function", torch.where, (live, out, nan_rows))
    mean_v = per_query_head(_new(graph, site, "method", "mean", (v, -2, True)))
    mean_v = _new(graph, site, "method", "to", (mean_v, meta_tensor(out).dtype))
    return _new(graph, site, "function", torch.where, (live, out, mean_v))


def _is_pure(node: Node) -> bool:
    if is_inplace(node):
        return False
    if node.op == "call_method":
        return not str(node.target).endswith("_") and canon(node) is not None
    if node.op == "call_function":
        return node.target in _PURE_TARGETS or (canon(node) is not None and not getattr(node.target, "__name__", "").endswith("_"))
    return False


def _erase_dead(start: list, graph) -> None:
    """Erase the site's nodes, then inputs of theirs that became unused (q scales, k transposes,
    repeat_kv, mask builders). Placeholders and impure nodes stay."""
    work, erased = list(start), set()
    while work:
        node = work.pop(0)
        if node in erased or node.users or node.op not in ("call_function", "call_method"):
            continue
        if node not in start and not _is_pure(node):
            continue
        inputs = list(node.all_input_nodes)
        graph.erase_node(node)
        erased.add(node)
        work.extend(inputs)
