"""Backend and Implementation: a kernel family, and the concrete ways to run it."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import torch

from ..spec import AttentionSpec
from .capabilities import Capabilities
from .hardware import compute_capability
from .params import ParamSpec

# (q, k, v, mask, is_causal, scale, params) -> out, all tensors (B, H, S, D); params read-only
RunFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor], bool, float, Mapping], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class AutoGate:
    """Where "auto" may pick an implementation, from measurements (the policy can always ask)."""
    min_kv_len: int = 0
    min_compute_capability: Optional[tuple[int, int]] = None
    why: str = ""

    def reasons(self, spec: AttentionSpec) -> list[str]:
        out = []
        if spec.kv_len < self.min_kv_len:
            out.append(f"auto uses it only for kv_len >= {self.min_kv_len} (kv_len {spec.kv_len}): {self.why}")
        if self.min_compute_capability is not None and spec.device_type == "cuda":
            cc = compute_capability(spec.device)
            if cc is None or cc < self.min_compute_capability:
                out.append(f"auto uses it only on compute capability >= {self.min_compute_capability} (device: {cc}): {self.why}")
        return out


@dataclasses.dataclass(frozen=True)
class Implementation:
    name: str
    capabilities: Capabilities
    run: RunFn
    description: str
    # Reference implementations exist for numerics (CPU, tests, profiling), not speed:
    # "auto" never picks them.
    auto_eligible: bool = True
    auto_gate: Optional[AutoGate] = None
    # parameters the implementation cannot honour, alone or for this spec ((resolved params, spec) -> reasons);
    # None: all of them
    params_reasons: Optional[Callable[[dict, AttentionSpec], list]] = None
    # what capabilities-as-data cannot say (spec -> reasons): e.g. a kernel built for one Triton
    # release and one GPU generation, or used only where it was measured faster than the next one
    spec_reasons: Optional[Callable[[AttentionSpec], list]] = None

    def not_supported_reasons(self, spec: AttentionSpec, params: Optional[dict] = None) -> list[str]:
        reasons = self.capabilities.not_supported_reasons(spec)
        if not reasons and self.spec_reasons is not None:
            reasons += self.spec_reasons(spec)
        if params is not None and self.params_reasons is not None:
            reasons += self.params_reasons(params, spec)
        return reasons


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Error bounds against fp32 exact attention on random inputs, per backend (test data)."""
    min_cosine: float
    max_rel_l1: float


def plain_params(params: Mapping[str, Any]) -> str:
    """'pv_precision=fp8 smooth_k=False': parameters named without family-specific words."""
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()))


@dataclasses.dataclass(frozen=True)
class Backend:
    """A kernel family. Besides its implementations, it carries as data what auto, the profiler,
    the cost model and the report need to know about it, so that none of them names families."""
    name: str
    description: str
    params: dict[str, ParamSpec]
    implementations: tuple[Implementation, ...]
    accuracy: Accuracy
    exclusive_params: tuple[tuple[str, ...], ...] = ()  # groups of which at most one may be set
    # exact: the baseline auto never trades for a slower choice; the profiler measures against it
    exact: bool = False
    # auto's seed order (higher first) and the fallback chain's order; on CUDA, measured times
    # decide and this breaks ties
    auto_priority: int = 0
    # why measured auto does not time this family (a profiled policy chooses it); None: it does
    not_timed_reason: Optional[str] = None
    # the profiler's default candidates, least to most aggressive within a ladder, and the
    # parameters whose values are the rungs (candidates differing only in them are one ladder)
    ladder: tuple[Mapping[str, Any], ...] = ()
    ladder_params: tuple[str, ...] = ()
    # time on a device without a GPU: (exact attention's ms at H100 speed, resolved params,
    # predicted density) -> ms
    estimate_ms: Callable[[float, Mapping[str, Any], float], float] = lambda exact_ms, params, density: exact_ms
    # fraction of the blocks a sparse family computes for these inputs: (q, k, mask, is_causal, scale,
    # resolved params) -> density; None: dense
    predicted_density: Optional[Callable[..., float]] = None
    # how the profile report names a candidate's params: {"sparsity_ratio": 0.75, ...} -> '75% forced'
    describe_params: Callable[[Mapping[str, Any]], str] = plain_params
    plot_color: str = "#BBBBBB"  # the bars of layers left on this backend (candidates get their own)

    def params_problems(self, params: dict) -> list[tuple[str, str]]:
        """[(param name, problem)] for unknown names, bad values and conflicting groups."""
        out = []
        for name, value in params.items():
            if name not in self.params:
                out.append((name, f"unknown parameter for backend '{self.name}'; allowed: {sorted(self.params) or 'none'}"))
                continue
            problem = self.params[name].problem(value)
            if problem:
                out.append((name, problem))
        for group in self.exclusive_params:
            given = [g for g in group if params.get(g) is not None]
            if len(given) > 1:
                out.append((given[1], f"give at most one of {list(group)}; got {given}"))
        return out

    def resolve_params(self, params: dict, spec: AttentionSpec) -> dict:
        """User params plus defaults; exclusive groups keep the user's choice only."""
        full = {n: p.default for n, p in self.params.items()}
        for group in self.exclusive_params:
            if any(params.get(g) is not None for g in group):
                for g in group:
                    full[g] = None
        full.update({k: v for k, v in params.items() if k in self.params})
        return full

    def candidate_name(self, params: Mapping[str, Any]) -> str:
        """'sparge 75% forced', 'sage fp8', 'flash (exact)': a candidate for people."""
        if not params:
            return f"{self.name} (exact)" if self.exact else self.name
        return f"{self.name} {self.describe_params(params)}"
