"""Backend and Implementation: a kernel family, and the concrete ways to run it."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from ..spec import AttentionSpec
from .capabilities import Capabilities
from .hardware import compute_capability
from .params import ParamSpec

# (q, k, v, mask, is_causal, scale, params) -> out, all tensors (B, H, S, D)
RunFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor], bool, float, dict], torch.Tensor]


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
    # parameters the implementation cannot honour (resolved params -> reasons); None: all of them
    params_reasons: Optional[Callable[[dict], list]] = None

    def not_supported_reasons(self, spec: AttentionSpec, params: Optional[dict] = None) -> list[str]:
        reasons = self.capabilities.not_supported_reasons(spec)
        if params is not None and self.params_reasons is not None:
            reasons += self.params_reasons(params)
        return reasons


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Error bounds against fp32 exact attention on random inputs, per backend (test data)."""
    min_cosine: float
    max_rel_l1: float


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    description: str
    params: dict[str, ParamSpec]
    implementations: tuple[Implementation, ...]
    accuracy: Accuracy
    exclusive_params: tuple[tuple[str, ...], ...] = ()  # groups of which at most one may be set

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
