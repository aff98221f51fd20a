"""explain(): what each attention layer of a model gets, and why, without running Inductor."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .compiler.backend import compile_graph
from .compiler.layer_dispatch import INSTANCES, forget_layers, is_named, name_layers, user_named_modules
from .compiler.options import CompileOptions
from .compiler.plan import Plan
from .policies import Policy, unmatched_rules
from .policies.resolve import base_layer_name


def explain(model: torch.nn.Module, *args: Any, policy: Any = None, kwargs: Optional[dict] = None,
            auto: Optional[str] = None) -> Plan:
    """Trace `model(*args, **kwargs)` with Dynamo and return the Plan of every attention site.

    `policy` is a path, dict or Policy (None: auto); `kwargs` (a dict) go to the model's forward;
    `auto` as in smartcompile.backend. The model is run once (rewritten graphs run eagerly); it
    is not modified.
    """
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError(f"explain: kwargs must be a dict of the model's keyword arguments, got {type(kwargs).__name__}")
    kwargs = dict(kwargs or {})
    opts = CompileOptions.parse(None, None, policy, auto)
    plan = Plan()
    compiled = torch.compile(
        model, backend=lambda gm, ex: compile_graph(gm, ex, opts, sink=plan.extend, run_inductor=False,
                                                     warn_unmatched=False),
        dynamic=False,
    )
    named_before = is_named(model)
    name_layers(model)  # only while explain runs: a lasting name could change the user's compiled models
    seen = set(INSTANCES)
    try:
        compiled(*args, **kwargs)
    finally:
        if not named_before:
            forget_layers(model)
    plan.instances = [c for key, c in INSTANCES.items() if key not in seen]
    modules = set(user_named_modules(model))
    relative = sorted({base_layer_name(s.layer) for s in plan.sites
                       if base_layer_name(s.layer) not in modules and not s.instances})
    if relative and not (len(plan.sites) == len(relative) and plan.graphs == 1 and relative[0].startswith("attention.")):
        plan.notes.append(
            f"layer names {relative[:4]} are not module paths of {type(model).__qualname__}: they come from a graph "
            "that starts inside a submodule's forward (a graph break there, or regional compilation), so they are "
            "relative to that frame, and one compiled graph serves every module that runs the same code: a per-layer "
            "rule on them applies to all of those layers"
        )
    if plan.graphs > 1:
        plan.notes.append(f"{plan.graphs} graphs (graph breaks): each is planned separately")
    _note_unmatched(opts.policy, plan)
    return plan


def _note_unmatched(policy: Policy, plan: Plan) -> None:
    """In the plan's notes only: the plan is what explain reports (a logger warning or a
    UserWarning beside it would say the same thing again)."""
    for key, close in unmatched_rules(policy, [s.layer for s in plan.sites] + [i.layer for i in plan.instances]):
        plan.notes.append(f"policy rule {key!r} matches no attention layer; closest layer names: "
                          f"{', '.join(close) or 'none'}")
