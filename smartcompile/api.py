"""explain(): what each attention layer of a model gets, and why, without running Inductor."""
from __future__ import annotations

import warnings
from typing import Any

import torch

from ._logging import logger
from .compiler.backend import compile_graph
from .compiler.options import CompileOptions
from .compiler.plan import Plan
from .policies import Policy, unmatched_rules


def explain(model: torch.nn.Module, *args: Any, policy: Any = None, **kwargs: Any) -> Plan:
    """Trace `model(*args, **kwargs)` with Dynamo and return the Plan of every attention site.

    `policy` is a path, dict or Policy (None: auto). `kwargs` go to the model's forward.
    The model is run once (rewritten graphs run eagerly); it is not modified.
    """
    opts = CompileOptions.parse(None, None, policy)
    plan = Plan()
    compiled = torch.compile(
        model, backend=lambda gm, ex: compile_graph(gm, ex, opts, sink=plan.extend, run_inductor=False), dynamic=False
    )
    compiled(*args, **kwargs)
    model_type = type(model).__qualname__
    relative = [r for r in plan.frame_roots if r != model_type]
    if relative:
        plan.notes.append(
            f"some graphs start inside submodule(s) {relative}, not at {model_type}: their layer paths are relative, "
            "and a per-layer rule there applies to every instance compiled from that graph"
        )
    if plan.graphs > 1:
        plan.notes.append(f"{plan.graphs} graphs (graph breaks): each is planned separately")
    _warn_unmatched(opts.policy, plan)
    return plan


def _warn_unmatched(policy: Policy, plan: Plan) -> None:
    for key, close in unmatched_rules(policy, [s.layer for s in plan.sites]):
        msg = f"policy rule {key!r} matches no attention layer; closest layer names: {close or 'none'}"
        plan.notes.append(msg)
        logger.warning(msg)
        warnings.warn(msg, stacklevel=3)
