"""The steps of choosing an implementation, as records, and the one-line reason built from them.

Every rejection is kept (explain --verbose, plan.sites[i].steps); the one-line reason names,
per backend passed over, only its most telling rejection: that of the implementation that came
closest (fewest reasons), e.g. `auto -> flash/sdpa: sage needs CUDA (device is cpu)`.
"""
from __future__ import annotations

import dataclasses

# unsupported: the implementation cannot run the spec; not_auto: it can, but auto never picks it
# (reference numerics, measured slow); gated: auto uses it only where measured faster (AutoGate);
# dropped: parameters the next backend does not take; not_timed: a backend auto leaves to a
# profiled policy; measured: auto's timings on this GPU; chosen: what runs.
OUTCOMES = ("unsupported", "not_auto", "gated", "dropped", "not_timed", "measured", "chosen")
# outcomes that say why a backend was passed over, for the one-line reason
_TELLING = ("unsupported", "gated")


@dataclasses.dataclass(frozen=True)
class Step:
    backend: str
    implementation: str  # "" for a step about the whole backend (dropped, not_timed, measured)
    outcome: str  # one of OUTCOMES
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Step.outcome: {self.outcome!r} is not one of {OUTCOMES}")

    @property
    def target(self) -> str:
        return f"{self.backend}/{self.implementation}" if self.implementation else self.backend

    def __str__(self) -> str:
        text = "; ".join(self.reasons)
        if self.outcome == "chosen":
            return f"-> {self.target}" + (f" ({text})" if text else "")
        if self.outcome == "measured":
            return text
        return f"{self.target}: {text}"


def _headline(steps: list) -> str:
    """The first reason of the implementation that came closest (fewest reasons; the first on ties)."""
    closest = min(steps, key=lambda s: len(s.reasons))
    return closest.reasons[0] if closest.reasons else closest.outcome


def passed_over(steps: tuple) -> str:
    """'sage needs CUDA (device is cpu); sparge: ...' for the backends passed over before the choice,
    grouped by their headline; backends with no telling step (never auto-picked) are left out."""
    chosen = next((s for s in reversed(steps) if s.outcome == "chosen"), None)
    by_backend: dict[str, list] = {}
    for s in steps:
        if s.outcome in _TELLING and (chosen is None or s.backend != chosen.backend):
            by_backend.setdefault(s.backend, []).append(s)
    groups: dict[str, list] = {}
    for backend, rejected in by_backend.items():
        groups.setdefault(_headline(rejected), []).append(backend)
    return "; ".join(f"{', '.join(names)}: {headline}" for headline, names in groups.items())


def one_line_reason(rule: str, requested: str, steps: tuple) -> str:
    """`rule` ('policy default', "exact rule 'blocks.0.attn'") and what it led to, in one line:
    'policy default: auto -> flash/sdpa (sage: needs CUDA, device is cpu)',
    "exact rule 'x': sparge fell back to flash/sdpa (sparge, sage: head_dim 512 ...)"."""
    chosen = next(s for s in reversed(steps) if s.outcome == "chosen")
    # a measured choice is explained by its timings (they list every backend, slower ones too)
    over = "" if any(s.outcome == "measured" for s in steps) else passed_over(steps)
    if requested == "auto":
        measured = chosen.reasons[0] if chosen.reasons else ""
        why = "; ".join(x for x in (measured, over) if x)
        return f"{rule}: auto -> {chosen.target}" + (f" ({why})" if why else "")
    if chosen.backend == requested:
        return f"{rule} -> {chosen.target}"
    return f"{rule}: {requested} fell back to {chosen.target}" + (f" ({over})" if over else "")
