"""`smartcompile bench --model`: a user's model end to end, torch.compile default against smartattn
with uniform flash / sage / sparge-0.5 policies: time per forward and output cosine vs eager."""
from __future__ import annotations

import collections
from typing import Any, Optional

import torch
from tqdm.auto import tqdm

from ..compiler.backend import compile_graph
from ..compiler.options import CompileOptions
from ..compiler.plan import Plan
from ..metrics import error_stats
from ..policies import Policy
from .cases import BenchError
from .measure import Timer, default_timer, run_measuring_memory

DEFAULT = "torch.compile default"


def model_policies() -> dict:
    return {
        "smartattn flash": Policy.uniform("flash"),
        "smartattn sage": Policy.uniform("sage"),
        # the similarity check off, so that half of the K blocks really are skipped
        "smartattn sparge 0.5": Policy.from_dict(
            {"version": 1, "default": {"backend": "sparge", "sparsity_ratio": 0.5, "sim_threshold": -1.0}}),
    }


def _to(x: Any, device: str, dtype: torch.dtype) -> Any:
    """Tensors (nested in tuples, lists, dicts) to the device; floating ones also to the dtype."""
    if isinstance(x, torch.Tensor):
        return x.to(device, dtype) if x.is_floating_point() else x.to(device)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a namedtuple takes its fields as arguments
        return type(x)(*(_to(y, device, dtype) for y in x))
    if isinstance(x, (tuple, list)):
        return type(x)(_to(y, device, dtype) for y in x)
    if isinstance(x, dict):
        return {k: _to(y, device, dtype) for k, y in x.items()}
    return x


def _flat_output(out: Any) -> torch.Tensor:
    """Every floating tensor of a model output (a tensor, tuple, list or dict such as HF's
    ModelOutput), flattened into one fp32 vector, so the cosine covers the whole output."""
    if isinstance(out, torch.Tensor):
        parts = [out] if out.is_floating_point() else []
    elif isinstance(out, dict):
        parts = [_flat_output(v) for v in out.values()]
    elif isinstance(out, (tuple, list)):
        parts = [_flat_output(v) for v in out]
    else:
        parts = []
    parts = [p.detach().float().flatten() for p in parts if p.numel()]
    return torch.cat(parts) if parts else torch.empty(0)


def _runs(plan: Plan) -> str:
    """'sage/sage_triton x8, flash/sdpa x8': what the plan rewrote each attention site to."""
    counts = collections.Counter(f"{s.backend}/{s.implementation}" for s in plan.rewritten)
    counts.update("graph's own SDPA (auto)" for s in plan.sites if s.graph_sdpa_kept)
    if not counts:
        return "no attention rewritten"
    return ", ".join(f"{name} x{n}" for name, n in counts.most_common())


def _compiled(model: torch.nn.Module, policy: Optional[Policy], plan: Plan):
    if policy is None:
        return torch.compile(model)
    opts = CompileOptions.parse(None, None, policy, None)
    return torch.compile(model, backend=lambda gm, ex: compile_graph(gm, ex, opts, sink=plan.extend))


def _bench_one(name: str, model, policy, args, kwargs, reference, device: str, timer: Timer) -> dict:
    torch._dynamo.reset()
    plan = Plan()
    compiled = _compiled(model, policy, plan)
    call = lambda: compiled(*args, **kwargs)  # noqa: E731
    call()  # compiles (and autotunes) outside the measurements
    out, peak, _ = run_measuring_memory(call, device)
    err = error_stats(_flat_output(out), reference)
    del out
    return dict(policy=name, status="ok", reason="", ms=timer(call, name), peak_mib=peak, cosine=err.cosine,
                rel_l1=err.rel_l1, runs="the model's own attention" if policy is None else _runs(plan))


def run_model_bench(model: torch.nn.Module, args: tuple, kwargs: dict, device: str, dtype: torch.dtype,
                    timer: Optional[Timer] = None, progress: bool = True) -> list[dict]:
    """One row per policy (torch.compile default first): ms, speed vs default, cosine vs eager."""
    timer = timer or default_timer(device)
    model = model.to(device=device, dtype=dtype).eval()
    args, kwargs = _to(tuple(args), device, dtype), _to(dict(kwargs), device, dtype)
    rows = []
    with torch.no_grad():
        try:
            reference = _flat_output(model(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 -- user code: its failure is reported, not a traceback
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise BenchError(f"--model: the model fails on its own inputs without smartcompile "
                             f"({type(exc).__name__}: {first}); check the inputs the factory returns") from None
        if not reference.numel():
            raise BenchError("--model: the model's output holds no floating-point tensor to compare")
        steps = [(DEFAULT, None)] + list(model_policies().items())
        for name, policy in tqdm(steps, desc="bench --model", unit="policy", disable=not progress):
            try:
                rows.append(_bench_one(name, model, policy, args, kwargs, reference, device, timer))
            except Exception as exc:  # noqa: BLE001 -- user model: a policy that fails is a row, the rest still run
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                rows.append(dict(policy=name, status="failed", reason=f"{type(exc).__name__}: {first}", ms=None,
                                 peak_mib=None, cosine=None, rel_l1=None, runs="-"))
    torch._dynamo.reset()
    base = rows[0]["ms"] if rows[0]["status"] == "ok" else None
    for r in rows:
        r["vs_default"] = base / r["ms"] if base and r["ms"] else None
    return rows
