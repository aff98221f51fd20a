"""The building blocks of the sm90 Gluon Sage kernel (kernels/sage_gluon.py): Triton 3.6's Gluon imports, the
constants its jit code reads, and the @gluon.jit helpers both of its consumer loops share (tile ranges, scales, the
softmax of one tile, P as a register operand, the wgmma issues, the epilogue).

Gluon is imported in a try block: without Triton, or with a Triton whose Gluon API differs, nothing here is defined
but `gluon = gl = None` and `_GLUON_IMPORT_ERROR`, and the package still imports.
"""
from __future__ import annotations

from typing import Optional

from .constants import FP8_E4M3_MAX, GLUON_BLOCK_Q, I2F_MAGIC, I2F_MAGIC_BITS, KV_BLOCK, LN2, LOG2_FP8_E4M3_MAX

try:  # optional: Triton with Gluon's Hopper API (3.6); the kernels below exist only where it imports
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    _GLUON_IMPORT_ERROR: Optional[BaseException] = None
except (ImportError, AttributeError) as _exc:  # no triton, or a Triton without this Gluon API
    gluon = gl = None
    _GLUON_IMPORT_ERROR = _exc

if gluon is not None:  # a global read inside @gluon.jit code must be a constexpr
    _FP8_MAX = gl.constexpr(FP8_E4M3_MAX)
    _LOG2_FP8_MAX = gl.constexpr(LOG2_FP8_E4M3_MAX)
    _LN2 = gl.constexpr(LN2)
    _I2F_MAGIC_BITS = gl.constexpr(I2F_MAGIC_BITS)
    _I2F_MAGIC = gl.constexpr(I2F_MAGIC)
    _BLOCK_Q = gl.constexpr(GLUON_BLOCK_Q)  # query rows per consumer warpgroup
    _K_BLOCK = gl.constexpr(KV_BLOCK)  # keys per K scale (and per padded K row block of the quantized buffers)


def _gluon():
    """Raise the import error when Gluon is unusable here (the kernels are not defined then)."""
    if _GLUON_IMPORT_ERROR is not None:
        raise ImportError(f"triton.experimental.gluon (Hopper) unavailable: {_GLUON_IMPORT_ERROR}")


