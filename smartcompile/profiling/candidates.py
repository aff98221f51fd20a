"""Profiling candidates: a backend and its parameters, written like a policy rule."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from ..backends.registry import BACKENDS, get_backend
from ..errors import PolicyError
from ..policies import Rule
from ..policies.policy import parse_rule


@dataclasses.dataclass(frozen=True)
class ProfileCandidate:
    backend: str  # an inexact backend (an exact one, flash, is always the baseline)
    params: Mapping[str, Any]

    @property
    def label(self) -> str:
        shown = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return self.backend + (f"[{shown}]" if shown else "")

    @classmethod
    def from_label(cls, label: str) -> Optional["ProfileCandidate"]:
        """The inverse of `label`, values typed by the backend's parameters (profile summaries
        name candidates by label); None for a backend, parameter or value not known here."""
        backend, _, rest = label.partition("[")
        if backend not in BACKENDS:
            return None
        specs = BACKENDS[backend].params
        params = {}
        for item in filter(None, rest.removesuffix("]").split(",")):
            key, _, text = item.partition("=")
            if key not in specs:
                return None
            kind = specs[key].kind
            try:
                params[key] = None if text == "None" else (text == "True") if kind is bool else kind(text)
            except ValueError:
                return None
        return cls(backend, params)

    def rule(self) -> Rule:
        return Rule(self.backend, dict(self.params))

    @property
    def family(self) -> str:
        """Candidates of one family differ in aggressiveness only (the backend's ladder_params:
        P.V precision, sparsity)."""
        rungs = get_backend(self.backend).ladder_params
        return ProfileCandidate(self.backend, {k: v for k, v in self.params.items() if k not in rungs}).label

    @property
    def name(self) -> str:
        """For people: 'sparge 75% forced' (the label is for files and caches)."""
        return get_backend(self.backend).candidate_name(self.params)


def _candidate_backends() -> str:
    return " or ".join(b.name for b in BACKENDS.values() if not b.exact)


def parse_candidate(value: Any, where: str) -> ProfileCandidate:
    """A backend name, a rule object {"backend": ..., params...}, a Rule or a ProfileCandidate."""
    if isinstance(value, ProfileCandidate):
        return value
    if isinstance(value, Rule):
        value = value.to_json()
    rule = parse_rule(value, where)
    if rule.by_step:
        raise PolicyError(f"{where}: per-step rules ({{\"by_step\": ...}}) are not candidates: the profiler measures "
                          f"one backend per layer; give a {_candidate_backends()} rule (a name or "
                          "{\"backend\": ..., params})")
    if rule.backend not in BACKENDS or get_backend(rule.backend).exact:
        exact = ", ".join(b.name for b in BACKENDS.values() if b.exact)
        raise PolicyError(f"{where}: backend {rule.backend!r} is not a candidate; {exact} (exact) is always the "
                          f"baseline; candidates are {_candidate_backends()} rules")
    return ProfileCandidate(rule.backend, dict(rule.params))


def parse_candidates(values: Any) -> list[ProfileCandidate]:
    if values is None:
        return default_candidates()
    if isinstance(values, (str, dict)) or not hasattr(values, "__iter__"):
        raise PolicyError(f"candidates: expected a list of rules, got {type(values).__name__}")
    out = [parse_candidate(v, f"candidates[{i}]") for i, v in enumerate(values)]
    if not out:
        raise PolicyError(f"candidates: empty list; give at least one {_candidate_backends()} rule (or None for the "
                          "default ladder)")
    labels = [c.label for c in out]
    dupes = sorted({l for l in labels if labels.count(l) > 1})
    if dupes:
        raise PolicyError(f"candidates: duplicates {dupes}")
    return out


def default_candidates() -> list[ProfileCandidate]:
    """Every backend's ladder (Backend.ladder: Sage at both P.V precisions; Sparge at each
    sparsity, with and without the similarity check)."""
    return [ProfileCandidate(b.name, dict(rung)) for b in BACKENDS.values() for rung in b.ladder]
