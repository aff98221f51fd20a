"""Our own host-side cache in front of Triton's launch path (issue 13: Sage's per-call host cost).

`kernel[grid](*args, **meta)` runs JITFunction.run on every call: it binds and specializes every argument
through Triton's generated binder, builds a string cache key, evaluates launch metadata and calls the launch
hooks, and only then calls the compiled kernel's launcher. Measured on the H200 machine (Triton 3.6,
benchmarks/bench_launch_paths.py, `_quantize_all` with 52 parameters): 34 us per launch, against 14 us calling
the launcher directly, of which 4.8 us went to `torch.cuda.current_stream()`.

`launch(kernel, grid, args, meta)` does the same launch. The first call for a key goes through Triton's usual
path and records the compiled kernel it ran; later calls with the same key call that kernel's launcher
directly. The key holds every fact Triton's specialization reads, so a hit is the kernel Triton would pick:

- the current CUDA device, and Triton's debug and instrumentation settings;
- `meta` exactly, each value with its type (constexprs by value and launch options; a runtime argument passed by keyword makes the call
  uncacheable: every such call takes the usual path);
- per positional argument: for a tensor its dtype and whether its address is 16-byte aligned; TMA descriptors
  by Triton's own specialization (dtype, block shape, layout); everything else (ints, floats, constexprs,
  autotuning keys) by type and value (True == 1 == 1.0 in Python; Triton compiles them apart). Ints by value are
  finer than Triton's classes (1, multiple of 16, width): a new shape misses once more, and the key costs a few
  us instead of ~12 (one list comprehension).

A kernel with TMA descriptor arguments (the Gluon attention) may take them as tma_launch.TmaArg: the key reads
what Triton's specialization reads of a descriptor, and a hit calls the compiled kernel's C launcher with cached
descriptor encodings (tma_launch.DirectLauncher) instead of building and encoding ~4 descriptors per call (H200,
session 16: the Gluon launch's host time 121 -> 80 us at D64 4k, 125 -> 52 us at D128).

The direct path is taken only where Triton's would do nothing more: a JITFunction (or an Autotuner over one,
without hooks), no pre-run hooks, no launch hooks installed (profilers), a grid given as numbers. Everything
else (the interpreter, CPU, another Triton whose CompiledKernel lacks the launcher fields) takes the usual
path, so `launch` is always correct and at worst as slow as `kernel[grid](...)`. Triton's check that a
kernel's global variables did not change since it compiled is skipped on hits: ours read only constants.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch

from . import tma_launch
from .tma_launch import TmaArg, as_descriptors, direct_launcher

ENABLED = True  # False: every launch takes Triton's usual path (debugging, benchmarks of the difference)

_MAX_KEYS = 512  # per kernel; beyond it the cache starts over (dynamic shapes: one key per length)


class _Compiled(NamedTuple):
    """What a hit needs: the compiled kernel's launcher and its arguments after the positional ones."""
    run: Any
    function: Any
    packed_metadata: Any
    tail: tuple  # values of the parameters after the positional arguments (meta, the autotuned config, defaults)
    tma: Any  # a tma_launch.DirectLauncher for a kernel with descriptor arguments, or None


