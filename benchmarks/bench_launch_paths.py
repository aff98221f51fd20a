"""Host cost of one Triton launch, two ways (GPU; written against Triton 3.6's runtime): the usual
`kernel[grid](*args, **meta)` (JITFunction.run: binds and specializes every argument, builds the cache key, then
calls the compiled launcher) against calling the compiled kernel's launcher directly with the same arguments
(`CompiledKernel.run`, what JITFunction.run ends in), for quantize_fused's main launch at 4k tokens. Checks that
both launches write the same bits. The difference bounds what a launch cache of our own (keyed on the
specialization: pointer alignment, integer divisibility) could save per launch; issue 13 asks for <= 30 us of
host time per Sage call, and step 5 measured ~50-70 us per Python-launched Triton kernel on the H200 machine.

    python benchmarks/bench_launch_paths.py --out DIR
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.bench.measure import host_us, write_rows  # noqa: E402
from smartcompile.kernels import sage_quantize  # noqa: E402
from smartcompile.kernels.launch_cache import launch  # noqa: E402
from smartcompile.kernels.sage_gluon import GLUON_CONFIG  # noqa: E402


def capture_launch(kernel, call):
    """(args, kwargs, grid, compiled kernel) of `kernel`'s launch inside `call()`."""
    seen = {}
    run = type(kernel).run

    def recording_run(self, *args, grid, warmup, **kwargs):  # JITFunction.run's signature
        compiled = run(self, *args, grid=grid, warmup=warmup, **kwargs)
        if self is kernel:
            seen.update(args=args, kwargs=kwargs, grid=grid, compiled=compiled)
        return compiled

    type(kernel).run = recording_run
    try:
        call()
    finally:
        type(kernel).run = run
    return seen["args"], seen["kwargs"], seen["grid"], seen["compiled"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1x24x4096x64,1x24x4096x128", help="BxHxNxD list")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    kernel = sage_quantize._quantize_all
    for spec in args.shapes.split(","):
        b, h, n, d = (int(x) for x in spec.split("x"))
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        x = {}

        def quantize():
            x["out"] = sage_quantize.quantize_fused(q, k, v, None, GLUON_CONFIG, v_wgmma_order=True)

        largs, lkwargs, grid, compiled = capture_launch(kernel, quantize)
        names = kernel.arg_names
        values = list(largs) + [lkwargs[name] for name in names[len(largs):]]  # every parameter, in order
        grid = tuple(grid) + (1,) * (3 - len(grid))
        outs = [t for t in (x["out"].q8, x["out"].k8, x["out"].v, x["out"].q_scale, x["out"].k_scale)]

        def usual():
            kernel[grid](*largs, **lkwargs)

        def direct():
            compiled.run(grid[0], grid[1], grid[2], torch.cuda.current_stream().cuda_stream, compiled.function,
                         compiled.packed_metadata, None, None, None, *values)

        usual()
        torch.cuda.synchronize()
        want = [t.clone() for t in outs]
        for t in outs:
            t.zero_()
        direct()
        torch.cuda.synchronize()
        same = all(torch.equal(a.view(torch.uint8), b.view(torch.uint8)) for a, b in zip(outs, want))
        for t in outs:
            t.zero_()

        def cached():
            launch(kernel, grid, largs, lkwargs)

        cached()  # records
        cached()  # hits
        torch.cuda.synchronize()
        same_cached = all(torch.equal(a.view(torch.uint8), b.view(torch.uint8)) for a, b in zip(outs, want))
        row = dict(shape=spec, params=len(names), same_bits=same, usual_us=host_us(usual), direct_us=host_us(direct),
                   stream_us=host_us(lambda: torch.cuda.current_stream().cuda_stream), cache_us=host_us(cached),
                   same_bits_cached=same_cached)
        rows.append(row)
        print(f"{spec:<15} {len(names)} parameters: usual launch {row['usual_us']:6.1f} us, direct launcher "
              f"{row['direct_us']:6.1f} us (current stream alone {row['stream_us']:4.1f} us), launch cache "
              f"{row['cache_us']:6.1f} us, same bits: {same} / {same_cached}",
              flush=True)
    if args.out:
        write_rows(args.out, "launch_paths.json", rows)


if __name__ == "__main__":
    main()
