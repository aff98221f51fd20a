"""Shared test helpers: compile with the smartattn passes and collect the plan."""
from __future__ import annotations

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
    assert err.finite, f"{what}: non-finite output"
    assert err.cosine >= min_cosine and err.rel_l1 <= max_rel_l1, f"{what}: {err} (bounds cos>={min_cosine}, relL1<={max_rel_l1})"
    return err


def spec_id(b, hq, hkv, sq, sk, d, dtype=torch.float32, extra=""):
    dt = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    return f"B{b}-Hq{hq}-Hkv{hkv}-Sq{sq}-Sk{sk}-D{d}-{dt}" + (f"-{extra}" if extra else "")