class _KernelLaunches:
    """One kernel's cache: its parameters' kinds and the compiled kernel per key."""

    def __init__(self, kernel):
        from triton.runtime.autotuner import Autotuner
        from triton.runtime.jit import JITFunction

        self.tuner = kernel if isinstance(kernel, Autotuner) else None
        self.jit = kernel.fn if self.tuner is not None else kernel
        self.reason = None  # why this kernel always takes the usual path
        self.compiled: dict = {}
        self.hits = 0
        if type(self.jit).__name__ == "InterpretedFunction" or not isinstance(self.jit, JITFunction):
            self.reason = f"{type(self.jit).__name__} is not a compiled JITFunction"  # (heuristics, interpreter)
            return
        if self.tuner is not None and (self.tuner.reset_to_zero or self.tuner.restore_value
                                       or self.tuner.user_defined_pre_hook or self.tuner.user_defined_post_hook):
            self.reason = "the autotuner has hooks"
            return
        params = self.jit.params
        self.names = [p.name for p in params]
        self.defaults = {p.name: p.default for p in params if p.has_default}
        self.descriptors = False  # whether its launches pass TMA descriptors (keyed through Triton, slower)
        self.param_names = set(self.names)
        self.constexpr_names = {p.name for p in params if p.is_constexpr}
        self.uncacheable_meta: set = set()  # tuple(meta) name sets holding a runtime argument

    def key(self, device: int, args: tuple, meta: dict, settings: tuple) -> tuple:
        """Plain ints by value, plain tensors by dtype and 16-byte alignment, everything else by type and value
        (True, 1 and 1.0 are equal and hash alike in Python; Triton compiles them differently): finer than Triton's
        specialization (ints by value, not by class), so a few more misses. `type(v) is` tests first: torch.Tensor's
        isinstance goes through its metaclass, and a key of 45 arguments cost 9.6 us with it, 5.3 without (CPU)."""
        spec = tuple([v if type(v) is int else (v.dtype, v.data_ptr() & 15 == 0) if type(v) is _TENSOR
                      else _other_key(v) for v in args])
        return device, settings, tuple(meta.items()), tuple(map(type, meta.values())), spec

    def record(self, key: tuple, args: tuple, meta: dict, compiled) -> None:
        """Remember the compiled kernel Triton's usual path just ran for `key`."""
        if not all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata")):
            self.reason = f"this Triton's {type(compiled).__name__} has no launcher fields"
            return
        values = dict(meta)
        if self.tuner is not None:
            config = self.tuner.best_config
            if config.pre_hook is not None:
                self.reason = "an autotuned configuration has a pre-hook"
                return
            values.update(config.all_kwargs())
        names = self.names[len(args):]
        if not all(n in values or n in self.defaults for n in names):
            return  # Triton would have raised; never reached after a successful launch
        tail = tuple(values[n] if n in values else self.defaults[n] for n in names)
        tma = direct_launcher(compiled) if self.descriptors else None
        self.compiled[key] = _Compiled(compiled.run, compiled.function, compiled.packed_metadata, tail, tma)


_TENSOR = torch.Tensor


def _other_key(v) -> Any:
    """The key of an argument that is neither a plain int nor a plain tensor."""
    if isinstance(v, torch.Tensor):  # a subclass: by its type too, never by identity (a key must not hold it)
        return type(v), v.dtype, v.data_ptr() & 15 == 0
    if type(v) is TmaArg:
        return v.key()
    if type(v).__name__ == "TensorDescriptor":
        return _descriptor_key(v)
    return type(v), v


def _descriptor_key(desc) -> tuple:
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    return type(desc), native_specialize_impl(BaseBackend, desc, False, True, True)


_KERNELS: dict = {}


def _launches(kernel) -> _KernelLaunches:
    entry = _KERNELS.get(id(kernel))
    if entry is None or entry[0] is not kernel:
        entry = _KERNELS[id(kernel)] = (kernel, _KernelLaunches(kernel))
    return entry[1]


_RUNTIME: list = []  # [triton's knobs] once a launch has seen CUDA; [None] on a machine without it


def _runtime_knobs():
    if not _RUNTIME:
        from triton import knobs

        direct = torch.cuda.is_available() and all(hasattr(torch._C, f) for f in ("_cuda_getDevice",
                                                                                  "_cuda_getCurrentRawStream"))
        _RUNTIME.append(knobs if direct else None)
    return _RUNTIME[0]


def _hooks_installed(rt) -> bool:
    return any(h is not None and getattr(h, "calls", True) for h in (rt.launch_enter_hook, rt.launch_exit_hook))


def _settings(knobs) -> tuple:
    """Triton settings its own cache key reads on every launch (JITFunction.run): a change compiles anew."""
    return knobs.runtime.debug, getattr(knobs.compilation, "instrumentation_mode", None)


