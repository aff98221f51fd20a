"""The settings of the Sage and Sparge numerics, one frozen object each, shared by the pure-torch
references and the Triton kernels (the backends build them once from a policy rule's params)."""
from __future__ import annotations

import dataclasses
from typing import Optional

from .constants import KV_BLOCK, PV_PRECISIONS


def _problem(cls: str, name: str, value, allowed: str) -> ValueError:
    return ValueError(f"{cls}.{name}: got {value!r}; allowed: {allowed}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class SageConfig:
    """INT8 Q/K per block (Q per `block_q` tokens, K per `block_k`), K smoothed when `smooth`,
    P and V in `pv_precision`, FP32 accumulation."""
    pv_precision: str = "fp8"
    smooth: bool = True
    block_q: int = 64
    block_k: int = KV_BLOCK

    def __post_init__(self):
        cls = type(self).__name__
        if self.pv_precision not in PV_PRECISIONS:
            raise _problem(cls, "pv_precision", self.pv_precision, f"one of {PV_PRECISIONS}")
        if not isinstance(self.smooth, bool):
            raise _problem(cls, "smooth", self.smooth, "a bool")
        for name in ("block_q", "block_k"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise _problem(cls, name, getattr(self, name), "a positive int")


SELECTIONS = ("cdf_threshold", "topk", "sparsity_ratio")  # how Sparge picks K blocks: exactly one


@dataclasses.dataclass(frozen=True)
class SpargeConfig(SageConfig):
    """Sage numerics over the K blocks a predictor keeps per query block (sparge_reference's docstring
    has the rules). Exactly one of cdf_threshold / topk / sparsity_ratio selects."""
    sim_threshold: float = 0.6
    cdf_threshold: Optional[float] = None
    topk: Optional[int] = None
    sparsity_ratio: Optional[float] = None
    pv_threshold: Optional[float] = None
    sink: bool = False

    def __post_init__(self):
        super().__post_init__()
        cls = type(self).__name__
        checks = (  # (field, value may be None, valid, what is allowed)
            ("sim_threshold", False, lambda x: _is_number(x) and -1 <= x <= 1, "a number in [-1, 1]"),
            ("cdf_threshold", True, lambda x: _is_number(x) and 0 <= x <= 1, "None or a number in [0, 1]"),
            ("topk", True, lambda x: _is_int(x) and x >= 1, "None or an int >= 1"),
            ("sparsity_ratio", True, lambda x: _is_number(x) and 0 <= x < 1, "None or a number in [0, 1)"),
            ("pv_threshold", True, lambda x: _is_number(x) and x >= 0, "None or a number >= 0"),
            ("sink", False, lambda x: isinstance(x, bool), "a bool"),
        )
        for name, nullable, valid, allowed in checks:
            value = getattr(self, name)
            if not ((nullable and value is None) or valid(value)):
                raise _problem(cls, name, value, allowed)
        chosen = [n for n in SELECTIONS if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(f"{cls}: give exactly one of {', '.join(SELECTIONS)} (got {chosen or 'none'})")
