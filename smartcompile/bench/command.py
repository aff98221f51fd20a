"""`smartcompile bench`: run the grid (or --model), print the tables, write bench.json/.md/.png."""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from .cases import BenchConfig, BenchError, build_config, positive_int, resolve_device, resolve_dtype
from .measure import Timer, timing_method
from .options import GRID_OPTIONS
from .plot import matplotlib_missing, plot_grid, plot_model
from .tables import grid_markdown, model_markdown


def bench_meta(device: str, dtype: torch.dtype) -> dict:
    from ..backends.hardware import library_import_error

    triton = None
    if library_import_error("triton") is None:
        import triton as _triton

        triton = _triton.__version__
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    return dict(device=name, device_type=device, dtype=str(dtype).replace("torch.", ""), torch=torch.__version__,
                cuda=torch.version.cuda, triton=triton, python=platform.python_version(),
                time=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), timing=timing_method(device))


def _finite(x):
    """JSON without NaN/Infinity (not JSON): non-finite numbers become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def write_outputs(out: Path, data: dict, markdown: str, plot: Callable[[Path], Path]) -> list[str]:
    """bench.json, bench.md and (with matplotlib) bench.png in `out`; lines saying what was written."""
    (out / "bench.json").write_text(json.dumps(_finite(data), indent=1, allow_nan=False) + "\n")
    (out / "bench.md").write_text(markdown)
    written = [f"wrote {out / 'bench.json'}", f"wrote {out / 'bench.md'}"]
    missing = matplotlib_missing()
    written.append(missing or f"wrote {plot(out / 'bench.png')}")
    return written


def bench_grid(cfg: BenchConfig, out: Optional[Path] = None, timer: Optional[Timer] = None,
               progress: bool = True) -> tuple[dict, str, list[str]]:
    """The kernel grid: (json data, markdown, lines about the files written)."""
    from .grid import run_grid

    meta = bench_meta(cfg.device, cfg.dtype)
    rows = run_grid(cfg, timer=timer, progress=progress)
    data = dict(meta=meta, config=cfg.to_dict(), rows=rows)
    md = grid_markdown(meta, data["config"], rows)
    written = write_outputs(out, data, md, lambda p: plot_grid(meta, rows, p)) if out is not None else []
    return data, md, written


def bench_model(spec: str, loaded: tuple, device: str, dtype: torch.dtype, out: Optional[Path] = None,
                timer: Optional[Timer] = None, progress: bool = True) -> tuple[dict, str, list[str]]:
    """--model: `loaded` = (model, args, kwargs) from the factory named by `spec`."""
    from .model import run_model_bench

    meta = bench_meta(device, dtype)
    model, args, kwargs = loaded
    rows = run_model_bench(model, args, kwargs, device, dtype, timer=timer, progress=progress)
    data = dict(meta=meta, model=spec, rows=rows)
    md = model_markdown(meta, spec, rows)
    written = write_outputs(out, data, md, lambda p: plot_model(meta, rows, p)) if out is not None else []
    return data, md, written


def _out_dir(text: Optional[str]) -> Optional[Path]:
    """Created now, so that a path that cannot be written fails before a long run."""
    if text is None:
        return None
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out: {text!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_from_args(ns: argparse.Namespace, load_model: Callable[[str], tuple]) -> int:
    """The command; `load_model` is the CLI's factory loader (pkg.module:factory -> (model, args, kwargs))."""
    if ns.quiet and ns.out is None:
        raise BenchError("--quiet prints no tables, so without --out nothing would come out; give --out DIR")
    if ns.model is not None:
        given = [f"--{o.replace('_', '-')}" for o in GRID_OPTIONS if getattr(ns, o) is not None]
        given += ["--causal"] if ns.causal else []
        if given:
            raise BenchError(f"{', '.join(given)}: kernel-grid options; with --model only --device, --dtype, "
                             "--out and --quiet apply")
        device = resolve_device(ns.device)
        dtype = resolve_dtype(ns.dtype, device)
        out = _out_dir(ns.out)
        _, md, written = bench_model(ns.model, load_model(ns.model), device, dtype, out, progress=not ns.quiet)
    else:
        cfg = build_config(device=ns.device, dtype=ns.dtype, seq_lens=ns.seq_lens, head_dims=ns.head_dims,
                           heads=positive_int("--heads", ns.heads), batch=positive_int("--batch", ns.batch),
                           causal=ns.causal)
        out = _out_dir(ns.out)
        _, md, written = bench_grid(cfg, out, progress=not ns.quiet)
    if not ns.quiet:
        print(md)
    for line in written:
        print(line)
    return 0
