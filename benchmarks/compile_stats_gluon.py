"""Registers, spills and shared memory of Gluon kernel launches, compiled for sm_90a without a GPU (issue 13).

Run with Triton 3.6 (the GPU machine's version), e.g. from a venv holding triton==3.6.0 and torch:
    PYTHONPATH=$PWD python benchmarks/compile_stats_gluon.py --dims 64,128 --launches default,pair1-s3,pair2-s3
Prints one line per (launch, D, causal): registers per thread (the launch's; setmaxnreg gives the consumers more),
spill stores/loads (bytes), whether ptxas serialised the wgmmas (the codes of its notes), shared memory, and the count of
wgmma instructions, read from Triton's own ptxas; with --sass also the SASS instruction counts (whole kernel).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(__file__))
# the launches are named as in the timing script, which also puts the repository on the path
from bench_gluon import VARIANTS  # noqa: E402

from smartcompile.kernels import sage_gluon as sg  # noqa: E402


def fake_quantized(d: int, sq: int = 1000, sk: int = 1500, b: int = 1, hq: int = 4, hkv: int = 2, block_q: int = 64):
    """The fields of sage_triton's QuantizedQKV that attend_gluon reads, as CPU tensors (never read)."""
    nq, nk = -(-sq // block_q) * block_q, -(-sk // 128) * 128
    return SimpleNamespace(fp8=True, block_q=block_q, sm_scale=d ** -0.5, q_written=True, block_k=128, shape=(b, hq, hkv, sq, sk, d), v_wgmma_order=True,
                           q8=torch.empty(b * hq, nq, d, dtype=torch.int8),
                           k8=torch.empty(b * hkv, nk, d, dtype=torch.int8),
                           v=torch.empty(b * hkv * d, nk, dtype=torch.float8_e4m3fn),
                           q_scale=torch.empty(b * hq * nq // block_q), k_scale=torch.empty(b * hkv * nk // 128),
                           v_amax=torch.empty(b * hkv * d))


def sparse_block_lists(x, causal: bool):
    """Block lists of every other K block per 128 query rows (the values are never read: only their types)."""
    from smartcompile.kernels.sparge_triton import block_lists_torch

    b, hq, _, sq, sk, _ = x.shape
    block_map = torch.zeros(b, hq, -(-sq // 128), -(-sk // 128), dtype=torch.bool)
    block_map[..., ::2] = True
    return block_lists_torch(block_map, sk, 128, 128, causal)


def compile_sm90a(fn, args, kwargs):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", 90, 128)
    backend = make_backend(target)
    bound, specialization, options = create_function_from_signature(fn.signature, fn.params, backend)(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(GluonASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def serialisation_notes(ptxas_report: str) -> list:
    """The codes of ptxas's notes that it serialised the kernel's wgmmas, e.g. "(C7512) Potential Performance Loss:
    wgmma.mma_async instructions are serialized due to insufficient register resources" or C7514's accumulator
    chaining: matched by the message, so whatever the reason (and code) it is caught, and advisory notes are not."""
    return sorted(set(re.findall(r"\((C\d+)\)[^\n]*wgmma\.mma_async instructions are serialized", ptxas_report)))


def _run_triton_tool(tool: str, data: bytes, suffix: str, args: list) -> subprocess.CompletedProcess:
    """One of the NVIDIA tools Triton ships (ptxas, cuobjdump) on `data` written to a temporary file; `args` may
    name the output path as "{out}"."""
    import triton

    exe = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", tool)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k" + suffix)
        with open(path, "wb") as f:
            f.write(data)
        argv = [exe, *(a.replace("{out}", os.path.join(tmp, "k.o")) for a in args), path]
        return subprocess.run(argv, capture_output=True, text=True)


def ptxas_stats(ptx: str) -> str:
    res = _run_triton_tool("ptxas", ptx.encode(), ".ptx", ["-arch=sm_90a", "-v", "-o", "{out}"])
    text = res.stdout + res.stderr
    regs = re.findall(r"Used (\d+) registers", text)
    spill = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    notes = serialisation_notes(text)
    serial = f" SERIALISED ({','.join(notes)})" if notes else ""
    return f"regs {','.join(regs) or '?'} spill st/ld {'/'.join(spill[0]) if spill else '?'}{serial}"


SASS_OPS = ("MUFU", "FFMA", "FADD", "FMUL", "FMNMX", "F2FP", "IADD3", "LEA", "SHF", "PRMT")


def _sass_text(cubin: bytes) -> str:
    res = _run_triton_tool("cuobjdump", cubin, ".cubin", ["-sass"])
    res.check_returncode()
    return res.stdout


# cuobjdump's lines: "/*0a30*/  [@predicate ]OPCODE.MODIFIERS operands ;  /* encoding */"
_SASS_LINE = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def sass_counts(cubin: bytes) -> str:
    """Instructions of the whole kernel in its SASS (Triton's own cuobjdump; triton.tools.disasm.get_sass stops
    after 4,096 of them), NOPs left out: the total and the softmax's opcodes."""
    from collections import Counter

    ops = Counter(m.group(2).split(".")[0] for m in map(_SASS_LINE.match, _sass_text(cubin).splitlines()) if m)
    ops.pop("NOP", None)
    return f"sass {sum(ops.values())} (" + " ".join(f"{op} {ops[op]}" for op in SASS_OPS) + ")"


def hot_loop_blocks(cubin: bytes) -> list:
    """The basic blocks of the first loop that issues a QK^T wgmma (IGMMA), a consumer's main loop: one
    (start address, instruction count, top opcodes) per block, blocks split at branch targets and after branches.
    A round runs the blocks every path takes plus one softmax copy (masked or not): the unmasked path's blocks are
    the per-tile issue budget of a consumer thread."""
    from collections import Counter

    rows = [(int(m.group(1), 16), m.group(2), m.group(3)) for m in map(_SASS_LINE.match, _sass_text(cubin).splitlines())
            if m]
    addr_index = {a: i for i, (a, _, _) in enumerate(rows)}
    for i, (addr, op, operands) in enumerate(rows):
        target = re.search(r"0x([0-9a-f]+)", operands) if op.startswith("BRA") else None
        start = addr_index.get(int(target.group(1), 16)) if target else None
        if start is None or start >= i or not any(o.startswith("IGMMA") for _, o, _ in rows[start:i + 1]):
            continue
        body = rows[start:i + 1]
        targets = {int(t, 16) for _, o, x in body if o.startswith("BRA") for t in re.findall(r"0x([0-9a-f]+)", x)}
        blocks, cur, cur_start = [], [], body[0][0]
        for a, o, _ in body:
            if a in targets and cur:
                blocks.append((cur_start, cur))
                cur, cur_start = [], a
            if o != "NOP":
                cur.append(o.split(".")[0])
            if o.startswith("BRA"):  # a branch ends its block
                blocks.append((cur_start, cur))
                cur, cur_start = [], None
            elif cur_start is None:
                cur_start = a
        if cur:
            blocks.append((cur_start, cur))
        return [(a, len(b), Counter(b).most_common(8)) for a, b in blocks if b]
    return []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--launches", default="ws2-nopp-split-c3-s4")
    ap.add_argument("--causal", default="0,1")
    ap.add_argument("--sass", action="store_true", help="also count SASS instructions (cuobjdump)")
    ap.add_argument("--loop", action="store_true", help="also list the basic blocks of a consumer's main loop")
    ap.add_argument("--blocks", action="store_true", help="launch on Sparge's block lists (query blocks of 128)")
    args = ap.parse_args()
    for name in args.launches.split(","):
        for d in (int(x) for x in args.dims.split(",")):
            for causal in (bool(int(c)) for c in args.causal.split(",")):
                calls = []

                class Recorder:
                    def __getitem__(self, grid):
                        return lambda *a, **k: calls.append((a, k))

                real = sg._sage_fwd_sm90_ws2
                sg._sage_fwd_sm90_ws2 = Recorder()
                try:
                    x = fake_quantized(d, block_q=128 if args.blocks else 64)
                    blocks = sparse_block_lists(x, causal) if args.blocks else None
                    b, hq, _, sq, _, _ = x.shape
                    q = torch.empty(b, hq, sq, d, dtype=torch.bfloat16) if VARIANTS[name].get("fold_q") else None
                    sg.attend_gluon(x, causal, torch.bfloat16, blocks=blocks, q=q, **VARIANTS[name])
                finally:
                    sg._sage_fwd_sm90_ws2 = real
                [(a, k)] = calls
                from triton.compiler.errors import CompilationError
                try:
                    kernel = compile_sm90a(real, a, k)
                except (CompilationError, RuntimeError, ValueError) as exc:  # a compile error is this launch's answer
                    print(f"{name:28s} D{d:<3d} causal={int(causal)}  FAILED: {str(exc).splitlines()[-1][:200]}")
                    continue
                ptx = kernel.asm["ptx"]
                sass = f"  {sass_counts(kernel.asm['cubin'])}" if args.sass else ""
                name_shown = f"{name}+blocks" if args.blocks else name
                print(f"{name_shown:28s} D{d:<3d} causal={int(causal)}  {ptxas_stats(ptx)}  smem {kernel.metadata.shared} "
                      f"wgmma {ptx.count('wgmma.mma_async')}{sass}")
                if args.loop:
                    for at, n, top in hot_loop_blocks(kernel.asm["cubin"]):
                        print(f"    loop block at {at:#07x} {n:4d}: " + ", ".join(f"{op} {c}" for op, c in top))


if __name__ == "__main__":
    main()
