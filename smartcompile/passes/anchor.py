"""A parameter of the compiled frame's module, to tell at run time which module instance runs.

One compiled graph can serve several module instances (regional compilation, a graph break
inside a block): the graph's layer names are then relative to the frame (`attn1`). Dynamo
passes the frame module's parameters as graph inputs, so one of them, handed to the op, names
the running instance once its full name in the root model is known (`blocks.3.attn1.to_q.weight`
minus `attn1.to_q.weight` gives the frame `blocks.3`).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from torch.fx import GraphModule, Node

from .naming import _ROOT, normalize_module_path
from .site import AttentionSite


@dataclasses.dataclass(frozen=True)
class Anchor:
    node: Node  # the placeholder holding the parameter
    path: str  # its name relative to the frame's module, e.g. "attn1.to_q.weight"


def _frame_root(raw: str) -> Optional[str]:
    """"L['self']" from a Dynamo source name such as "L['self']._modules['attn1']"."""
    m = _ROOT.match(raw)
    return m.group(0) if m else None


def _parameter_sources(gm: GraphModule) -> list[tuple[Node, str, str]]:
    """(placeholder, frame root, relative path) for every parameter or buffer input."""
    out = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        source = getattr(node.meta.get("grapharg"), "source", None)
        name = source.name if source is not None and isinstance(getattr(source, "name", None), str) else None
        if name is None or not ("._parameters[" in name or "._buffers[" in name):
            continue
        root = _frame_root(name)
        if root is not None:
            out.append((node, root, normalize_module_path(name)))
    return out


def find_anchors(gm: GraphModule, site: AttentionSite) -> list[Anchor]:
    """Parameters of the module the site's frame runs in, those inside the attention layer
    itself first; empty when the graph has none (a function, or a module without parameters).
    The compiler takes the first one a named model names uniquely (a tied parameter names two)."""
    stack = next((n.meta.get("nn_module_stack") for n in site.core if n.meta.get("nn_module_stack")), None)
    frame = _frame_root(list(stack.values())[0][0]) if stack else None
    candidates = [Anchor(node, path) for node, root, path in _parameter_sources(gm) if frame is None or root == frame]
    layer = site.layer.split("#", 1)[0]
    inside = [a for a in candidates if layer and a.path.startswith(layer + ".")]
    return inside + [a for a in candidates if a not in inside]
