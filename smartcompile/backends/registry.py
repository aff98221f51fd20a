"""The registry of backends, and selection along the fallback chain with every reason kept."""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..errors import UnknownNameError, UnsupportedError
from ..spec import AttentionSpec
from .base import Backend, Implementation
from .flash import FLASH
from .sage import SAGE
from .sparge import SPARGE
from .steps import Step, one_line_reason

# Every backend, by name. A new family registers itself here (register); nothing else names it.
BACKENDS: dict[str, Backend] = {b.name: b for b in (FLASH, SAGE, SPARGE)}
AUTO_MODES = ("measure", "static")  # measure: time candidates on this GPU; static: priority + AutoGates
RESERVED_NAMES = ("auto", "off")  # policy words that are not backends


def register(backend: Backend) -> Backend:
    """Make `backend` known to policies, auto, explain and the profiler."""
    if backend.name in BACKENDS or backend.name in RESERVED_NAMES:
        raise ValueError(f"register: backend name {backend.name!r} is taken")
    BACKENDS[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    get_backend(name)
    del BACKENDS[name]


def priority_order() -> tuple[Backend, ...]:
    """Highest auto priority first: auto's seed order, and the fallback chain (a backend that
    cannot run a spec hands it to the next one)."""
    return tuple(sorted(BACKENDS.values(), key=lambda b: -b.auto_priority))


def exact_baseline() -> str:
    """The exact family every approximation is measured against (and "off" falls back to in a
    shared graph): the exact backend that auto tries last."""
    exact = [b for b in priority_order() if b.exact]
    if not exact:
        raise UnsupportedError("no exact backend is registered")
    return exact[-1].name


@dataclasses.dataclass(frozen=True)
class Selection:
    backend: str
    implementation: str
    params: dict
    records: tuple[Step, ...]  # every rejection on the way, then the choice
    timings: tuple = ()  # ((label, ms), ...) behind a measured auto choice

    @property
    def steps(self) -> tuple[str, ...]:
        """The records as text, one line each."""
        return tuple(str(r) for r in self.records)

    def reason(self, rule: str, requested: str) -> str:
        """One line: the rule, what it asked for, what runs and the most telling reason why."""
        return one_line_reason(rule, requested, self.records)


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnknownNameError(f"backend: {name!r} is not one of {list(BACKENDS)}") from None


def get_implementation(backend: str, implementation: str) -> Implementation:
    for impl in get_backend(backend).implementations:
        if impl.name == implementation:
            return impl
    raise UnknownNameError(f"implementation: {implementation!r} is not one of backend {backend!r}'s")


def _first_capable(backend: Backend, spec: AttentionSpec, params: dict, steps: list,
                   auto: bool) -> Optional[Implementation]:
    for impl in backend.implementations:
        reasons, outcome = impl.not_supported_reasons(spec, params), "unsupported"
        if not reasons and auto and not impl.auto_eligible:
            reasons, outcome = ["reference numerics; auto picks only fast implementations"], "not_auto"
        if not reasons and auto and impl.auto_gate is not None:
            reasons, outcome = impl.auto_gate.reasons(spec), "gated"
        if not reasons:
            return impl
        steps.append(Step(backend.name, impl.name, outcome, tuple(reasons)))
    return None


def _measured_auto(spec: AttentionSpec) -> Selection:
    """auto on CUDA: time every capable, auto-eligible implementation (cached) and pick by
    auto_timing.choose. AutoGates are static stand-ins for this, so they do not apply."""
    from .auto_timing import Candidate, measured_choice

    steps: list[Step] = []
    candidates = []
    for be in priority_order():
        if be.not_timed_reason is not None:
            steps.append(Step(be.name, "", "not_timed", (be.not_timed_reason,)))
            continue
        resolved = be.resolve_params({}, spec)
        for impl in be.implementations:
            reasons, outcome = impl.not_supported_reasons(spec, resolved), "unsupported"
            if not reasons and not impl.auto_eligible:
                reasons, outcome = ["not auto-eligible (reference numerics or measured slow)"], "not_auto"
            if reasons:
                steps.append(Step(be.name, impl.name, outcome, tuple(reasons)))
            else:
                candidates.append(Candidate(be.name, impl.name, resolved, impl.run))
    choice, times, why = measured_choice(spec, candidates)
    shown = ", ".join(f"{label} {ms:.3f} ms" for label, ms in sorted(times.items(), key=lambda kv: kv[1]))
    steps.append(Step("", "", "measured", (f"measured on this GPU: {shown}",)))
    steps.append(Step(choice.backend, choice.implementation, "chosen", (why,)))
    return Selection(choice.backend, choice.implementation, dict(choice.params), tuple(steps),
                     tuple(sorted(times.items(), key=lambda kv: kv[1])))


def select(spec: AttentionSpec, backend: str, params: Optional[dict] = None, auto_mode: str = "measure") -> Selection:
    """The implementation that will run `spec` for a decision (backend name + params).

    `backend` is a name of BACKENDS or "auto". Falls back along priority_order(); params that the
    next backend does not take are dropped, and the drop is one of the steps. `auto_mode`
    "measure" times the candidates on CUDA devices (see auto_timing); "static" uses the seed
    priority and the implementations' AutoGates.
    """
    if auto_mode not in AUTO_MODES:
        raise UnknownNameError(f"auto_mode: {auto_mode!r} is not one of {list(AUTO_MODES)}")
    params = dict(params or {})
    steps: list[Step] = []
    auto = backend == "auto"
    if auto and auto_mode == "measure" and spec.device_type == "cuda":
        return _measured_auto(spec)
    chain = priority_order()
    if auto:
        params = {}
    elif backend in BACKENDS:
        chain = chain[chain.index(BACKENDS[backend]):]
    else:
        raise UnknownNameError(f"backend: {backend!r} is not one of {list(BACKENDS) + ['auto']}")
    for be in chain:
        name = be.name
        resolved = be.resolve_params({k: v for k, v in params.items() if k in be.params}, spec)
        impl = _first_capable(be, spec, resolved, steps, auto)
        if impl is None:
            continue
        dropped = sorted(k for k in params if k not in be.params)
        if dropped:
            steps.append(Step(name, "", "dropped", (f"parameters {dropped} do not apply and were dropped",)))
        steps.append(Step(name, impl.name, "chosen"))
        return Selection(name, impl.name, resolved, tuple(steps))
    raise UnsupportedError(f"no implementation can run {spec.short()}: " + " | ".join(map(str, steps)))
