"""Checks shared by every matcher, run once on a freshly built site.

Each step reads only fake-tensor metadata and the graph, and returns a new site: either refined
(K/V repetition undone, a causal mask recognised, eager's fully-masked-row value recorded) or
rejected with the reason explain shows. Nothing here changes the graph.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
from torch.fx import Node

from .._logging import logger
from .kv_heads import unrepeat_kv
from .mask_structure import recognise_mask
from .masks import causal_polarity, concrete_number
from .normalize import is_inplace, meta_tensor
from .site import AttentionSite


def finish_site(site: AttentionSite) -> AttentionSite:
    """Undo GQA repetition, detect a causal mask, then check dtypes, operand shapes, in-place
    mutations and fully masked rows; the first problem found rejects the site."""
    site = _without_kv_repeat(site)
    qt, kt, vt = meta_tensor(site.q), meta_tensor(site.k), meta_tensor(site.v)
    if qt is None or kt is None or vt is None:
        return site.rejecting("q/k/v without tensor metadata")
    if not (qt.dtype == kt.dtype == vt.dtype) or not qt.is_floating_point():
        return site.rejecting(f"q/k/v dtypes differ or are not floating ({qt.dtype}, {kt.dtype}, {vt.dtype})")
    site = _with_causal(site, qt, kt)
    why = operand_problem(site, qt, kt, vt) or mutation_problem(site) or symbolic_scale_problem(site, qt)
    if why is not None:
        return site.rejecting(why)
    return _with_masked_rows(_with_mask_structure(site))


def _with_mask_structure(site: AttentionSite) -> AttentionSite:
    """Record the mask's structure when its producer subgraph says it (informational for now)."""
    try:
        structure = recognise_mask(site.masks, site.is_causal, site.q, site.k, site.k_transposed)
    except Exception as exc:  # noqa: BLE001 - a report must never cost the site its rewrite
        logger.debug("smartattn: mask structure of %s not recognised (%s: %s)", site.output.name, type(exc).__name__, exc)
        return site
    return site if structure is None else dataclasses.replace(site, mask_structure=structure)


def _keys_of(site: AttentionSite, kt) -> int:
    return kt.shape[-1] if site.k_transposed else kt.shape[-2]


def _without_kv_repeat(site: AttentionSite) -> AttentionSite:
    """K and V expanded from fewer heads (repeat_kv) become GQA operands of the op."""
    if site.rank != 4 or site.k_transposed:
        return site
    k0, rk = unrepeat_kv(site.k)
    v0, rv = unrepeat_kv(site.v)
    if rk == rv and rk > 1:
        return dataclasses.replace(site, k=k0, v=v0, pattern=site.pattern + "/repeat_kv")
    return site


def _with_causal(site: AttentionSite, qt, kt) -> AttentionSite:
    """A lone tril/triu mask that is exactly top-left causal becomes is_causal."""
    if len(site.masks) != 1 or site.masks[0].kind not in ("keep", "drop"):
        return site
    polarity = causal_polarity(site.masks[0].node, qt.shape[-2], _keys_of(site, kt))
    if polarity is None or polarity != site.masks[0].kind:
        return site
    return dataclasses.replace(site, masks=(), is_causal=True, pattern=site.pattern + "/causal-tril")


def operand_problem(site: AttentionSite, qt, kt, vt) -> Optional[str]:
    """Why q/k/v/masks cannot be handed to the op as they are (broadcasting, ranks), or None."""
    if not (qt.dim() == kt.dim() == vt.dim() == site.rank):
        return f"q/k/v ranks differ ({qt.dim()}, {kt.dim()}, {vt.dim()}): broadcasting operands are left to Inductor"
    sk = _keys_of(site, kt)
    shapes = f"({tuple(qt.shape)}, {tuple(kt.shape)}, {tuple(vt.shape)})"
    if site.rank == 4 and not (qt.shape[0] == kt.shape[0] == vt.shape[0] and kt.shape[1] == vt.shape[1]):
        return f"q/k/v batch or head sizes broadcast {shapes}"
    if site.rank == 3 and not (qt.shape[0] == kt.shape[0] == vt.shape[0]):
        return f"q/k/v batch sizes broadcast {shapes}"
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


def _free_symbols(value) -> set:
    return set(value.node.expr.free_symbols) if isinstance(value, (torch.SymInt, torch.SymFloat)) else set()


