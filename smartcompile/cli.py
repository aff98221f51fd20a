"""The `smartcompile` command: demo, explain, profile, report, bench, env."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Optional

import torch

from ._logging import configure_from_env
from ._version import version_line
from .bench.options import add_bench_arguments
from .errors import SmartCompileError


class CliError(SmartCompileError):
    """Bad command-line input (--model, --candidates): printed as `smartcompile: error: ...`, exit 2."""


def _import_model_module(module_name: str):
    """Import with the current directory first on sys.path, as `python -m` does, so that
    `--model mymod:factory` finds mymod.py where the command runs. This runs the module's code."""
    cwd = os.getcwd()
    if sys.path[:1] != [cwd]:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 -- user code: any failure is reported, not a traceback
        raise CliError(f"--model: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc


def _load_factory(spec: str):
    if ":" not in spec:
        raise CliError(f"--model: {spec!r} is not of the form pkg.module:factory")
    module_name, attr = spec.split(":", 1)
    module = _import_model_module(module_name)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise CliError(f"--model: {module_name!r} has no callable {attr!r}")
    try:
        made = factory()
    except Exception as exc:  # noqa: BLE001 -- user code
        raise CliError(f"--model: {spec} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(made, tuple) or len(made) not in (2, 3) or not isinstance(made[0], torch.nn.Module):
        raise CliError(f"--model: {spec} must return (model, args), (model, args, kwargs) or (model, "
                       f"[(args, kwargs), ...]) with an nn.Module first; got {type(made).__name__}")
    model, items = made[0], _calibration_items(made, spec)
    return model, items[0][0], items[0][1], items


def _is_item(x) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[0], (tuple, list)) and isinstance(x[1], dict)


def _calibration_items(made: tuple, spec: str) -> list:
    """[(args, kwargs), ...]: one item, or the factory's list of calibration items."""
    if len(made) == 2 and isinstance(made[1], list) and made[1] and all(_is_item(x) for x in made[1]):
        return [(tuple(a), dict(k)) for a, k in made[1]]
    args, kwargs = made[1], made[2] if len(made) == 3 else {}
    # a tensor, string or dict is iterable too: tuple() would silently split it into arguments
    if not isinstance(args, (tuple, list)):
        raise CliError(f"--model: {spec}: args must be a tuple or list, got {type(args).__name__} (one tensor "
                       "argument: return (model, (x,)))")
    if not isinstance(kwargs, dict):
        raise CliError(f"--model: {spec}: kwargs must be a dict, got {type(kwargs).__name__}")
    return [(tuple(args), dict(kwargs))]


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _placed(model, items: list, device: Optional[str], dtype: Optional[str]):
    """The model and its inputs on --device, floating-point parts in --dtype (both optional)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is visible to torch here")
    if device is None and dtype is None:
        return model, items
    want = _DTYPES.get(dtype) if dtype else None
    model = model.to(device=device, dtype=want) if want is not None else model.to(device=device)

    def move(t):
        if not isinstance(t, torch.Tensor):
            return t
        return t.to(device=device, dtype=want) if want is not None and t.is_floating_point() else t.to(device=device)

    tree_map = torch.utils._pytree.tree_map
    return model, [(tree_map(move, a), tree_map(move, k)) for a, k in items]


def _add_placement(parser) -> None:
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="move the model and its inputs here (default: where the factory put them)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                        help="cast the model and its floating-point inputs (default: as the factory made them)")


def _eager_failure(model, items: list) -> Optional[str]:
    """What the model raises on its own inputs without smartcompile (None: it runs)."""
    try:
        with torch.no_grad():
            for args, kwargs in items:
                model(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- user code: any failure is reported, not a traceback
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {first}"
    return None


class _HeldTorchLogs(logging.Filter):
    """Holds what torch's fake-tensor logger prints while a call runs: a model that fails on its own inputs made
    it print a 20-line traceback before our one-line error. Released (printed as it would have been) when the
    failure is ours. A filter on the logger, not a handler: torch resets that logger's handlers when it compiles."""

    LOGGER = "torch._subclasses.fake_tensor"

    def __init__(self):
        super().__init__()
        self.records: list = []
        self.logger = logging.getLogger(self.LOGGER)

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False

    def __enter__(self):
        self.logger.addFilter(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeFilter(self)

    def release(self) -> None:
        for record in self.records:
            self.logger.handle(record)
        self.records.clear()


def _on_the_model(call, model, items: list):
    """`call()`; a failure that the model also raises eagerly on its inputs is the factory's, reported as an
    error (exit 2); any other failure is ours and keeps its traceback (and torch's log lines). The eager check
    runs only after a failure, so a working model is not run twice."""
    held = _HeldTorchLogs()
    try:
        with held:
            result = call()
    except SmartCompileError:
        held.release()
        raise
    except Exception:
        why = _eager_failure(model, items)
        if why is None:
            held.release()
            raise
        raise CliError(f"--model: the model fails on its own inputs without smartcompile ({why}); check the "
                       "inputs the factory returns") from None
    except BaseException:  # Ctrl-C while tracing: what torch logged is still shown
        held.release()
        raise
    held.release()
    return result


def cmd_explain(ns) -> int:
    from .api import explain

    model, _, _, items = _load_factory(ns.model)
    model, items = _placed(model, items, ns.device, ns.dtype)
    plan = _on_the_model(lambda: explain(model, *items[0][0], policy=ns.policy, kwargs=items[0][1]), model,
                         items[:1])
    print(json.dumps(plan.to_dict(), indent=2, default=str) if ns.json else plan.table(verbose=ns.verbose))
    return 0


def _output_file(text: str, flag: str) -> Path:
    """A file the command writes at its end: not a folder, in a folder that exists."""
    path = Path(text)
    if path.is_dir():
        raise CliError(f"{flag}: {text!r} is a folder; give a file path")
    if not path.parent.is_dir():
        raise CliError(f"{flag}: {text!r}: the folder {str(path.parent)!r} does not exist")
    return path


def _json_arg(text: Optional[str], flag: str):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{flag}: invalid JSON ({exc.msg} at column {exc.colno}): {text!r}") from None
    except (ValueError, RecursionError) as exc:  # an integer past 4300 digits; nesting too deep
        raise CliError(f"{flag}: invalid JSON ({type(exc).__name__}: {exc})") from None


def cmd_profile(ns) -> int:
    from .profiling import profile
    from .profiling.report import ProfileReport, check_plot_path

    # the paths written at the end, checked now, not after the whole profile has run
    _output_file(ns.output, "-o/--output")
    if ns.report:
        check_plot_path(ns.report, "--report")
    model, _, _, items = _load_factory(ns.model)
    model, items = _placed(model, items, ns.device, ns.dtype)
    candidates = _json_arg(ns.candidates, "--candidates")
    policy = _on_the_model(lambda: profile(model, items, budget=ns.budget, metric=ns.metric, candidates=candidates,
                                           out=ns.output, cache=not ns.no_cache, progress=not ns.quiet), model, items)
    report = ProfileReport.from_policy(policy)
    print(report.table())
    print(f"policy written to {ns.output}")
    if ns.report:
        print(f"report plot written to {report.plot(ns.report)}")
    return 0


def cmd_report(ns) -> int:
    from .policies import Policy
    from .profiling.report import ProfileReport, check_plot_path

    if ns.plot:
        check_plot_path(ns.plot, "--plot")
    report = ProfileReport.from_policy(Policy.load(ns.policy))
    print(report.table())
    if ns.plot:
        print(f"report plot written to {report.plot(ns.plot)}")
    return 0


def cmd_demo(ns) -> int:
    from .demo.video_demo import run_video_demo

    if ns.out is not None and ns.out.exists() and not ns.out.is_dir():  # checked before minutes of sampling
        raise CliError(f"--out: {str(ns.out)!r} exists and is not a folder (the demo writes frames.png, video.gif "
                       "and summary.json into a folder)")
    run_video_demo(device=ns.device, out=ns.out, steps=ns.steps, frames=ns.frames, repeats=ns.repeats,
                   profile=ns.profile)
    return 0


def env_report() -> str:
    from .backends.registry import BACKENDS
    from .backends.hardware import compute_capability, library_import_error
    from .spec import AttentionSpec

    lines = [f"python {platform.python_version()}, torch {torch.__version__}"]
    triton_err = library_import_error("triton")
    if triton_err is None:
        import triton

        lines.append(f"triton {triton.__version__}")
    else:
        lines.append(f"triton: not available ({triton_err})")
    if torch.cuda.is_available():
        device = "cuda"
        props = torch.cuda.get_device_properties(0)
        lines.append(f"device: {props.name}, compute capability {compute_capability('cuda')}, {props.multi_processor_count} SMs, CUDA {torch.version.cuda}")
        spec = AttentionSpec(1, 16, 16, 4096, 4096, 128, 128, torch.bfloat16, "cuda")
    else:
        device = "cpu"
        lines.append("device: cpu (no CUDA GPU visible)")
        spec = AttentionSpec(1, 16, 16, 4096, 4096, 128, 128, torch.float32, "cpu")
    lines.append(f"backends for a typical spec {spec.short()} on {device}:")
    for be in BACKENDS.values():
        for impl in be.implementations:
            reasons = impl.not_supported_reasons(spec)
            state = "available" if not reasons else "not available: " + "; ".join(reasons)
            auto = "" if impl.auto_eligible else " (never chosen by auto)"
            lines.append(f"  {be.name:<7} {impl.name:<18} {state}{auto}")
    return "\n".join(lines)


def cmd_bench(ns) -> int:
    from .bench.command import run_from_args

    return run_from_args(ns, lambda spec: _load_factory(spec)[:3])


def cmd_env(ns) -> int:
    print(env_report())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smartcompile", description="Per-layer attention kernels for torch.compile.")
    p.add_argument("--version", action="version", version=version_line())
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="sample a video with the trained video DiT under several attention policies; "
                                    "time, PSNR / SSIM against exact attention, frames and GIF")
    d.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    d.add_argument("--out", type=Path, default=None, help="write frames.png, video.gif and summary.json here")
    d.add_argument("--steps", type=int, default=None, help="Euler steps (default: 20 on a GPU, 6 on a CPU)")
    d.add_argument("--frames", type=int, default=None, help="video frames (default: 16 on a GPU, 2 on a CPU)")
    d.add_argument("--repeats", type=int, default=None, help="timed sampling runs per policy (median; "
                   "default: 3 on a GPU, 1 on a CPU)")
    d.add_argument("--profile", action="store_true", help="profile the model here (budget PSNR >= 30 dB) "
                   "instead of using the shipped profiled policy")
    d.set_defaults(fn=cmd_demo)
    e = sub.add_parser("explain", help="show what each attention layer of a model gets, and why")
    e.add_argument("--model", required=True, help="pkg.module:factory returning (model, args[, kwargs]) or (model, "
                   "[(args, kwargs), ...]); "
                   "imports and runs that code (the current directory is importable)")
    e.add_argument("--policy", default=None, help="policy JSON file (default: auto)")
    e.add_argument("--json", action="store_true", help="print the plan as JSON")
    e.add_argument("-v", "--verbose", action="store_true",
                   help="under each row, every implementation tried and why it was not taken")
    _add_placement(e)
    e.set_defaults(fn=cmd_explain)
    pr = sub.add_parser("profile", help="measure each attention layer's sensitivity and speed; write a policy")
    pr.add_argument("--model", required=True, help="pkg.module:factory returning (model, args[, kwargs]) or (model, "
                    "[(args, kwargs), ...]): the calibration input(s); "
                    "imports and runs that code (the current directory is importable)")
    pr.add_argument("-o", "--output", required=True, help="policy JSON file to write")
    pr.add_argument("--budget", type=float, default=None,
                    help="bound on the output metric (default per metric: cosine 0.995, rel_l1 0.05, psnr 30 dB)")
    pr.add_argument("--metric", choices=["cosine", "rel_l1", "psnr"], default="cosine",
                    help="output metric vs the exact model (cosine/psnr: higher is better; rel_l1: lower)")
    pr.add_argument("--candidates", default=None,
                    help='JSON list of sage/sparge rules to try, e.g. \'[{"backend": "sparge", "sparsity_ratio": 0.5}]\'')
    pr.add_argument("--report", default=None,
                    help="also write a plot of sensitivity, time saved and choices (format from the suffix: .png, .pdf...)")
    pr.add_argument("--no-cache", action="store_true", help="do not reuse or keep measurements")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_placement(pr)
    pr.set_defaults(fn=cmd_profile)
    rp = sub.add_parser("report", help="table (and --plot) of a profiled policy's measurements")
    rp.add_argument("policy", help="a policy JSON written by `smartcompile profile`")
    rp.add_argument("--plot", default=None, help="write a plot here (format from the suffix: .png, .pdf, .svg...)")
    rp.set_defaults(fn=cmd_report)
    b = sub.add_parser("bench", help="speed, peak memory and quality of flash / sage / sparge here (or --model end to end)")
    add_bench_arguments(b)
    b.set_defaults(fn=cmd_bench)
    v = sub.add_parser("env", help="device, versions, and which backends can run here (or why not)")
    v.set_defaults(fn=cmd_env)
    return p


def main(argv: Optional[list] = None) -> int:
    configure_from_env()
    ns = build_parser().parse_args(argv)
    try:
        return ns.fn(ns)
    except (SmartCompileError, OSError) as exc:  # OSError: a path given that cannot be read or written
        print(f"smartcompile: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
