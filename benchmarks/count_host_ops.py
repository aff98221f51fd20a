"""Host work per call, counted without a GPU: Triton launches and the torch ops run outside them.

At ~4k tokens Sage and Sparge are host-bound (`gluon_notes.md`, step 4); every torch op is a dispatch and,
on a GPU, usually a kernel launch, so this count is a device-free proxy for where host time goes.
Runs under the Triton interpreter:

    TRITON_INTERPRET=1 python benchmarks/count_host_ops.py
"""
from __future__ import annotations

import collections
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

if os.environ.get("TRITON_INTERPRET") != "1":
    sys.exit("run with TRITON_INTERPRET=1 (Triton reads it when the kernels are defined)")

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from smartcompile.kernels.config import SageConfig, SpargeConfig  # noqa: E402
from smartcompile.kernels.sage_triton import sage_attention_triton  # noqa: E402
from smartcompile.kernels.sparge_triton import sparge_attention_triton  # noqa: E402


class _Ops(TorchDispatchMode):
    """The torch ops dispatched outside Triton launches (the interpreter's own run inside them)."""

    def __init__(self):
        super().__init__()
        self.ops, self.launches, self.depth = [], [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.depth == 0:
            self.ops.append(str(func).removeprefix("aten."))
        return func(*args, **(kwargs or {}))


_NO_KERNEL = {"empty.memory_format", "view.default", "unsqueeze.default", "expand.default", "transpose.int",
              "select.int", "_unsafe_view.default", "slice.Tensor", "reshape.default", "permute.default"}


def main():
    counter = _Ops()
    run = InterpretedFunction.run

    def counted(self, *args, grid, warmup, **kwargs):  # same signature as the method it wraps
        counter.launches.append(self.fn.__name__)
        counter.depth += 1
        try:
            return run(self, *args, grid=grid, warmup=warmup, **kwargs)
        finally:
            counter.depth -= 1

    InterpretedFunction.run = counted
    q, k, v = (torch.randn(1, 2, 300, 64) for _ in range(3))
    calls = {
        "sage_triton": lambda: sage_attention_triton(q, k, v, None, False, None, SageConfig()),
        "sparge_triton 50%": lambda: sparge_attention_triton(q, k, v, None, False, None,
                                                             SpargeConfig(sparsity_ratio=0.5)),
        "sparge_triton 50% causal": lambda: sparge_attention_triton(q, k, v, None, True, None,
                                                                    SpargeConfig(sparsity_ratio=0.5)),
    }
    print("| call | Triton launches | torch ops | of which allocations | of which views | other (kernels) |")
    print("|---|---|---|---|---|---|")
    details = {}
    for name, fn in calls.items():
        fn()  # compile-free under the interpreter, but warms any caches
        counter.ops.clear()
        counter.launches.clear()
        with counter:
            fn()
        ops = collections.Counter(counter.ops)
        allocs = ops.pop("empty.memory_format", 0)
        views = sum(n for op, n in ops.items() if op in _NO_KERNEL)
        other = sum(ops.values()) - views
        print(f"| {name} | {len(counter.launches)} | {len(counter.ops)} | {allocs} | {views} | {other} |")
        details[name] = {op: n for op, n in ops.most_common() if op not in _NO_KERNEL}
    for name, ops in details.items():
        print(f"\n{name}: {ops}")


if __name__ == "__main__":
    main()
