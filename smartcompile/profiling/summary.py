"""ProfileSummary: the typed, versioned record of one profile run, which `smartcompile.profile`
writes into a policy's metadata["profile"] and the report reads back.

The policy schema leaves metadata free-form (a policy with any metadata still compiles);
`ProfileSummary.from_dict` is where metadata.profile is checked, and its errors (PolicyError)
name the JSON path. A summary without "format" (written before the field) is format 1: the
same layout. Numbers JSON cannot hold are stored as json_safe writes them ("inf", "-inf",
null for NaN) and read back as floats.
"""
from __future__ import annotations

import dataclasses
import math
from types import MappingProxyType
from typing import Any, Mapping, Optional

from ..backends.params import show_value
from ..backends.registry import BACKENDS
from ..errors import PolicyError
from ..policies.policy import _path
from .candidates import ProfileCandidate, parse_candidate
from .store import json_safe

PROFILE_FORMAT = "smartcompile.profile/1"
SUPPORTED_FORMATS = (PROFILE_FORMAT,)
TIMINGS = ("measured", "estimated")
_LOCAL_KEYS = ("cosine", "rel_l1", "rmse", "time_ms", "density")  # a candidate's error and time on captured inputs
_OPTIONAL_KEYS = ("created", "smartcompile", "calibration_items", "budget_cost", "timing", "candidate_rules",
                  "graph_notes")


class _Fields:
    """Typed reads of one JSON object; every error names the field's JSON path."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise PolicyError(f"{where}: {show_value(data)} has type {type(data).__name__}; expected an object")
        self.data, self.where = data, where

    def path(self, key: str) -> str:
        return _path(self.where, key)

    def raw(self, key: str, optional: bool) -> Any:
        if key not in self.data and not optional:
            raise PolicyError(f"{self.path(key)}: missing")
        return self.data.get(key)

    def _typed(self, key: str, kinds: tuple, expected: str, optional: bool) -> Any:
        value = self.raw(key, optional)
        if value is None and optional:
            return None
        if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
            raise PolicyError(f"{self.path(key)}: {show_value(value)} has type {type(value).__name__}; expected "
                              f"{expected}")
        return value

    def text(self, key: str, optional: bool = False) -> Optional[str]:
        return self._typed(key, (str,), "a string", optional)

    def integer(self, key: str, optional: bool = False) -> Optional[int]:
        return self._typed(key, (int,), "an integer", optional)

    def flag(self, key: str, optional: bool = False) -> Optional[bool]:
        return self._typed(key, (bool,), "true or false", optional)

    def number(self, key: str, optional: bool = False) -> Optional[float]:
        """A float; "inf"/"-inf" and null (NaN) as json_safe writes them. Optional: None when absent."""
        if optional and key not in self.data:
            return None
        value = self.raw(key, optional)
        if value is None:
            return math.nan
        if value in ("inf", "-inf"):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PolicyError(f"{self.path(key)}: {show_value(value)} has type {type(value).__name__}; expected a "
                              'number ("inf", "-inf" or null for one JSON cannot hold)')
        return float(value)

    def array(self, key: str) -> list[tuple[Any, str]]:
        value = self._typed(key, (list,), "an array", False)
        return [(v, f"{self.path(key)}[{i}]") for i, v in enumerate(value)]

    def texts(self, key: str) -> tuple[str, ...]:
        for v, p in self.array(key):
            if not isinstance(v, str):
                raise PolicyError(f"{p}: {show_value(v)} has type {type(v).__name__}; expected a string")
        return tuple(self.data[key])

    def members(self, key: str, optional: bool = False) -> list[tuple[str, Any, str]]:
        value = self._typed(key, (dict,), "an object", optional)
        return [(k, v, _path(self.path(key), k, bracket=True)) for k, v in (value or {}).items()]


@dataclasses.dataclass(frozen=True)
class CandidateResult:
    """One candidate on one layer: error and time on the layer's captured inputs (None: not
    measured), then the end-to-end metric with only this layer switched, or why it was skipped."""
    cosine: Optional[float] = None
    rel_l1: Optional[float] = None
    rmse: Optional[float] = None
    time_ms: Optional[float] = None
    density: Optional[float] = None
    implementation: Optional[str] = None
    e2e_value: Optional[float] = None
    e2e_cost: Optional[float] = None  # None: the end-to-end run was skipped
    skipped: Optional[str] = None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in _LOCAL_KEYS + ("implementation",) if getattr(self, k) is not None}
        return d | ({"e2e_value": self.e2e_value, "e2e_cost": self.e2e_cost} if self.e2e_cost is not None
                    else {"skipped": self.skipped})

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "CandidateResult":
        f = _Fields(data, where)
        measured = "e2e_cost" in data
        return cls(**{k: f.number(k, optional=True) for k in _LOCAL_KEYS}, implementation=f.text("implementation", True),
                   e2e_value=f.number("e2e_value") if measured else None,
                   e2e_cost=f.number("e2e_cost") if measured else None,
                   skipped=None if measured else f.text("skipped", optional=True))


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    spec: str
    calls: int
    chosen: str  # a candidate's label, or the exact baseline's name
    time_exact_ms: float
    saved_ms: float  # per calibration pass
    candidates: Mapping[str, CandidateResult]  # by candidate label

    def to_dict(self) -> dict:
        return {"spec": self.spec, "calls": self.calls, "chosen": self.chosen, "time_exact_ms": self.time_exact_ms,
                "saved_ms": self.saved_ms, "candidates": {k: c.to_dict() for k, c in self.candidates.items()}}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "LayerSummary":
        f = _Fields(data, where)
        return cls(f.text("spec"), f.integer("calls"), f.text("chosen"), f.number("time_exact_ms"), f.number("saved_ms"),
                   MappingProxyType({k: CandidateResult.from_dict(v, p) for k, v, p in f.members("candidates")}))


class _FlatRecord:
    """A record of required float / int / bool / str fields, read by their annotations."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str):
        f = _Fields(data, where)
        read = {"float": f.number, "int": f.integer, "bool": f.flag, "str": f.text}
        return cls(*(read[field.type](field.name) for field in dataclasses.fields(cls)))


