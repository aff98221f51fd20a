"""Which rule applies to a layer: exact path > glob > "re:" regex (first in file order) > default."""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from typing import Any, Iterable, Mapping, Optional

from .policy import Policy, Rule

_GLOB_CHARS = set("*?[")


@dataclasses.dataclass(frozen=True)
class Decision:
    backend: str  # flash | sage | sparge | auto | off
    params: Mapping[str, Any]
    reason: str
    rule: Optional[str]  # the matching key, None for the default


def _kind(key: str) -> str:
    if key.startswith("re:"):
        return "regex"
    return "glob" if _GLOB_CHARS & set(key) else "exact"


def base_layer_name(layer: str) -> str:
    """'blocks.0.attn#1' (second attention in one module) -> 'blocks.0.attn'."""
    return layer.split("#", 1)[0]


def matching_rule(layer: str, policy: Policy) -> Optional[tuple[str, Rule, str]]:
    names = [layer] if base_layer_name(layer) == layer else [layer, base_layer_name(layer)]
    for kind in ("exact", "glob", "regex"):
        for key, rule in policy.layers.items():
            if _kind(key) != kind:
                continue
            for name in names:
                if (kind == "exact" and key == name) or (kind == "glob" and fnmatch.fnmatchcase(name, key)) or (
                    kind == "regex" and re.fullmatch(key[3:], name)
                ):
                    return key, rule, kind
    return None


def resolve(layer: str, policy: Policy, step: Optional[int] = None) -> Decision:
    """The policy's decision for one layer at denoising step `step` (None: outside any step)."""
    found = matching_rule(layer, policy)
    key, rule, why = (None, policy.default, "policy default") if found is None else \
        (found[0], found[1], f"{found[2]} rule {found[0]!r}")
    r = rule.at_step(step)
    if rule.by_step:
        why += " outside any step" if step is None else f" at step {step}"
    return Decision(r.backend, dict(r.params), why, key)


def unmatched_rules(policy: Policy, layers: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Rules that match none of `layers`, each with the closest layer names."""
    layers = list(layers)
    used = {f[0] for f in (matching_rule(name, policy) for name in layers) if f is not None}
    out = []
    for key in policy.layers:
        if key not in used:
            close = difflib.get_close_matches(key.removeprefix("re:"), sorted({base_layer_name(n) for n in layers}), n=3, cutoff=0.3)
            out.append((key, close))
    return out
