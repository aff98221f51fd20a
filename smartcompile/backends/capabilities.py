"""Capabilities of an implementation, as data, and the one generic check against a spec."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..spec import MASK_KINDS, AttentionSpec
from .hardware import compute_capability, library_import_error

ALL_MASKS = frozenset(MASK_KINDS)
FLOAT_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32})


@dataclasses.dataclass(frozen=True)
class Capabilities:
    devices: frozenset = frozenset({"cpu", "cuda"})
    min_compute_capability: Optional[tuple[int, int]] = None  # CUDA only
    dtypes: frozenset = FLOAT_DTYPES
    head_dims: Optional[tuple[int, ...]] = None  # None: any up to max_head_dim
    max_head_dim: int = 1024
    head_dim_multiple: int = 1
    mask_kinds: frozenset = ALL_MASKS
    causal_q_ne_k: bool = True  # causal with Sq != Sk (top-left alignment)
    gqa: bool = True
    dropout: bool = False
    different_v_dim: bool = True
    requires: Optional[str] = None  # optional library module name

    def not_supported_reasons(self, spec: AttentionSpec) -> list[str]:
        reasons = []
        if spec.device_type not in self.devices:
            reasons.append(f"needs {' or '.join(sorted(self.devices))}, not {spec.device_type}")
        elif spec.device_type == "cuda" and self.min_compute_capability is not None:
            cc = compute_capability(spec.device)
            if cc is None or cc < self.min_compute_capability:
                reasons.append(f"compute capability {cc} < required {self.min_compute_capability}")
        if spec.dtype not in self.dtypes:
            allowed = sorted(str(d).replace("torch.", "") for d in self.dtypes)
            reasons.append(f"dtype {str(spec.dtype).replace('torch.', '')} not in {allowed}")
        for name, d in (("head_dim", spec.head_dim), ("v_head_dim", spec.v_head_dim)):
            if self.head_dims is not None and d not in self.head_dims:
                reasons.append(f"{name} {d} not in {list(self.head_dims)}")
            elif d > self.max_head_dim or d % self.head_dim_multiple:
                reasons.append(f"{name} {d}: must be <= {self.max_head_dim} and a multiple of {self.head_dim_multiple}")
        if spec.v_head_dim != spec.head_dim and not self.different_v_dim:
            reasons.append(f"v_head_dim {spec.v_head_dim} != head_dim {spec.head_dim}")
        if spec.mask_kind not in self.mask_kinds:
            reasons.append(f"mask kind '{spec.mask_kind}' not in {sorted(self.mask_kinds)}")
        if spec.is_causal and spec.q_len != spec.kv_len and not self.causal_q_ne_k:
            reasons.append(f"causal with q_len {spec.q_len} != kv_len {spec.kv_len} (alignment differs)")
        if spec.gqa and not self.gqa:
            reasons.append(f"grouped-query attention ({spec.q_heads} q heads, {spec.kv_heads} kv heads)")
        if spec.dropout and not self.dropout:
            reasons.append(f"dropout {spec.dropout}")
        if self.requires is not None:
            err = library_import_error(self.requires)
            if err is not None:
                reasons.append(f"needs package '{self.requires}' ({err})")
        return reasons
