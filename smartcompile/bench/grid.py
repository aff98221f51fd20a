"""The kernel grid of `smartcompile bench`: every variant on every shape, through the registry.

Each variant is selected as a policy rule would be (`select`, static auto mode); where the backend
cannot run the shape here, the row says why instead of measuring something else. A variant that
fails at run time (out of memory, a compiler error) is a row with the error, not a crash.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from ..backends.hardware import compute_capability
from ..backends.registry import get_backend, get_implementation, select
from ..backends.steps import passed_over
from ..errors import UnsupportedError
from ..spec import AttentionSpec
from ..synthetic import structured_qkv
from .cases import BenchConfig, Variant, token_grid
from .measure import Timer, attention_flops, default_timer, run_measuring_memory
from .quality import quality, sliced_reference

METRICS = ("ms", "tflops", "vs_exact", "peak_mib", "extra_mib", "density", "cosine", "rel_l1", "psnr")
BASELINE = ("flash", "sdpa")  # the stock exact kernel every ratio is against (cuDNN/flash inside torch on a GPU)


@dataclasses.dataclass(frozen=True)
class Job:
    variant: Variant
    implementation: Optional[str]  # None: cannot run here
    params: dict
    reason: str = ""


def _fp8_missing(variant: Variant, device: str) -> str:
    """FP8 P.V asked for on a GPU without FP8 tensor cores: the registry would run FP16 instead."""
    cc = compute_capability(device)
    if variant.param_dict.get("pv_precision") == "fp8" and cc is not None and cc < (8, 9):
        return f"FP8 P.V needs compute capability >= 8.9 (device has {cc[0]}.{cc[1]})"
    return ""


def plan_jobs(variant: Variant, spec: AttentionSpec) -> list[Job]:
    """What runs for `variant` on `spec`; flash also runs the baseline when it picks another kernel."""
    missing = _fp8_missing(variant, spec.device)
    if missing:
        return [Job(variant, None, {}, missing)]
    try:
        sel = select(spec, variant.backend, variant.param_dict, auto_mode="static")
    except UnsupportedError as exc:  # not even the fallback (flash/sdpa) takes this shape
        return [Job(variant, None, {}, str(exc))]
    if sel.backend != variant.backend:
        return [Job(variant, None, {}, passed_over(sel.records) or f"fell back to {sel.backend}/{sel.implementation}")]
    jobs = [Job(variant, sel.implementation, dict(sel.params))]
    if (variant.backend, sel.implementation) != BASELINE and variant.backend == BASELINE[0]:
        jobs.insert(0, Job(variant, BASELINE[1], {}))
    return jobs


def _params_text(params: dict) -> str:
    shown = [f"pv {params['pv_precision']}"] if "pv_precision" in params else []
    if params.get("sparsity_ratio") is not None:
        shown.append(f"sparsity {params['sparsity_ratio']:g}")
    return ", ".join(shown)


def _run_job(job: Job, q, k, v, ref, cfg: BenchConfig, timer: Timer) -> dict:
    impl = get_implementation(job.variant.backend, job.implementation)
    scale = q.shape[-1] ** -0.5
    call: Callable[[], torch.Tensor] = lambda: impl.run(q, k, v, None, cfg.causal, scale, dict(job.params))
    if cfg.device == "cuda":
        call()  # warm-up: compiles and autotunes Triton kernels outside the memory and time measurements
    out, peak, extra = run_measuring_memory(call, cfg.device)
    row = dict(quality(out, ref), peak_mib=peak, extra_mib=extra)
    del out
    row["ms"] = timer(call, job.variant.label)
    density = get_backend(job.variant.backend).predicted_density  # a sparse family's trait; None: dense
    row["density"] = density(q, k, None, cfg.causal, scale, job.params) if density is not None else 1.0
    return row


def _measure(job: Job, q, k, v, ref, cfg: BenchConfig, timer: Timer) -> dict:
    if job.implementation is None:
        return dict(status="cannot run here", reason=job.reason)
    try:
        return dict(status="ok", reason="", **_run_job(job, q, k, v, ref, cfg, timer))
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        return dict(status="failed", reason=f"out of memory: {str(exc).splitlines()[0][:160]}")
    except Exception as exc:  # noqa: BLE001 -- one kernel's failure is a row of the table; the rest still run
        return dict(status="failed", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")


def add_ratios(rows: list) -> None:
    """speed vs the baseline row of the same shape (baseline ms / ms: > 1 is faster), and TFLOP/s."""
    key = lambda r: (r["B"], r["H"], r["N"], r["D"], r["causal"])  # noqa: E731
    base = {key(r): r["ms"] for r in rows
            if (r["backend"], r["implementation"]) == BASELINE and r["status"] == "ok"}
    for r in rows:
        ok = r["status"] == "ok"
        b = base.get(key(r))
        r["tflops"] = attention_flops(r["B"], r["H"], r["N"], r["N"], r["D"], r["causal"]) / r["ms"] / 1e9 if ok else None
        r["vs_exact"] = b / r["ms"] if ok and b is not None and r["ms"] > 0 else None


def run_grid(cfg: BenchConfig, timer: Optional[Timer] = None, progress: bool = True) -> list[dict]:
    """One row per (shape, variant implementation): times, memory, quality, density."""
    timer = timer or default_timer(cfg.device)
    rows: list[dict] = []
    total = len(cfg.shapes()) * len(cfg.variants)
    bar = tqdm(total=total, desc="bench", unit="case", disable=not progress)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for d, n in cfg.shapes():
            bar.set_postfix_str(f"D{d} N{n}")
            shape = dict(B=cfg.batch, H=cfg.heads, N=n, D=d, dtype=cfg.dtype_name, causal=cfg.causal)
            try:
                q, k, v = structured_qkv(cfg.batch, cfg.heads, cfg.heads, token_grid(n), d, device=cfg.device,
                                         dtype=cfg.dtype, generator=generator)
                ref = sliced_reference(q, k, v, cfg.causal, cfg.max_ref_queries, cfg.max_ref_heads)
            except (RuntimeError, MemoryError) as exc:  # out of memory (CUDA's is a RuntimeError): rows, not a crash
                torch.cuda.empty_cache()
                reason = f"inputs: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                rows += [{**shape, "variant": variant.label, "backend": variant.backend, "implementation": "-",
                          "params": "-", **dict.fromkeys(METRICS), "status": "failed", "reason": reason}
                         for variant in cfg.variants]
                bar.update(len(cfg.variants))
                continue
            spec = AttentionSpec(cfg.batch, cfg.heads, cfg.heads, n, n, d, d, cfg.dtype, cfg.device,
                                 mask_kind="causal" if cfg.causal else "none",
                                 causal_alignment="top_left" if cfg.causal else None)
            for variant in cfg.variants:
                for job in plan_jobs(variant, spec):
                    rows.append({**shape, "variant": variant.label, "backend": variant.backend,
                                 "implementation": job.implementation or "-", "params": _params_text(job.params),
                                 **dict.fromkeys(METRICS), **_measure(job, q, k, v, ref, cfg, timer)})
                bar.update(1)
            del q, k, v, ref
    bar.close()
    add_ratios(rows)
    return rows
