"""Shared test helpers: compile with the smartattn passes and collect the plan."""
from __future__ import annotations

import pytest
import torch

from smartcompile.compiler.backend import compile_graph
from smartcompile.compiler.options import CompileOptions
from smartcompile.compiler.plan import Plan
from smartcompile.metrics import error_stats

FLASH = {"version": 1, "default": "flash"}


def compile_and_plan(fn, policy=FLASH, inductor: bool = False):
    """(compiled fn, Plan) — the plan fills in at the first call."""
    opts = CompileOptions.parse(None, None, policy)
    plan = Plan()
    compiled = torch.compile(fn, backend=lambda gm, ex: compile_graph(gm, ex, opts, sink=plan.extend, run_inductor=inductor))
    return compiled, plan


def assert_close_to(out: torch.Tensor, ref: torch.Tensor, min_cosine: float, max_rel_l1: float, what: str = ""):
    err = error_stats(out, ref)
    _log_margin(err, min_cosine, max_rel_l1)
    assert err.finite, f"{what}: non-finite output"
    assert err.cosine >= min_cosine and err.rel_l1 <= max_rel_l1, f"{what}: {err} (bounds cos>={min_cosine}, relL1<={max_rel_l1})"
    return err


def _log_margin(err, min_cosine: float, max_rel_l1: float):
    """With SMARTCOMPILE_BOUNDS_LOG set, one JSON line per check: how much of each bound a random draw used
    (tests/bounds_margins.py reads them to find bounds that sit on a distribution's tail: flaky tests)."""
    import json
    import os

    path = os.environ.get("SMARTCOMPILE_BOUNDS_LOG")
    if not path:
        return
    row = dict(test=os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0], cosine=err.cosine,
               rel_l1=err.rel_l1, min_cosine=min_cosine, max_rel_l1=max_rel_l1)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def spec_id(b, hq, hkv, sq, sk, d, dtype=torch.float32, extra=""):
    dt = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    return f"B{b}-Hq{hq}-Hkv{hkv}-Sq{sq}-Sk{sk}-D{d}-{dt}" + (f"-{extra}" if extra else "")


# The Sage kernels' GPU test shapes (Triton and Gluon): B, Hq, Hkv, Sq, Sk, D, causal
SAGE_KERNEL_SHAPES = [
    (1, 4, 4, 97, 97, 64, False),
    (2, 8, 2, 1025, 1025, 128, True),
    (1, 4, 4, 4097, 4097, 128, False),
    (1, 8, 1, 1025, 4097, 64, False),
    (2, 4, 2, 4097, 1025, 96, True),
    (1, 4, 4, 4097, 4097, 64, True),
]


def make_cuda_input(b, h, s, d, dtype, layout, scale=1.0, bias=0.0):
    """Random (B, H, S, D) on CUDA; layout "NHD" makes it a transposed (B, S, H, D) view."""
    if layout == "NHD":
        x = torch.randn(b, s, h, d, device="cuda", dtype=torch.float32).transpose(1, 2)
    else:
        x = torch.randn(b, h, s, d, device="cuda", dtype=torch.float32)
    return (x * scale + bias).to(dtype)


def profile_summary(**changes) -> dict:
    """A small metadata["profile"] as profile writes it (format 1), for report tests."""
    fp8 = "sage[pv_precision=fp8]"
    return {
        "format": "smartcompile.profile/1", "model": "Net", "metric": "cosine", "higher_is_better": True,
        "budget": 0.995, "budget_cost": 0.005, "achieved": 0.998, "meets_budget": True,
        "verification": [{"allowed_cost": 0.005, "switched": 1, "value": 0.998, "meets_budget": True}],
        "timing": "estimated", "times": "estimates", "speedup": None, "candidates": [fp8],
        "candidate_rules": {fp8: {"backend": "sage", "pv_precision": "fp8"}}, "wall_s": 1.0,
        "cache": {"path": None, "reused_measurements": 0},
        "layers": {"blocks.0": {"spec": "s", "calls": 2, "chosen": fp8, "time_exact_ms": 9.2e-05, "saved_ms": 1e-05,
                                "candidates": {fp8: {"cosine": 0.9999, "time_ms": 8.2e-05, "e2e_value": 0.998,
                                                     "e2e_cost": 0.002}}}},
    } | changes


def skip_without_gluon() -> None:
    """Skip the calling test where the sm90 Gluon kernel cannot run (its reason: no CUDA, not sm90, Triton)."""
    from smartcompile.kernels.sage_gluon import gluon_unavailable_reason

    reason = gluon_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