def _is_float_input(symbol) -> bool:
    """A backed symbolic float: a Python float the graph takes as an input (torch.compile(dynamic=True) with
    specialize_float off, the default since torch 2.6, makes a module's float attribute such as its attention scale
    one). Never a size."""
    try:
        from torch.utils._sympy.symbol import SymT, symbol_is_type
    except ImportError:  # a torch without symbolic floats: none to find
        return False
    return symbol_is_type(symbol, SymT.FLOAT)


def _float_argument(graph, symbol) -> Optional[str]:
    """Where a symbolic float comes from when it may change from call to call: a call argument or something
    reached from one (`cfg.t`, `kw["t"]`) or a closure variable, by its source's name; None for the module's own
    attributes (`self.scaling`), globals, or a source the graph does not record. (Dynamo reads a float as a 0-dim
    tensor input and `.item()`s it.)"""
    for node in graph.nodes:
        value = node.meta.get("example_value", node.meta.get("val"))
        if not (isinstance(value, torch.SymFloat) and value.node.expr == symbol):
            continue
        for arg in node.all_input_nodes:
            source = getattr(arg.meta.get("grapharg"), "source", None)
            chain = [source]
            while getattr(chain[-1], "base", None) is not None:
                chain.append(chain[-1].base)
            module_attribute = any(type(x).__name__.endswith("NNModuleSource") for x in chain) \
                or getattr(chain[-1], "local_name", None) == "self"  # (L['args'][0]._modules[...] when wrapped)
            if type(chain[-1]).__name__ == "LocalSource" and not module_attribute:
                name = source.name if isinstance(getattr(source, "name", None), str) else str(source)
                return repr(name) if len(name) < 80 else repr(chain[-1].local_name)
    return None


def symbolic_scale_problem(site: AttentionSite, qt) -> Optional[str]:
    """A scale computed from symbolic values is made concrete with a guard only when it depends on the head dim
    and on float attributes alone. The head dim is guarded anyway (kernels are chosen per head dim), and a float
    attribute in an attention scale is a model's constant (`self.scaling`, symbolic under dynamic=True): guarding it
    recompiles only if the attribute changes (never reusing a wrong constant; an attribute changed on every call
    would meet Dynamo's recompile limit). A float input of the call, or any other size (a sequence length), could
    recompile per value: such a site is left to Inductor, which keeps the scale symbolic."""
    head = _free_symbols(qt.shape[-1])
    for sym in site.scale_symbols:
        extra = {s for s in _free_symbols(sym) - head if not _is_float_input(s)}
        if extra:
            return (f"the scale depends on symbolic sizes other than the head dim ({', '.join(sorted(map(str, extra)))}): "
                    "left to Inductor, which keeps it symbolic")
        arguments = sorted(filter(None, (_float_argument(site.output.graph, s) for s in _free_symbols(sym) - head
                                         if _is_float_input(s))))
        if arguments:
            return (f"the scale depends on the float input {', '.join(arguments)} (an argument of the call or a "
                    "closure variable): left to Inductor, which keeps it symbolic (a constant would recompile per "
                    "value)")
    for sym in site.scale_symbols:
        concrete_number(sym)  # guards: the head dim's value (and a float input's) is fixed for this graph
    return None


def mutation_problem(site: AttentionSite) -> Optional[str]:
    """An in-place op on q/k/v/a mask between the site's first node and its output would be read
    at a different time once the site is one op: such sites are left alone."""
    members = set(site.chain) | set(site.core)
    order = {n: i for i, n in enumerate(site.output.graph.nodes)}
    first, last = min(order[n] for n in members), order[site.output]
    for x in [site.q, site.k, site.v] + [m.node for m in site.masks]:
        for u in x.users if isinstance(x, Node) else ():
            if u not in members and is_inplace(u) and first <= order[u] < last:
                return f"{x.name} is modified in place by {u.name} inside the attention"
    return None


def _with_masked_rows(site: AttentionSite) -> AttentionSite:
    """Record what eager gives for rows whose every key is masked, or reject when it cannot be kept.
    SDPA's own value for such rows is the op's (0), so SDPA sites need nothing."""
    if not site.masks or site.pattern.startswith("sdpa"):
        return site
    finite = [m for m in site.masks if m.kind in ("keep", "drop") and math.isfinite(m.fill)]
    if finite and len(site.masks) > 1:
        return site.rejecting(f"masked_fill/where with the finite value {finite[0].fill:g} combined with another "
                              "mask: rows it masks entirely would not keep eager's values")
    return dataclasses.replace(site, masked_rows="uniform" if finite else "nan")
