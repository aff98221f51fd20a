"""The smartattn backend: find, name, decide, rewrite, then Inductor.

Registered for torch.compile through the `torch_dynamo_backends` entry point (pyproject.toml),
so `torch.compile(m, backend="smartattn")` works without importing smartcompile.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch

from .._logging import configure_from_env, logger
from ..backends.op import encode_params, register_ops
from ..backends.registry import select
from ..errors import UnsupportedError
from ..passes import find_attention_sites, rewrite_site
from ..policies import Policy, resolve, unmatched_rules
from ..policies.hardware_check import hardware_mismatch
from .options import CompileOptions
from .plan import Plan, PlannedSite


def plan_and_rewrite(gm: torch.fx.GraphModule, policy: Policy, auto_mode: str = "measure") -> Plan:
    """Rewrite every site of `gm` the policy turns on; return the plan (one graph)."""
    register_ops()
    plan = Plan(graphs=1)
    sites = find_attention_sites(gm)
    replaced: dict = {}
    for site in sites:
        base = dict(layer=site.layer, pattern=site.pattern, spec=site.spec, note=site.layer_note)
        if site.rejected is not None:
            plan.sites.append(PlannedSite(**base, backend="-", implementation="-", params={},
                                          reason=f"not rewritten: {site.rejected}", rewritten=False))
            continue
        decision = resolve(site.layer, site.spec, policy)
        if decision.backend == "off":
            plan.sites.append(PlannedSite(**base, backend="off", implementation="-", params={},
                                          reason=f"{decision.reason}: off, left untouched", rewritten=False))
            continue
        try:
            sel = select(site.spec, decision.backend, dict(decision.params), auto_mode)
        except UnsupportedError as exc:  # e.g. float64 or head dim > 1024: stock Inductor handles it
            plan.sites.append(PlannedSite(**base, backend="-", implementation="-", params={},
                                          reason=f"not rewritten: {exc}", rewritten=False))
            continue
        site.remap(replaced)
        replaced[site.output] = rewrite_site(gm, site, sel.backend, sel.implementation, encode_params(sel.params))
        reason = f"{decision.reason} -> {decision.backend}"
        if sel.timings:
            reason += " | measured: " + ", ".join(f"{label} {ms:.3f} ms" for label, ms in sel.timings)
        if sel.backend != decision.backend:
            why = "; ".join(s for s in sel.steps if not s.startswith(f"{sel.backend}/") and not s.startswith("->"))
            reason += f" | fell back to {sel.backend}: {why}"
            if decision.backend != "auto":  # the user asked for something else: say so without SMARTCOMPILE_LOG
                logger.warning("%s: %s requested, %s/%s runs instead: %s", site.layer, decision.backend,
                               sel.backend, sel.implementation, why)
        plan.sites.append(PlannedSite(**base, backend=sel.backend, implementation=sel.implementation,
                                      params=dict(sel.params), reason=reason, rewritten=True, steps=sel.steps,
                                      timings=sel.timings))
    gm.graph.lint()
    gm.recompile()
    devices = sorted({s.spec.device for s in plan.sites if s.spec is not None})
    if devices:
        mismatch = hardware_mismatch(policy, devices[0])
        if mismatch:
            plan.notes.append(mismatch)
            _warn_once(mismatch)
    return plan


_WARNED: set = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)
        warnings.warn(message, stacklevel=2)


def log_plan(plan: Plan, policy: Policy) -> None:
    if plan.sites:
        logger.info("smartattn plan (policy %s):\n%s", policy.source, plan)
    for key, close in unmatched_rules(policy, [s.layer for s in plan.sites]):
        logger.info("policy rule %r matched no layer of this graph; closest layers: %s", key, close or "none")


def compile_graph(
    gm: torch.fx.GraphModule,
    example_inputs: list,
    opts: CompileOptions,
    sink: Optional[Callable[[Plan], None]] = None,
    run_inductor: bool = True,
):
    configure_from_env()
    plan = plan_and_rewrite(gm, opts.policy, opts.auto)
    log_plan(plan, opts.policy)
    if sink is not None:
        sink(plan)
    if not run_inductor:
        return gm.forward
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs, config_patches=opts.config_patches())


def smartattn(gm: torch.fx.GraphModule, example_inputs: list, *, mode: Optional[str] = None,
              options: Optional[dict] = None):
    """The function registered as torch.compile backend "smartattn"."""
    return compile_graph(gm, example_inputs, CompileOptions.parse(options, mode))


class SmartAttnBackend:
    """A configured backend: torch.compile(model, backend=smartcompile.backend(policy=...))."""

    def __init__(self, policy: Any = None, mode: Optional[str] = None, auto: Optional[str] = None) -> None:
        self.options = CompileOptions.parse(None, mode, policy, auto)  # validate now, not at first call

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list):
        return compile_graph(gm, example_inputs, self.options)

    def __repr__(self) -> str:
        return (f"smartcompile.backend(policy={self.options.policy.source!r}, mode={self.options.mode!r}, "
                f"auto={self.options.auto!r})")


def backend(policy: Any = None, mode: Optional[str] = None, auto: Optional[str] = None) -> SmartAttnBackend:
    """A configured smartattn backend. `policy`: path, dict or Policy (None: auto everywhere);
    `mode`: an Inductor mode; `auto`: "measure" (default: time candidates on the GPU, cached) or
    "static" (seed priority and measured-once gates)."""
    return SmartAttnBackend(policy=policy, mode=mode, auto=auto)