@dataclasses.dataclass(frozen=True)
class VerificationRun(_FlatRecord):
    """One run with every choice switched; the allowed cost halves until the budget holds."""
    allowed_cost: float
    switched: int
    value: float
    meets_budget: bool


@dataclasses.dataclass(frozen=True)
class Speedup(_FlatRecord):
    """End to end on the GPU: torch.compile default vs the profiled policy, per calibration pass."""
    speedup_vs_torch_compile: float
    torch_compile_ms: float
    policy_ms: float
    value_compiled: float


def _candidate_rule(label: str, value: Any, where: str) -> ProfileCandidate:
    """A candidate's backend and parameters as a policy rule; a backend not registered here is
    kept as written (the report then shows its label)."""
    backend = value.get("backend") if isinstance(value, dict) else value
    if isinstance(backend, str) and backend in BACKENDS:
        cand = parse_candidate(value, where)
    elif isinstance(value, str):
        cand = ProfileCandidate(value, {})
    else:
        f = _Fields(value, where)
        cand = ProfileCandidate(f.text("backend"), {k: v for k, v in value.items() if k != "backend"})
    if cand.label != label:
        raise PolicyError(f"{where}: the rule's label is {cand.label!r}, not {label!r}")
    return cand


@dataclasses.dataclass(frozen=True)
class ProfileSummary:
    """What `smartcompile.profile` measured and chose (policy.metadata["profile"])."""
    model: str
    metric: str
    higher_is_better: bool
    budget: float
    achieved: float  # the metric of the last verification run
    meets_budget: bool
    verification: tuple[VerificationRun, ...]
    times: str  # where the times come from, for people
    candidates: tuple[str, ...]  # labels, in profiling order
    wall_s: float
    reused_measurements: int
    layers: Mapping[str, LayerSummary]
    created: Optional[str] = None
    smartcompile: Optional[str] = None  # the version that profiled
    calibration_items: Optional[int] = None
    budget_cost: Optional[float] = None  # older summaries lack it
    timing: Optional[str] = None  # "measured" or "estimated"; older summaries lack it (see `estimated`)
    speedup: Optional[Speedup] = None  # only where timing is measured
    cache_path: Optional[str] = None
    # by label: each candidate's backend and parameters; older summaries lack it
    candidate_rules: Mapping[str, ProfileCandidate] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    graph_notes: Optional[tuple[str, ...]] = None  # older summaries lack it
    format: str = PROFILE_FORMAT

    @property
    def estimated(self) -> bool:
        """Times are FLOP estimates (no GPU was profiled), not measurements."""
        timing = self.timing or ("measured" if self.times.startswith("cuda") else "estimated")
        return timing == "estimated"

    def to_dict(self) -> dict:
        """The JSON of metadata["profile"] (numbers JSON cannot hold as json_safe writes them)."""
        d = {
            "format": self.format, "created": self.created, "smartcompile": self.smartcompile, "model": self.model,
            "calibration_items": self.calibration_items, "metric": self.metric,
            "higher_is_better": self.higher_is_better, "budget": self.budget, "budget_cost": self.budget_cost,
            "achieved": self.achieved, "meets_budget": self.meets_budget,
            "verification": [v.to_dict() for v in self.verification], "timing": self.timing, "times": self.times,
            "speedup": None if self.speedup is None else self.speedup.to_dict(), "candidates": list(self.candidates),
            "candidate_rules": {k: c.rule().to_json() for k, c in self.candidate_rules.items()} or None,
            "wall_s": self.wall_s, "cache": {"path": self.cache_path, "reused_measurements": self.reused_measurements},
            "layers": {k: e.to_dict() for k, e in self.layers.items()},
            "graph_notes": None if self.graph_notes is None else list(self.graph_notes),
        }
        for key in _OPTIONAL_KEYS:  # absent when not known (older summaries), never written as null
            if d[key] is None:
                del d[key]
        return json_safe(d)

    @classmethod
    def from_dict(cls, data: Any, where: str = "metadata.profile") -> "ProfileSummary":
        """Raises PolicyError naming the JSON path (under `where`) of the first malformed field."""
        f = _Fields(data, where)
        fmt = f.text("format", optional=True) or PROFILE_FORMAT  # absent: written before the field, format 1
        if fmt not in SUPPORTED_FORMATS:
            raise PolicyError(f"{f.path('format')}: {show_value(fmt)} is not supported; supported: "
                              f"{list(SUPPORTED_FORMATS)}")
        timing = f.text("timing", optional=True)
        if timing is not None and timing not in TIMINGS:
            raise PolicyError(f"{f.path('timing')}: {show_value(timing)} is not allowed; expected one of {list(TIMINGS)}")
        cache = _Fields(f.raw("cache", False), f.path("cache"))
        speedup = f.raw("speedup", optional=True)
        return cls(
            model=f.text("model"), metric=f.text("metric"), higher_is_better=f.flag("higher_is_better"),
            budget=f.number("budget"), achieved=f.number("achieved"), meets_budget=f.flag("meets_budget"),
            verification=tuple(VerificationRun.from_dict(v, p) for v, p in f.array("verification")),
            times=f.text("times"), candidates=f.texts("candidates"),
            wall_s=f.number("wall_s"), reused_measurements=cache.integer("reused_measurements"),
            layers=MappingProxyType({k: LayerSummary.from_dict(v, p) for k, v, p in f.members("layers")}),
            created=f.text("created", True), smartcompile=f.text("smartcompile", True),
            calibration_items=f.integer("calibration_items", True), budget_cost=f.number("budget_cost", True),
            timing=timing, speedup=None if speedup is None else Speedup.from_dict(speedup, f.path("speedup")),
            cache_path=cache.text("path", True),
            candidate_rules=MappingProxyType({k: _candidate_rule(k, v, p)
                                              for k, v, p in f.members("candidate_rules", True)}),
            graph_notes=None if data.get("graph_notes") is None else f.texts("graph_notes"), format=fmt,
        )
