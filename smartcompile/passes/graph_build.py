"""Adding nodes to a Dynamo graph with the metadata later stages read: the fake example value
(shapes and dtypes for the matchers and the rewrite) and the module stack (layer names)."""
from __future__ import annotations

from typing import Optional

from torch._subclasses.fake_tensor import FakeTensor
from torch.fx import Node
from torch.fx.node import map_aggregate

from .normalize import meta_value

_META_KEYS = ("nn_module_stack", "stack_trace", "source_fn_stack")


def add_node(graph, like: Node, kind: str, target, args: tuple, kwargs: Optional[dict] = None) -> Node:
    """graph.call_function/call_method(target, args, kwargs) at the current insertion point, with
    `like`'s module stack and an example value computed in the graph's fake mode."""
    kwargs = kwargs or {}
    node = graph.call_function(target, args, kwargs) if kind == "function" else graph.call_method(target, args, kwargs)
    for key in _META_KEYS:
        if key in like.meta:
            node.meta[key] = like.meta[key]
    fake = lambda a: meta_value(a) if isinstance(a, Node) else a
    fake_args, fake_kwargs = map_aggregate(args, fake), map_aggregate(kwargs, fake)
    # the fake mode the graph's example values live in (not the ambient tracing context's)
    found = []
    map_aggregate((fake_args, fake_kwargs), lambda a: found.append(a) if isinstance(a, FakeTensor) else None)
    if found:
        with found[0].fake_mode:
            node.meta["example_value"] = (target(*fake_args, **fake_kwargs) if kind == "function"
                                          else getattr(fake_args[0], target)(*fake_args[1:], **fake_kwargs))
    return node
