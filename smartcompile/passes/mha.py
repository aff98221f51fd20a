"""nn.MultiheadAttention: Dynamo keeps `F.multi_head_attention_forward` as one graph node.

With need_weights=False that function projects q, k, v, merges the key-padding and attention
masks into one additive mask and calls SDPA. `expand_multi_head_attention` writes those same
steps into the graph (in-projection, head split, the merged mask, SDPA, out-projection), so the
SDPA matcher then sees an ordinary SDPA call: the layer is found, named after the module and
rewritten like any other. Forms whose eager meaning this does not reproduce (weights returned,
bias_k/bias_v, add_zero_attn, static k/v, unbatched input, active dropout) are left as they are
and reported with their reason.
"""
from __future__ import annotations

import inspect
import operator
from typing import Optional

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Node

from .graph_build import add_node
from .normalize import meta_tensor
from .site import AttentionSite

_SIGNATURE = inspect.signature(F.multi_head_attention_forward)
EXPANDED_FROM = "smartattn_expanded_from"


def _why_not(a: dict, users: list) -> Optional[str]:
    query, key = meta_tensor(a["query"]), meta_tensor(a["key"])
    if query is None or key is None or meta_tensor(a["value"]) is None:
        return "q/k/v without tensor metadata"
    if query.dim() != 3:
        return f"unbatched input (rank {query.dim()}): left to stock attention"
    if a["need_weights"] is not False:
        return "need_weights=True: the attention weights are returned (pass need_weights=False to rewrite)"
    if a["bias_k"] is not None or a["bias_v"] is not None or a["add_zero_attn"] is not False:
        return "bias_k/bias_v or add_zero_attn: extra key/value rows are not rewritten"
    if a["static_k"] is not None or a["static_v"] is not None:
        return "static_k/static_v are not rewritten"
    if not isinstance(a["dropout_p"], (int, float)) or not isinstance(a["training"], bool):
        return "dropout_p / training are not literals"
    if a["training"] and a["dropout_p"] > 0:
        return f"dropout p={a['dropout_p']} in training mode (left to stock attention)"
    if not isinstance(a["num_heads"], int) or not isinstance(a["is_causal"], bool):
        return "num_heads / is_causal are not literals"
    if query.shape[-1] % a["num_heads"]:
        return f"embed dim {query.shape[-1]} is not a multiple of num_heads {a['num_heads']}"
    if a["is_causal"] and a["attn_mask"] is None:
        return "is_causal without attn_mask (eager raises)"
    for mask in ("attn_mask", "key_padding_mask"):
        if a[mask] is not None and meta_tensor(a[mask]) is None:
            return f"{mask} is not a tensor of the graph"
    if a["use_separate_proj_weight"] is not True and a["in_proj_weight"] is None:
        return "no in_proj_weight"
    for u in users:
        if not (u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0):
            return f"its result is used as a whole or its weights read ({u.name})"
    return None


def _as_additive(graph, like: Node, mask: Node, dtype: torch.dtype) -> Node:
    """MHA's masks: bool True = masked out (the opposite of SDPA's); float masks are added."""
    if meta_tensor(mask).dtype != torch.bool:
        return mask
    zeros = add_node(graph, like, "function", torch.zeros_like, (mask,), {"dtype": dtype})
    return add_node(graph, like, "method", "masked_fill", (zeros, mask, float("-inf")))


def _project(graph, like: Node, a: dict, e: int) -> tuple:
    """q, k, v = the in-projections, as F._in_projection(_packed) computes them (L/S, N, E)."""
    new = lambda kind, target, *args: add_node(graph, like, kind, target, args)
    bias = a["in_proj_bias"]
    b = [None] * 3 if bias is None else [new("function", operator.getitem, new("method", "chunk", bias, 3), i)
                                         for i in range(3)]
    if a["use_separate_proj_weight"] is True:
        weights = [a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"]]
    else:
        chunks = new("method", "chunk", a["in_proj_weight"], 3)
        weights = [new("function", operator.getitem, chunks, i) for i in range(3)]
    return tuple(new("function", F.linear, x, w, bb) for x, w, bb in zip((a["query"], a["key"], a["value"]), weights, b))


def expand_multi_head_attention(gm: GraphModule) -> list[AttentionSite]:
    """Expand every eligible F.multi_head_attention_forward node in place; return the others as
    rejected sites (so explain lists them with their reason)."""
    rejected = []
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not F.multi_head_attention_forward:
            continue
        try:
            bound = _SIGNATURE.bind(*node.args, **node.kwargs)
        except TypeError:
            continue
        bound.apply_defaults()
        a = dict(bound.arguments)
        users = list(node.users)
        why = _why_not(a, users)
        if why is not None:
            rejected.append(AttentionSite("multi_head_attention_forward", node, a["query"], a["key"], a["value"],
                                          core=(node,), chain=(node,)).rejecting(why))
            continue
        before = set(graph.nodes)
        try:
            with graph.inserting_before(node):
                out = _expanded(graph, node, a)
        except Exception as exc:  # noqa: BLE001 - never fail the user's compile: undo, leave it alone
            for added in reversed([n for n in graph.nodes if n not in before]):
                graph.erase_node(added)
            rejected.append(AttentionSite("multi_head_attention_forward", node, a["query"], a["key"], a["value"],
                                          core=(node,), chain=(node,)).rejecting(
                f"could not expand ({type(exc).__name__}: {exc})"))
            continue
        for u in users:
            u.replace_all_uses_with(out)
            graph.erase_node(u)
        graph.erase_node(node)
    return rejected


def _expanded(graph, like: Node, a: dict) -> Node:
    new = lambda kind, target, *args: add_node(graph, like, kind, target, args)
    query, key = meta_tensor(a["query"]), meta_tensor(a["key"])
    tgt_len, bsz, e = query.shape
    src_len, h = key.shape[0], a["num_heads"]
    q, k, v = _project(graph, like, a, e)
    # (L, N, E) -> (N, H, L, E/H): the same values as eager's view(L, N*H, D).transpose(0, 1)
    heads = [new("method", "permute", new("method", "view", x, n, bsz, h, e // h), 1, 2, 0, 3)
             for x, n in ((q, tgt_len), (k, src_len), (v, src_len))]
    # as eager: the is_causal hint alone (no mask) when there is no key padding, else the masks
    is_causal = a["is_causal"] and a["key_padding_mask"] is None
    mask = None
    if not is_causal:
        if a["attn_mask"] is not None:
            am = _as_additive(graph, like, a["attn_mask"], query.dtype)
            shape = (1, 1, tgt_len, src_len) if meta_tensor(am).dim() == 2 else (bsz, h, tgt_len, src_len)
            mask = new("method", "reshape", am, *shape)
        if a["key_padding_mask"] is not None:
            kpm = _as_additive(graph, like, a["key_padding_mask"], query.dtype)
            kpm = new("method", "reshape", kpm, bsz, 1, 1, src_len)
            mask = kpm if mask is None else new("function", operator.add, mask, kpm)
    attn = add_node(graph, like, "function", F.scaled_dot_product_attention, tuple(heads),
                    {"attn_mask": mask, "dropout_p": 0.0, "is_causal": is_causal})
    attn.meta[EXPANDED_FROM] = "nn.MultiheadAttention"  # the SDPA matcher names the pattern after it
    # (N, H, L, D) -> (L, N, E), then the out-projection
    merged = new("method", "reshape", new("method", "permute", attn, 2, 0, 1, 3), tgt_len, bsz, e)
    return new("function", F.linear, merged, a["out_proj_weight"], a["out_proj_bias"])
