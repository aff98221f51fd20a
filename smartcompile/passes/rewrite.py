"""Replace one attention site by a single torch.ops.smartattn.attention call."""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.fx import GraphModule, Node

from .normalize import canon, is_inplace, meta_tensor, meta_value
from .site import AttentionSite

_META_KEYS = ("nn_module_stack", "stack_trace", "source_fn_stack")
_PURE_TARGETS = {torch.ones, torch.ones_like, torch.full, torch.tensor, torch.arange, torch.zeros, torch.zeros_like}


def _new(graph, site: AttentionSite, kind: str, target, args: tuple) -> Node:
    node = graph.call_function(target, args) if kind == "function" else graph.call_method(target, args)
    for key in _META_KEYS:
        if key in site.output.meta:
            node.meta[key] = site.output.meta[key]
    fake_args = [meta_value(a) if isinstance(a, Node) else a for a in args]
    # the fake mode the graph's example values live in (not the ambient tracing context's)
    mode = next((a.fake_mode for a in fake_args if isinstance(a, FakeTensor)), None)
    if mode is not None:
        with mode:
            node.meta["example_value"] = target(*fake_args) if kind == "function" else getattr(fake_args[0], target)(*fake_args[1:])
    return node


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


def rewrite_site(gm: GraphModule, site: AttentionSite, backend: str, implementation: str, params: str) -> Node:
    graph = gm.graph
    spec = site.spec
    with graph.inserting_before(site.output):
        q, k, v = site.q, site.k, site.v
        if site.k_transposed:
            k = _new(graph, site, "method", "transpose", (k, -2, -1))
        mask = _mask_node(graph, site)
        if site.rank == 3:
            q, k, v = (_new(graph, site, "method", "unsqueeze", (t, 0)) for t in (q, k, v))
            if mask is not None and meta_tensor(mask).dim() == 3:
                mask = _new(graph, site, "method", "unsqueeze", (mask, 0))
        op_args = (q, k, v, mask, site.is_causal, float(spec.effective_scale), backend, implementation, params, site.layer)
        out = _new(graph, site, "function", torch.ops.smartattn.attention.default, op_args)
        if site.masked_rows is not None and mask is not None:
            out = _keep_masked_rows(graph, site, out, mask, v)
        if site.rank == 3:
            out = _new(graph, site, "method", "squeeze", (out, 0))
        want = meta_tensor(site.output)
        if want is not None and want.dtype != spec.dtype:
            out = _new(graph, site, "method", "to", (out, want.dtype))
    site.output.replace_all_uses_with(out)
    _erase_dead([site.output] + list(reversed(site.chain)), graph)
    return out


def _keep_masked_rows(graph, site: AttentionSite, out: Node, mask: Node, v: Node) -> Node:
    """Rows whose every key is masked: the op gives 0 (as SDPA); eager gives NaN (softmax of
    all -inf) or, for a finite fill value, equal weights on every key (the mean of V)."""
    if meta_tensor(mask).dtype == torch.bool:
        live = _new(graph, site, "method", "any", (mask, -1, True))
    else:
        dead = _new(graph, site, "function", torch.isneginf, (mask,))
        live = _new(graph, site, "function", torch.logical_not, (_new(graph, site, "method", "all", (dead, -1, True)),))
    if site.masked_rows == "nan":
        return _new(graph, site, "function", torch.where, (live, out, float("nan")))
    mean_v = _new(graph, site, "method", "mean", (v, -2, True))
    hq, hkv = meta_tensor(out).shape[1], meta_tensor(v).shape[1]
    if hq != hkv:
        mean_v = _new(graph, site, "method", "repeat_interleave", (mean_v, hq // hkv, 1))
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
