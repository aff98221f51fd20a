"""Stage 1, capture: one exact run that records, per attention layer, its spec, how often it is
called, and a sample of its inputs (the first and the last call: e.g. the first and last
denoising step)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..backends.intercept import AttentionCall
from ..spec import AttentionSpec, spec_from_tensors
from .step_units import StepRanges


def _clone(call: AttentionCall) -> AttentionCall:
    # the graph may reuse these buffers after the call: keep copies
    c = lambda t: t.detach().clone() if t is not None else None
    return dataclasses.replace(call, q=c(call.q), k=c(call.k), v=c(call.v), mask=c(call.mask))


@dataclasses.dataclass
class LayerCapture:
    layer: str  # the unit: a layer, or "layer@range" when profiling per step range
    spec: AttentionSpec
    calls: int = 0  # calls per calibration pass
    samples: list = dataclasses.field(default_factory=list)  # [AttentionCall], at most 2


class Capture:
    """An interceptor that records and lets the planned (exact) implementation run; per layer, or
    per (layer, step range) unit when `units` has ranges."""

    def __init__(self, units: StepRanges = StepRanges()) -> None:
        self.layers: dict[str, LayerCapture] = {}
        self.units = units

    def __call__(self, call: AttentionCall) -> Optional[torch.Tensor]:
        unit = self.units.unit(call.layer)
        rec = self.layers.get(unit)
        if rec is None:
            spec = spec_from_tensors(call.q, call.k, call.v, call.mask, call.is_causal, call.scale)
            rec = self.layers[unit] = LayerCapture(unit, spec)
        rec.calls += 1
        if len(rec.samples) < 2:
            rec.samples.append(_clone(call))
        else:
            rec.samples[1] = _clone(call)
        return None
