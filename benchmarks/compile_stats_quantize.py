"""Registers and spill stack of quantize_fused's main launch (`_quantize_all`) compiled for sm_90a, without a GPU:
D64/D128, with and without Sparge's pooling, at the given warp counts (cuobjdump -res-usage of the cubin).
Run it with the Triton the GPU machine has (3.6), installed beside torch in its own venv:

    python benchmarks/compile_stats_quantize.py --warps 4,8 --slices 1024,2048,4096
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.kernels import sage_quantize  # noqa: E402

POINTERS = dict(Q="*bf16", K="*bf16", V="*bf16", Q8="*i8", QS="*fp32", K8="*i8", KS="*fp32", VOUT="*fp8e4nv",
                KMEAN="*fp32", VAMAX="*fp32", PART="*fp32", QPOOL="*fp32", QSIM="*fp32", KPOOL="*fp32", KSIM="*fp32")
INTS = ("sq_b sq_h sq_n sq_d sk_b sk_h sk_n sk_d sv_b sv_h sv_n sv_d q_heads kv_heads seq_q seq_k n_qblk n_kblk "
        "n_ktiles n_chunks v_part n_pad_k").split()


def resource_usage(d: int, pool: bool, warps: int, smooth: bool = True, slice_elems: int = None) -> str:
    """'REG:n STACK:n ...' of `_quantize_all` at head dim d (FP8 V, the Gluon kernel's blocks: 64 Q, 128 K
    tokens), slices of `slice_elems` elements (the module's default when None)."""
    if slice_elems is not None:
        sage_quantize._QUANT_SLICE = slice_elems
    constants = dict(D=d, D_PAD=d, BLOCK_Q=64, BLOCK_K=128, CHUNKS=sage_quantize._MAX_CHUNKS, SMOOTH=smooth, FP8=True,
                     POOL=pool, WGMMA_ORDER=True, SUB_Q=sage_quantize._sub_rows(64, d),
                     SUB_K=sage_quantize._sub_rows(128, d),
                     SUB_V=sage_quantize._v_sub_rows(128, d), PREFETCH=sage_quantize._QUANT_PREFETCH)
    signature = {**POINTERS, **{n: "i32" for n in INTS}, "q_mult": "fp32", "target": "fp32",
                 **{n: "constexpr" for n in constants}}
    kernel = triton.compile(ASTSource(sage_quantize._quantize_all, signature, constexprs=constants),
                            target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(kernel.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([tool, "-res-usage", cubin.name], capture_output=True, text=True, check=True).stdout
    return " ".join(re.findall(r"(?:REG|STACK|LOCAL):\d+", usage))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--warps", default="4,8")
    ap.add_argument("--slices", default=None, help="comma-separated slice sizes in elements (default: the module's)")
    ap.add_argument("--no-prefetch", action="store_true", help="one slice in flight, not two")
    ap.add_argument("--no-smooth", action="store_true", help="K not smoothed (what the smoothing costs)")
    args = ap.parse_args()
    sage_quantize._QUANT_PREFETCH = not args.no_prefetch
    print(f"Triton {triton.__version__}, sm_90a, _quantize_all, prefetch {sage_quantize._QUANT_PREFETCH}")
    slices = [int(x) for x in args.slices.split(",")] if args.slices else [sage_quantize._QUANT_SLICE]
    for elems in slices:
        for warps in (int(w) for w in args.warps.split(",")):
            for d in (64, 128):
                for pool in (False, True):
                    usage = resource_usage(d, pool, warps, not args.no_smooth, elems)
                    print(f"  slice {elems:5d}  {warps:2d} warps  D{d:<4} pool={pool!s:<5}  {usage}")


if __name__ == "__main__":
    main()
