"""Sage attention for Hopper (sm90) in Gluon: TMA + mbarrier ring, INT8 and FP8 wgmma.

The numerics of kernels/sage_triton.py (and kernels/sage_reference.py), but for the row sums of the
shipped launch (below, SUM_MMA) and its one-level accumulation where chosen (DIRECT): the Q/K/V quantization
launches of sage_triton are reused (INT8 Q per 64 tokens with the softmax scale and log2(e) folded
in, INT8 K per 128 tokens after smoothing, FP8 e4m3 V per channel stored K-major, its keys permuted
within every 16 with v_wgmma_order=True);
this file only replaces the attention kernel:

  * K tiles (BLOCK_N=128, INT8) and V tiles (D_PAD x 128, FP8, K-major) are loaded by TMA into a
    STAGES-deep shared-memory ring; each slot has one mbarrier for K and one for V (expect-tx);
  * S = Q K^T by an INT8 wgmma (int32 accumulators, Q and K from shared memory); dequantised by
    q_scale (per 64 query rows, i.e. per warpgroup) * k_scale (per K tile);
  * online softmax in exp2; P scaled into [0, 448] and rounded to FP8 e4m3, then handed to the
    P V wgmma as a register operand by renaming registers (`_p_operand`; V's key order matches),
    where a layout conversion took ~30 shuffles/selects per tile;
  * O += P V by an FP8 wgmma with P from registers and V from shared memory, each tile's product
    into a fresh FP32 accumulator that is then added to the running FP32 output (the two-level
    accumulation: no long FP8-MMA accumulation chain; DIRECT accumulates onto O in the wgmma instead);
  * SUM_MMA (default_launch without an LSE): P's row sums by a second small FP8 wgmma of the same P against an
    8-column tile of ones that TMA loads with each consumer's Q tile, i.e. sums of the FP8-rounded P.

Kernel: `_sage_fwd_sm90_ws2` (constexpr flags IS_CAUSAL (top-left aligned, as SDPA), STORE_LSE and SPARSE:
Sparge's kept K blocks per 128-row query block, kernels/sparge_gluon.py), FA3's layout. One producer warp (TMA K/V ring, "empty" mbarriers counted by every consumer) and NC consumer
partitions of one warpgroup and 64 query rows each (NC=2; NC=3 at D_PAD 64 non-causal), with setmaxnreg
(240, or 160 for NC=3, per consumer; 24 for the producer). The consumer loop is rotated so that only
32-bit values cross its back edge; optional: PINGPONG (consumers take turns at issuing their wgmmas,
mbarrier ring), INTRA (P V under the next softmax, FA3's intra-warpgroup overlap), SPLIT (P V waited for
first, so the O update runs under the next Q K^T), EARLY (next round's ready-waits moved next to the slot
release), DIRECT (P V onto O in the FP8 wgmma, one-level accumulation; with INTRA spill-free at D128), SUM_MMA
(P's row sums by a wgmma against ones instead of FADDs), PAIR (with DIRECT and SUM_MMA: rounds of two 128-key
tiles, one softmax and O rescale per 256 keys, `_ws2_consumer_pair`; shipped at D128 non-causal).
Files: the jit building blocks (Gluon's imports, constants, the softmax, the wgmma issues, the epilogue) are in
sage_gluon_parts.py, the rounds of two tiles in sage_gluon_pair.py; this file holds the 128-key consumer and
producer, the kernel and its host side. Measured on the H200: benchmarks/gluon_notes.md. Step 1's kernels (one CTA of warpgroups that
issue their own TMA loads; a producer warp with the consumers in one partition) were slower and are in
the history only (gluon_notes.md, step 4).

Triton 3.6's `triton.experimental.gluon` (Hopper) is imported in a try block (sage_gluon_parts.py): without Triton, or
with a Triton whose Gluon API differs, the kernels are not defined, the package still imports
(CPU machines, Triton 3.9) and `gluon_unavailable_reason()` says why the kernel cannot run.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from .config import SageConfig
from .constants import GLUON_BLOCK_Q, GLUON_SPARSE_BLOCK_Q, KV_BLOCK, LOG2E, SUPPORTED_HEAD_DIMS
from . import scratch
from .launch_cache import launch
from .tma_launch import TmaArg
from .output_layout import token_major_empty
from .sage_gluon_parts import _gluon, gl, gluon  # noqa: F401  (gluon and gl re-exported)

if gluon is not None:  # the jit code's globals, defined only where Gluon imports
    from .sage_gluon_parts import (  # noqa: F401
        _BLOCK_Q, _K_BLOCK, TensorDescriptor, _consumer_start, _issue_pv, _issue_pv_onto_o, _issue_rowsum,
        _issue_s, _k_scale, _kv_block, _mma_layout, _p_operand, _program_tile, _row_sums, _softmax_tile,
        _store_output, _tile_range, fence_async_shared, mbarrier, tma, warpgroup_mma_wait,
    )
    from .sage_gluon_pair import _ws2_consumer_pair, _ws2_producer_pair

TESTED_TRITON = ("3.6",)  # Gluon's API moves between releases: the versions this kernel was built with


def gluon_unavailable_reason() -> Optional[str]:
    """Why the Gluon kernel cannot run in this process (None when it can)."""
    try:
        import triton
    except ImportError:
        return "triton is not installed"
    if not triton.__version__.startswith(TESTED_TRITON):
        return f"triton {triton.__version__}: the Gluon kernel is written against triton {'/'.join(TESTED_TRITON)}"
    try:
        _gluon()
    except (ImportError, AttributeError) as exc:  # an API this kernel needs is missing in this Triton
        return f"triton.experimental.gluon unusable: {exc}"
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.cuda.get_device_capability() != (9, 0):
        return f"needs sm90 (Hopper); device is sm{''.join(map(str, torch.cuda.get_device_capability()))}"
    return None


def gluon_available() -> bool:
    return gluon_unavailable_reason() is None


if gluon is not None:
    @gluon.jit
    def _ws2_producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, q_row0, k_row0,
                      v_row0, n_all, lut_row, STAGES: gl.constexpr, BN: gl.constexpr, NC: gl.constexpr,
                      SPARSE: gl.constexpr, ones_desc, ones_smem, SUM_MMA: gl.constexpr, QFOLD: gl.constexpr):
        # QFOLD: the consumers quantize their Q tiles themselves; without SUM_MMA their q barriers are then
        # arrived at with no bytes
        q_bytes: gl.constexpr = 0 if QFOLD else q_desc.block_type.nbytes
        for c in gl.static_range(NC):
            if SUM_MMA:  # each consumer's ones tile arrives with its Q tile (TMA: see _sage_fwd_sm90_ws2)
                mbarrier.expect(q_bar.index(c), q_bytes + ones_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(ones_desc, [0, 0], q_bar.index(c), ones_smem.index(c))
            elif QFOLD:
                mbarrier.arrive(q_bar.index(c), count=1)
            else:
                mbarrier.expect(q_bar.index(c), q_bytes)
            if not QFOLD:
                tma.async_copy_global_to_shared(q_desc, [q_row0 + _BLOCK_Q * c, 0], q_bar.index(c), q_smem.index(c))
        for j in range(0, n_all):
            slot = j % STAGES
            # every consumer releases a slot (count NC); a fresh barrier passes parity 1
            start = _kv_block(lut_row, j, SPARSE) * BN
            mbarrier.wait(empty_bar.index(slot), ((j // STAGES) & 1) ^ 1)
            mbarrier.expect(k_bar.index(slot), k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(k_desc, [k_row0 + start, 0], k_bar.index(slot), k_smem.index(slot))
            mbarrier.expect(v_bar.index(slot), v_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(v_desc, [v_row0, start], v_bar.index(slot), v_smem.index(slot))

    @gluon.jit
    def _ws2_consumer(q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, turn_bar, QS, KS, VAMAX, O, LSE,
                      stride_ob, stride_oh, stride_on, pid_m, pid_bh, b, h, kv_bh, seq_q, seq_k, n_qblk, n_kblk,
                      n_full, n_all, lut_row, C: gl.constexpr, D: gl.constexpr, BLOCK_M: gl.constexpr,
                      BN: gl.constexpr, D_PAD: gl.constexpr, STAGES: gl.constexpr, IS_CAUSAL: gl.constexpr,
                      STORE_LSE: gl.constexpr, PINGPONG: gl.constexpr, INTRA: gl.constexpr, NC: gl.constexpr,
                      SPLIT: gl.constexpr, EARLY: gl.constexpr, SPARSE: gl.constexpr, Q_SCALE_ROWS: gl.constexpr,
                      DIRECT: gl.constexpr, SUM_MMA: gl.constexpr, ones_smem, Q, stride_qb, stride_qh, stride_qn,
                      q_mult, QFOLD: gl.constexpr):
        # DIRECT: one-level accumulation, P V onto O in the FP8 wgmma's own accumulator. SUM_MMA (not INTRA): P's row
        # sums by a wgmma against the consumer's ones tile, issued after P V
        ROWSUM: gl.constexpr = not SUM_MMA
        # seq_k: keys are masked from here on in MASK tiles (0 for a SPARSE row that keeps no block)
        # turns go round the consumers: C waits on turn C, then passes it to the next one
        FIRST: gl.constexpr = 1 if C == 0 else 0
        NEXT: gl.constexpr = (C + 1) % NC
        s_layout: gl.constexpr = _mma_layout(4, BN)
        o_layout: gl.constexpr = _mma_layout(4, D_PAD)
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=4)
        row0, offs_m, offs_n, qs, ks_ptr, m_i, l_i, acc, q = _consumer_start(
            pid_m, C, NC, q_smem, q_bar, QS, KS, pid_bh, kv_bh, n_qblk, n_kblk, BLOCK_M, BN, D_PAD, Q_SCALE_ROWS, Q,
            stride_qb, stride_qh, stride_qn, q_mult, b, h, seq_q, D, QFOLD)
        ones = ones_smem.index(C) if SUM_MMA else ones_smem  # (loaded with q: its wait covered it)

        # The loop is rotated so that only 32-bit values cross its back edge: an FP8 P carried from one
        # iteration to the next is kept one byte per register and repacked every iteration (measured
        # in step 2: ~120 extra PRMT/LOP3 per tile). Round r of wgmma issue is taken in turn (PINGPONG).
        if PINGPONG:  # consumer 0's first wait passes on the fresh barrier (parity 1)
            mbarrier.wait(turn_bar.index(C), FIRST)
        s_tok = _issue_s(q, k_smem, k_bar, 0, s_layout, BLOCK_M, BN, STAGES)
        if PINGPONG:
            mbarrier.arrive(turn_bar.index(NEXT), count=1)
        c = qs * _k_scale(ks_ptr, _kv_block(lut_row, 0, SPARSE), BN)
        s_i32 = warpgroup_mma_wait(0, deps=(s_tok, ))
        if INTRA:
            # carried: P_j in fp32; per round: S_{j+1} and P_j V_j issued, softmax of S_{j+1} under P_j V_j
            if n_full > 0:
                p, alpha, m_i, l_i = _softmax_tile(s_i32, c, m_i, l_i, offs_m, offs_n, 0, seq_k, False, IS_CAUSAL)
            else:
                p, alpha, m_i, l_i = _softmax_tile(s_i32, c, m_i, l_i, offs_m, offs_n, 0, seq_k, True, IS_CAUSAL)
            for j in range(0, n_all - 1):
                p8 = _p_operand(p, p_layout, BLOCK_M, BN)
                if PINGPONG:
                    mbarrier.wait(turn_bar.index(C), ((j + 1) & 1) ^ FIRST)
                s_tok = _issue_s(q, k_smem, k_bar, j + 1, s_layout, BLOCK_M, BN, STAGES)
                if DIRECT:  # P_j V_j onto O itself (rescaled last round): no second accumulator to hold
                    pv_tok = _issue_pv_onto_o(p8, v_smem, v_bar, acc, j, STAGES)
                else:
                    pv_tok = _issue_pv(p8, v_smem, v_bar, j, o_layout, BLOCK_M, BN, D_PAD, STAGES)
                if PINGPONG:
                    mbarrier.arrive(turn_bar.index(NEXT), count=1)
                c = qs * _k_scale(ks_ptr, j + 1, BN)
                s_i32 = warpgroup_mma_wait(1, deps=(s_tok, ))
                if j + 1 < n_full:
                    p, alpha, m_i, l_i = _softmax_tile(s_i32, c, m_i, l_i, offs_m, offs_n, (j + 1) * BN, seq_k, False,
                                                       IS_CAUSAL)
                else:
                    p, alpha, m_i, l_i = _softmax_tile(s_i32, c, m_i, l_i, offs_m, offs_n, (j + 1) * BN, seq_k, True,
                                                       IS_CAUSAL)
                alpha_o = gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
                pv = warpgroup_mma_wait(0, deps=(pv_tok, ))
                if DIRECT:
                    acc = pv * alpha_o
                else:
                    acc = (acc + pv) * alpha_o
                mbarrier.arrive(empty_bar.index(j % STAGES), count=1)
        else:
            # carried: S_j (int32); per round: P_j V_j and S_{j+1} issued and waited for, then added.
            # EARLY: the K/V ready-waits of the next round sit right after this round's slot release,
            # where the consumer's warps have just met at a barrier anyway (Triton puts a partition
            # barrier before every mbarrier wait: ncu counted 31% of stall cycles at barriers)
            if EARLY:
                mbarrier.wait(v_bar.index(0), 0)
                mbarrier.wait(k_bar.index(1 % STAGES), (1 // STAGES) & 1, pred=n_all > 1)
            for j in range(0, n_all - 1):
                if j < n_full:
                    p, alpha, m_i, l_i = _softmax_tile(s_i32, c, m_i, l_i, offs_m, offs_n, j * BN, seq_k, False,
                                                       IS_CAUSAL, ROWSUM)
                else:
                    p, alpha, m_i, l_i = _softmax_tile(s_i32, c, m_i, l_i, offs_m, offs_n,
                                                       _kv_block(lut_row, j, SPARSE) * BN, seq_k, True, IS_CAUSAL,
                                                       ROWSUM)
                alpha_o = gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
                p8 = _p_operand(p, p_layout, BLOCK_M, BN)
                if PINGPONG:
                    mbarrier.wait(turn_bar.index(C), ((j + 1) & 1) ^ FIRST)
                if DIRECT:  # O rescaled first, then P_j V_j onto it: no fresh accumulator beside O
                    acc = acc * alpha_o
                    pv_tok = _issue_pv_onto_o(p8, v_smem, v_bar, acc, j, STAGES)
                else:
                    pv_tok = _issue_pv(p8, v_smem, v_bar, j, o_layout, BLOCK_M, BN, D_PAD, STAGES, not EARLY)
                if SUM_MMA:
                    sum_tok = _issue_rowsum(p8, ones, BLOCK_M, BN)
                s_tok = _issue_s(q, k_smem, k_bar, j + 1, s_layout, BLOCK_M, BN, STAGES, not EARLY)
                if PINGPONG:
                    mbarrier.arrive(turn_bar.index(NEXT), count=1)
                c_next = qs * _k_scale(ks_ptr, _kv_block(lut_row, j + 1, SPARSE), BN)
                if SPLIT:  # groups retire in issue order: fold P_j V_j in while S_{j+1} is still running
                    if SUM_MMA:
                        pv, rs = warpgroup_mma_wait(1, deps=(pv_tok, sum_tok))
                        l_i = l_i + _row_sums(rs, s_layout)
                    else:
                        pv = warpgroup_mma_wait(1, deps=(pv_tok, ))
                    if DIRECT:
                        acc = pv
                    else:
                        acc = acc * alpha_o + pv  # one FFMA per element
                    mbarrier.arrive(empty_bar.index(j % STAGES), count=1)
                    s_i32 = warpgroup_mma_wait(0, deps=(s_tok, ))
                else:
                    if SUM_MMA:
                        pv, rs, s_i32 = warpgroup_mma_wait(0, deps=(pv_tok, sum_tok, s_tok))
                        l_i = l_i + _row_sums(rs, s_layout)
                    else:
                        pv, s_i32 = warpgroup_mma_wait(0, deps=(pv_tok, s_tok))
                    if DIRECT:
                        acc = pv
                    else:
                        acc = acc * alpha_o + pv  # one FFMA per element
                    mbarrier.arrive(empty_bar.index(j % STAGES), count=1)
                if EARLY:
                    mbarrier.wait(v_bar.index((j + 1) % STAGES), ((j + 1) // STAGES) & 1)
                    mbarrier.wait(k_bar.index((j + 2) % STAGES), ((j + 2) // STAGES) & 1, pred=j + 2 < n_all)
                c = c_next
            last = n_all - 1
            if last < n_full:
                p, alpha, m_i, l_i = _softmax_tile(s_i32, c, m_i, l_i, offs_m, offs_n, last * BN, seq_k, False,
                                                   IS_CAUSAL, ROWSUM)
            else:
                p, alpha, m_i, l_i = _softmax_tile(s_i32, c, m_i, l_i, offs_m, offs_n,
                                                   _kv_block(lut_row, last, SPARSE) * BN, seq_k, True, IS_CAUSAL,
                                                   ROWSUM)
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
        # last round: P_{n-1} V_{n-1} alone
        p8 = _p_operand(p, p_layout, BLOCK_M, BN)
        if PINGPONG:
            mbarrier.wait(turn_bar.index(C), (n_all & 1) ^ FIRST)
        pv_tok = _issue_pv(p8, v_smem, v_bar, n_all - 1, o_layout, BLOCK_M, BN, D_PAD, STAGES,
                           INTRA or not EARLY)
        if SUM_MMA:
            sum_tok = _issue_rowsum(p8, ones, BLOCK_M, BN)
        if PINGPONG:
            mbarrier.arrive(turn_bar.index(NEXT), count=1)
        if SUM_MMA:
            pv, rs = warpgroup_mma_wait(0, deps=(pv_tok, sum_tok))
            l_i = l_i + _row_sums(rs, s_layout)
        else:
            pv = warpgroup_mma_wait(0, deps=(pv_tok, ))
        acc = acc + pv
        mbarrier.arrive(empty_bar.index((n_all - 1) % STAGES), count=1)

        _store_output(acc, m_i, l_i, offs_m, row0, VAMAX, O, LSE, b, h, pid_bh, kv_bh, stride_ob, stride_oh, stride_on,
                      seq_q, o_layout, D, BLOCK_M, D_PAD, STORE_LSE)

    @gluon.jit
    def _sage_fwd_sm90_ws2(q_desc, k_desc, v_desc, QS, KS, VAMAX, O, LSE, LUT, COUNT, COUNT_FULL, stride_ob, stride_oh,
                           stride_on, q_heads, group, seq_q, seq_k, q_rows, n_qblk, n_kblk, lut_len, ones_desc,
                           Q, stride_qb, stride_qh, stride_qn, q_mult, D: gl.constexpr, D_PAD: gl.constexpr, BLOCK_M: gl.constexpr, BN: gl.constexpr,
                           STAGES: gl.constexpr, IS_CAUSAL: gl.constexpr, STORE_LSE: gl.constexpr,
                           PINGPONG: gl.constexpr, INTRA: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                           PRODUCER_REGS: gl.constexpr, NC: gl.constexpr, SPLIT: gl.constexpr, EARLY: gl.constexpr,
                           SPARSE: gl.constexpr, Q_SCALE_ROWS: gl.constexpr, DIRECT: gl.constexpr,
                           SUM_MMA: gl.constexpr, PAIR: gl.constexpr, QFOLD: gl.constexpr, LEAN_SYNC: gl.constexpr,
                           num_warps: gl.constexpr):
        # BLOCK_M: rows per consumer (64); a CTA covers NC * BLOCK_M query rows (NC = 2, or 3 non-causal).
        # q_rows: Q's padded rows per head; n_qblk Q scales (one per Q_SCALE_ROWS rows) per head.
        # SPARSE: the CTA's rows are one Sparge query block (NC * BLOCK_M rows); it walks that block's kept K
        # blocks, LUT[row, :COUNT[row]] ascending (lut_len per row), the first COUNT_FULL[row] of them unmasked.
        pid_m, pid_bh, b, h, kv_bh = _program_tile(seq_q, q_heads, group, NC * BLOCK_M, IS_CAUSAL)

        if SUM_MMA:
            # per consumer 8 x BN FP8 ones (V's swizzled layout), the B operand of the row-sum wgmma, loaded by TMA
            # from global memory with the consumer's Q tile. Written from registers (smem.store, fenced), the tile
            # gave the wgmma wrong sums on the H200 (l off by a constant factor: sessions 13-14), whether written
            # before the partitions or by each consumer; loaded by TMA the sums are right (session 14)
            ones_smem = gl.allocate_shared_memory(gl.float8e4nv, [NC, 8, BN], ones_desc.layout)
        q_smem = gl.allocate_shared_memory(q_desc.dtype, [NC] + q_desc.block_type.shape, q_desc.layout)
        TILES: gl.constexpr = 2 if PAIR else 1  # K/V tiles per ring slot (PAIR: a slot per round of two)
        k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES * TILES] + k_desc.block_type.shape, k_desc.layout)
        v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES * TILES] + v_desc.block_type.shape, v_desc.layout)
        if not SUM_MMA:
            ones_smem = v_smem  # never read (warp_specialize takes no None)
        q_bar = gl.allocate_shared_memory(gl.int64, [NC, 1], mbarrier.MBarrierLayout())
        turn_bar = gl.allocate_shared_memory(gl.int64, [NC, 1], mbarrier.MBarrierLayout())
        k_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(NC):
            mbarrier.init(q_bar.index(i), count=1)
            mbarrier.init(turn_bar.index(i), count=1)
        for i in gl.static_range(STAGES):
            mbarrier.init(k_bar.index(i), count=1)
            mbarrier.init(v_bar.index(i), count=1)
            mbarrier.init(empty_bar.index(i), count=NC)
        fence_async_shared()

        # the CTA's rows (NC * BLOCK_M) give its tile ranges; NC = 3 is non-causal
        gl.static_assert(NC == 2 or not IS_CAUSAL, "three consumers: non-causal only")
        gl.static_assert(not (SPARSE and (INTRA or NC != 2 or BN != _K_BLOCK)),
                         "SPARSE: two consumers, INTRA off, K/V tiles of the sparse block size")
        gl.static_assert(not (DIRECT and (EARLY or (SPARSE and not PAIR))), "DIRECT: not with EARLY; SPARSE with PAIR")
        gl.static_assert(not (SUM_MMA and INTRA), "SUM_MMA: not with INTRA")
        gl.static_assert(not QFOLD or (not SPARSE and Q_SCALE_ROWS == BLOCK_M),
                         "QFOLD: dense, one Q scale per consumer's rows")
        gl.static_assert(not PAIR or (NC == 2 and DIRECT and SUM_MMA and not (INTRA or PINGPONG or EARLY)
                                      and not STORE_LSE and BN == _K_BLOCK),
                         "PAIR: two consumers, DIRECT and SUM_MMA, 128-key tiles; no INTRA, PINGPONG, EARLY or LSE")
        if SPARSE:
            lut_at = pid_bh * gl.cdiv(seq_q, NC * BLOCK_M) + pid_m
            n_kept = gl.load(COUNT + lut_at)
            n_full = gl.load(COUNT_FULL + lut_at)
            n_all = gl.maximum(n_kept, 1)  # a row keeping no block walks block 0 with every key masked
            seq_k = gl.where(n_kept > 0, seq_k, 0)
            lut_row = LUT + lut_at.to(gl.int64) * lut_len
        else:
            n_full, n_all = _tile_range(pid_m, seq_k, NC * BLOCK_M, BN, IS_CAUSAL)
            lut_row = KS  # never read (warp_specialize takes no None)
        q_row0 = pid_bh * q_rows + pid_m * (NC * BLOCK_M)
        k_row0 = kv_bh * (n_kblk * _K_BLOCK)
        v_row0 = kv_bh * D_PAD
        # (tuples of arguments are written out: a constexpr inside a concatenated tuple stops being one)
        if PAIR:
            gl.warp_specialize([
                (_ws2_consumer_pair, (q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, QS, KS, VAMAX, O, LSE,
                                      stride_ob, stride_oh, stride_on, pid_m, pid_bh, b, h, kv_bh, seq_q, seq_k,
                                      n_qblk, n_kblk, n_full, n_all, lut_row, 0, D, BLOCK_M, BN, D_PAD, STAGES,
                                      IS_CAUSAL, NC, SPARSE, Q_SCALE_ROWS, ones_smem, Q, stride_qb, stride_qh,
                                      stride_qn, q_mult, QFOLD, LEAN_SYNC)),
                (_ws2_consumer_pair, (q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, QS, KS, VAMAX, O, LSE,
                                      stride_ob, stride_oh, stride_on, pid_m, pid_bh, b, h, kv_bh, seq_q, seq_k,
                                      n_qblk, n_kblk, n_full, n_all, lut_row, 1, D, BLOCK_M, BN, D_PAD, STAGES,
                                      IS_CAUSAL, NC, SPARSE, Q_SCALE_ROWS, ones_smem, Q, stride_qb, stride_qh,
                                      stride_qn, q_mult, QFOLD, LEAN_SYNC)),
                (_ws2_producer_pair, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar,
                                      q_row0, k_row0, v_row0, n_all, lut_row, STAGES, BN, NC, SPARSE, ones_desc,
                                      ones_smem, QFOLD)),
            ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
        elif NC == 3:
            gl.warp_specialize([
                (_ws2_consumer, (q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, turn_bar, QS, KS, VAMAX, O, LSE,
                             stride_ob, stride_oh, stride_on, pid_m, pid_bh, b, h, kv_bh, seq_q, seq_k, n_qblk, n_kblk,
                             n_full, n_all, lut_row, 0, D, BLOCK_M, BN, D_PAD, STAGES, IS_CAUSAL, STORE_LSE,
                             PINGPONG, INTRA, NC, SPLIT, EARLY, SPARSE, Q_SCALE_ROWS, DIRECT, SUM_MMA,
                             ones_smem, Q, stride_qb, stride_qh, stride_qn, q_mult, QFOLD)),
                (_ws2_consumer, (q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, turn_bar, QS, KS, VAMAX, O, LSE,
                             stride_ob, stride_oh, stride_on, pid_m, pid_bh, b, h, kv_bh, seq_q, seq_k, n_qblk, n_kblk,
                             n_full, n_all, lut_row, 1, D, BLOCK_M, BN, D_PAD, STAGES, IS_CAUSAL, STORE_LSE,
                             PINGPONG, INTRA, NC, SPLIT, EARLY, SPARSE, Q_SCALE_ROWS, DIRECT, SUM_MMA,
                             ones_smem, Q, stride_qb, stride_qh, stride_qn, q_mult, QFOLD)),
                (_ws2_consumer, (q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, turn_bar, QS, KS, VAMAX, O, LSE,
                             stride_ob, stride_oh, stride_on, pid_m, pid_bh, b, h, kv_bh, seq_q, seq_k, n_qblk, n_kblk,
                             n_full, n_all, lut_row, 2, D, BLOCK_M, BN, D_PAD, STAGES, IS_CAUSAL, STORE_LSE,
                             PINGPONG, INTRA, NC, SPLIT, EARLY, SPARSE, Q_SCALE_ROWS, DIRECT, SUM_MMA,
                             ones_smem, Q, stride_qb, stride_qh, stride_qn, q_mult, QFOLD)),
                (_ws2_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, q_row0,
                             k_row0, v_row0, n_all, lut_row, STAGES, BN, NC, SPARSE, ones_desc, ones_smem, SUM_MMA,
                             QFOLD)),
            ], [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])
        else:
            gl.warp_specialize([
                (_ws2_consumer, (q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, turn_bar, QS, KS, VAMAX, O, LSE,
                             stride_ob, stride_oh, stride_on, pid_m, pid_bh, b, h, kv_bh, seq_q, seq_k, n_qblk, n_kblk,
                             n_full, n_all, lut_row, 0, D, BLOCK_M, BN, D_PAD, STAGES, IS_CAUSAL, STORE_LSE,
                             PINGPONG, INTRA, NC, SPLIT, EARLY, SPARSE, Q_SCALE_ROWS, DIRECT, SUM_MMA,
                             ones_smem, Q, stride_qb, stride_qh, stride_qn, q_mult, QFOLD)),
                (_ws2_consumer, (q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, turn_bar, QS, KS, VAMAX, O, LSE,
                             stride_ob, stride_oh, stride_on, pid_m, pid_bh, b, h, kv_bh, seq_q, seq_k, n_qblk, n_kblk,
                             n_full, n_all, lut_row, 1, D, BLOCK_M, BN, D_PAD, STAGES, IS_CAUSAL, STORE_LSE,
                             PINGPONG, INTRA, NC, SPLIT, EARLY, SPARSE, Q_SCALE_ROWS, DIRECT, SUM_MMA,
                             ones_smem, Q, stride_qb, stride_qh, stride_qn, q_mult, QFOLD)),
                (_ws2_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, q_row0,
                             k_row0, v_row0, n_all, lut_row, STAGES, BN, NC, SPARSE, ones_desc, ones_smem, SUM_MMA,
                             QFOLD)),
            ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])

@functools.lru_cache(maxsize=None)
def _smem_layouts(block_m: int, d_pad: int, block_n: int) -> tuple:
    """The shared-memory layouts of the Q, K and V tiles, built once per shape (each build took ~25 us under
    cProfile on the H200 machine's CPU)."""
    return (gl.NVMMASharedLayout.get_default_for([block_m, d_pad], gl.int8),
            gl.NVMMASharedLayout.get_default_for([block_n, d_pad], gl.int8),
            gl.NVMMASharedLayout.get_default_for([d_pad, block_n], gl.float8e4nv))


def make_descriptors(x, block_m: int, block_n: int = KV_BLOCK) -> tuple:
    """TMA descriptors (as tma_launch.TmaArg: built by the launch cache only where Triton's usual path runs) over
    sage_triton's quantized buffers: Q (B*Hq*nQpad, D_PAD) int8, K (B*Hkv*nKpad, D_PAD) int8, V K-major
    (B*Hkv*D_PAD, nKpad) fp8."""
    _gluon()
    d_pad = x.q8.shape[-1]
    q_lay, k_lay, v_lay = _smem_layouts(block_m, d_pad, block_n)
    return (TmaArg(x.q8.view(-1, d_pad), (block_m, d_pad), q_lay, TensorDescriptor),
            TmaArg(x.k8.view(-1, d_pad), (block_n, d_pad), k_lay, TensorDescriptor),
            TmaArg(x.v.view(-1, x.v.shape[-1]), (d_pad, block_n), v_lay, TensorDescriptor))


_ONES: dict = {}  # (device index, d_pad, block_n) -> TmaArg of 8 x block_n FP8 ones (it holds the tensor)


def _ones_tile(device, d_pad: int, block_n: int) -> TmaArg:
    """The TMA descriptor of 8 x block_n FP8 ones in global memory: SUM_MMA's row-sum operand. Kept between calls
    only on the default stream outside CUDA-graph capture (scratch.on_default_stream: a kept tensor must never
    live in a graph's pool, and another stream could read it before its fill ran); made per call elsewhere."""
    where = scratch.on_default_stream(device)
    key = None if where is None else (where[0], d_pad, block_n)
    desc = _ONES.get(key) if key is not None else None
    if desc is None:
        ones = torch.full((8, block_n), 1.0, device=device).to(torch.float8_e4m3fn)
        desc = TmaArg(ones, (8, block_n), _smem_layouts(GLUON_BLOCK_Q, d_pad, block_n)[2], TensorDescriptor)
        if key is not None:
            _ONES[key] = desc
    return desc


# Fastest measured on the H200 (benchmarks/gluon_notes.md, step 2): two consumer warpgroups (three
# at D64 non-causal), no ping-pong, P V retired before Q K^T, a 4-deep K/V ring. The launch with an LSE (exact row
# sums) and the base of default_launch.
DEFAULT_LAUNCH = dict(stages=4, pingpong=False, split=True, consumers=3)


# One-level accumulation (`direct`) adds an error that grows with the row. Against fp32 on the rows that see the most
# keys (benchmarks/check_direct_long_rows.py, H200, session 16) its rel L1 stays within 1.02x of the two-level one's
# and its cosine >= 0.99919 at D64/D128, causal or not, up to 64k keys; not measured beyond, so not used beyond
DIRECT_MAX_KEYS = 65536
# ... and at D_PAD 128 causal it was the fastest from 16k keys only (at 4k the FADD sums ran 10% faster: H200,
# session 16, kernel alone, the same run)
CAUSAL_DIRECT_MIN_KEYS = 16384


# Rounds of two 128-key tiles (`pair`, one-level accumulation and row sums by wgmma), two consumers, a ring of this
# many rounds: D_PAD 128 non-causal kernel 855 against 760 TF at 16k keys, 770 against 689 at 4k (H200, session 17)
PAIR_LAUNCH = dict(DEFAULT_LAUNCH, consumers=2, stages=2, pair=True, direct=True, sum_mma=True)


def default_launch(d_pad: int, is_causal: bool, return_lse: bool, seq_k: int) -> dict:
    """The launch sage_attention_gluon uses, the fastest measured per case (H200, kernel alone, sessions 14, 16 and
    17; the notes' steps 11, 13 and 14). D_PAD 128 non-causal: PAIR_LAUNCH up to DIRECT_MAX_KEYS keys (+11-13% over
    `sum_mma`), `sum_mma` beyond. D_PAD 64 non-causal: the row sums by wgmma (`sum_mma`) and the one-level
    accumulation (`direct`) up to DIRECT_MAX_KEYS keys, three consumers (`pair` with two: 8% slower). D_PAD 64
    causal: `sum_mma` alone (+11-25% over the FADD sums, `direct` 3% slower). D_PAD 128 causal: `sum_mma` +
    `direct` from CAUSAL_DIRECT_MIN_KEYS to DIRECT_MAX_KEYS keys (`pair` ties), the FADD sums elsewhere (`sum_mma`
    alone was 2-11% slower than them at 4k-64k). With an LSE, DEFAULT_LAUNCH: `sum_mma`'s sums are of the
    FP8-rounded P."""
    if return_lse:
        return dict(DEFAULT_LAUNCH)
    if is_causal and d_pad > 64:
        if CAUSAL_DIRECT_MIN_KEYS <= seq_k <= DIRECT_MAX_KEYS:
            return {**DEFAULT_LAUNCH, "sum_mma": True, "direct": True}
        return dict(DEFAULT_LAUNCH)
    if d_pad > 64 and seq_k <= DIRECT_MAX_KEYS:
        return dict(PAIR_LAUNCH)
    direct = d_pad <= 64 and not is_causal and seq_k <= DIRECT_MAX_KEYS
    return {**DEFAULT_LAUNCH, "sum_mma": True, "direct": direct}


SPARSE_BLOCK_Q = GLUON_SPARSE_BLOCK_Q  # Sparge's query block on this kernel: one CTA's rows (two consumers)


def attend_gluon(x, is_causal: bool, out_dtype: torch.dtype, return_lse: bool = False, *, stages: int = 4,
                 producer_regs: int = 24, pingpong: bool = False, intra: bool = False, consumer_regs: int = 240,
                 consumers: int = 3, split: bool = True, early: bool = False, blocks=None,
                 block_n: int = KV_BLOCK, direct: bool = False, sum_mma: bool = False, pair: bool = False,
                 fold_q: bool = False, lean_sync: bool = False, q: Optional[torch.Tensor] = None):
    """The Gluon attention kernel on sage_triton's quantized inputs (FP8 P.V, block_q 64 or 128, block_k 128, V
    in wgmma key order: `quantize(..., v_wgmma_order=True)`); the defaults are DEFAULT_LAUNCH's.
    consumers=3 applies at D_PAD 64, non-causal only (elsewhere 2), with 160 registers per consumer.
    `blocks`: Sparge's kept K blocks (sage_triton.BlockLists, no key padding) per query block of
    SPARSE_BLOCK_Q rows (x.block_q must be that); the kernel walks only those (two consumers, intra off).
    `block_n`: keys per K/V tile, 128 or 64 (64: S and P take half the registers, so INTRA compiles without
    spills at D_PAD 128; three consumers there still spill, 916 bytes: ptxas for sm_90a). Not with `blocks`.
    `direct`: P V accumulated onto O by the FP8 wgmma itself, FA3's one-level accumulation instead of
    SageAttention2's two-level one (with `intra`: spill-free with 128-key tiles at D_PAD 128).
    `sum_mma` (not with `intra`, not with return_lse): P's row sums by a small wgmma against ones, from the FP8 P
    that P V uses, instead of ~64 FADDs per tile and thread. The output divides by sums of the same rounded P it
    accumulated; an LSE would carry that rounding, so it is refused there.
    `pair` (with `direct` and `sum_mma`, two consumers): rounds of two 128-key tiles, one softmax over 256 scores;
    `stages` then counts ring slots of two tiles each (at most 3 at D_PAD 128: shared memory). With block lists a
    round takes two kept blocks.
    `fold_q` (dense, no LSE): each consumer quantizes its own 64 query rows from `q` (the (B, Hq, Sq, D) input, last
    dim contiguous) with sage_quantize's arithmetic, so x may come from quantize(..., with_q=False): the quantization
    launch neither reads Q nor writes its INT8 copy.
    `lean_sync` (with `pair`): one warpgroup barrier per round instead of the three Triton's membar puts before the
    slot waits and the slot release (gluon_notes.md, step 15)."""
    if not x.fp8 or x.block_q not in (GLUON_BLOCK_Q, SPARSE_BLOCK_Q) or x.block_k != KV_BLOCK:
        raise ValueError(f"the Gluon kernel takes FP8 P.V with block_q {GLUON_BLOCK_Q} or {SPARSE_BLOCK_Q} and "
                         f"block_k {KV_BLOCK} quantization; got fp8={x.fp8}, block_q={x.block_q}, block_k={x.block_k}")
    if not x.v_wgmma_order:
        raise ValueError("the Gluon kernel takes V in wgmma key order: quantize with v_wgmma_order=True")
    if block_n not in (KV_BLOCK, KV_BLOCK // 2) or (blocks is not None and block_n != KV_BLOCK):
        raise ValueError(f"attend_gluon: block_n {block_n}: allowed {KV_BLOCK} or {KV_BLOCK // 2} "
                         f"({KV_BLOCK} with block lists)")
    if pair and not (direct and sum_mma and not intra and not pingpong and block_n == KV_BLOCK):
        raise ValueError(f"attend_gluon: pair=True needs direct=True and sum_mma=True, {KV_BLOCK}-key tiles, no "
                         f"intra or pingpong (got direct={direct}, sum_mma={sum_mma}, intra={intra}, "
                         f"pingpong={pingpong}, block_n={block_n})")
    if lean_sync and not pair:
        raise ValueError("attend_gluon: lean_sync=True is written for pair=True only")
    if pair and x.q8.shape[-1] > 64 and stages > 3:
        raise ValueError(f"attend_gluon: pair=True at padded head dim {x.q8.shape[-1]}: stages {stages}; allowed "
                         "1-3 (a ring slot holds two K and two V tiles: four would pass the SM's shared memory)")
    if sum_mma and (intra or return_lse or early or block_n != KV_BLOCK):
        raise ValueError(f"attend_gluon: sum_mma=True: not with intra=True, return_lse=True, early=True or block_n "
                         f"{KV_BLOCK // 2} (got intra={intra}, return_lse={return_lse}, early={early}, "
                         f"block_n={block_n}): an LSE needs exact row sums; the others were never run with it")
    if direct and (early or (blocks is not None and not pair)):
        raise ValueError("attend_gluon: direct=True: not with early=True, nor with block lists but with pair=True")
    if fold_q:
        _check_fold_q(x, q, blocks, return_lse)
    elif not x.q_written:  # (sage_quantize imports triton: imported only here, off the hot path)
        from .sage_quantize import require_q
        require_q(x, "attend_gluon")
    if blocks is not None and (x.block_q != SPARSE_BLOCK_Q or blocks.count_full.dim() != 1):
        raise ValueError(f"attend_gluon: block lists need block_q {SPARSE_BLOCK_Q} (got {x.block_q}) and no key "
                         "padding (count_full of one column)")
    _gluon()
    b, hq, hkv, sq, sk, d = x.shape
    d_pad = x.q8.shape[-1]
    block_m = GLUON_BLOCK_Q  # query rows per consumer warpgroup
    out = token_major_empty(b, hq, sq, d, out_dtype, x.q8.device)  # what the graph's next transpose wants
    lse = torch.empty((b, hq, sq), dtype=torch.float32, device=out.device) if return_lse else out
    n_qblk, n_kblk = x.q8.shape[1] // x.block_q, x.k8.shape[1] // KV_BLOCK
    q_desc, k_desc, v_desc = make_descriptors(x, block_m, block_n)
    ones_desc = _ones_tile(x.q8.device, d_pad, block_n) if sum_mma else v_desc  # (v_desc: never read)
    # three consumers fit the register file only at D_PAD 64: at 128 they spill (~230 bytes each with 128-key
    # tiles, 916 with 64-key ones, the fresh P.V accumulator and the running O taking 128 registers) and with
    # `direct` (one accumulator) ptxas still runs out of registers and serialises the wgmmas (its C7512 note)
    nc = consumers if not is_causal and d_pad <= 64 and blocks is None and not pair else 2
    if blocks is not None:
        intra = False
    lut, count, count_full = (None, None, None) if blocks is None else (blocks.lut, blocks.count, blocks.count_full)
    if nc == 3:
        consumer_regs = min(consumer_regs, 160)  # 3 x 128 x 160 + 128 x 24 registers fill the SM's 64K
    grid = (-(-sq // (nc * block_m)), b * hq)
    launch(_sage_fwd_sm90_ws2, grid,
           (q_desc, k_desc, v_desc, x.q_scale, x.k_scale, x.v_amax, out, lse, lut, count, count_full, out.stride(0),
            out.stride(1), out.stride(2), hq, hq // hkv, sq, sk, x.q8.shape[1], n_qblk, n_kblk,
            0 if lut is None else lut.shape[-1], ones_desc, *_q_fold_args(x, q if fold_q else None)),
           dict(D=d, D_PAD=d_pad, BLOCK_M=block_m, BN=block_n, STAGES=stages, IS_CAUSAL=is_causal,
                STORE_LSE=return_lse, num_warps=4, PINGPONG=pingpong, INTRA=intra, CONSUMER_REGS=consumer_regs,
                PRODUCER_REGS=producer_regs, NC=nc, SPLIT=split, EARLY=early and not intra, SPARSE=blocks is not None,
                Q_SCALE_ROWS=x.block_q, DIRECT=direct, SUM_MMA=sum_mma, PAIR=pair, QFOLD=fold_q,
                LEAN_SYNC=lean_sync))
    return (out, lse) if return_lse else out


def _check_fold_q(x, q: Optional[torch.Tensor], blocks, return_lse: bool) -> None:
    if q is None or blocks is not None or return_lse or x.block_q != GLUON_BLOCK_Q:
        raise ValueError(f"attend_gluon: fold_q=True takes the raw q, no block lists, no LSE and block_q "
                         f"{GLUON_BLOCK_Q} (got q={'None' if q is None else 'given'}, blocks="
                         f"{'given' if blocks is not None else 'None'}, return_lse={return_lse}, "
                         f"block_q={x.block_q})")
    b, hq, _, sq, _, d = x.shape
    if tuple(q.shape) != (b, hq, sq, d) or q.stride(-1) != 1 or q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"attend_gluon: fold_q=True: q must be ({b}, {hq}, {sq}, {d}) fp16/bf16 with a contiguous "
                         f"last dim; got {tuple(q.shape)} {q.dtype}, strides {q.stride()}")


def _q_fold_args(x, q: Optional[torch.Tensor]) -> tuple:
    """The kernel's Q, its batch/head/token strides and the factor Q is quantized with (sm_scale * log2 e);
    without fold_q placeholders it never reads (x.q_scale, zeros)."""
    if q is None:
        return x.q_scale, 0, 0, 0, 1.0
    return q, q.stride(0), q.stride(1), q.stride(2), x.sm_scale * LOG2E


GLUON_CONFIG = SageConfig(pv_precision="fp8", block_q=GLUON_BLOCK_Q, block_k=KV_BLOCK)  # what it takes (smooth: either)


def sage_attention_gluon(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                         is_causal: bool, scale: Optional[float], config: SageConfig, *,
                         return_lse: bool = False, launch: Optional[dict] = None):
    """Sage attention (INT8 QK^T, FP8 P.V) on sm90 with the Gluon kernel; same arguments and numerics as
    sage_triton.sage_attention_triton with GLUON_CONFIG (any `smooth`), except that without an LSE the default
    launch divides by the row sums of the FP8-rounded P it accumulated (rel L1 ~1e-3 from the FADD sums, the same
    error against fp32), so outputs with and without `return_lse` differ by that much; at D128 without a mask it
    runs rounds of two tiles (PAIR_LAUNCH), whose P is scaled by the max over 256 keys and rounds differently (rel L1
    0.005-0.007 from sage_triton on the same inputs, H200; against fp32 the same error).
    `launch`: attend_gluon's keyword arguments (default_launch(...) when None)."""
    from .sage_quantize import recycle
    from .sage_triton import no_mask, quantize, unsmoothed_lse

    no_mask(mask, "sage_attention_gluon")
    if (config.pv_precision, config.block_q, config.block_k) != ("fp8", GLUON_BLOCK_Q, KV_BLOCK):
        raise ValueError(f"sage_attention_gluon: {config} is not supported: the Gluon kernel takes pv_precision="
                         f"'fp8', block_q={GLUON_BLOCK_Q}, block_k={KV_BLOCK}")
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {q.shape[-1]} not in {SUPPORTED_HEAD_DIMS}")
    # a given launch is taken whole (attend_gluon's defaults)
    d_pad = 1 << (q.shape[-1] - 1).bit_length()  # sage_quantize's padded head dim
    cfg = default_launch(d_pad, is_causal, return_lse, k.shape[-2]) if launch is None else launch
    # fold_q: the kernel quantizes Q itself where it can read it (last dim contiguous); elsewhere Q is quantized
    # by the quantization launch as before (attend_gluon then runs the same launch without fold_q)
    fold = bool(cfg.get("fold_q")) and not return_lse and q.stride(-1) == 1
    if "fold_q" in cfg and not fold:
        cfg = {name: value for name, value in cfg.items() if name != "fold_q"}
    x = quantize(q, k, v, scale, config, v_wgmma_order=True, reuse_buffers=True, with_q=not fold)
    if not return_lse:
        out = attend_gluon(x, is_causal, q.dtype, **({"q": q} if fold else {}), **cfg)
        recycle(x)  # every kernel reading x is enqueued
        return out
    # an LSE needs exact row sums: the FADD path then (a launch in pairs: DEFAULT_LAUNCH, the measured one)
    lse_cfg = dict(DEFAULT_LAUNCH) if cfg.get("pair") else {**cfg, "sum_mma": False}
    out, lse = attend_gluon(x, is_causal, q.dtype, return_lse=True, **lse_cfg)
    lse = unsmoothed_lse(lse, q, x)
    recycle(x)
    return out, lse
