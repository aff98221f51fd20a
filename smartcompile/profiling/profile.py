"""smartcompile.profile: from a calibration run to a per-layer policy file.

Stages: capture (one exact run), local (each candidate on each layer's captured inputs),
sensitivity (the end-to-end metric with only one layer switched), choose (most time saved
within the budget) and verify (a run with every choice, backing off until the budget holds).
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from tqdm.auto import tqdm

from .._cache import digest
from .._version import __version__
from .._logging import logger
from ..backends.hardware import hardware_fingerprint
from ..backends.intercept import intercepting
from ..backends.registry import exact_baseline
from ..errors import SmartCompileError
from ..policies import Policy
from ..policies.schema import POLICY_VERSION, STEP_RULES_VERSION
from ..timing import wall_seconds
from .calibration import detach_output, make_runner
from .candidates import parse_candidates
from .capture import Capture
from .choose import Option, choose_within_budget
from .local import cached_record_problem, exact_time_ms, measure_local, timing_is_real
from .metric import Metric, flat_output, resolve_metric
from .runs import compile_exact, run_with
from .step_units import StepRanges, split_unit
from .store import MeasurementStore, json_safe
from .summary import CandidateResult, LayerSummary, ProfileSummary, Speedup, VerificationRun

MAX_BACKOFF = 8


def _output_digest(references: list) -> str:
    vec = torch.cat([flat_output(r).float().cpu() for r in references])
    return digest([vec.numel(), [round(x, 3) for x in vec[:: max(1, vec.numel() // 4096)].tolist()]])


def _cache_key(model, capture: Capture, references: list, cands: list, metric: Metric) -> str:
    return digest({
        "model": type(model).__qualname__, "layers": {n: r.spec.short() for n, r in capture.layers.items()},
        "outputs": _output_digest(references), "candidates": [c.label for c in cands], "metric": metric.name,
        "hardware": hardware_fingerprint(next(iter(capture.layers.values())).spec.device),
        "smartcompile": __version__,
    })


def _interrupted(store) -> None:
    where = f"kept in {store.path}" if store.path else "not kept (cache off)"
    logger.warning("profile interrupted: %d measurements %s; re-run the same call to resume", len(store.records), where)


def profile(
    model: torch.nn.Module,
    calibration_inputs: Union[list, Callable],
    *,
    budget: Optional[float] = None,
    candidates: Optional[list] = None,
    metric: Union[str, Metric, Callable] = "cosine",
    out: Union[str, Path, None] = None,
    cache: bool = True,
    progress: bool = True,
    step_ranges: Optional[list] = None,
) -> Policy:
    """Find the fastest per-layer attention choice whose end-to-end output stays within `budget`.

    calibration_inputs: a list of (args, kwargs) for `model`, or a callable(model) that runs it
        (e.g. a few denoising steps) and returns what the metric compares.
    budget: the bound on `metric` over the worst calibration item; None: the metric's default
        (cosine >= 0.995, rel_l1 <= 0.05, psnr >= 30 dB; a callable metric needs one).
    candidates: sage/sparge rules to try (default: Sage with FP16 and FP8 P.V; Sparge at 50% and 75%
        sparsity, with the similarity check and without it).
    metric: "cosine", "rel_l1", "psnr", a Metric, or a callable (reference, output) -> float
        where higher is better.
    out: where to write the policy JSON. cache: reuse (and keep) measurements across runs.
    step_ranges: denoising step ranges such as ["0-1", "2-17", "18-"] to profile each layer per
        range (the calibration callable runs a sampling loop under smartcompile.step or
        track_steps); a layer whose ranges choose differently gets a "by_step" rule (version 2).
    """
    units = StepRanges.parse(step_ranges)
    if out is not None and (Path(out).is_dir() or not Path(out).parent.is_dir()):  # now, not after the run
        raise SmartCompileError(f"out: {str(out)!r} is a folder or its folder does not exist; give a file path "
                                "in a folder that exists")
    if isinstance(metric, (str, Metric)):  # before any model run: a wrong budget costs nothing
        budget = resolve_metric(metric).check_budget(budget)
    elif budget is None:
        raise SmartCompileError("budget: a callable metric has no default budget; pass budget=...")
    t0 = time.perf_counter()
    run, n_items = make_runner(calibration_inputs)
    cands = parse_candidates(candidates)
    compiled, plan = compile_exact(model)
    capture = Capture(units)
    with torch.no_grad(), intercepting(capture):
        references = [detach_output(o) for o in tqdm(run(compiled), desc="capture", disable=not progress, total=n_items)]
    if not capture.layers:
        raise SmartCompileError("profile: the model has no attention that smartattn rewrites, nothing to profile:\n"
                                + str(plan))
    metric_obj = resolve_metric(metric, references)
    budget = metric_obj.check_budget(budget)
    budget_cost = metric_obj.cost(budget)
    if metric_obj.cost(metric_obj.value(references, references)) > budget_cost:
        raise SmartCompileError(f"budget: {metric_obj.describe(budget)} is not met even by the exact model")
    layers = list(capture.layers.values())
    device = layers[0].spec.device
    real_timing = timing_is_real(device)
    store = MeasurementStore(_cache_key(model, capture, references, cands, metric_obj) if cache else None)
    try:
        local = _stage_local(layers, cands, store, progress)
        sens = _stage_sensitivity(compiled, run, references, layers, cands, local, metric_obj, budget_cost, store,
                                  progress, units)
        options = _options(layers, cands, local, sens)
        chosen, verification = _choose_and_verify(compiled, run, references, layers, local, options, metric_obj,
                                                  budget, budget_cost, progress, units)
        policy_dict = _policy_dict(layers, cands, chosen)
        speed = (_measure_speedup(model, run, Policy.from_dict(policy_dict), references, metric_obj, progress)
                 if real_timing else None)
    except KeyboardInterrupt:
        _interrupted(store)
        raise
    policy_dict["metadata"] = {
        # graph notes (graph breaks, shared graphs): a layer name may stand for several modules
        "profile": _summary(model, n_items, cands, metric_obj, budget, verification, speed, real_timing, layers,
                            local, sens, chosen, store, time.perf_counter() - t0, plan.notes).to_dict(),
        "hardware": hardware_fingerprint(device),
    }
    policy = Policy.from_dict(json_safe(policy_dict), source=str(out) if out else "<profile>")
    if out is not None:
        policy.save(out)
    return policy


def _stage_local(layers, cands, store, progress) -> dict:
    """{(layer, label): record}, plus {(layer, exact_baseline()): exact record}."""
    out = {}
    bar = tqdm(total=len(layers) * (len(cands) + 1), desc="local (candidates on captured inputs)", disable=not progress)
    for rec in layers:
        for cand in [None] + cands:
            stage, label = ("exact", exact_baseline()) if cand is None else ("local", cand.label)
            r = store.get(stage, rec.layer, label)
            why = None if r is None else cached_record_problem(rec, cand, r)
            if why is not None:
                logger.warning("profile cache: the %s record of %s on %s %s; measuring it again", stage, label,
                               rec.layer, why)
            if r is None or why is not None:
                r = exact_time_ms(rec) if cand is None else measure_local(rec, cand)
                store.put(r)
            out[(rec.layer, label)] = r
            bar.update()
    bar.close()
    return out


def _saved_ms(rec, local, label) -> float:
    return (local[(rec.layer, exact_baseline())]["time_ms"] - local[(rec.layer, label)]["time_ms"]) * rec.calls


def _stage_sensitivity(compiled, run, references, layers, cands, local, metric, budget_cost, store, progress,
                       units) -> dict:
    """{(layer, label): {"value", "cost"} or {"skipped": why}}; climbs each family's ladder
    from least to most aggressive and stops where one rung alone breaks the budget."""
    out = {}
    bar = tqdm(total=len(layers) * len(cands), desc="sensitivity (one layer switched)", disable=not progress)
    for rec in layers:
        broken: dict[str, str] = {}
        for cand in cands:
            loc = local[(rec.layer, cand.label)]
            skip = None
            if not loc.get("runnable"):
                skip = loc.get("why", "not runnable here")
            elif not loc.get("finite"):
                skip = "non-finite output on the captured inputs"
            elif _saved_ms(rec, local, cand.label) <= 0:
                skip = "not faster than exact here"
            elif cand.family in broken:
                skip = f"a less aggressive setting ({broken[cand.family]}) already breaks the budget"
            if skip is not None:
                out[(rec.layer, cand.label)] = {"skipped": skip}
                bar.update()
                continue
            r = store.get("sensitivity", rec.layer, cand.label)
            if r is None:
                outputs = run_with(compiled, run, {rec.layer: (cand.backend, loc["implementation"], loc["params"])},
                                   units)
                value = metric.value(references, outputs)
                r = {"stage": "sensitivity", "layer": rec.layer, "label": cand.label, "value": value}
                store.put(r)
            r = {**r, "cost": metric.cost(r["value"])}
            if r["cost"] > budget_cost:
                broken[cand.family] = cand.label
            out[(rec.layer, cand.label)] = r
            bar.update()
    bar.close()
    return out


def _options(layers, cands, local, sens) -> dict:
    options = {}
    for rec in layers:
        options[rec.layer] = [
            Option(rec.layer, c.label, _saved_ms(rec, local, c.label), sens[(rec.layer, c.label)]["cost"])
            for c in cands if "cost" in sens[(rec.layer, c.label)]
        ]
    return options


def _choose_and_verify(compiled, run, references, layers, local, options, metric, budget, budget_cost, progress,
                       units):
    """Choose within the budget, verify with one run of every choice; halve the allowed cost until
    the verified metric holds (all exact at worst). Returns ({layer: Option|None}, attempts)."""
    attempts = []
    allowed = budget_cost
    bar = tqdm(total=MAX_BACKOFF + 1, desc="choose + verify", disable=not progress)
    for attempt in range(MAX_BACKOFF + 1):
        chosen = choose_within_budget(options, allowed) if attempt < MAX_BACKOFF else {layer: None for layer in options}
        assignment = {layer: (local[(layer, o.label)]["backend"], local[(layer, o.label)]["implementation"],
                              local[(layer, o.label)]["params"]) for layer, o in chosen.items() if o is not None}
        value = metric.value(references, run_with(compiled, run, assignment, units))
        ok = metric.meets(value, budget)
        attempts.append(VerificationRun(allowed, len(assignment), value, ok))
        bar.update()
        if ok or not assignment:
            break
        logger.info("profile: %d switched layers give %s = %.6f, outside the budget; backing off", len(assignment),
                    metric.name, value)
        allowed /= 2
    bar.close()
    return chosen, attempts


def _policy_dict(layers, cands, chosen) -> dict:
    """One rule per layer; per-step-range units of a layer become a "by_step" rule when their
    choices differ (steps no range covers, and calls outside any step, run exact)."""
    by_label = {c.label: c for c in cands}
    rules: dict = {}
    per_step: dict = {}
    for rec in layers:
        o = chosen.get(rec.layer)
        rule = exact_baseline() if o is None else by_label[o.label].rule().to_json()
        layer, key = split_unit(rec.layer)
        if key is None:
            rules[layer] = rule
        else:
            per_step.setdefault(layer, {})[key] = rule
    exact = exact_baseline()
    for layer, by_key in per_step.items():
        ordered = dict(sorted(by_key.items(), key=lambda kv: int(kv[0].split("-")[0])))
        # one plain rule only when every range stays exact: a lossy choice must not reach steps no
        # range measured, nor calls outside any step ("otherwise" is exact)
        all_exact = all(r == exact for r in ordered.values())
        rules[layer] = exact if all_exact else {"by_step": ordered, "otherwise": exact}
    stepped = any(isinstance(r, dict) and "by_step" in r for r in rules.values())
    return {"version": STEP_RULES_VERSION if stepped else POLICY_VERSION, "default": exact_baseline(), "layers": rules}


def _measure_speedup(model, run, policy: Policy, references, metric: Metric, progress: bool) -> Speedup:
    """End to end on the GPU: Inductor default vs the profiled policy, same inputs, same run."""
    from ..compiler import backend

    results = {}
    runs = (("torch.compile default", torch.compile(model)),
            ("profiled policy", torch.compile(model, backend=backend(policy=policy))))
    for name, compiled in tqdm(runs, desc="end to end (compile + time)", disable=not progress):
        with torch.no_grad():
            outputs = [detach_output(o) for o in run(compiled)]
            results[name] = {"seconds": wall_seconds(lambda: list(run(compiled)), "cuda", 5),
                             "value": metric.value(references, outputs)}
    base, ours = results["torch.compile default"], results["profiled policy"]
    return Speedup(base["seconds"] / ours["seconds"], base["seconds"] * 1e3, ours["seconds"] * 1e3, ours["value"])


def _summary(model, n_items, cands, metric, budget, verification, speed, real_timing, layers, local, sens, chosen,
             store, wall_s, graph_notes) -> ProfileSummary:
    per_layer = {}
    for rec in layers:
        o = chosen.get(rec.layer)
        results = {}
        for c in cands:
            loc, sen = local[(rec.layer, c.label)], sens[(rec.layer, c.label)]
            results[c.label] = CandidateResult(
                **{k: loc.get(k) for k in ("cosine", "rel_l1", "rmse", "time_ms", "density", "implementation")},
                **({"e2e_value": sen["value"], "e2e_cost": sen["cost"]} if "cost" in sen
                   else {"skipped": sen.get("skipped", loc.get("why"))}))
        per_layer[rec.layer] = LayerSummary(rec.spec.short(), rec.calls, exact_baseline() if o is None else o.label,
                                            local[(rec.layer, exact_baseline())]["time_ms"],
                                            0.0 if o is None else o.saved_ms, results)
    final = verification[-1]
    return ProfileSummary(
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        smartcompile=__version__, model=type(model).__qualname__, calibration_items=n_items,
        metric=metric.name, higher_is_better=metric.higher_is_better, budget=budget,
        budget_cost=metric.cost(budget), achieved=final.value, meets_budget=final.meets_budget,
        verification=tuple(verification),
        timing="measured" if real_timing else "estimated",
        times="cuda events on this GPU" if real_timing else
        "estimates from H100 measurements: this device (CPU) runs reference numerics, its times are not meaningful",
        speedup=speed, candidates=tuple(c.label for c in cands),
        candidate_rules={c.label: c for c in cands}, wall_s=wall_s,
        cache_path=str(store.path) if store.path else None, reused_measurements=store.reused,
        layers=per_layer, graph_notes=tuple(graph_notes),
    )
