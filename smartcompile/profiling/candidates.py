"""Profiling candidates: a backend and its parameters, written like a policy rule."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..errors import PolicyError
from ..policies import Rule
from ..policies.policy import parse_rule


@dataclasses.dataclass(frozen=True)
class ProfileCandidate:
    backend: str  # sage | sparge (flash, exact, is always the baseline)
    params: Mapping[str, Any]

    @property
    def label(self) -> str:
        shown = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return self.backend + (f"[{shown}]" if shown else "")

    def rule(self) -> Rule:
        return Rule(self.backend, dict(self.params))

    @property
    def family(self) -> str:
        """Candidates of one family differ in aggressiveness only (P.V precision, sparsity)."""
        rest = {k: v for k, v in self.params.items() if k not in ("pv_precision", "sparsity_ratio", "topk", "cdf_threshold")}
        return ProfileCandidate(self.backend, rest).label


def parse_candidate(value: Any, where: str) -> ProfileCandidate:
    """A backend name, a rule object {"backend": ..., params...}, a Rule or a ProfileCandidate."""
    if isinstance(value, ProfileCandidate):
        return value
    if isinstance(value, Rule):
        value = value.to_json()
    rule = parse_rule(value, where)
    if rule.backend in ("off", "auto", "flash"):
        raise PolicyError(f"{where}: backend {rule.backend!r} is not a candidate; flash (exact) is always the "
                          "baseline; candidates are sage or sparge rules")
    return ProfileCandidate(rule.backend, dict(rule.params))


def parse_candidates(values: Any) -> list[ProfileCandidate]:
    if values is None:
        return default_candidates()
    if isinstance(values, (str, dict)) or not hasattr(values, "__iter__"):
        raise PolicyError(f"candidates: expected a list of rules, got {type(values).__name__}")
    out = [parse_candidate(v, f"candidates[{i}]") for i, v in enumerate(values)]
    if not out:
        raise PolicyError("candidates: empty list; give at least one sage or sparge rule (or None for the default ladder)")
    labels = [c.label for c in out]
    dupes = sorted({l for l in labels if labels.count(l) > 1})
    if dupes:
        raise PolicyError(f"candidates: duplicates {dupes}")
    return out


# Within a family, least to most aggressive: the sensitivity stage stops climbing a family's
# ladder at the first rung that alone breaks the budget.
SPARGE_LADDER = (0.5, 0.75)


def default_candidates() -> list[ProfileCandidate]:
    """Sage at both P.V precisions; Sparge at each sparsity, with the similarity check (blocks that
    are not self-similar are kept, so the real sparsity can be lower) and without it (forced:
    safe to try here because the profiler measures what it costs)."""
    return [
        ProfileCandidate("sage", {"pv_precision": "fp16"}),
        ProfileCandidate("sage", {"pv_precision": "fp8"}),
        *(ProfileCandidate("sparge", {"sparsity_ratio": r}) for r in SPARGE_LADDER),
        *(ProfileCandidate("sparge", {"sparsity_ratio": r, "sim_threshold": -1.0}) for r in SPARGE_LADDER),
    ]
