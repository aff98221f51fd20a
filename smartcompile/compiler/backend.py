"""The smartattn backend: find, name, decide, rewrite, then Inductor.

Registered for torch.compile through the `torch_dynamo_backends` entry point (pyproject.toml),
so `torch.compile(m, backend="smartattn")` works without importing smartcompile.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Optional

import torch

from .._logging import configure_from_env, logger
from ..backends.op import OP_CONTRACT, register_ops
from ..errors import UnsupportedError
from ..passes import find_attention_sites, rewrite_site
from ..passes.anchor import find_anchors
from ..policies import Policy, resolve, unmatched_rules
from ..policies.resolve import matching_rule
from ..policies.hardware_check import hardware_mismatch
from .layer_dispatch import (DispatchSite, choose_implementation, frame_path, full_layer, named_models, register_site,
                             sibling_layers)
from .options import CompileOptions
from .plan import Plan, PlannedSite


def plan_and_rewrite(gm: torch.fx.GraphModule, policy: Policy, auto_mode: str = "measure",
                     example_inputs: Optional[list] = None) -> Plan:
    """Rewrite every site of `gm` the policy turns on; return the plan (one graph)."""
    register_ops()
    plan = Plan(graphs=1)
    sites = find_attention_sites(gm)
    inputs = dict(zip([n for n in gm.graph.nodes if n.op == "placeholder"], example_inputs or []))
    replaced: dict = {}
    for site in sites:
        base = dict(layer=site.layer, pattern=site.pattern, spec=site.spec, note=site.layer_note,
                    mask=site.mask_structure.describe() if site.mask_structure is not None else "")
        if site.rejected is not None:
            names = _layer_names(gm, site, inputs)
            if names != (site.layer,):  # a regional graph: the instances it serves (rules name those)
                base["instances"] = names
            plan.sites.append(PlannedSite(**base, backend=None, implementation=None, params={},
                                          reason=f"not rewritten: {site.rejected}", rewritten=False))
            _warn_policy_not_applied(policy, names, site.rejected)
            continue
        anchors, frame = _running_frame(gm, site, inputs)
        per_instance = policy.has_step_rules or bool(frame)  # one graph may serve other instances / steps
        decision = resolve(site.layer if frame is None else full_layer(frame, site.layer), policy)
        if decision.backend == "off" and not per_instance:
            plan.sites.append(PlannedSite(**base, backend="off", implementation=None, params={},
                                          reason=f"{decision.reason}: off, left untouched", rewritten=False))
            continue
        try:
            choice, reason, sel = choose_implementation(decision, site.spec, auto_mode)
        except UnsupportedError as exc:  # e.g. float64 or head dim > 1024: stock Inductor handles it
            plan.sites.append(PlannedSite(**base, backend=None, implementation=None, params={},
                                          reason=f"not rewritten: {exc}", rewritten=False))
            _warn_policy_not_applied(policy, _layer_names(gm, site, inputs), str(exc))
            continue
        if not per_instance and keeps_graph_sdpa(decision.backend, site, choice):
            plan.sites.append(PlannedSite(**base, backend=None, implementation=None, params={},
                                          reason=f"{reason}: the graph's own SDPA call, kept", rewritten=False,
                                          steps=sel.records, timings=sel.timings, graph_sdpa_kept=True))
            continue
        site = site.remapped(replaced)
        if per_instance:
            site_id = register_site(DispatchSite(site.layer, tuple(a.path for a in anchors), site.spec, policy,
                                                 auto_mode, dataclasses.replace(choice, layer=site.layer)))
            op, choice_args = torch.ops.smartattn.attention_by_layer.default, ([a.node for a in anchors], site_id)
            where = f"graph of {frame!r}, serving every instance of its code" if frame else "per denoising step"
            base["note"] = "; ".join(x for x in (base["note"], f"chosen per instance at run time ({where})") if x)
            base["instances"] = sibling_layers(frame, site.layer) if frame else ()
        else:
            op, choice_args = torch.ops.smartattn.attention.default, choice.as_op_args()[:3] + (site.layer,)
        replaced[site.output] = rewrite_site(gm, site, op, choice_args)
        if decision.backend not in ("auto", "off", choice.backend):  # the user asked for something else: say so
            why = "; ".join(str(r) for r in sel.records if r.backend != choice.backend and r.outcome != "measured")
            logger.warning("%s: %s requested, %s/%s runs instead: %s", site.layer, decision.backend,
                           choice.backend, choice.implementation, why)
        plan.sites.append(PlannedSite(**base, backend=choice.backend, implementation=choice.implementation,
                                      params=dict(sel.params), reason=reason,
                                      rewritten=True, steps=sel.records, timings=sel.timings))
    gm.graph.lint()
    gm.recompile()
    devices = sorted({s.spec.device for s in plan.sites if s.spec is not None})
    if devices:
        mismatch = hardware_mismatch(policy, devices[0])
        if mismatch:
            plan.notes.append(mismatch)
            _warn_once(mismatch)
    return plan


def keeps_graph_sdpa(requested: str, site, choice) -> bool:
    """Under "auto", exact SDPA chosen for a plain SDPA call (no mask tensor, nothing normalised): rewriting
    it would call the same torch function from our op, which Inductor then runs as an opaque call instead of
    lowering it itself. Measured (H200, Wan2.1-1.3B config at 4,680 tokens, benchmarks/bench_wan.py): every
    site so rewritten ran 0.78x of `torch.compile` default. Leaving the node is stock behaviour, so "auto"
    cannot lose there. An explicit "flash" still rewrites (the user asked for our op, e.g. per-step rules)."""
    return (requested == "auto" and choice.backend == "flash" and choice.implementation == "sdpa"
            and site.pattern == "sdpa" and not site.masks and site.mask_structure is None)


MAX_ANCHORS = 4  # candidate parameters handed to the per-instance op (tied ones are skipped there)


def _running_frame(gm, site, inputs: dict) -> tuple:
    """(anchors, frame path): candidate parameters of the module this graph was compiled from,
    and its path when it is a submodule of a model named by `name_layers` ("" for the named model
    itself, None if unknown). The frame comes from the first candidate a named model names
    uniquely (a parameter tied between blocks, or a tensor subclass without storage, does not)."""
    anchors = find_anchors(gm, site)[:MAX_ANCHORS]
    if not anchors or not named_models():
        return anchors, None
    for anchor in anchors:
        frame = frame_path(inputs.get(anchor.node), anchor.path)
        if frame is not None:
            return anchors, frame
    logger.warning("smartattn: %s: none of its module's parameters names it in the models given to name_layers "
                   "(tied or shared parameters?): its rules use the relative name", site.layer)
    return anchors, None


_WARNED: set = set()


def _warn_once(message: str) -> None:
    """A UserWarning (filterable), logged at info level: a logger.warning too printed it twice without a handler."""
    if message not in _WARNED:
        _WARNED.add(message)
        logger.info(message)
        warnings.warn(message, stacklevel=2)


_WARNED_SITES: set = set()  # (layer, backend, reason): a recompile does not repeat it
_APPROXIMATE = ("sage", "sparge")


def _layer_names(gm, site, inputs: dict) -> tuple:
    """The full names a site's rules see: under regional compilation every instance of the frame module's class
    (quietly: no frame found is the relative name, as for a rewritten site), else the site's own name."""
    if named_models():
        for anchor in find_anchors(gm, site)[:MAX_ANCHORS]:
            frame = frame_path(inputs.get(anchor.node), anchor.path)
            if frame is not None:
                return sibling_layers(frame, site.layer) or (full_layer(frame, site.layer),)
    return (site.layer,)


