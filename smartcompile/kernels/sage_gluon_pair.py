"""Rounds of two 128-key tiles for the sm90 Gluon Sage kernel (kernels/sage_gluon.py, PAIR): one softmax over
256 scores, one O rescale and one set of barriers per round instead of per tile, with the one-level accumulation
(P V of both tiles onto O by the FP8 wgmma) and the row sums by wgmma. Each tile keeps its own K scale, so the
quantization is sage_triton's; with Sparge's block lists a round takes two kept blocks. Measured on the H200
(benchmarks/gluon_notes.md, step 14): D128 kernel +10-13% over 128-key rounds.
"""
from __future__ import annotations

from .sage_gluon_parts import gluon

if gluon is not None:  # the jit code's globals, defined only where Gluon imports
    from .sage_gluon_parts import (  # noqa: F401
        _BLOCK_Q, _I2F_MAGIC, _I2F_MAGIC_BITS, _LOG2_FP8_MAX, _consumer_start, _issue_rowsum, _issue_rowsum_onto,
        _k_scale, _kv_block, _mma_layout, _p_operand, _row_sums, _store_output, gl, mbarrier, tma, warpgroup_mma,
        warpgroup_mma_wait,
    )

if gluon is not None:
    @gluon.jit
    def _softmax_pair(s_a, s_b, c_a, c_b, m_i, l_i, offs_m, offs_n, start_a, start_b, valid_b, seq_k,
                      MASK: gl.constexpr, IS_CAUSAL: gl.constexpr):
        """_softmax_tile over one round of PAIR: two 128-key tiles from keys start_a and start_b, each with its own
        K scale (c_a, c_b per row), one running max; l only rescaled (SUM_MMA adds P's row sums). valid_b False:
        the second tile stands in past the last one (odd tile count) and is masked whole (MASK rounds only)."""
        sa = (s_a + _I2F_MAGIC_BITS).to(gl.float32, bitcast=True)
        sb = (s_b + _I2F_MAGIC_BITS).to(gl.float32, bitcast=True)
        if MASK:
            keys_a = gl.expand_dims(start_a + offs_n, 0)
            keys_b = gl.expand_dims(start_b + offs_n, 0)
            keep_a = keys_a < seq_k
            keep_b = (keys_b < seq_k) & valid_b
            if IS_CAUSAL:
                keep_a = keep_a & (gl.expand_dims(offs_m, 1) >= keys_a)
                keep_b = keep_b & (gl.expand_dims(offs_m, 1) >= keys_b)
            sa = gl.where(keep_a, sa, float("-inf"))
            sb = gl.where(keep_b, sb, float("-inf"))
        m_blk = gl.maximum((gl.max(sa, axis=1) - _I2F_MAGIC) * c_a, (gl.max(sb, axis=1) - _I2F_MAGIC) * c_b)
        m_new = gl.maximum(m_i, m_blk)
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        base = m_safe - _LOG2_FP8_MAX  # P lands in [0, 448]
        p_a = gl.exp2(sa * gl.expand_dims(c_a, 1) - gl.expand_dims(_I2F_MAGIC * c_a + base, 1))
        p_b = gl.exp2(sb * gl.expand_dims(c_b, 1) - gl.expand_dims(_I2F_MAGIC * c_b + base, 1))
        alpha = gl.exp2(m_i - m_safe)
        return p_a, p_b, alpha, m_new, l_i * alpha

    @gluon.jit
    def _pair_blocks(lut_row, r, n_all, SPARSE: gl.constexpr):
        """(K/V block of round r's first tile, of its second, whether the second is real): tiles 2r and 2r + 1 of
        the program's walk (with SPARSE entries of its kept-block list); past the last tile (odd n_all) the
        second repeats the last block, to be masked whole."""
        return (_kv_block(lut_row, 2 * r, SPARSE), _kv_block(lut_row, gl.minimum(2 * r + 1, n_all - 1), SPARSE),
                2 * r + 1 < n_all)

    @gluon.jit
    def _pair_issue_s(q, k_smem, k_bar, r, s_layout: gl.constexpr, BLOCK_M: gl.constexpr, BN: gl.constexpr,
                      STAGES: gl.constexpr, HALF: gl.constexpr):
        """Tile HALF (0 or 1) of round r's Q K^T (INT8 wgmma, async); HALF 0 first waits for the round's slot."""
        slot = r % STAGES
        if HALF == 0:
            mbarrier.wait(k_bar.index(slot), (r // STAGES) & 1)
        return warpgroup_mma(q, k_smem.index(2 * slot + HALF).permute((1, 0)),
                             gl.zeros([BLOCK_M, BN], gl.int32, s_layout), use_acc=False, is_async=True)

    @gluon.jit
    def _pair_round(s_a, s_b, c_a, c_b, m_i, l_i, acc, offs_m, offs_n, blk_a, blk_b, valid_b, seq_k, unmasked, r,
                    ones, v_smem, v_bar, o_layout: gl.constexpr, p_layout: gl.constexpr, BLOCK_M: gl.constexpr,
                    BN: gl.constexpr, STAGES: gl.constexpr, IS_CAUSAL: gl.constexpr):
        """Round r's softmax (the mask only where not `unmasked`), O's rescale, then, once its V tiles are in, P V of
        both tiles onto O and their row sums issued: (P V token, row-sum token, m, l)."""
        if unmasked:
            p_a, p_b, alpha, m_i, l_i = _softmax_pair(s_a, s_b, c_a, c_b, m_i, l_i, offs_m, offs_n, blk_a * BN,
                                                      blk_b * BN, valid_b, seq_k, False, IS_CAUSAL)
        else:
            p_a, p_b, alpha, m_i, l_i = _softmax_pair(s_a, s_b, c_a, c_b, m_i, l_i, offs_m, offs_n, blk_a * BN,
                                                      blk_b * BN, valid_b, seq_k, True, IS_CAUSAL)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
        p8_a = _p_operand(p_a, p_layout, BLOCK_M, BN)
        p8_b = _p_operand(p_b, p_layout, BLOCK_M, BN)
        slot = r % STAGES
        mbarrier.wait(v_bar.index(slot), (r // STAGES) & 1)
        pv_tok = warpgroup_mma(p8_a, v_smem.index(2 * slot).permute((1, 0)), acc, use_acc=True, is_async=True)
        pv_tok = warpgroup_mma(p8_b, v_smem.index(2 * slot + 1).permute((1, 0)), pv_tok, use_acc=True, is_async=True)
        rs_tok = _issue_rowsum(p8_a, ones, BLOCK_M, BN)
        rs_tok = _issue_rowsum_onto(p8_b, ones, rs_tok, BN)
        return pv_tok, rs_tok, m_i, l_i

    @gluon.jit
    def _ws2_consumer_pair(q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, QS, KS, VAMAX, O, LSE,
                           stride_ob, stride_oh, stride_on, pid_m, pid_bh, b, h, kv_bh, seq_q, seq_k, n_qblk, n_kblk,
                           n_full, n_all, lut_row, C: gl.constexpr, D: gl.constexpr, BLOCK_M: gl.constexpr,
                           BN: gl.constexpr, D_PAD: gl.constexpr, STAGES: gl.constexpr, IS_CAUSAL: gl.constexpr,
                           NC: gl.constexpr, SPARSE: gl.constexpr, Q_SCALE_ROWS: gl.constexpr, ones_smem, Q,
                           stride_qb, stride_qh, stride_qn, q_mult, QFOLD: gl.constexpr, LEAN_SYNC: gl.constexpr):
        """PAIR: rounds of two 128-key tiles (FA3 runs 176-224 keys per round at D128 FP8), halving the per-round
        work that does not scale with the keys (row reductions, alpha, O's rescale, barriers, waits). One-level
        accumulation (DIRECT: both P V wgmmas onto O) and the row sums by wgmma (SUM_MMA). Per round: softmax of
        S_r, O *= alpha, P V and the row sums issued, then the next round's first Q K^T; once P V is done (its P
        registers free) the second Q K^T: O, P and the first S tile are in flight together, then O and both S
        tiles, never O, P and both (ptxas for sm_90a: no spills at D64 and at D128 without a mask; 40 bytes at D128
        causal, which is not shipped in pairs)."""
        s_layout: gl.constexpr = _mma_layout(4, BN)
        o_layout: gl.constexpr = _mma_layout(4, D_PAD)
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=4)
        row0, offs_m, offs_n, qs, ks_ptr, m_i, l_i, acc, q = _consumer_start(
            pid_m, C, NC, q_smem, q_bar, QS, KS, pid_bh, kv_bh, n_qblk, n_kblk, BLOCK_M, BN, D_PAD, Q_SCALE_ROWS, Q,
            stride_qb, stride_qh, stride_qn, q_mult, b, h, seq_q, D, QFOLD)
        ones = ones_smem.index(C)
        n_rounds = (n_all + 1) // 2
        n_full_r = n_full // 2  # rounds whose two tiles need no mask

        sa_tok = _pair_issue_s(q, k_smem, k_bar, 0, s_layout, BLOCK_M, BN, STAGES, 0)
        sb_tok = _pair_issue_s(q, k_smem, k_bar, 0, s_layout, BLOCK_M, BN, STAGES, 1)
        blk_a, blk_b, valid_b = _pair_blocks(lut_row, 0, n_all, SPARSE)
        c_a, c_b = qs * _k_scale(ks_ptr, blk_a, BN), qs * _k_scale(ks_ptr, blk_b, BN)
        s_a, s_b = warpgroup_mma_wait(0, deps=(sa_tok, sb_tok))
        if LEAN_SYNC:
            # Triton 3.6's membar puts a partition barrier between two waits on one mbarrier allocation with none
            # between them (this K wait and the loop's), and one before anything after an mbarrier.arrive (taken
            # to read and write all of shared memory): three per round. This barrier and the one before each slot
            # release below (an arrive by mbarrier.expect of 0 bytes, which membar does not treat so) leave one
            gl.thread_barrier()
        for r in range(0, n_rounds - 1):
            pv_tok, rs_tok, m_i, l_i = _pair_round(s_a, s_b, c_a, c_b, m_i, l_i, acc, offs_m, offs_n, blk_a, blk_b,
                                                   valid_b, seq_k, r < n_full_r, r, ones, v_smem, v_bar, o_layout,
                                                   p_layout, BLOCK_M, BN, STAGES, IS_CAUSAL)
            slot = r % STAGES
            sa_tok = _pair_issue_s(q, k_smem, k_bar, r + 1, s_layout, BLOCK_M, BN, STAGES, 0)
            blk_a, blk_b, valid_b = _pair_blocks(lut_row, r + 1, n_all, SPARSE)
            c_a, c_b = qs * _k_scale(ks_ptr, blk_a, BN), qs * _k_scale(ks_ptr, blk_b, BN)
            acc, rs = warpgroup_mma_wait(1, deps=(pv_tok, rs_tok))
            l_i = l_i + _row_sums(rs, s_layout)
            sb_tok = _pair_issue_s(q, k_smem, k_bar, r + 1, s_layout, BLOCK_M, BN, STAGES, 1)
            if LEAN_SYNC:
                # slot r released by thread 0: the barrier orders every warp's wgmma reads of it (waited above) first
                gl.thread_barrier()
                mbarrier.expect(empty_bar.index(slot), 0)  # arrive.expect_tx of 0 bytes: one arrival
            else:
                mbarrier.arrive(empty_bar.index(slot), count=1)
            s_a, s_b = warpgroup_mma_wait(0, deps=(sa_tok, sb_tok))
        last = n_rounds - 1
        pv_tok, rs_tok, m_i, l_i = _pair_round(s_a, s_b, c_a, c_b, m_i, l_i, acc, offs_m, offs_n, blk_a, blk_b,
                                               valid_b, seq_k, last < n_full_r, last, ones, v_smem, v_bar, o_layout,
                                               p_layout, BLOCK_M, BN, STAGES, IS_CAUSAL)
        slot = last % STAGES
        acc, rs = warpgroup_mma_wait(0, deps=(pv_tok, rs_tok))
        l_i = l_i + _row_sums(rs, s_layout)
        mbarrier.arrive(empty_bar.index(slot), count=1)
        _store_output(acc, m_i, l_i, offs_m, row0, VAMAX, O, LSE, b, h, pid_bh, kv_bh, stride_ob, stride_oh, stride_on,
                      seq_q, o_layout, D, BLOCK_M, D_PAD, False)

    @gluon.jit
    def _ws2_producer_pair(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_bar, v_bar, empty_bar, q_row0,
                           k_row0, v_row0, n_all, lut_row, STAGES: gl.constexpr, BN: gl.constexpr, NC: gl.constexpr,
                           SPARSE: gl.constexpr, ones_desc, ones_smem, QFOLD: gl.constexpr):
        """PAIR's producer: one ring slot per round holds two K tiles and two V tiles (a second tile past the last
        reloads the last: its keys are masked). QFOLD: no Q tiles (the consumers quantize theirs)."""
        q_bytes: gl.constexpr = 0 if QFOLD else q_desc.block_type.nbytes
        for c in gl.static_range(NC):
            mbarrier.expect(q_bar.index(c), q_bytes + ones_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(ones_desc, [0, 0], q_bar.index(c), ones_smem.index(c))
            if not QFOLD:
                tma.async_copy_global_to_shared(q_desc, [q_row0 + _BLOCK_Q * c, 0], q_bar.index(c), q_smem.index(c))
        for r in range(0, (n_all + 1) // 2):
            slot = r % STAGES
            blk_a, blk_b, _ = _pair_blocks(lut_row, r, n_all, SPARSE)
            start_a = blk_a * BN
            start_b = blk_b * BN
            mbarrier.wait(empty_bar.index(slot), ((r // STAGES) & 1) ^ 1)
            mbarrier.expect(k_bar.index(slot), 2 * k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(k_desc, [k_row0 + start_a, 0], k_bar.index(slot), k_smem.index(2 * slot))
            tma.async_copy_global_to_shared(k_desc, [k_row0 + start_b, 0], k_bar.index(slot),
                                            k_smem.index(2 * slot + 1))
            mbarrier.expect(v_bar.index(slot), 2 * v_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(v_desc, [v_row0, start_a], v_bar.index(slot), v_smem.index(2 * slot))
            tma.async_copy_global_to_shared(v_desc, [v_row0, start_b], v_bar.index(slot), v_smem.index(2 * slot + 1))
