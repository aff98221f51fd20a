"""Profiling per (layer, denoising-step range): each pair is a unit that is captured, measured,
switched and chosen on its own, named "layer@range" (e.g. "blocks.0.attn@2-17").

Without step ranges a unit is the layer itself, so the per-layer profile is unchanged.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..backends.denoising_step import current_step
from ..errors import SmartCompileError
from ..policies.step_rules import parse_step_ranges

SEPARATOR = "@"


@dataclasses.dataclass(frozen=True)
class StepRanges:
    ranges: tuple = ()  # ((first, last or None, key), ...); empty: per layer

    @classmethod
    def parse(cls, keys: Optional[list]) -> "StepRanges":
        return cls() if keys is None else cls(parse_step_ranges(keys, "step_ranges"))

    def unit(self, layer: str) -> str:
        """The unit of a call of `layer` running now (reads the current denoising step)."""
        if not self.ranges:
            return layer
        step = current_step()
        if step is None:
            raise SmartCompileError(f"step_ranges: layer {layer} ran outside any step; the calibration callable must "
                                    "run its steps inside smartcompile.step(i) or a pipeline under track_steps")
        for first, last, key in self.ranges:
            if first <= step and (last is None or step <= last):
                return f"{layer}{SEPARATOR}{key}"
        raise SmartCompileError(f"step_ranges: step {step} is in none of {[k for _, _, k in self.ranges]}")


def split_unit(unit: str) -> tuple[str, Optional[str]]:
    """"blocks.0.attn@2-17" -> ("blocks.0.attn", "2-17"); a plain layer -> (layer, None)."""
    layer, sep, key = unit.rpartition(SEPARATOR)
    return (layer, key) if sep else (unit, None)
