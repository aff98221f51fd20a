"""Model-level metrics for the profiler: a value per calibration item, the worst item counts,
and an error "cost" that adds up (approximately) across layers for the chooser."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Union

import torch
from torch.utils import _pytree as pytree

from ..errors import SmartCompileError
from ..metrics import error_stats, psnr


def flat_output(out: Any) -> torch.Tensor:
    """Every floating tensor in a model output (tensor, tuple, dict, ModelOutput...) as one fp64 vector."""
    leaves = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not leaves:
        raise SmartCompileError(f"metric: the model output ({type(out).__name__}) holds no floating-point tensor")
    return torch.cat([t.detach().reshape(-1).double() for t in leaves])


def _cosine(ref: Any, out: Any) -> float:
    err = error_stats(flat_output(out), flat_output(ref))
    return err.cosine if err.finite else float("-inf")


def _rel_l1(ref: Any, out: Any) -> float:
    err = error_stats(flat_output(out), flat_output(ref))
    return err.rel_l1 if err.finite else float("inf")


def _psnr(ref: Any, out: Any) -> float:
    o = flat_output(out)
    return psnr(o, flat_output(ref)) if bool(torch.isfinite(o).all()) else float("-inf")


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[Any, Any], float]  # (reference output, output) -> value, per calibration item
    higher_is_better: bool
    # value -> cost >= 0, roughly additive over independent layer errors (None: distance to `ideal`)
    to_cost: Optional[Callable[[float], float]] = None
    ideal: Optional[float] = None

    def value(self, references: list, outputs: list) -> float:
        """The worst item's value."""
        values = [float(self.fn(r, o)) for r, o in zip(references, outputs)]
        if any(math.isnan(v) for v in values):
            return float("-inf") if self.higher_is_better else float("inf")
        return min(values) if self.higher_is_better else max(values)

    def cost(self, value: float) -> float:
        if self.to_cost is not None:
            c = self.to_cost(value)
        else:
            c = (self.ideal - value) if self.higher_is_better else (value - self.ideal)
        return max(c, 0.0) if not math.isnan(c) else float("inf")

    def meets(self, value: float, budget: float) -> bool:
        return value >= budget if self.higher_is_better else value <= budget

    def describe(self, budget: float) -> str:
        return f"{self.name} {'>=' if self.higher_is_better else '<='} {budget}"


BUILTIN_METRICS = {
    "cosine": Metric("cosine", _cosine, True, to_cost=lambda v: 1.0 - v),
    "rel_l1": Metric("rel_l1", _rel_l1, False, to_cost=lambda v: v),
    # mean squared errors of independent layers add: cost = 10^(-PSNR/10) (noise power / peak power)
    "psnr": Metric("psnr", _psnr, True, to_cost=lambda v: 0.0 if v == float("inf") else 10 ** (-v / 10)),
}


def resolve_metric(metric: Union[str, Metric, Callable], reference: Optional[list] = None) -> Metric:
    """A built-in name, a Metric, or a callable (reference, output) -> float where higher is better
    (its value on (reference, reference) is taken as the ideal)."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in BUILTIN_METRICS:
            raise SmartCompileError(f"metric: {metric!r} is not one of {list(BUILTIN_METRICS)} (or pass a callable)")
        return BUILTIN_METRICS[metric]
    if callable(metric):
        name = getattr(metric, "__qualname__", type(metric).__name__)
        ideal = None
        if reference is not None:
            ideal = min(float(metric(r, r)) for r in reference)
            if not math.isfinite(ideal):
                raise SmartCompileError(f"metric: {name}(reference, reference) = {ideal}; a callable metric needs a "
                                        "finite ideal value (or pass a Metric with to_cost)")
        return Metric(name, metric, True, ideal=ideal)
    raise SmartCompileError(f"metric: {type(metric).__name__} is not allowed; expected {list(BUILTIN_METRICS)}, "
                            "a Metric or a callable (reference, output) -> float")
