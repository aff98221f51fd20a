"""Stage 2, local: each candidate on each layer's captured inputs: error against exact attention
(fp32) and time on this device (CUDA events; on a CPU, an estimate from H100 measurements)."""
from __future__ import annotations

import dataclasses
import json
from typing import Optional

import torch

from ..backends.flash import run_sdpa
from ..backends.intercept import AttentionCall
from ..backends.registry import exact_baseline, get_backend, get_implementation, select
from ..metrics import error_stats
from ..timing import cuda_time_ms
from .capture import LayerCapture
from .candidates import ProfileCandidate
from .cost_model import estimated_ms


def exact_fp32(call: AttentionCall) -> torch.Tensor:
    return run_sdpa(call.q.float(), call.k.float(), call.v.float(), call.mask, call.is_causal, call.scale, {})


def timing_is_real(device: str) -> bool:
    return device.startswith("cuda") and torch.cuda.is_available()


def _time_ms(impl, call: AttentionCall, params: dict) -> float:
    return cuda_time_ms(lambda: impl.run(call.q, call.k, call.v, call.mask, call.is_causal, call.scale, params))


@torch.no_grad()
def exact_time_ms(rec: LayerCapture) -> dict:
    """The exact baseline of a layer: what the exact backend runs here, and its time."""
    sel = select(rec.spec, exact_baseline(), {}, auto_mode="static")
    call = rec.samples[0]
    if timing_is_real(rec.spec.device):
        ms = _time_ms(get_implementation(sel.backend, sel.implementation), call, sel.params)
    else:
        ms = estimated_ms(rec.spec, sel.backend, sel.params)
    return {"stage": "exact", "layer": rec.layer, "label": exact_baseline(), "implementation": sel.implementation, "time_ms": ms}


@torch.no_grad()
def measure_local(rec: LayerCapture, cand: ProfileCandidate) -> dict:
    """One record: the worst error over the layer's samples, its time, and (sparse backends) the density."""
    base = {"stage": "local", "layer": rec.layer, "label": cand.label, "backend": cand.backend}
    sel = select(rec.spec, cand.backend, dict(cand.params), auto_mode="static")
    if sel.backend != cand.backend:
        why = "; ".join(str(r) for r in sel.records if r.outcome != "chosen")
        return {**base, "runnable": False, "why": f"cannot run here: {why}"}
    impl = get_implementation(sel.backend, sel.implementation)
    density_of = get_backend(sel.backend).predicted_density
    worst: Optional[dict] = None
    density = []
    for call in rec.samples:
        out = impl.run(call.q, call.k, call.v, call.mask, call.is_causal, call.scale, dict(sel.params))
        err = error_stats(out.float(), exact_fp32(call))
        e = {"cosine": err.cosine if err.finite else float("-inf"), "rel_l1": err.rel_l1 if err.finite else float("inf"),
             "rmse": err.rmse, "finite": err.finite}
        if worst is None or e["cosine"] < worst["cosine"]:
            worst = e
        if density_of is not None:
            density.append(density_of(call.q, call.k, call.mask, call.is_causal, call.scale, sel.params))
    d = sum(density) / len(density) if density else None
    if timing_is_real(rec.spec.device):
        ms = _time_ms(impl, rec.samples[0], dict(sel.params))
    else:
        ms = estimated_ms(rec.spec, cand.backend, sel.params, 1.0 if d is None else d)
    return {**base, **worst, "runnable": True, "implementation": sel.implementation, "params": dict(sel.params),
            "time_ms": ms, "density": d}


def _as_read_back(params: dict):
    """`params` as a cache line stores and reads it (tuples become lists)."""
    return json.loads(json.dumps(params, default=str))


def cached_record_problem(rec: LayerCapture, cand: Optional[ProfileCandidate], cached: dict) -> Optional[str]:
    """None if a cached record of `cand` on this layer (None: the exact baseline) names what a new measurement
    would run here (backend, implementation, parameters), else what differs. A cache line can be well-formed and
    still wrong (edited, or written by another version): it is then measured again rather than run."""
    backend = exact_baseline() if cand is None else cand.backend
    sel = select(rec.spec, backend, {} if cand is None else dict(cand.params), auto_mode="static")
    if cand is not None and cached.get("backend") != cand.backend:
        return f"backend {cached.get('backend')!r}, not the candidate's {cand.backend!r}"
    if cand is not None and not cached.get("runnable"):
        return None if sel.backend != cand.backend else "marked not runnable, but it can run here"
    if sel.backend != backend:
        return "marked runnable, but it cannot run here"
    if cached.get("implementation") != sel.implementation:
        return f"implementation {cached.get('implementation')!r}, where {sel.implementation!r} runs here"
    if cand is not None and cached.get("params") != _as_read_back(dict(sel.params)):
        return f"params {cached.get('params')!r}, where {_as_read_back(dict(sel.params))!r} run here"
    return None
