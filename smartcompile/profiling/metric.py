"""The profiler's Metric: a model-level criterion with a budget (a value per calibration item,
the worst item counts) and an error "cost" that adds up (approximately) across layers for the
chooser. The plain output-error functions it is built on (error_stats, psnr, ssim) live in
smartcompile.metrics; this module only applies them to flattened model outputs."""
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
    # the budget when none is given (None: the caller must give one), and the budgets that make
    # sense for this metric, inclusive (None: any finite number)
    default_budget: Optional[float] = None
    budget_range: Optional[tuple[float, float]] = None
    unit: str = ""

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
        return f"{self.name} {'>=' if self.higher_is_better else '<='} {budget}{self.unit}"

    def check_budget(self, budget: Optional[float]) -> float:
        """The budget to use: `budget`, or this metric's default when None; raises when out of range."""
        if budget is None:
            if self.default_budget is None:
                raise SmartCompileError(f"budget: metric {self.name!r} has no default budget; pass budget=...")
            return self.default_budget
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget):
            raise SmartCompileError(f"budget: {budget!r} is not allowed; expected a finite number "
                                    f"(e.g. {self.default_budget if self.default_budget is not None else 0.995} "
                                    f"for {self.name})")
        if self.budget_range is not None:
            lo, hi = self.budget_range
            if not lo <= budget <= hi:
                raise SmartCompileError(
                    f"budget: {budget}{self.unit} is outside [{lo}, {hi}] for metric {self.name!r} "
                    f"({'higher' if self.higher_is_better else 'lower'} is better; "
                    f"default {self.default_budget}{self.unit})")
        return float(budget)


# Default budgets are of one strictness: about what the Sage numerics cost a deep model.
# Ranges reject budgets that belong to another metric (0.995 as a rel_l1 or PSNR budget).
BUILTIN_METRICS = {
    "cosine": Metric("cosine", _cosine, True, to_cost=lambda v: 1.0 - v, default_budget=0.995,
                     budget_range=(0.0, 1.0)),
    # rel_l1 0.5: the error is half the output; a larger budget (e.g. a cosine's 0.995) is a mistake
    "rel_l1": Metric("rel_l1", _rel_l1, False, to_cost=lambda v: v, default_budget=0.05, budget_range=(0.0, 0.5)),
    # mean squared errors of independent layers add: cost = 10^(-PSNR/10) (noise power / peak power);
    # below 10 dB the noise is a tenth of the peak power: no useful output
    "psnr": Metric("psnr", _psnr, True, to_cost=lambda v: 0.0 if v == float("inf") else 10 ** (-v / 10),
                   default_budget=30.0, budget_range=(10.0, math.inf), unit=" dB"),
}


def metric_unit(name: str) -> str:
    """' dB' for psnr, '' otherwise (for reports that hold the metric's name only)."""
    m = BUILTIN_METRICS.get(name)
    return m.unit if m is not None else ""


def default_budget(metric: str) -> float:
    """The budget `profile` uses for a built-in metric when none is given."""
    return resolve_metric(metric).check_budget(None)


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