def launch(kernel, grid: tuple, args: tuple, meta: dict) -> None:
    """`kernel[grid](*args, **meta)`, calling the compiled launcher directly when this key was launched before
    (module docstring). `args`: the positional arguments, runtime ones and constexprs, where a TMA descriptor may be
    a tma_launch.TmaArg (built into its descriptor only where Triton's usual path runs); `meta`: constexprs and
    launch options by keyword (num_warps, num_stages)."""
    knobs = _runtime_knobs() if ENABLED else None
    if knobs is None:
        kernel[grid](*as_descriptors(args), **meta)
        return
    state = _launches(kernel)
    names = tuple(meta)
    if state.reason is not None or getattr(state.jit, "pre_run_hooks", None) or names in state.uncacheable_meta \
            or _hooks_installed(knobs.runtime) or not isinstance(grid, (tuple, list)) \
            or not all(type(g) is int for g in grid):
        kernel[grid](*as_descriptors(args), **meta)
        return
    device = torch._C._cuda_getDevice()
    settings = _settings(knobs)
    try:
        key = state.key(device, args, meta, settings)
        hit = state.compiled.get(key)
    except TypeError:  # an unhashable argument: a TMA descriptor, or something the cache does not know
        key = hit = None
    if hit is not None:
        state.hits += 1
        g = tuple(grid) + (1, 1, 1)[len(grid):]
        stream = torch._C._cuda_getCurrentRawStream(device)
        if hit.tma is not None and tma_launch.ENABLED:  # cached descriptor encodings (tma_launch.py)
            hit.tma(g, stream, hit.function, hit.packed_metadata, args + hit.tail)
            return
        hit.run(g[0], g[1], g[2], stream, hit.function, hit.packed_metadata, None, None, None,
                *(as_descriptors(args) if state.descriptors else args), *hit.tail)
        return
    if any(n in state.param_names and n not in state.constexpr_names for n in names):
        state.uncacheable_meta.add(names)  # a runtime argument by keyword: its value is not a key
        kernel[grid](*as_descriptors(args), **meta)
        return
    if not state.descriptors and any(type(v) is TmaArg or type(v).__name__ == "TensorDescriptor" for v in args):
        state.descriptors = True
        try:
            key = state.key(device, args, meta, settings)
            hash(key)  # a TmaArg part that does not hash: never cached (and never a failure after the launch)
        except TypeError:
            key = None
    compiled = kernel[grid](*as_descriptors(args), **meta)
    if key is not None and compiled is not None and not hasattr(compiled, "result"):  # a future: next time
        if len(state.compiled) >= _MAX_KEYS:
            state.compiled.clear()
        state.record(key, args, meta, compiled)


def tma_encodings(kernel) -> Optional[int]:
    """How many descriptor encodings `kernel`'s direct launches have made, over its keys; None when none of its
    keys launches through tma_launch.DirectLauncher (tests: a repeated launch makes no new encoding)."""
    entry = _KERNELS.get(id(kernel))
    if entry is None or entry[0] is not kernel:
        return None
    counts = [c.tma.encoded for c in entry[1].compiled.values() if c.tma is not None]
    return sum(counts) if counts else None


def cached_keys(kernel) -> int:
    """How many keys of `kernel` launch directly (tests, benchmarks)."""
    entry = _KERNELS.get(id(kernel))
    return len(entry[1].compiled) if entry is not None and entry[0] is kernel else 0


def direct_launches(kernel) -> int:
    """How many launches of `kernel` took the direct path (tests)."""
    entry = _KERNELS.get(id(kernel))
    return entry[1].hits if entry is not None and entry[0] is kernel else 0


def usual_path_reason(kernel) -> Optional[str]:
    """Why `kernel` always takes Triton's usual path, or None."""
    entry = _KERNELS.get(id(kernel))
    return entry[1].reason if entry is not None and entry[0] is kernel else None
