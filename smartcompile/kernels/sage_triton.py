"""Triton Sage attention: INT8 Q K^T (per-block scales, K smoothed), FP8 or FP16 P V, FP32 accumulation.

Reference: kernels/sage_reference.py (same numerics, same block structure).

Pipeline, for q (B, Hq, Sq, D), k/v (B, Hkv, Sk, D) with any strides (HND or NHD views):
  1-2. kernels/sage_quantize.py: INT8 Q and K (per-block scales, K's mean subtracted, the softmax scale and
     log2(e) folded into Q), V per channel into FP8 (K-major) or FP16 range; 2 launches on small inputs,
     6-7 on large ones.
  3. `_sage_fwd`: online softmax in exp2 over K blocks; S = int32 dot * q_scale * k_scale; P V
     per block with an FP32 result added into the FP32 accumulator (never an FP16 accumulator,
     and never a long FP8-MMA accumulation chain).
Causal masking is top-left aligned (SDPA's convention); blocks entirely in the future are not
visited, blocks crossing the diagonal are masked element-wise.

A dense bool mask (sliding windows, documents, prefix-LM, any bool tensor; kernels/mask_blocks.py): each
(query block, key block) tile is classified empty / full / partial on the device, and each query block walks
its full tiles unmasked, then its partial ones with the mask's tile loaded.

Key padding (a padded batch, e.g. transformers' `causal & attention_mask[b, kv]`) comes as structure:
a KeyLengths, a KeyPadding, or the graph's bool (B|1, 1, 1, Sk) key flags becomes an int32 (B, 2)
[start, end) span per batch row, computed on the device without a host sync so that a call can be
captured in a CUDA graph (sage_reference.key_spans). With HAS_SPAN the kernel visits only the K tiles
that meet the span (loop bounds). KeyLengths' span is exact: only the tiles that cut it mask elements.
A KeyPadding may have holes, which only a host sync could rule out, so it also passes its int32 (B, Sk)
flags: with HAS_KEEP every visited tile masks by them (on an H200 at 4k keys, 10-16% slower than a
KeyLengths with the same keys; uint8 flags, 20-23%). A query row with no kept key (a left-padded query
under causal, an empty batch row) outputs 0 with LSE -inf. Quantization is not padding-aware:
smoothing subtracts K's mean over all keys, padded ones included, which is exact for softmax whatever
keys are kept; padded keys (and values) still enter the INT8 scale of their K block and V's per-channel
scale; the reference does the same, so the two agree.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from typing import Optional

import torch
import triton
import triton.language as tl

from .config import SageConfig
from .constants import FP8_E4M3_MAX, FP16_V_RANGE, I2F_MAGIC, I2F_MAGIC_BITS, LN2, LOG2_FP8_E4M3_MAX
from ..masks import Causal
from .mask_blocks import DenseKeep, MaskLists, dense_keep, dense_mask_lists
from .launch_cache import launch as launch_kernel
from .output_layout import token_major_empty
from .sage_quantize import QuantizedQKV, quantize, recycle, require_q
from .sage_reference import KeySpans, key_spans, padding_form

# the constants as @triton.jit code reads them (a global there must be a tl.constexpr)
_I2F_MAGIC_BITS = tl.constexpr(I2F_MAGIC_BITS)
_I2F_MAGIC = tl.constexpr(I2F_MAGIC)
_LOG2_FP8_MAX = tl.constexpr(LOG2_FP8_E4M3_MAX)
_LN2 = tl.constexpr(LN2)
AUTOTUNE_MIN_WORK = 1 << 28  # B*H*Sq*Sk above which launch configurations are autotuned


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _sage_block(acc, l_i, m_i, q, q_scale, K_blk, KS_blk, V_blk, offs_m, offs_n, start_n, seq_q, seq_k, n_pad_k,
                pv_threshold, MASK_TAIL: tl.constexpr, MASK_CAUSAL: tl.constexpr, PV_FP8: tl.constexpr,
                PV_SKIP: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr, span_lo=0, span_hi=0,
                MASK_SPAN: tl.constexpr = False, KEEP_ROW=None, MASK_KEEP: tl.constexpr = False, MASK_ROW=None,
                mask_sq=0, mask_sk=0, MASK_DENSE: tl.constexpr = False):
    offs_d = tl.arange(0, D_PAD)
    k = tl.load(K_blk + (start_n + offs_n)[None, :] * D_PAD + offs_d[:, None])
    c = q_scale * tl.load(KS_blk + start_n // BLOCK_N)
    # int32 -> fp32 without the quarter-rate I2F: |s| < 2^22, so 1.5 * 2^23 + s is exact in fp32
    s = (tl.dot(q, k) + _I2F_MAGIC_BITS).to(tl.float32, bitcast=True)
    if MASK_TAIL:
        s = tl.where((start_n + offs_n)[None, :] < seq_k, s, float("-inf"))
    if MASK_CAUSAL:
        s = tl.where(offs_m[:, None] >= (start_n + offs_n)[None, :], s, float("-inf"))
    if MASK_SPAN:  # keys outside this batch row's [span_lo, span_hi) (span_hi <= seq_k: covers the tail too)
        s = tl.where(((start_n + offs_n) >= span_lo)[None, :] & ((start_n + offs_n) < span_hi)[None, :], s,
                     float("-inf"))
    if MASK_KEEP:  # this batch row's key flags (0 outside its span and past seq_k: covers both too)
        keep = tl.load(KEEP_ROW + start_n + offs_n, mask=(start_n + offs_n) < seq_k, other=0)
        s = tl.where((keep != 0)[None, :], s, float("-inf"))
    if MASK_DENSE:  # a PARTIAL tile of a dense mask: its elements (0 past seq_q / seq_k; causal: MASK_CAUSAL above)
        cols = start_n + offs_n
        live = (offs_m[:, None] < seq_q) & (cols[None, :] < seq_k)
        tile = tl.load(MASK_ROW + offs_m[:, None].to(tl.int64) * mask_sq + cols[None, :].to(tl.int64) * mask_sk,
                       mask=live, other=0)
        s = tl.where(tile != 0, s, float("-inf"))
    m_blk = (tl.max(s, axis=1) - _I2F_MAGIC) * c
    m_new = tl.maximum(m_i, m_blk)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    # one FMA per score: (s - magic) * c - m, plus log2(448) so FP8's P lands in [0, 448]
    bias = _I2F_MAGIC * c + m_safe - (_LOG2_FP8_MAX if PV_FP8 else 0.0)
    p = tl.math.exp2(s * c - bias[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None]
    do_pv = True
    if PV_SKIP:  # Sparge: skip P V when every row's block max trails its running max by > threshold
        gain = tl.where((offs_m < seq_q) & (m_blk > float("-inf")), m_blk - m_new, float("-inf"))
        do_pv = tl.max(gain, axis=0) >= -pv_threshold
    if do_pv:
        if PV_FP8:
            v = tl.load(V_blk + offs_d[None, :] * n_pad_k + (start_n + offs_n)[:, None])
            acc += tl.dot(p.to(tl.float8e4nv), v)
        else:
            v = tl.load(V_blk + (start_n + offs_n)[:, None] * D_PAD + offs_d[None, :])
            acc += tl.dot(p.to(tl.float16), v)
    return acc, l_i, m_new


@triton.jit
def _walk_kept(acc, l_i, m_i, nxt, lut, lo, hi, n_kblk, q, q_scale, K_blk, KS_blk, V_blk, offs_m, offs_n, seq_q, seq_k,
               n_pad_k, pv_threshold, MASK_TAIL: tl.constexpr, MASK_CAUSAL: tl.constexpr, PV_FP8: tl.constexpr,
               PV_SKIP: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr, span_lo=0, span_hi=0,
               MASK_SPAN: tl.constexpr = False, KEEP_ROW=None, MASK_KEEP: tl.constexpr = False, MASK_ROW=None,
               mask_sq=0, mask_sk=0, MASK_DENSE: tl.constexpr = False):
    """Sparge: the kept K blocks lut[lo:hi] of one row, ascending. `nxt` (= lut[lo]) is loaded one iteration
    ahead, so the tile loads need not wait for the index; returns the state and the next index. The same walk
    serves a dense mask's lists (mask_blocks: FULL tiles, then PARTIAL ones with MASK_DENSE, each ascending)."""
    for i in range(lo, hi):
        start_n = nxt * BLOCK_N
        nxt = tl.load(lut + tl.minimum(i + 1, n_kblk - 1))
        acc, l_i, m_i = _sage_block(acc, l_i, m_i, q, q_scale, K_blk, KS_blk, V_blk, offs_m, offs_n, start_n, seq_q,
                                    seq_k, n_pad_k, pv_threshold, MASK_TAIL, MASK_CAUSAL, PV_FP8, PV_SKIP, BLOCK_N,
                                    D_PAD, span_lo, span_hi, MASK_SPAN, KEEP_ROW, MASK_KEEP, MASK_ROW, mask_sq,
                                    mask_sk, MASK_DENSE)
    return acc, l_i, m_i, nxt