def _warn_policy_not_applied(policy: Policy, layers: tuple, why: str) -> None:
    """A site the pass leaves to Inductor runs exact attention: say so when the policy asks for a quantized or
    sparse backend for one of its layers (at any step), which the user would otherwise take as applied."""
    for layer in layers:
        found = matching_rule(layer, policy)
        rule = policy.default if found is None else found[1]
        asked = sorted({r.backend for r in (rule, *(step for _, _, step in rule.by_step))} & set(_APPROXIMATE))
        key = (layer, tuple(asked), why)
        if asked and key not in _WARNED_SITES:
            _WARNED_SITES.add(key)
            logger.warning("smartattn: %s: the policy asks for %s, but the site is left to Inductor (exact "
                           "attention): %s", layer, "/".join(asked), why)


_WARNED_RULES: set = set()  # (policy source, rule key): a recompile or another graph does not repeat it


def warn_unmatched_rules(plan: Plan, policy: Policy) -> None:
    """One logger WARNING per rule that matches no attention layer of a compiled graph (a typo in
    a layer name would otherwise leave that layer on the default silently). A graph without
    attention says nothing about the rules."""
    if not plan.sites:
        return
    for key, close in unmatched_rules(policy, [s.layer for s in plan.sites] + [n for s in plan.sites for n in s.instances]):
        if (policy.source, key) in _WARNED_RULES:
            continue
        _WARNED_RULES.add((policy.source, key))
        logger.warning("policy %s: rule %r matches no attention layer of the compiled graph (%d layers; closest "
                       "names: %s); fine if it is meant for a layer of another graph (after a graph break), else "
                       "`smartcompile explain` lists the layer names", policy.source, key, len(plan.sites),
                       ", ".join(close) or "none")


def log_plan(plan: Plan, policy: Policy) -> None:
    if plan.sites:
        logger.info("smartattn plan (policy %s):\n%s", policy.source, plan)


def compile_graph(
    gm: torch.fx.GraphModule,
    example_inputs: list,
    opts: CompileOptions,
    sink: Optional[Callable[[Plan], None]] = None,
    run_inductor: bool = True,
    warn_unmatched: bool = True,
):
    """`warn_unmatched`: False where the caller reports unmatched rules itself (explain, which
    sees every graph of the model and puts them in the plan's notes)."""
    configure_from_env()
    plan = plan_and_rewrite(gm, opts.policy, opts.auto, example_inputs)
    log_plan(plan, opts.policy)
    if warn_unmatched:
        warn_unmatched_rules(plan, opts.policy)
    if sink is not None:
        sink(plan)
    if not run_inductor:
        return gm.forward
    from torch._inductor.compile_fx import compile_fx

    with torch.compiler.config.patch(cache_key_tag=_cache_key_tag()):
        return compile_fx(gm, example_inputs, config_patches=opts.config_patches())


def _cache_key_tag() -> str:
    """The user's tag plus our ops' contract version (see OP_CONTRACT). It keys the forward graphs, compiled
    here; AOTAutograd compiles a backward lazily, outside this call, but the backward op's fake has not changed."""
    tag = torch.compiler.config.cache_key_tag
    return f"{tag}|{OP_CONTRACT}" if tag else OP_CONTRACT


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
