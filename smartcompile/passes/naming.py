"""Layer names from Dynamo's nn_module_stack: "L['self'].blocks[3].attn" -> "blocks.3.attn"."""
from __future__ import annotations

import dataclasses
import re
from typing import Optional

from torch.fx import Node

_GETATTR = re.compile(r"getattr\(([^,()]+),\s*'([^']+)'\)")
_ROOT = re.compile(r"^(?:L|G)\[['\"][^'\"]+['\"]\](?:\[\d+\])*")  # L['self'], L['args'][0], G['m']


def normalize_module_path(raw: str) -> str:
    path = raw
    while _GETATTR.search(path):
        path = _GETATTR.sub(r"\1.\2", path)
    path = _ROOT.sub("", path)
    path = re.sub(r"\.__dict__\[['\"]_modules['\"]\]", "", path)
    path = re.sub(r"\._(?:modules|parameters|buffers)\[['\"]([^'\"]+)['\"]\]", r".\1", path)
    path = re.sub(r"\[['\"]([^'\"]+)['\"]\]", r".\1", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    return path.strip(".")


def module_path(node: Node) -> Optional[str]:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    return normalize_module_path(list(stack.values())[-1][0])


def common_path(paths: list) -> str:
    parts = [p.split(".") if p else [] for p in paths]
    out = []
    for group in zip(*parts):
        if len(set(group)) != 1:
            break
        out.append(group[0])
    return ".".join(out)


def name_sites(sites: list) -> list:
    """The sites with `layer` (and `layer_note`) assigned, in graph order; stable across runs."""
    seen: dict = {}
    unnamed = 0
    named = []
    for site in sites:
        paths = [module_path(n) for n in site.core]
        known = [p for p in paths if p is not None]
        if not known:
            named.append(dataclasses.replace(
                site, layer=f"attention.{unnamed}",
                layer_note="no module path (attention in the compiled frame's own forward): named by position"))
            unnamed += 1
            continue
        name = common_path(known) or "<root>"
        count = seen.get(name, 0)
        seen[name] = count + 1
        note = f"attention number {count + 1} in module {name}" if count else ""
        named.append(dataclasses.replace(site, layer=name if count == 0 else f"{name}#{count}", layer_note=note))
    return named
