"""TMA descriptor arguments without Triton's per-launch descriptor work (issue 13: Sage's host cost at 4k).

A Gluon launch with TMA descriptors pays twice on the host for each descriptor, on every call: building the
TensorDescriptor object (its checks) and, in Triton 3.6's launcher (`make_tensordesc_arg`), encoding it into a
CUtensorMap through `fill_tma_descriptor` (cuTensorMapEncodeTiled). The Gluon attention passes four.

- `TmaArg(tensor, block_shape, layout, descriptor_type)` names a descriptor by its parts. The launch cache
  (launch_cache.py) builds the real descriptor only where Triton's usual path runs (a miss, a fallback).
- `DirectLauncher` (from `direct_launcher(compiled)`) calls the compiled kernel's own C launcher with cached
  encodings in place of the descriptor arguments. An encoding is a pure function of the tensor's address,
  shape and strides and of the compiled kernel's descriptor metadata (block, swizzle, element type), so a cached
  one keyed by all of them is the one Triton would encode now; it holds no reference to the tensor.

`direct_launcher` reads the launcher Triton 3.6 wraps (`wrap_handle_tensordesc`'s closure) and returns None
where the structure differs (another Triton), where the kernel needs global or profile scratch, or where a
descriptor is not lowered to a CUtensorMap: the launch cache then takes the compiled kernel's usual launcher.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch

ENABLED = True  # False: the launch cache's hits take the compiled kernel's usual launcher (benchmarks, debugging)
_MAX_ENCODINGS = 256  # per launch-cache key (of at most 512 per kernel); beyond it that key's encodings start over
_BASE_ARGS = 13  # Triton 3.6's launcher: grid (3), stream, function, cooperative, pdl, 2 scratch, metadata, 3 hooks


class TmaArg(NamedTuple):
    """A TMA descriptor argument by its parts: `descriptor_type(tensor, shape, strides, block_shape, layout)`."""
    tensor: torch.Tensor  # last dimension contiguous, 16-byte aligned (the descriptor type checks, on a miss)
    block_shape: tuple
    layout: Any  # hashable (Gluon's NVMMASharedLayout)
    descriptor_type: type

    def key(self) -> tuple:
        """What Triton's specialization reads of a descriptor (element type, block, layout), plus the base's
        alignment, which the descriptor type asserts: a misaligned base is a new key, so it meets that check."""
        t = self.tensor
        return TmaArg, t.dtype, t.data_ptr() & 15 == 0, self.block_shape, self.layout, self.descriptor_type

    def descriptor(self):
        t = self.tensor
        return self.descriptor_type(t, list(t.shape), list(t.stride()), list(self.block_shape), self.layout)


def as_descriptors(args: tuple) -> tuple:
    """`args` with every TmaArg built into its descriptor (for Triton's usual launch path)."""
    return tuple(v.descriptor() if type(v) is TmaArg else v for v in args)


class DirectLauncher:
    """One compiled kernel's C launcher, called with cached descriptor encodings (module docstring)."""

    def __init__(self, raw, cooperative, pdl, positions: tuple, metas: tuple, encode):
        self.raw, self.cooperative, self.pdl = raw, cooperative, pdl
        self.slots = tuple(zip(positions, metas))  # (index in the kernel's arguments, Triton's descriptor metadata)
        self.encode = encode  # Triton's make_tensordesc_arg(descriptor, metadata) -> [CUtensorMap, *shape, *strides]
        self.encodings: dict = {}
        self.encoded = 0  # encodings made (tests: a repeated launch makes none)

    def _encoding(self, position: int, meta, v) -> list:
        if type(v) is TmaArg:
            t = v.tensor
            key = position, t.data_ptr(), t.shape, t.stride()
        else:  # a descriptor object given as is
            key = position, v.base.data_ptr(), tuple(v.shape), tuple(v.strides), v.padding
        enc = self.encodings.get(key)
        if enc is None:
            enc = self.encode(v.descriptor() if type(v) is TmaArg else v, meta)
            if len(self.encodings) >= _MAX_ENCODINGS:
                self.encodings.clear()
            self.encodings[key] = enc
            self.encoded += 1
        return enc

    def __call__(self, grid: tuple, stream: int, function, packed_metadata, values: tuple) -> None:
        """Launch on `grid` (3 ints) with the kernel's arguments `values` (positional ones, then the tail)."""
        expanded, start = [], 0
        for position, meta in self.slots:
            expanded += values[start:position]
            expanded += self._encoding(position, meta, values[position])
            start = position + 1
        expanded += values[start:]
        self.raw(grid[0], grid[1], grid[2], stream, function, self.cooperative, self.pdl, None, None,
                 packed_metadata, None, None, None, *expanded)


def direct_launcher(compiled) -> Optional[DirectLauncher]:
    """A DirectLauncher for `compiled` (a Triton CompiledKernel with descriptor arguments), or None where this
    Triton's launcher is not the one it knows (module docstring)."""
    run = getattr(compiled, "run", None)
    inner = getattr(run, "launch", None)
    code, cells = getattr(inner, "__code__", None), getattr(inner, "__closure__", None)
    if code is None or cells is None or code.co_freevars != ("launcher", "tensordesc_indices", "tensordesc_meta"):
        return None
    if getattr(run, "global_scratch_size", 1) or getattr(run, "profile_scratch_size", 1):
        return None
    try:
        from triton.backends.nvidia import driver
    except ImportError:
        return None
    encode = getattr(driver, "make_tensordesc_arg", None)
    if encode is None or getattr(driver, "_BASE_ARGS_FORMAT_LEN", None) != _BASE_ARGS:
        return None
    closure = {name: cell.cell_contents for name, cell in zip(code.co_freevars, cells)}
    positions = tuple(sorted(closure["tensordesc_indices"]))
    metas = tuple(closure["tensordesc_meta"] or ())
    if len(metas) != len(positions) or any(m is None for m in metas):
        return None  # descriptors not lowered to CUtensorMaps: their arguments would hold the tensors
    return DirectLauncher(closure["launcher"], run.launch_cooperative_grid, run.launch_pdl, positions, metas,
                          encode)