@triton.jit
def _dense_range(pid_m, seq_k, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """(end of the K blocks that need no mask, end of all K blocks) for one query tile. Causal:
    blocks left of the diagonal need no mask, the ones crossing it do, later ones are skipped."""
    if IS_CAUSAL:
        full_end = tl.minimum((pid_m * BLOCK_M) // BLOCK_N * BLOCK_N, (seq_k // BLOCK_N) * BLOCK_N)
        hi = tl.minimum((pid_m + 1) * BLOCK_M, seq_k)
    else:
        full_end = (seq_k // BLOCK_N) * BLOCK_N
        hi = seq_k
    return full_end, hi


@triton.jit
def _sage_fwd(Q, K, V, QS, KS, VAMAX, O, LSE, LUT, COUNT, COUNT_FULL, SPAN, KEEP, stride_ob, stride_oh, stride_on,
              q_heads, group, seq_q, seq_k, n_qblk, n_kblk, seq_bucket, v_range, pv_threshold, D: tl.constexpr,
              D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_CAUSAL: tl.constexpr,
              PV_FP8: tl.constexpr, STORE_LSE: tl.constexpr, SPARSE: tl.constexpr, PV_SKIP: tl.constexpr,
              HAS_SPAN: tl.constexpr = False, HAS_KEEP: tl.constexpr = False, MASK=None, mask_sb=None, mask_sh=None,
              mask_sq=None, mask_sk=None, list_sb=None, list_sh=None, MASK_DENSE: tl.constexpr = False):
    # SPAN: int32 (B, 2) [start, end) of each batch row's kept keys when HAS_SPAN;
    # KEEP: int32 (B, seq_k) key flags when HAS_KEEP (a KeyPadding: holes anywhere in the span).
    # MASK: a dense bool keep-mask (element strides mask_s*, 0 on broadcast dims) when MASK_DENSE, walked through
    # mask_blocks' lists (SPARSE; the list row of (b, h) is b * list_sb + h * list_sh).
    # None otherwise (then a constexpr: the kernel's parameters and code are those without them)
    # causal: the longest rows first, so the short ones fill the tail of the launch (dense masks are mostly
    # causal-shaped too: sliding windows, causal documents, prefix-LM)
    pid_m = (n_qblk - 1 - tl.program_id(0)) if IS_CAUSAL or MASK_DENSE else tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // q_heads
    h = pid_bh % q_heads
    kv_bh = b * (q_heads // group) + h // group
    n_pad_q = n_qblk * BLOCK_M
    n_pad_k = n_kblk * BLOCK_N
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    q = tl.load(Q + (pid_bh.to(tl.int64) * n_pad_q + offs_m)[:, None] * D_PAD + offs_d[None, :])
    q_scale = tl.load(QS + pid_bh * n_qblk + pid_m)
    K_blk = K + kv_bh.to(tl.int64) * n_pad_k * D_PAD
    KS_blk = KS + kv_bh * n_kblk
    V_blk = V + kv_bh.to(tl.int64) * n_pad_k * D_PAD
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    if SPARSE and MASK_DENSE:
        # a dense mask: the row's non-empty tiles (of Sparge's kept ones): the FULL ones unmasked, then the
        # PARTIAL ones with the mask's elements (and the diagonal, causal)
        row = (b * list_sb + h * list_sh) * n_qblk + pid_m
        lut = LUT + row.to(tl.int64) * n_kblk
        mask_row = MASK + b.to(tl.int64) * mask_sb + h.to(tl.int64) * mask_sh
        n_full = tl.load(COUNT_FULL + row)
        nxt = tl.load(lut)  # in bounds even for a row with no tile (-1 there)
        acc, l_i, m_i, nxt = _walk_kept(acc, l_i, m_i, nxt, lut, 0, n_full, n_kblk, q, q_scale, K_blk, KS_blk,
                                        V_blk, offs_m, offs_n, seq_q, seq_k, n_pad_k, pv_threshold, False, False,
                                        PV_FP8, PV_SKIP, BLOCK_N, D_PAD)
        acc, l_i, m_i, nxt = _walk_kept(acc, l_i, m_i, nxt, lut, n_full, tl.load(COUNT + row), n_kblk, q, q_scale,
                                        K_blk, KS_blk, V_blk, offs_m, offs_n, seq_q, seq_k, n_pad_k, pv_threshold,
                                        False, IS_CAUSAL, PV_FP8, PV_SKIP, BLOCK_N, D_PAD, 0, 0, False, None, False,
                                        mask_row, mask_sq, mask_sk, True)
    elif SPARSE:
        # Sparge: only the kept K blocks, ascending; the first COUNT_FULL need no element mask
        row = pid_bh * n_qblk + pid_m
        lut = LUT + row.to(tl.int64) * n_kblk
        # the next index is loaded one iteration ahead, so the tile loads need not wait for it
        if HAS_SPAN:
            # key padding: COUNT_FULL is (rows, 2), [first, end) of the kept blocks that need no element mask
            # (all keys kept, left of the diagonal and the tail); those before and after it mask the span or
            # flags and the diagonal, as the dense path's edge tiles
            span_lo = tl.load(SPAN + 2 * b)
            span_hi = tl.load(SPAN + 2 * b + 1)
            keep_row = KEEP
            if HAS_KEEP:
                keep_row = KEEP + b * seq_k
            full_lo = tl.load(COUNT_FULL + 2 * row)
            full_hi = tl.load(COUNT_FULL + 2 * row + 1)
            nxt = tl.load(lut)  # in bounds even for a row that keeps no block (no kept key)
            acc, l_i, m_i, nxt = _walk_kept(acc, l_i, m_i, nxt, lut, 0, full_lo, n_kblk, q, q_scale, K_blk, KS_blk,
                                            V_blk, offs_m, offs_n, seq_q, seq_k, n_pad_k, pv_threshold, False,
                                            IS_CAUSAL, PV_FP8, PV_SKIP, BLOCK_N, D_PAD, span_lo, span_hi,
                                            not HAS_KEEP, keep_row, HAS_KEEP)
            acc, l_i, m_i, nxt = _walk_kept(acc, l_i, m_i, nxt, lut, full_lo, full_hi, n_kblk, q, q_scale, K_blk,
                                            KS_blk, V_blk, offs_m, offs_n, seq_q, seq_k, n_pad_k, pv_threshold, False,
                                            False, PV_FP8, PV_SKIP, BLOCK_N, D_PAD)
            acc, l_i, m_i, nxt = _walk_kept(acc, l_i, m_i, nxt, lut, full_hi, tl.load(COUNT + row), n_kblk, q,
                                            q_scale, K_blk, KS_blk, V_blk, offs_m, offs_n, seq_q, seq_k, n_pad_k,
                                            pv_threshold, False, IS_CAUSAL, PV_FP8, PV_SKIP, BLOCK_N, D_PAD, span_lo,
                                            span_hi, not HAS_KEEP, keep_row, HAS_KEEP)
        else:
            n_full = tl.load(COUNT_FULL + row)
            nxt = tl.load(lut)  # every row keeps at least one block
            acc, l_i, m_i, nxt = _walk_kept(acc, l_i, m_i, nxt, lut, 0, n_full, n_kblk, q, q_scale, K_blk, KS_blk,
                                            V_blk, offs_m, offs_n, seq_q, seq_k, n_pad_k, pv_threshold, False, False,
                                            PV_FP8, PV_SKIP, BLOCK_N, D_PAD)
            acc, l_i, m_i, nxt = _walk_kept(acc, l_i, m_i, nxt, lut, n_full, tl.load(COUNT + row), n_kblk, q,
                                            q_scale, K_blk, KS_blk, V_blk, offs_m, offs_n, seq_q, seq_k, n_pad_k,
                                            pv_threshold, True, IS_CAUSAL, PV_FP8, PV_SKIP, BLOCK_N, D_PAD)
    elif HAS_SPAN:
        # K tiles outside the span are never visited (loop bounds); the head tile (span start not on a
        # tile boundary) and the tail tiles (span end, causal diagonal) mask elements; the middle is unmasked
        # unless HAS_KEEP (holes may be anywhere; the flags then also stand for the span in the edge tiles)
        full_end, hi = _dense_range(pid_m, seq_k, BLOCK_M, BLOCK_N, IS_CAUSAL)
        span_lo = tl.load(SPAN + 2 * b)
        span_hi = tl.load(SPAN + 2 * b + 1)
        keep_row = KEEP
        if HAS_KEEP:
            keep_row = KEEP + b * seq_k
        first_full = (span_lo + BLOCK_N - 1) // BLOCK_N * BLOCK_N
        hi = tl.minimum(hi, span_hi)
        full_end = tl.minimum(full_end, span_hi // BLOCK_N * BLOCK_N)
        for start_n in range(span_lo // BLOCK_N * BLOCK_N, tl.minimum(first_full, hi), BLOCK_N):
            acc, l_i, m_i = _sage_block(acc, l_i, m_i, q, q_scale, K_blk, KS_blk, V_blk, offs_m, offs_n, start_n,
                                        seq_q, seq_k, n_pad_k, pv_threshold, False, IS_CAUSAL, PV_FP8, PV_SKIP,
                                        BLOCK_N, D_PAD, span_lo, span_hi, not HAS_KEEP, keep_row, HAS_KEEP)
        for start_n in range(first_full, full_end, BLOCK_N):
            acc, l_i, m_i = _sage_block(acc, l_i, m_i, q, q_scale, K_blk, KS_blk, V_blk, offs_m, offs_n, start_n,
                                        seq_q, seq_k, n_pad_k, pv_threshold, False, False, PV_FP8, PV_SKIP,
                                        BLOCK_N, D_PAD, span_lo, span_hi, False, keep_row, HAS_KEEP)
        for start_n in range(tl.maximum(full_end, first_full), hi, BLOCK_N):
            acc, l_i, m_i = _sage_block(acc, l_i, m_i, q, q_scale, K_blk, KS_blk, V_blk, offs_m, offs_n, start_n,
                                        seq_q, seq_k, n_pad_k, pv_threshold, False, IS_CAUSAL, PV_FP8, PV_SKIP,
                                        BLOCK_N, D_PAD, span_lo, span_hi, not HAS_KEEP, keep_row, HAS_KEEP)
    else:
        full_end, hi = _dense_range(pid_m, seq_k, BLOCK_M, BLOCK_N, IS_CAUSAL)
        for start_n in range(0, full_end, BLOCK_N):
            acc, l_i, m_i = _sage_block(acc, l_i, m_i, q, q_scale, K_blk, KS_blk, V_blk, offs_m, offs_n, start_n,
                                        seq_q, seq_k, n_pad_k, pv_threshold, False, False, PV_FP8, PV_SKIP,
                                        BLOCK_N, D_PAD)
        for start_n in range(full_end, hi, BLOCK_N):
            acc, l_i, m_i = _sage_block(acc, l_i, m_i, q, q_scale, K_blk, KS_blk, V_blk, offs_m, offs_n, start_n,
                                        seq_q, seq_k, n_pad_k, pv_threshold, True, IS_CAUSAL, PV_FP8, PV_SKIP,
                                        BLOCK_N, D_PAD)
    vs = tl.maximum(tl.load(VAMAX + kv_bh * D + offs_d, mask=offs_d < D, other=0.0), 1e-30) / v_range
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc * (vs[None, :] / l_safe[:, None])
    # int64 rows: token-major outputs step H*D elements per token (S*H*D passes 2^31 at ~420k tokens, 40x128)
    o_ptrs = (O + b.to(tl.int64) * stride_ob + h * stride_oh + offs_m[:, None].to(tl.int64) * stride_on
              + offs_d[None, :])
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=(offs_m[:, None] < seq_q) & (offs_d[None, :] < D))
    if STORE_LSE:  # l is in units of 448 on the FP8 path
        m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
        lse = (m_safe + tl.math.log2(l_safe) - (_LOG2_FP8_MAX if PV_FP8 else 0.0)) * _LN2
        if HAS_SPAN or MASK_DENSE:  # a row with no kept key (l = 0; its output is 0 above)
            lse = tl.where(l_i == 0.0, float("-inf"), lse)
        tl.store(LSE + pid_bh.to(tl.int64) * seq_q + offs_m, lse, mask=offs_m < seq_q)


def _autotune_configs():
    # Measured on an H100 (benchmarks/sweep_sage.py): one warpgroup per 64-row tile, 3 stages, and
    # two CTAs per SM is the fastest shape; 8 warps only pays with 128-row tiles.
    return [triton.Config({}, num_warps=w, num_stages=s) for w, s in ((4, 3), (4, 2), (4, 4), (8, 3), (8, 2))]


@functools.lru_cache(maxsize=None)
def _tuned_kernel():
    # Tuned per (length bucket, head dim, block sizes, causal, precision) and per GPU; the choice is
    # cached on disk by Triton (cache_results, where this Triton has it) with the compiled binaries.
    extra = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
    return triton.autotune(configs=_autotune_configs(),
                           key=["seq_bucket", "D_PAD", "BLOCK_M", "BLOCK_N", "IS_CAUSAL", "PV_FP8", "SPARSE", "HAS_SPAN",
                                "HAS_KEEP", "MASK_DENSE"],
                           **extra)(_sage_fwd)


@dataclasses.dataclass
class BlockLists:
    """Kept K blocks per (batch*head, query block): ascending indices padded with -1 (B*H, nQ, nK),
    how many are kept, and how many of those need no element mask (the first ones); with key padding,
    count_full is (B*H*nQ, 2): [first, end) of the kept blocks that need none (sparge_triton.block_lists)."""
    lut: torch.Tensor
    count: torch.Tensor
    count_full: torch.Tensor


def attend(x: QuantizedQKV, is_causal: bool, out_dtype: torch.dtype, return_lse: bool = False,
           launch: Optional[dict] = None, blocks: Optional[BlockLists] = None, pv_threshold: Optional[float] = None,
           spans: Optional[KeySpans] = None, dense: Optional[DenseKeep] = None, tiles: Optional[MaskLists] = None):
    """The attention kernel on quantized inputs: (B, Hq, Sq, D) output, optionally the LSE
    (natural log, of the scaled scores without smoothing's shift). `launch` overrides the
    launch configuration (num_warps, num_stages) instead of tuning it. `spans`: each batch row's kept keys
    (sage_reference.key_spans); with `blocks` (Sparge's lists), those made for them (count_full (rows, 2)).
    `dense`: a dense keep-mask, walked through `tiles` (mask_blocks.dense_mask_lists, Sparge's selection
    included there); no `blocks` or `spans` with it."""
    b, hq, hkv, sq, sk, d = x.shape
    require_q(x, "attend")
    if x.v_wgmma_order:
        raise ValueError("attend: V was quantized with v_wgmma_order=True (sage_gluon's key order); this kernel "
                         "reads V in token order: quantize with v_wgmma_order=False")
    span = keep = None
    if (dense is None) != (tiles is None) or (dense is not None and (blocks is not None or spans is not None)):
        raise ValueError("attend: a dense mask comes with its tiles (mask_blocks.dense_mask_lists) and without "
                         "Sparge's blocks or key spans")
    if blocks is not None and blocks.count_full.dim() != (1 if spans is None else 2):
        raise ValueError(f"attend: Sparge's count_full must be {'(rows,)' if spans is None else '(rows, 2)'} "
                         f"{'without' if spans is None else 'with'} key spans (sparge_triton.block_lists' full_run); "
                         f"got {tuple(blocks.count_full.shape)}")
    if spans is not None:
        span, keep = spans.spans, spans.keep
        dev = x.q8.device
        if span.shape != (b, 2) or span.dtype != torch.int32 or span.device != dev:
            raise ValueError(f"attend: spans must be int32 ({b}, 2) on {dev}; "
                             f"got {tuple(span.shape)} {span.dtype} on {span.device}")
        if keep is not None and (keep.shape != (b, sk) or keep.dtype != torch.int32 or keep.device != dev):
            raise ValueError(f"attend: keep must be int32 ({b}, {sk}) on {dev}; "
                             f"got {tuple(keep.shape)} {keep.dtype} on {keep.device}")
        span = span.contiguous()
        keep = keep.contiguous() if keep is not None else None
    d_pad = x.q8.shape[-1]
    out = token_major_empty(b, hq, sq, d, out_dtype, x.q8.device)  # what the graph's next transpose wants
    lse = torch.empty((b, hq, sq), dtype=torch.float32, device=out.device) if return_lse else out
    n_qblk, n_kblk = x.q8.shape[1] // x.block_q, x.k8.shape[1] // x.block_k
    grid = (n_qblk, b * hq)
    sparse = blocks is not None or tiles is not None
    if tiles is not None:
        lut, count, count_full = tiles.lut, tiles.count, tiles.count_full
    else:
        lut, count, count_full = (blocks.lut, blocks.count, blocks.count_full) if sparse else (x.k_scale,) * 3
    args = (x.q8, x.k8, x.v, x.q_scale, x.k_scale, x.v_amax, out, lse, lut, count, count_full, span, keep,
            out.stride(0), out.stride(1), out.stride(2), hq, hq // hkv, sq, sk, n_qblk, n_kblk,
            triton.next_power_of_2(max(sk, 1)), FP8_E4M3_MAX if x.fp8 else FP16_V_RANGE,
            0.0 if pv_threshold is None else float(pv_threshold))
    meta = {} if dense is None else dict(zip(("MASK", "mask_sb", "mask_sh", "mask_sq", "mask_sk", "list_sb", "list_sh"),
                                              (dense.keep, *dense.strides(), tiles.row_b, tiles.row_h)))
    meta.update(D=d, D_PAD=d_pad, BLOCK_M=x.block_q, BLOCK_N=x.block_k, IS_CAUSAL=is_causal, PV_FP8=x.fp8,
                STORE_LSE=return_lse, SPARSE=sparse, PV_SKIP=pv_threshold is not None, HAS_SPAN=span is not None,
                HAS_KEEP=keep is not None, MASK_DENSE=dense is not None)
    if launch is not None:  # explicit configuration (benchmark sweeps)
        launch_kernel(_sage_fwd, grid, args, {**meta, **launch})
    elif _interpreting():
        _sage_fwd[grid](*args, **meta)
    elif b * hq * sq * sk < AUTOTUNE_MIN_WORK:  # small problems: a fixed configuration, no tuning runs
        launch_kernel(_sage_fwd, grid, args, {**meta, "num_warps": 4, "num_stages": 3})
    else:
        launch_kernel(_tuned_kernel(), grid, args, meta)
    return (out, lse) if return_lse else out


def no_mask(mask, kernel: str) -> None:
    """The kernel without key spans (Gluon) takes is_causal but no mask."""
    if mask is not None:
        what = (f"a {tuple(mask.shape)} {mask.dtype} mask" if isinstance(mask, torch.Tensor)
                else f"a {type(mask).__name__} mask")
        raise ValueError(f"{kernel}: mask must be None (the kernel supports only is_causal); got {what}: use the reference")


def kernel_mask(mask, is_causal: bool, q: torch.Tensor, k: torch.Tensor, who: str):
    """(KeySpans or None, DenseKeep or None, is_causal): key padding as spans (sage_reference.key_spans), any
    other bool mask or mask type as a dense keep-mask (mask_blocks); an additive mask is a ValueError."""
    b, hq, sq, sk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    if isinstance(mask, Causal) and (mask.alignment == "top_left" or sq == sk):  # SDPA's is_causal: no mask to read
        return None, None, True
    if padding_form(mask, is_causal, b, sk) is not None:
        spans, is_causal = key_spans(mask, is_causal, b, sk, q.device, who)
        return spans, None, is_causal
    return None, dense_keep(mask, b, hq, sq, sk, q.device, who), is_causal


def sage_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, is_causal: bool,
                          scale: Optional[float], config: SageConfig, *, return_lse: bool = False):
    """Same arguments and numerics as sage_reference.sage_attention_reference. `mask`: None; key padding
    (KeyLengths, KeyPadding with any flags, optionally And'ed with a top-left Causal, or bool (B|1, 1, 1, Sk)
    key flags: tiles outside each row's keys are never visited); or any bool keep-mask broadcastable to
    (B, Hq, Sq, Sk) or mask type (a sliding window, documents...: classified per tile, kernels/mask_blocks.py).
    An additive mask is a ValueError. Rows with no kept key output 0."""
    spans, dense, is_causal = kernel_mask(mask, is_causal, q, k, "sage_attention_triton")
    x = quantize(q, k, v, scale, config, reuse_buffers=True)
    tiles = None if dense is None else dense_mask_lists(dense, q.shape[2], k.shape[2], x.block_q, x.block_k, is_causal)
    if not return_lse:
        out = attend(x, is_causal, q.dtype, spans=spans, dense=dense, tiles=tiles)
        recycle(x)  # every kernel reading x is enqueued
        return out
    out, lse = attend(x, is_causal, q.dtype, return_lse=True, spans=spans, dense=dense, tiles=tiles)
    lse = unsmoothed_lse(lse, q, x)
    recycle(x)
    return out, lse


def unsmoothed_lse(lse: torch.Tensor, q: torch.Tensor, x: QuantizedQKV) -> torch.Tensor:
    """Smoothing shifted each score row by q . mean(k) * scale; the LSE of the real scores adds it back."""
    if x.k_mean is None:
        return lse
    km = x.k_mean.repeat_interleave(q.shape[1] // x.k_mean.shape[1], dim=1)
    return lse + torch.einsum("bhsd,bhd->bhs", q.float(), km) * x.sm_scale
