"""The options of `smartcompile bench`. Values are read as text and checked by the command, so a
bad one is reported as `smartcompile: error: ...` with exit status 2 like every other input error."""
from __future__ import annotations

import argparse

GRID_OPTIONS = ("seq_lens", "head_dims", "heads", "batch")  # the kernel grid only; not with --model


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seq-lens", default=None, metavar="N,...", help="comma-separated, e.g. 4k,16k,32k (default: GPU 4k,16k,32k; CPU 256,512)")
    p.add_argument("--head-dims", default=None, metavar="D,...", help="comma-separated (default: GPU 64,128; CPU 64)")
    p.add_argument("--heads", default=None, metavar="H", help="attention heads (default: GPU 24; CPU 4)")
    p.add_argument("--batch", default=None, metavar="B", help="batch size (default 1)")
    p.add_argument("--dtype", default=None, metavar="DTYPE", help="bfloat16, float16 or float32 (default: GPU bfloat16; CPU float32)")
    p.add_argument("--device", default=None, metavar="DEVICE", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--causal", action="store_true", help="causal attention")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for bench.json, bench.md and bench.png")
    p.add_argument("--model", default=None, metavar="PKG.MODULE:FACTORY", help="pkg.module:factory returning (model, args[, kwargs]): bench that "
                   "model end to end instead of the kernel grid; imports and runs that code")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no tables on stdout (files only)")
