"""Running the profiled model: one compile (every site rewritten to exact flash, Inductor off),
then any number of calibration passes with layers switched at run time (no recompilation)."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..backends.intercept import AttentionCall, intercepting
from ..backends.registry import exact_baseline, get_implementation
from ..compiler.backend import compile_graph
from ..compiler.options import CompileOptions
from ..compiler.plan import Plan
from ..policies import Policy
from ..timing import wall_seconds  # noqa: F401 -- also imported from here (demo)
from .calibration import detach_output
from .step_units import StepRanges


def compile_exact(model: torch.nn.Module) -> tuple[Callable, Plan]:
    opts = CompileOptions.parse(None, None, Policy.uniform(exact_baseline()), auto="static")
    plan = Plan()
    compiled = torch.compile(
        model, dynamic=False,
        backend=lambda gm, ex: compile_graph(gm, ex, opts, sink=plan.extend, run_inductor=False),
    )
    return compiled, plan


class Switch:
    """Interceptor: runs the given units (layers, or layer@step-range) with other implementations;
    the rest as planned."""

    def __init__(self, assignment: dict, units: StepRanges = StepRanges()) -> None:
        # assignment: {unit: (backend, implementation, params)}
        self.impls = {unit: (get_implementation(b, i), dict(p)) for unit, (b, i, p) in assignment.items()}
        self.units = units

    def __call__(self, call: AttentionCall) -> Optional[torch.Tensor]:
        found = self.impls.get(self.units.unit(call.layer)) if self.impls else None
        if found is None:
            return None
        impl, params = found
        return impl.run(call.q, call.k, call.v, call.mask, call.is_causal, call.scale, dict(params))


@torch.no_grad()
def run_with(compiled: Callable, run: Callable, assignment: dict, units: StepRanges = StepRanges()) -> list:
    with intercepting(Switch(assignment, units)):
        return [detach_output(o) for o in run(compiled)]
