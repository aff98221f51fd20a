"""Probe (issue 13, session 14): do small-N FP8 wgmmas with A from registers compute A @ B^T on the GPU?

Session 13 found the kernel's row sums by a [64 x 128] x [128 x 8] FP8 wgmma against ones wrong (l off by a
constant factor) while the PTX and SASS read right. This script isolates the pieces, each against torch on the
same FP8 values, and prints one line per case:
  - N (columns of the small product) 8, 16, 32, 64, 128;
  - B written into shared memory by TMA (from global memory) or by a register store (as the kernel did);
  - the B tile read back from shared memory (did the register store write what it should?);
  - alone, or issued after / before a second wgmma on the same A registers (as beside P V in the kernel).
Run on the GPU machine (Triton 3.6): python benchmarks/probe_small_n_wgmma.py
"""
from __future__ import annotations

import sys

import torch

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

M, K, N_BIG = 64, 128, 128


@gluon.jit
def _probe(a_ptr, b_desc, big_desc, b_ptr, out_ptr, big_out_ptr, tile_out_ptr,
           N: gl.constexpr, B_BY_TMA: gl.constexpr, ORDER: gl.constexpr, B_LAYOUT: gl.constexpr,
           BIG_LAYOUT: gl.constexpr):
    # ORDER 0: the small wgmma alone; 1: the big one first, then the small one; 2: the small one first; 3: as 1 with
    # a third wgmma (A from shared memory) issued after them and waited for after them (wait_group 1)
    blocked: gl.constexpr = gl.BlockedLayout([1, 4], [8, 4], [4, 1], [1, 0])
    acc_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, N, 32])
    big_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 128, 32])
    rows = gl.arange(0, 64, layout=gl.SliceLayout(1, blocked))
    cols = gl.arange(0, 128, layout=gl.SliceLayout(0, blocked))
    a = gl.load(a_ptr + gl.expand_dims(rows, 1) * 128 + gl.expand_dims(cols, 0))
    a_big = gl.convert_layout(a, gl.DotOperandLayout(operand_index=0, parent=big_l, k_width=4))

    b_smem = gl.allocate_shared_memory(gl.float8e4nv, [N, 128], B_LAYOUT)
    big_smem = gl.allocate_shared_memory(gl.float8e4nv, [128, 128], BIG_LAYOUT)
    bar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
    mbarrier.init(bar.index(0), count=1)
    fence_async_shared()
    if B_BY_TMA:
        mbarrier.expect(bar.index(0), b_desc.block_type.nbytes + big_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(b_desc, [0, 0], bar.index(0), b_smem)
    else:
        mbarrier.expect(bar.index(0), big_desc.block_type.nbytes)
        nrows = gl.arange(0, N, layout=gl.SliceLayout(1, blocked))
        b_regs = gl.load(b_ptr + gl.expand_dims(nrows, 1) * 128 + gl.expand_dims(cols, 0))
        b_smem.store(b_regs)
        fence_async_shared()
    tma.async_copy_global_to_shared(big_desc, [0, 0], bar.index(0), big_smem)
    mbarrier.wait(bar.index(0), 0)
    # what shared memory holds, read back through the generic proxy
    nrows2 = gl.arange(0, N, layout=gl.SliceLayout(1, blocked))
    gl.store(tile_out_ptr + gl.expand_dims(nrows2, 1) * 128 + gl.expand_dims(cols, 0), b_smem.load(blocked))

    if ORDER == 1:
        big_tok = warpgroup_mma(a_big, big_smem.permute((1, 0)), gl.zeros([64, 128], gl.float32, big_l),
                                use_acc=False, is_async=True)
        a_small = gl.convert_layout(a_big, gl.DotOperandLayout(operand_index=0, parent=acc_l, k_width=4))
        tok = warpgroup_mma(a_small, b_smem.permute((1, 0)), gl.zeros([64, N], gl.float32, acc_l),
                            use_acc=False, is_async=True)
        big, small = warpgroup_mma_wait(0, deps=(big_tok, tok))
    elif ORDER == 2:
        a_small = gl.convert_layout(a_big, gl.DotOperandLayout(operand_index=0, parent=acc_l, k_width=4))
        tok = warpgroup_mma(a_small, b_smem.permute((1, 0)), gl.zeros([64, N], gl.float32, acc_l),
                            use_acc=False, is_async=True)
        big_tok = warpgroup_mma(a_big, big_smem.permute((1, 0)), gl.zeros([64, 128], gl.float32, big_l),
                                use_acc=False, is_async=True)
        small, big = warpgroup_mma_wait(0, deps=(tok, big_tok))
    elif ORDER == 3:  # as in the kernel: the big one, the small one, then a third group still in flight
        big_tok = warpgroup_mma(a_big, big_smem.permute((1, 0)), gl.zeros([64, 128], gl.float32, big_l),
                                use_acc=False, is_async=True)
        a_small = gl.convert_layout(a_big, gl.DotOperandLayout(operand_index=0, parent=acc_l, k_width=4))
        tok = warpgroup_mma(a_small, b_smem.permute((1, 0)), gl.zeros([64, N], gl.float32, acc_l),
                            use_acc=False, is_async=True)
        third = warpgroup_mma(big_smem.slice(0, 64), big_smem.permute((1, 0)), gl.zeros([64, 128], gl.float32, big_l),
                              use_acc=False, is_async=True)
        big, small = warpgroup_mma_wait(1, deps=(big_tok, tok))
        third = warpgroup_mma_wait(0, deps=(third, ))
        big = big + third * 0.0
    else:
        a_small = gl.convert_layout(a_big, gl.DotOperandLayout(operand_index=0, parent=acc_l, k_width=4))
        tok = warpgroup_mma(a_small, b_smem.permute((1, 0)), gl.zeros([64, N], gl.float32, acc_l),
                            use_acc=False, is_async=True)
        small = warpgroup_mma_wait(0, deps=(tok, ))
        big = gl.zeros([64, 128], gl.float32, big_l)
    out_l: gl.constexpr = gl.BlockedLayout([1, 1], [1, 32], [4, 1], [1, 0])
    small_o = gl.convert_layout(small, out_l)
    big_o = gl.convert_layout(big, out_l)
    r = gl.arange(0, 64, layout=gl.SliceLayout(1, out_l))
    cn = gl.arange(0, N, layout=gl.SliceLayout(0, out_l))
    cb = gl.arange(0, 128, layout=gl.SliceLayout(0, out_l))
    gl.store(out_ptr + gl.expand_dims(r, 1) * N + gl.expand_dims(cn, 0), small_o)
    gl.store(big_out_ptr + gl.expand_dims(r, 1) * 128 + gl.expand_dims(cb, 0), big_o)


def fp8(t):
    return t.clamp(-448, 448).to(torch.float8_e4m3fn)


def case(n: int, by_tma: bool, order: int, data: str) -> str:
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(n * 7 + order)
    if data == "ones":
        a = fp8(torch.full((M, K), 448.0, device=dev))
        b = fp8(torch.ones(n, K, device=dev))
    else:
        a = fp8(torch.rand(M, K, device=dev, generator=g) * 448)
        b = fp8(torch.randn(n, K, device=dev, generator=g))
    big = fp8(torch.randn(N_BIG, K, device=dev, generator=g))
    b_lay = gl.NVMMASharedLayout.get_default_for([n, K], gl.float8e4nv)
    big_lay = gl.NVMMASharedLayout.get_default_for([N_BIG, K], gl.float8e4nv)
    b_desc = TensorDescriptor(b, [n, K], [K, 1], [n, K], b_lay)
    big_desc = TensorDescriptor(big, [N_BIG, K], [K, 1], [N_BIG, K], big_lay)
    out = torch.full((M, n), float("nan"), device=dev)
    big_out = torch.full((M, N_BIG), float("nan"), device=dev)
    tile = torch.zeros(n, K, dtype=torch.float8_e4m3fn, device=dev)
    _probe[(1, )](a, b_desc, big_desc, b, out, big_out, tile, N=n, B_BY_TMA=by_tma, ORDER=order, B_LAYOUT=b_lay,
                  BIG_LAYOUT=big_lay, num_warps=4)
    torch.cuda.synchronize()
    ref = a.float() @ b.float().t()
    ref_big = a.float() @ big.float().t()
    err = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
    tile_ok = torch.equal(tile.view(torch.uint8), b.view(torch.uint8))
    ratio = (out.sum() / ref.sum()).item()
    big_err = (((big_out - ref_big).abs().max() / ref_big.abs().max()).item() if order else float("nan"))
    ok = err < 1e-3 and tile_ok and (order == 0 or big_err < 1e-3)
    return (f"N={n:<3d} B by {'TMA  ' if by_tma else 'store'} order={order} {data:6s} small rel err {err:9.3g} "
            f"sum ratio {ratio:8.4f} tile {'ok' if tile_ok else 'WRONG'} big rel err {big_err:9.3g} "
            f"{'PASS' if ok else 'FAIL'}")


QUICK = [(8, True, 0, "ones"), (8, False, 0, "ones"), (8, True, 1, "random"), (8, False, 2, "random"),
         (16, True, 0, "ones"), (16, True, 1, "random"), (32, False, 1, "random"), (8, False, 3, "ones"),
         (8, False, 3, "random"), (8, True, 3, "random")]


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"{len(QUICK)} cases instead of 80 (each compiles)")
    args = ap.parse_args()
    cases = QUICK if args.quick else [(n, t, o, d) for d in ("ones", "random") for n in (8, 16, 32, 64, 128)
                                      for t in (True, False) for o in (0, 1, 2, 3)]
    fails = 0
    for n, by_tma, order, data in cases:
        try:
            line = case(n, by_tma, order, data)
        except Exception as exc:  # a compile or launch error is this case's answer
            line = f"N={n} tma={by_tma} order={order} {data}: ERROR {type(exc).__name__}: {str(exc)[:300]}"
        fails += "PASS" not in line
        print(line, flush=True)
    print(f"{fails} of {len(cases)} cases failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
