"""The markdown of `smartcompile bench`: speed, peak memory and quality tables (and --model's)."""
from __future__ import annotations

import math
from typing import Optional

from .measure import CPU_NOTE


def _f(x: Optional[float], spec: str, suffix: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec) + suffix


def _tflops(x: Optional[float]) -> str:
    """Whole TFLOP/s on a GPU (1440, not 1.44e+03); three significant digits for a CPU's small numbers."""
    return _f(x, ".0f" if x is not None and x >= 100 else ".3g")


def _table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _key(r: dict) -> list:
    return [r["D"], r["N"], r["variant"], r["implementation"]]


def _note(r: dict) -> str:
    return "" if r["status"] == "ok" else f"{r['status']}: {r['reason']}".replace("|", "/")


def speed_table(rows: list) -> str:
    return _table(["D", "N", "variant", "implementation", "params", "ms", "TFLOP/s", "vs flash/sdpa", "note"],
                  [_key(r) + [r["params"], _f(r["ms"], ".3f"), _tflops(r["tflops"]), _f(r["vs_exact"], ".2f", "x"),
                              _note(r)] for r in rows])


def memory_table(rows: list, on_gpu: bool) -> str:
    na = "n/a (CPU)"
    return _table(["D", "N", "variant", "implementation", "peak MiB", "MiB above inputs"],
                  [_key(r) + ([_f(r["peak_mib"], ".0f"), _f(r["extra_mib"], ".0f")] if on_gpu else [na, na])
                   for r in rows])


def quality_table(rows: list) -> str:
    return _table(["D", "N", "variant", "implementation", "density", "cosine", "rel L1", "PSNR dB"],
                  [_key(r) + [_f(r["density"], ".2f"), _f(r["cosine"], ".6f"), _f(r["rel_l1"], ".4f"),
                              _f(r["psnr"], ".1f")] for r in rows])


def model_table(rows: list, on_gpu: bool) -> str:
    return _table(["policy", "runs", "ms", "vs torch.compile", "peak MiB", "cosine vs eager", "rel L1 vs eager", "note"],
                  [[r["policy"], r["runs"], _f(r["ms"], ".3f"), _f(r["vs_default"], ".2f", "x"),
                    _f(r["peak_mib"], ".0f") if on_gpu else "n/a (CPU)", _f(r["cosine"], ".6f"), _f(r["rel_l1"], ".4f"),
                    _note(r)] for r in rows])


def header(meta: dict) -> str:
    lines = [f"Device: {meta['device']}; torch {meta['torch']}, Triton {meta.get('triton') or 'n/a'}, "
             f"Python {meta['python']}; measured {meta['time']}.",
             f"Timing: {meta['timing']}."]
    if meta["device_type"] != "cuda":
        lines.append(f"**{CPU_NOTE}**: Sage and Sparge run their pure-torch reference numerics; the quality "
                     "columns hold, the times and ratios do not say anything about GPU speed.")
    return "\n\n".join(lines)


def grid_markdown(meta: dict, config: dict, rows: list) -> str:
    on_gpu = meta["device_type"] == "cuda"
    shape = (f"B{config['batch']} H{config['heads']} {config['dtype']}{' causal' if config['causal'] else ''}, "
             "structured synthetic q/k/v (smartcompile/synthetic.py)")
    return "\n\n".join([
        "# smartcompile bench", header(meta), f"Shapes: {shape}.",
        "## Speed", "TFLOP/s = 4·B·H·N²·D / time (half for causal; dense-equivalent for sparge). Ratios are the "
        "flash/sdpa time of the same shape in this run over the row's time (> 1: faster). Sage and Sparge times "
        "include quantization and block-map prediction.", speed_table(rows),
        "## Peak memory", "torch.cuda.max_memory_allocated during one call (inputs included), and what the call "
        "allocated above the inputs (output and workspace)." if on_gpu else
        "n/a: peak memory is measured with torch.cuda.max_memory_allocated, on a CUDA GPU only.",
        memory_table(rows, on_gpu),
        "## Quality", f"Against exact attention in fp32 ({config['reference']}). Density: fraction of K blocks "
        "computed (sparge's predicted block map; 1 for dense kernels).", quality_table(rows),
    ]) + "\n"


def model_markdown(meta: dict, model: str, rows: list) -> str:
    return "\n\n".join([
        "# smartcompile bench --model", header(meta),
        f"Model: `{model}` ({meta['dtype']} on {meta['device_type']}). Time per forward; speed against torch.compile's "
        "default in the same run; output against the eager model (its own attention, same dtype).",
        model_table(rows, meta["device_type"] == "cuda"),
    ]) + "\n"