if gluon is not None:
    @gluon.jit
    def _tile_range(pid_m, seq_k, BLOCK_M: gl.constexpr, BN: gl.constexpr, IS_CAUSAL: gl.constexpr):
        """(K tiles needing no mask, all K tiles) of one query tile; causal skips tiles in the future."""
        if IS_CAUSAL:
            n_full = gl.minimum((pid_m * BLOCK_M) // BN, seq_k // BN)
            n_all = gl.cdiv(gl.minimum((pid_m + 1) * BLOCK_M, seq_k), BN)
        else:
            n_full = seq_k // BN
            n_all = gl.cdiv(seq_k, BN)
        return n_full, n_all

    @gluon.jit
    def _kv_block(lut_row, j, SPARSE: gl.constexpr):
        """The K/V block of a program's j-th tile: j, or with SPARSE the j-th kept block of its list (a row
        that keeps none reads block 0, all masked)."""
        if SPARSE:
            return gl.maximum(gl.load(lut_row + j), 0)
        else:
            return j

    @gluon.jit
    def _k_scale(ks_ptr, blk, BN: gl.constexpr):
        """K's dequantization scale for K/V tile blk of BN keys (one scale per _K_BLOCK keys)."""
        if BN == _K_BLOCK:
            return gl.load(ks_ptr + blk)
        else:
            return gl.load(ks_ptr + blk // (_K_BLOCK // BN))

    @gluon.constexpr_function
    def _mma_layout(num_warps, n):
        """Registers of a wgmma result with n columns (S: n = BN; O: n = D_PAD) over num_warps warps."""
        return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, n, 32])

    @gluon.jit
    def _program_tile(seq_q, q_heads, group, ROWS: gl.constexpr, IS_CAUSAL: gl.constexpr):
        """(query tile, batch*head, batch, head, K/V batch*head) of this program; causal runs the longest
        (last) query tiles first."""
        n_mtiles = gl.cdiv(seq_q, ROWS)
        pid_m = (n_mtiles - 1 - gl.program_id(0)) if IS_CAUSAL else gl.program_id(0)
        pid_bh = gl.program_id(1)
        b = pid_bh // q_heads
        h = pid_bh % q_heads
        return pid_m, pid_bh, b, h, b * (q_heads // group) + h // group

    @gluon.jit
    def _row_state(row0, QS, KS, pid_bh, kv_bh, n_qblk, n_kblk, s_layout: gl.constexpr, o_layout: gl.constexpr,
                   BLOCK_M: gl.constexpr, BN: gl.constexpr, D_PAD: gl.constexpr, Q_SCALE_ROWS: gl.constexpr,
                   LOAD_QS: gl.constexpr = True):
        """A consumer's start on the BLOCK_M query rows from row0: (row and key offsets, Q scales (one per
        Q_SCALE_ROWS rows; zeros without LOAD_QS), K scale pointer, running max, running sum, output accumulator)."""
        offs_m = row0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, s_layout))
        offs_n = gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout))
        if LOAD_QS:
            qblk = offs_m // Q_SCALE_ROWS
            qs = gl.load(QS + pid_bh * n_qblk + qblk, mask=qblk < n_qblk, other=0.0)
        else:
            qs = gl.zeros([BLOCK_M], gl.float32, gl.SliceLayout(1, s_layout))
        m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
        l_i = gl.zeros([BLOCK_M], gl.float32, gl.SliceLayout(1, s_layout))
        acc = gl.zeros([BLOCK_M, D_PAD], gl.float32, o_layout)
        return offs_m, offs_n, qs, KS + kv_bh * n_kblk, m_i, l_i, acc

    @gluon.constexpr_function
    def _q_load_layout(d_pad):
        """Registers of a consumer's raw Q tile (QFOLD): 8 contiguous elements per thread along D, rows over the
        rest of the warp and the 4 warps."""
        lanes_d = min(32, d_pad // 8)
        return gl.BlockedLayout([1, 8], [32 // lanes_d, lanes_d], [4, 1], [1, 0])

    @gluon.jit
    def _fold_q(Q, stride_qb, stride_qh, stride_qn, q_mult, b, h, row0, seq_q, q_tile, s_layout: gl.constexpr,
                BLOCK_M: gl.constexpr, D: gl.constexpr, D_PAD: gl.constexpr):
        """QFOLD: the consumer's BLOCK_M query rows from row0 quantized here instead of in the quantization launch,
        written to its Q tile in shared memory (q_tile, the Q K^T wgmma's operand: in registers the tile made the
        D128 loop spill); returns the scale per row. sage_quantize's arithmetic (_int8_tile with _prepared's Q
        branch): x = q * q_mult, one scale = max|x| / 127 for the tile (one GLUON_BLOCK_Q block), round half away
        from zero; rows past seq_q and columns past D are 0."""
        lay: gl.constexpr = _q_load_layout(D_PAD)
        rows = row0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, lay))
        cols = gl.arange(0, D_PAD, layout=gl.SliceLayout(0, lay))
        inside = (gl.expand_dims(rows, 1) < seq_q) & (gl.expand_dims(cols, 0) < D)
        ptrs = (Q + b.to(gl.int64) * stride_qb + h.to(gl.int64) * stride_qh
                + gl.expand_dims(rows, 1).to(gl.int64) * stride_qn + gl.expand_dims(cols, 0))
        x = gl.load(ptrs, mask=inside, other=0.0).to(gl.float32) * q_mult
        amax = gl.max(gl.max(gl.abs(x), axis=1), axis=0)
        scale = gl.maximum(gl.div_rn(amax, 127.0), 1e-12)
        xq = gl.div_rn(x, gl.zeros_like(x) + scale)
        xq = xq + gl.where(xq >= 0, 0.5, -0.5)  # round half away from zero, then truncate (_slice_store)
        q_tile.store(xq.to(gl.int8))
        fence_async_shared()  # the generic-proxy writes before the wgmma (async proxy) reads them
        gl.thread_barrier()  # all four warps' rows written before any warp's wgmma reads the tile
        return gl.zeros([BLOCK_M], gl.float32, gl.SliceLayout(1, s_layout)) + scale

    @gluon.jit
    def _consumer_start(pid_m, C: gl.constexpr, NC: gl.constexpr, q_smem, q_bar, QS, KS, pid_bh, kv_bh, n_qblk,
                        n_kblk, BLOCK_M: gl.constexpr, BN: gl.constexpr, D_PAD: gl.constexpr,
                        Q_SCALE_ROWS: gl.constexpr, Q, stride_qb, stride_qh, stride_qn, q_mult, b, h, seq_q,
                        D: gl.constexpr, QFOLD: gl.constexpr):
        """Consumer C's start (either consumer loop): its first query row, _row_state's values and its Q tile in
        shared memory, once loaded (by TMA, or with QFOLD quantized and written here: _fold_q, whose scales
        replace QS's)."""
        s_layout: gl.constexpr = _mma_layout(4, BN)
        o_layout: gl.constexpr = _mma_layout(4, D_PAD)
        row0 = pid_m * (NC * BLOCK_M) + C * BLOCK_M
        offs_m, offs_n, qs, ks_ptr, m_i, l_i, acc = _row_state(row0, QS, KS, pid_bh, kv_bh, n_qblk, n_kblk,
                                                              s_layout, o_layout, BLOCK_M, BN, D_PAD, Q_SCALE_ROWS,
                                                              not QFOLD)
        q = q_smem.index(C)
        if QFOLD:
            qs = _fold_q(Q, stride_qb, stride_qh, stride_qn, q_mult, b, h, row0, seq_q, q, s_layout, BLOCK_M, D,
                         D_PAD)
        mbarrier.wait(q_bar.index(C), 0)  # (QFOLD: the ones tile of SUM_MMA comes with it)
        return row0, offs_m, offs_n, qs, ks_ptr, m_i, l_i, acc, q

    @gluon.jit
    def _softmax_tile(s_i32, c, m_i, l_i, offs_m, offs_n, start_n, seq_k, MASK: gl.constexpr,
                      IS_CAUSAL: gl.constexpr, ROWSUM: gl.constexpr = True):
        """Scores of one tile -> (P in [0, 448] fp32, alpha, new m, new l); sage_triton's arithmetic.
        ROWSUM False: l is only rescaled (SUM_MMA adds P's row sums from a wgmma later)."""
        # int32 -> fp32 without the quarter-rate I2F: |s| < 2^22, so 1.5 * 2^23 + s is exact in fp32
        s = (s_i32 + _I2F_MAGIC_BITS).to(gl.float32, bitcast=True)
        if MASK:
            keep = gl.expand_dims(start_n + offs_n, 0) < seq_k
            if IS_CAUSAL:
                keep = keep & (gl.expand_dims(offs_m, 1) >= gl.expand_dims(start_n + offs_n, 0))
            s = gl.where(keep, s, float("-inf"))
        m_blk = (gl.max(s, axis=1) - _I2F_MAGIC) * c
        m_new = gl.maximum(m_i, m_blk)
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
        bias = _I2F_MAGIC * c + m_safe - _LOG2_FP8_MAX  # P lands in [0, 448]
        p = gl.exp2(s * gl.expand_dims(c, 1) - gl.expand_dims(bias, 1))
        alpha = gl.exp2(m_i - m_safe)
        if ROWSUM:
            l_new = l_i * alpha + gl.sum(p, axis=1)
        else:
            l_new = l_i * alpha
        return p, alpha, m_new, l_new

    @gluon.jit
    def _p_operand(p, p_layout: gl.constexpr, BLOCK_M: gl.constexpr, BN: gl.constexpr):
        """P (fp32, wgmma accumulator layout) -> FP8 wgmma A operand. Within every 32 keys a thread's
        accumulator holds columns 16*g1 + 8*g0 + 2*q + e and the operand wants 16*g1 + 4*q + 2*g0 + e (q: lane % 4):
        the columns are renamed in registers (no shuffles) and V's keys are stored in the same order."""
        p8 = p.to(gl.float8e4nv)
        p8 = gl.reshape(p8, [BLOCK_M, BN // 32, 2, 2, 4, 2])
        p8 = gl.permute(p8, (0, 1, 2, 4, 3, 5))
        p8 = gl.reshape(p8, [BLOCK_M, BN])
        return gl.convert_layout(p8, p_layout)

    @gluon.jit
    def _issue_s(q, k_smem, k_bar, j, s_layout: gl.constexpr, BLOCK_M: gl.constexpr, BN: gl.constexpr,
                 STAGES: gl.constexpr, WAIT: gl.constexpr = True):
        """S_j = Q K_j^T, issued (INT8 wgmma, async); WAIT: first wait for K_j's slot to be loaded."""
        slot = j % STAGES
        if WAIT:
            mbarrier.wait(k_bar.index(slot), (j // STAGES) & 1)
        return warpgroup_mma(q, k_smem.index(slot).permute((1, 0)), gl.zeros([BLOCK_M, BN], gl.int32, s_layout),
                             use_acc=False, is_async=True)

    @gluon.jit
    def _issue_pv(p8, v_smem, v_bar, j, o_layout: gl.constexpr, BLOCK_M: gl.constexpr, BN: gl.constexpr,
                  D_PAD: gl.constexpr, STAGES: gl.constexpr, WAIT: gl.constexpr = True):
        """P_j V_j into a fresh FP32 accumulator (the two-level accumulation), issued (FP8 wgmma, async);
        WAIT: first wait for V_j's slot to be loaded."""
        slot = j % STAGES
        if WAIT:
            mbarrier.wait(v_bar.index(slot), (j // STAGES) & 1)
        return warpgroup_mma(p8, v_smem.index(slot).permute((1, 0)), gl.zeros([BLOCK_M, D_PAD], gl.float32, o_layout),
                             use_acc=False, is_async=True, max_num_imprecise_acc=BN)

    @gluon.jit
    def _issue_rowsum(p8, ones_smem, BLOCK_M: gl.constexpr, BN: gl.constexpr):
        """SUM_MMA: the row sums of the FP8 P by a wgmma against a [BN, 8] block of ones in shared memory (async),
        instead of ~64 FADDs and 4 shuffles per tile and thread; every one of the 8 columns holds the sum."""
        sum_layout: gl.constexpr = _mma_layout(4, 8)
        p8s = gl.convert_layout(p8, gl.DotOperandLayout(operand_index=0, parent=sum_layout, k_width=4))
        return warpgroup_mma(p8s, ones_smem.permute((1, 0)), gl.zeros([BLOCK_M, 8], gl.float32, sum_layout),
                             use_acc=False, is_async=True, max_num_imprecise_acc=BN)

    @gluon.jit
    def _issue_rowsum_onto(p8, ones_smem, rs, BN: gl.constexpr):
        """_issue_rowsum's wgmma adding onto rs (an in-flight row-sum accumulator: PAIR's second tile)."""
        sum_layout: gl.constexpr = _mma_layout(4, 8)
        p8s = gl.convert_layout(p8, gl.DotOperandLayout(operand_index=0, parent=sum_layout, k_width=4))
        return warpgroup_mma(p8s, ones_smem.permute((1, 0)), rs, use_acc=True, is_async=True)

    @gluon.jit
    def _row_sums(rs, s_layout: gl.constexpr):
        """The row sums out of _issue_rowsum's result (8 equal columns), in m/l's layout."""
        return gl.convert_layout(gl.max(rs, axis=1), gl.SliceLayout(1, s_layout))

    @gluon.jit
    def _issue_pv_onto_o(p8, v_smem, v_bar, acc, j, STAGES: gl.constexpr):
        """P_j V_j accumulated onto the running O by the FP8 wgmma itself (DIRECT: FA3's one-level accumulation),
        issued after waiting for V_j's slot. No max_num_imprecise_acc: with use_acc and a bound <= K, Triton adds
        each K chunk into the accumulator in fp32 between the wgmmas, and ptxas then serialises every wgmma of the
        kernel (C7514, sm_90a compile check)."""
        slot = j % STAGES
        mbarrier.wait(v_bar.index(slot), (j // STAGES) & 1)
        return warpgroup_mma(p8, v_smem.index(slot).permute((1, 0)), acc, use_acc=True, is_async=True)

    @gluon.jit
    def _store_output(acc, m_i, l_i, offs_m, row0, VAMAX, O, LSE, b, h, pid_bh, kv_bh, stride_ob, stride_oh, stride_on,
                      seq_q, o_layout: gl.constexpr, D: gl.constexpr, BLOCK_M: gl.constexpr, D_PAD: gl.constexpr,
                      STORE_LSE: gl.constexpr):
        """O = acc / l times V's per-channel scale (V was scaled into [-448, 448]) for the BLOCK_M rows from
        row0, and with STORE_LSE their log-sum-exp (natural log) at offs_m (the same rows, in m_i's layout)."""
        offs_mo = row0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, o_layout))
        offs_d = gl.arange(0, D_PAD, layout=gl.SliceLayout(0, o_layout))
        vs = gl.maximum(gl.load(VAMAX + kv_bh * D + offs_d, mask=offs_d < D, other=0.0), 1e-30) / _FP8_MAX
        l_safe = gl.where(l_i == 0.0, 1.0, l_i)
        l_o = gl.convert_layout(l_safe, gl.SliceLayout(1, o_layout))
        out = acc * (gl.expand_dims(vs, 0) / gl.expand_dims(l_o, 1))
        # int64 rows: token-major outputs step H*D elements per token (S*H*D passes 2^31 at ~420k tokens)
        o_ptrs = (O + b.to(gl.int64) * stride_ob + h * stride_oh + gl.expand_dims(offs_mo, 1).to(gl.int64) * stride_on
                  + gl.expand_dims(offs_d, 0))
        o_mask = (gl.expand_dims(offs_mo, 1) < seq_q) & (gl.expand_dims(offs_d, 0) < D)
        gl.store(o_ptrs, out.to(O.dtype.element_ty), mask=o_mask)
        if STORE_LSE:  # l is in units of 448 (P was scaled into [0, 448])
            m_safe = gl.where(m_i == float("-inf"), 0.0, m_i)
            lse = (m_safe + gl.log2(l_safe) - _LOG2_FP8_MAX) * _LN2
            gl.store(LSE + pid_bh.to(gl.int64) * seq_q + offs_m, lse, mask=offs_m < seq_q)
