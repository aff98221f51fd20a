"""Sage's Q/K/V quantization (the inputs of sage_triton's and sage_gluon's attention kernels), two ways:

quantize_staged, 6-7 launches: K's mean (torch), `_quantize_int8` for Q then K (one program per block of
tokens reads the strided input, subtracts K's mean, folds the softmax scale and log2(e) into Q, writes INT8
values padded to (rows multiple of the block, D_PAD columns) and one FP32 scale per block), V's amax (torch),
`_quantize_v` (V scaled per channel into FP8, written transposed: K-major, what the Hopper FP8 MMA wants for
P V; or into FP16 range, row-major).

quantize_fused, 2 launches (issue 13: at ~4k tokens the attention is host-bound):

  1. `_kv_stats`, grid (chunks, B*Hkv): each program sums K's columns (fp32) and takes V's column |max| over
     one chunk of tokens, into a scratch of partials (2, B*Hkv, _MAX_CHUNKS, D_PAD). No atomics: the chunk
     count and the order of each sum depend only on the shape, so the mean is deterministic. Up to 16 chunks
     give B1 H8 at 4k tokens 128 programs.
  2. `_quantize_all`, a flat grid of K tiles, then V tiles, then Q tiles, each walked in slices of a few
     tokens (`_int8_tile`: two passes, the second from L2). A K (V) program reduces its head's
     16 partials itself (16 x D_PAD floats, cheaper than a third launch); the tile 0 program of each head
     writes the k_mean (v_amax) that QuantizedQKV carries. Every K program of a head runs the same reduction
     in the same order, so the mean each one subtracts is the one written.

Numerics are quantize_staged's: Q's INT8 values and scales and V's amax and values are bit-identical
(same per-tile arithmetic; max is order-free). K's mean differs from torch's `k.mean` only by fp32
summation order, so an INT8 value of K can move by 1 at a rounding tie and its scale by an ulp. Sparge's
pooled statistics (pool=True) are sums over the tile in another order (slice by slice): they may differ from
quantize_staged's in the last bits.

`v_wgmma_order=True` (FP8, block_k a multiple of 16; for sage_gluon) stores V's keys permuted within every 16
(`wgmma_key_order`):
the order in which an FP8 wgmma's register operand holds P when P's registers are the Q K^T accumulator's,
so the Gluon kernel feeds P to the P V wgmma without moving it between lanes.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from .config import SageConfig
from .constants import FP8_E4M3_MAX, FP16_V_RANGE, INT8_MAX, LOG2E, SUPPORTED_HEAD_DIMS
from . import scratch
from .launch_cache import launch

# the constant as @triton.jit code reads it (a global there must be a tl.constexpr)
_INT8_MAX = tl.constexpr(INT8_MAX)


@triton.jit
def _load_tile(X, stride_b, stride_h, stride_n, stride_d, n_heads, seq_len, D: tl.constexpr, D_PAD: tl.constexpr,
               BLOCK: tl.constexpr):
    """This program's (BLOCK, D_PAD) tile of a strided (B, H, S, D) tensor in fp32, zero-padded."""
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads).to(tl.int64)  # b * stride_b passes 2^31 on large batches
    h = (pid_bh % n_heads).to(tl.int64)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, D_PAD)
    inside = (rows[:, None] < seq_len) & (cols[None, :] < D)
    x = tl.load(X + b * stride_b + h * stride_h + rows[:, None] * stride_n + cols[None, :] * stride_d,
                mask=inside, other=0.0).to(tl.float32)
    return x, rows, cols, inside


@triton.jit
def _pool_stats(x, rows, seq_len):
    """Mean token (D_PAD,) and self-similarity (mean pairwise cosine of its tokens) of a zero-padded
    tile; Sparge's block statistics (sparge_reference.pool_and_similarity)."""
    count = tl.sum(((rows < seq_len) & (rows >= 0)).to(tl.float32), axis=0)
    norm = tl.sqrt(tl.sum(x * x, axis=1))
    unit = x / tl.maximum(norm, 1e-6)[:, None]
    u = tl.sum(unit, axis=0)
    return tl.sum(x, axis=0) / count, tl.sum(u * u, axis=0) / (count * count)


@triton.jit
def _int8_block(x):
    """(INT8 values, scale) of one block: symmetric, amax / 127, rounded half away from zero. IEEE divisions
    (div_rn), as the reference's torch divisions: the default fp32 division is approximate on the GPU and moved
    values at rounding ties by 1 (a query row that sees a single key then had its LSE off by ~0.02)."""
    scale = tl.maximum(tl.math.div_rn(tl.max(tl.max(tl.abs(x), axis=1), axis=0), _INT8_MAX * 1.0), 1e-12)
    xq = tl.math.div_rn(x, scale)
    xq = xq + tl.where(xq >= 0, 0.5, -0.5)  # round half away from zero, then truncate
    return xq.to(tl.int8), scale


@triton.jit
def _quantize_int8(X, OUT, SCALE, MEAN, POOLED, SIM, stride_b, stride_h, stride_n, stride_d, n_heads, seq_len,
                   n_blocks, mult, D: tl.constexpr, D_PAD: tl.constexpr, BLOCK: tl.constexpr, SUB_MEAN: tl.constexpr,
                   POOL: tl.constexpr):
    pid_bh = tl.program_id(1)
    x, rows, cols, inside = _load_tile(X, stride_b, stride_h, stride_n, stride_d, n_heads, seq_len, D, D_PAD, BLOCK)
    if POOL:  # Sparge's block statistics of the raw tile, for free while it is in registers
        pooled, sim = _pool_stats(x, rows, seq_len)
        blk = pid_bh * n_blocks + tl.program_id(0)
        tl.store(POOLED + blk.to(tl.int64) * D + cols, pooled, mask=cols < D)
        tl.store(SIM + blk, sim)
    if SUB_MEAN:
        mean = tl.load(MEAN + pid_bh * D + cols, mask=cols < D, other=0.0)
        x = tl.where(inside, x - mean[None, :], 0.0)
    xq, scale = _int8_block(x * mult)
    out_rows = (pid_bh * n_blocks * BLOCK + rows).to(tl.int64)
    tl.store(OUT + out_rows[:, None] * D_PAD + cols[None, :], xq)
    tl.store(SCALE + pid_bh * n_blocks + tl.program_id(0), scale)


def wgmma_key_order(n: int, device=None) -> torch.Tensor:
    """Where V's key t goes with v_wgmma_order (n a multiple of 16): within each 32 keys, the key in accumulator
    column 16*g1 + 8*g0 + 2*q + e (a wgmma accumulator's thread q = lane % 4 holds columns 2q, 2q+1 of every 8)
    moves to 16*g1 + 4*q + 2*g0 + e, the column an FP8 wgmma's register operand holds there (4 bytes per
    register at 4q..4q+3, and 16 further); g1 stays, so keys move within each 16 only.
    `v_ordered[..., wgmma_key_order(n)] = v_natural`."""
    t = torch.arange(n, device=device)
    return _key_position(t)


def _key_position(t):
    # one formula for torch and Triton: bit ops on integer tensors read the same in both
    return (t & ~15) | (((t >> 1) & 3) << 2) | (((t >> 3) & 1) << 1) | (t & 1)


def _key_at(p):
    """The inverse of _key_position: the natural key stored at position p."""
    return (p & ~15) | (((p >> 2) & 3) << 1) | (((p >> 1) & 1) << 3) | (p & 1)


_key_at_jit = triton.jit(_key_at)


@triton.jit
def _v_source_rows(rows, WGMMA_ORDER: tl.constexpr):
    """The token each output row of V takes (rows are whole groups of 16). With WGMMA_ORDER the tile is
    gathered in key order and stored contiguously: row loads stay whole, where scattering the FP8 stores
    byte by byte cost 18 us at B1 H24 D128 4k (H200, session 8: 98 vs 80 us per quantize_fused)."""
    if WGMMA_ORDER:
        return _key_at_jit(rows)
    return rows


@triton.jit
def _quantize_v(V, OUT, AMAX, stride_b, stride_h, stride_n, stride_d, n_heads, seq_len, n_pad, target,
                D: tl.constexpr, D_PAD: tl.constexpr, BLOCK: tl.constexpr, FP8: tl.constexpr,
                WGMMA_ORDER: tl.constexpr):
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads).to(tl.int64)
    h = (pid_bh % n_heads).to(tl.int64)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, D_PAD)
    src = _v_source_rows(rows, WGMMA_ORDER)
    inside = (src[:, None] < seq_len) & (cols[None, :] < D)
    v = tl.load(V + b * stride_b + h * stride_h + src[:, None] * stride_n + cols[None, :] * stride_d,
                mask=inside, other=0.0).to(tl.float32)
    amax = tl.load(AMAX + pid_bh * D + cols, mask=cols < D, other=target)
    v = v * (target / tl.maximum(amax, 1e-30))[None, :]
    base = pid_bh.to(tl.int64) * n_pad * D_PAD
    if FP8:  # transposed (D_PAD, n_pad): the K dim of the P V product is contiguous
        tl.store(OUT + base + cols[None, :] * n_pad + rows[:, None], v.to(tl.float8e4nv))
    else:
        tl.store(OUT + base + rows[:, None] * D_PAD + cols[None, :], v.to(tl.float16))


def quantize_qk(x: torch.Tensor, block: int, mult: float, mean: Optional[torch.Tensor], d_pad: int,
                pool: bool = False):
    """INT8 (B*H, n_blocks*block, d_pad) and scales (B*H, n_blocks) of a (B, H, S, D) tensor; with
    `pool`, also each block's mean token (B, H, n_blocks, D) and self-similarity (B, H, n_blocks)."""
    b, h, s, d = x.shape
    n_blocks = triton.cdiv(s, block)
    out = torch.empty((b * h, n_blocks * block, d_pad), dtype=torch.int8, device=x.device)
    scale = torch.empty((b * h, n_blocks), dtype=torch.float32, device=x.device)
    pooled = torch.empty((b, h, n_blocks, d), dtype=torch.float32, device=x.device) if pool else scale
    sim = torch.empty((b, h, n_blocks), dtype=torch.float32, device=x.device) if pool else scale
    launch(_quantize_int8, (n_blocks, b * h),
           (x, out, scale, mean if mean is not None else scale, pooled, sim, *x.stride(), h, s, n_blocks, mult),
           dict(D=d, D_PAD=d_pad, BLOCK=block, SUB_MEAN=mean is not None, POOL=pool))
    return (out, scale, pooled, sim) if pool else (out, scale)


def quantize_v(v: torch.Tensor, block: int, fp8: bool, d_pad: int, wgmma_order: bool = False):
    """V scaled per channel (by amax over tokens) into FP8, written transposed (B*H, d_pad, n_pad) (its keys
    in `wgmma_key_order` with wgmma_order), or into FP16 range (B*H, n_pad, d_pad); returns it with the
    per-channel amax (B*H, D)."""
    b, h, s, d = v.shape
    n_pad = triton.cdiv(s, block) * block
    lo, hi = torch.aminmax(v, dim=-2)  # one read of V, no |V| copy
    amax = torch.maximum(hi.float(), lo.float().neg()).reshape(b * h, d)
    shape = (b * h, d_pad, n_pad) if fp8 else (b * h, n_pad, d_pad)
    out = torch.empty(shape, dtype=torch.float8_e4m3fn if fp8 else torch.float16, device=v.device)
    target = FP8_E4M3_MAX if fp8 else FP16_V_RANGE
    launch(_quantize_v, (n_pad // block, b * h), (v, out, amax, *v.stride(), h, s, n_pad, target),
           dict(D=d, D_PAD=d_pad, BLOCK=block, FP8=fp8, WGMMA_ORDER=wgmma_order))
    return out, amax


@dataclasses.dataclass
class QuantizedQKV:
    """Everything the attention kernel reads; K/V parts can be reused across queries."""
    q8: torch.Tensor
    q_scale: torch.Tensor
    k8: torch.Tensor
    k_scale: torch.Tensor
    v: torch.Tensor
    v_amax: torch.Tensor
    k_mean: Optional[torch.Tensor]
    shape: tuple  # (B, Hq, Hkv, Sq, Sk, D)
    sm_scale: float
    block_q: int
    block_k: int
    fp8: bool
    pooled: Optional[tuple] = None  # (pooled q, sim q, pooled k, sim k) when quantized with pool=True
    v_wgmma_order: bool = False  # V's keys in wgmma_key_order (sage_gluon's kernel), not in token order
    scratch: Optional[tuple] = None  # (key, buffers) to give back to kernels/scratch.py: see `recycle`
    # False: quantized with with_q=False, q8 and q_scale allocated but never written (for a kernel that quantizes Q
    # itself: sage_gluon's fold_q); every other reader must refuse it (require_q)
    q_written: bool = True


def require_q(x: QuantizedQKV, where: str) -> None:
    """Raise when x's Q was left unquantized (with_q=False): q8 and q_scale hold no values then."""
    if not x.q_written:
        raise ValueError(f"{where}: Q was not quantized (quantize(..., with_q=False)); quantize with with_q=True")


def recycle(x: QuantizedQKV) -> None:
    """Give x's buffers back for the next call of its shape (quantized with reuse_buffers=True): call it only once
    every kernel that reads x is enqueued, and never read x afterwards."""
    if x.scratch is not None:
        scratch.give(x.q8.device, *x.scratch)


def quantize_staged(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
                    config: SageConfig = SageConfig(), *, pool: bool = False,
                    v_wgmma_order: bool = False, with_q: bool = True) -> QuantizedQKV:
    """Q, K, V quantized in 6-7 launches (K's mean by torch, Q and K by _quantize_int8, V's amax by torch, V by
    _quantize_v): at long sequences these streaming launches are faster than quantize_fused's. with_q=False:
    Q's launch is skipped (q8 and q_scale allocated, not written: `QuantizedQKV.q_written`)."""
    pv_precision, block_q, block_k, smooth = config.pv_precision, config.block_q, config.block_k, config.smooth
    b, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    if d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {d} not in {SUPPORTED_HEAD_DIMS}")
    _check_order(v_wgmma_order, pv_precision == "fp8", block_k)
    d_pad = triton.next_power_of_2(d)
    sm_scale = scale if scale is not None else d ** -0.5
    k_mean = k.mean(dim=-2, dtype=torch.float32) if smooth else None  # (B, Hkv, D), no fp32 copy of K
    _check_with_q(with_q, pool)
    if with_q:
        q8, qs, *q_pool = quantize_qk(q, block_q, sm_scale * LOG2E, None, d_pad, pool)
    else:
        n_qblk = triton.cdiv(sq, block_q)
        q8 = torch.empty((b * hq, n_qblk * block_q, d_pad), dtype=torch.int8, device=q.device)
        qs, q_pool = torch.empty((b * hq, n_qblk), dtype=torch.float32, device=q.device), []
    k8, ks, *k_pool = quantize_qk(k, block_k, 1.0, k_mean, d_pad, pool)
    fp8 = pv_precision == "fp8"
    vq, v_amax = quantize_v(v, block_k, fp8, d_pad, v_wgmma_order)
    return QuantizedQKV(q8, qs, k8, ks, vq, v_amax, k_mean, (b, hq, hkv, sq, sk, d), sm_scale, block_q, block_k, fp8,
                        tuple(q_pool + k_pool) if pool else None, v_wgmma_order, q_written=with_q)


def _check_with_q(with_q: bool, pool: bool):
    if not with_q and pool:
        raise ValueError("quantize: with_q=False with pool=True: Sparge's pooling reads Q in the same pass")


def _check_order(v_wgmma_order: bool, fp8: bool, block_k: int):
    if v_wgmma_order and not fp8:
        raise ValueError("v_wgmma_order=True needs pv_precision='fp8' (the order is the FP8 wgmma operand's); "
                         "got pv_precision='fp16'")
    if v_wgmma_order and block_k % 16:  # keys move within each 16: V's padded rows must hold whole groups
        raise ValueError(f"v_wgmma_order=True needs block_k a multiple of 16; got block_k={block_k}")



_MAX_CHUNKS = 16  # token chunks per (batch, kv head) in the stats launch; also the scratch's padded count
_STAT_BLOCK = 32  # tokens per step of a stats program (two fp32 (32, D_PAD) accumulators stay small)
# The quantize launch's warps, slice size (elements of one (tokens, D_PAD) slice of a tile) and prefetch.
# Measured on the H200 (bench_quant_warps.py, session 8, results/h200/session8/quant_configs.log; GPU us, B1 H24,
# Triton kernel's blocks, without / with Sparge's pooling): the whole tile in registers (8 warps, 246 registers
# at D128) took D128 4k 98 / 183, D128 16k 345 / 685. Sliced: 4 warps, 1024, prefetch 80 / 101 and 284 / 353;
# 8 warps 87 / 137 and 307 / 502; 2048-element slices 84 / 126; no prefetch 91 / 139. D64 4k: 47 / 79 -> 42 / 54.
_QUANT_WARPS = 4
_QUANT_SLICE = 1024
_V_MIN_ROWS = 32
_QUANT_PREFETCH = True
# The stats launch: its warps, and whether it prefetches its next rows. Measured on the H200 (session 9,
# results/h200/session9/quant_stats.log; GPU us of the whole quantization, B1 H24, no pool / pool): 4 warps with
# the prefetch took D128 4k 65 / 86, D128 16k 227 / 296, D64 4k 33 / 45, against 71 / 91, 249 / 318, 41 / 53
# without it; 8 warps were slower in every shape (73 / 94, 250 / 317, 36 / 48; with prefetch 68 / 89,
# 230 / 298, 34 / 46). V stored in 16-row groups (`_V_MIN_ROWS`) lost at 16k (307 against 249).
_STATS_WARPS = 4
_STATS_PREFETCH = True


@triton.jit
def _kv_rows(k_base, v_base, sk_n, sk_d, sv_n, sv_d, r0, end, D: tl.constexpr, D_PAD: tl.constexpr,
             BLOCK: tl.constexpr, SMOOTH: tl.constexpr):
    """K's and V's fp32 (BLOCK, D_PAD) rows from r0 (zeros past `end`; K only when smoothing)."""
    rows = r0 + tl.arange(0, BLOCK)
    cols = tl.arange(0, D_PAD)
    inside = (rows[:, None] < end) & (cols[None, :] < D)
    k = tl.zeros([BLOCK, D_PAD], dtype=tl.float32)
    if SMOOTH:
        k = tl.load(k_base + rows[:, None] * sk_n + cols[None, :] * sk_d, mask=inside, other=0.0).to(tl.float32)
    v = tl.load(v_base + rows[:, None] * sv_n + cols[None, :] * sv_d, mask=inside, other=0.0).to(tl.float32)
    return k, v


@triton.jit
def _kv_stats(K, V, PART, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d, n_heads, seq_len, chunk_len, v_part,
              D: tl.constexpr, D_PAD: tl.constexpr, BLOCK: tl.constexpr, CHUNKS: tl.constexpr,
              SMOOTH: tl.constexpr, PREFETCH: tl.constexpr):
    """PREFETCH loads the next BLOCK rows before adding this step's: two steps in flight, the same sums in the
    same order (bit-identical partials)."""
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // n_heads).to(tl.int64)
    h = (bh % n_heads).to(tl.int64)
    cols = tl.arange(0, D_PAD)
    k_base = K + b * sk_b + h * sk_h
    v_base = V + b * sv_b + h * sv_h
    start = chunk * chunk_len
    end = tl.minimum(start + chunk_len, seq_len)
    # element-wise accumulators, reduced across rows once at the end (not a cross-thread reduction per step)
    k_acc = tl.zeros([BLOCK, D_PAD], dtype=tl.float32)
    v_acc = tl.zeros([BLOCK, D_PAD], dtype=tl.float32)
    k_next, v_next = _kv_rows(k_base, v_base, sk_n, sk_d, sv_n, sv_d, start, end, D, D_PAD, BLOCK, SMOOTH)
    for r0 in range(start, end, BLOCK):
        if PREFETCH:
            k, v = k_next, v_next
            k_next, v_next = _kv_rows(k_base, v_base, sk_n, sk_d, sv_n, sv_d, r0 + BLOCK, end, D, D_PAD, BLOCK,
                                      SMOOTH)
        else:
            k, v = _kv_rows(k_base, v_base, sk_n, sk_d, sv_n, sv_d, r0, end, D, D_PAD, BLOCK, SMOOTH)
        if SMOOTH:
            k_acc += k
        v_acc = tl.maximum(v_acc, tl.abs(v))
    out = PART + (bh * CHUNKS + chunk) * D_PAD + cols
    if SMOOTH:
        tl.store(out, tl.sum(k_acc, axis=0))
    tl.store(out + v_part, tl.max(v_acc, axis=0))


@triton.jit
def _head_base(X, bh, n_heads, s_b, s_h):
    return X + (bh // n_heads).to(tl.int64) * s_b + (bh % n_heads).to(tl.int64) * s_h


@triton.jit
def _slice(base, s_n, s_d, row0, seq_len, D: tl.constexpr, D_PAD: tl.constexpr, SUB: tl.constexpr):
    """(SUB, D_PAD) fp32 slice of one head from token row0, zero-padded; with its rows and in-bounds mask."""
    rows = row0 + tl.arange(0, SUB)
    cols = tl.arange(0, D_PAD)
    inside = (rows[:, None] < seq_len) & (cols[None, :] < D)
    x = tl.load(base + rows[:, None] * s_n + cols[None, :] * s_d, mask=inside, other=0.0).to(tl.float32)
    return x, rows, inside


@triton.jit
def _prepared(raw, inside, mean, mult, SUB_MEAN: tl.constexpr):
    """What gets quantized: K minus its mean (smoothing), or Q times the softmax scale; the same expression
    as quantize_staged's, so the values are bit-identical."""
    if SUB_MEAN:
        return tl.where(inside, raw - mean[None, :], 0.0)
    return raw * mult


@triton.jit
def _slice_stats(raw, inside, mean, mult, amax, xsum, usum, SUB_MEAN: tl.constexpr, POOL: tl.constexpr):
    if POOL:  # sparge_reference.pool_and_similarity: mean token and mean pairwise cosine of the tile
        xsum += raw
        usum += raw / tl.maximum(tl.sqrt(tl.sum(raw * raw, axis=1)), 1e-6)[:, None]
    return tl.maximum(amax, tl.abs(_prepared(raw, inside, mean, mult, SUB_MEAN))), xsum, usum


@triton.jit
def _slice_store(raw, inside, mean, mult, scale, OUT, out_row0, D_PAD: tl.constexpr, SUB: tl.constexpr,
                 SUB_MEAN: tl.constexpr):
    xq = tl.math.div_rn(_prepared(raw, inside, mean, mult, SUB_MEAN), scale)
    xq = xq + tl.where(xq >= 0, 0.5, -0.5)  # round half away from zero, then truncate (_int8_block)
    out_rows = out_row0 + tl.arange(0, SUB)
    tl.store(OUT + out_rows[:, None] * D_PAD + tl.arange(0, D_PAD)[None, :], xq.to(tl.int8))


@triton.jit
def _next_slice(base, s_n, s_d, row0, end, nxt, nxt_in, D: tl.constexpr, D_PAD: tl.constexpr, SUB: tl.constexpr,
                PREFETCH: tl.constexpr):
    """(slice at row0, its in-bounds mask, the prefetched slice and mask after it). With PREFETCH the slice at
    row0 is the one prefetched last step (nxt) and the next one is loaded now; without, it is loaded now."""
    if PREFETCH:
        following, _rows, following_in = _slice(base, s_n, s_d, row0 + SUB, end, D, D_PAD, SUB)
        return nxt, nxt_in, following, following_in
    raw, _rows, inside = _slice(base, s_n, s_d, row0, end, D, D_PAD, SUB)
    return raw, inside, nxt, nxt_in


@triton.jit
def _int8_tile(base, s_n, s_d, row0, seq_len, mean, mult, OUT, SCALE, tile, POOLED, SIM,
               D: tl.constexpr, D_PAD: tl.constexpr, BLOCK: tl.constexpr, SUB: tl.constexpr,
               SUB_MEAN: tl.constexpr, POOL: tl.constexpr, PREFETCH: tl.constexpr):
    """INT8 values and the one scale of the BLOCK-token tile at row0, in SUB-token slices and two passes: the
    first takes |x|'s max (and Sparge's sums of the raw tokens), the second re-reads the tile (from L2),
    rounds and stores. Element-wise accumulators keep the registers at a few SUB x D_PAD arrays, so several
    programs share an SM (a whole tile in registers took 246 of them at D128, one program per SM, and spilled
    with pooling; unrolled slices hoist their loads and take as many). PREFETCH loads the next slice before
    working on this one: two slices in flight. The max is order-free: values and scales are _int8_block's,
    bit for bit."""
    tl.static_assert(BLOCK % SUB == 0)  # a slice past the tile would overwrite the next tile's output rows
    cols = tl.arange(0, D_PAD)
    end = tl.minimum(row0 + BLOCK, seq_len)  # the prefetch past the tile's last slice reads nothing
    amax = tl.zeros([SUB, D_PAD], dtype=tl.float32)
    xsum = tl.zeros([SUB, D_PAD], dtype=tl.float32)
    usum = tl.zeros([SUB, D_PAD], dtype=tl.float32)
    nxt, _rows, nxt_in = _slice(base, s_n, s_d, row0, end, D, D_PAD, SUB)
    for r in range(0, BLOCK, SUB):
        raw, inside, nxt, nxt_in = _next_slice(base, s_n, s_d, row0 + r, end, nxt, nxt_in, D, D_PAD, SUB, PREFETCH)
        amax, xsum, usum = _slice_stats(raw, inside, mean, mult, amax, xsum, usum, SUB_MEAN, POOL)
    scale = tl.maximum(tl.math.div_rn(tl.max(tl.max(amax, axis=1), axis=0), _INT8_MAX * 1.0), 1e-12)
    if POOL:
        count = (end - row0).to(tl.float32)
        u = tl.sum(usum, axis=0)
        tl.store(POOLED + tile.to(tl.int64) * D + cols, tl.sum(xsum, axis=0) / count, mask=cols < D)
        tl.store(SIM + tile, tl.sum(u * u, axis=0) / (count * count))
    out_row0 = tile.to(tl.int64) * BLOCK
    nxt, _rows, nxt_in = _slice(base, s_n, s_d, row0, end, D, D_PAD, SUB)
    for r in range(0, BLOCK, SUB):
        raw, inside, nxt, nxt_in = _next_slice(base, s_n, s_d, row0 + r, end, nxt, nxt_in, D, D_PAD, SUB, PREFETCH)
        _slice_store(raw, inside, mean, mult, scale, OUT, out_row0 + r, D_PAD, SUB, SUB_MEAN)
    tl.store(SCALE + tile, scale)


@triton.jit
def _v_rows(base, s_n, s_d, row0, end, D: tl.constexpr, D_PAD: tl.constexpr, SUB: tl.constexpr,
            WGMMA_ORDER: tl.constexpr):
    """V's tokens for the SUB output rows from row0 (a multiple of 16), gathered per _v_source_rows, fp32."""
    cols = tl.arange(0, D_PAD)
    src = _v_source_rows(row0 + tl.arange(0, SUB), WGMMA_ORDER)
    inside = (src[:, None] < end) & (cols[None, :] < D)
    return tl.load(base + src[:, None] * s_n + cols[None, :] * s_d, mask=inside, other=0.0).to(tl.float32)


@triton.jit
def _v_store(vx, row0, mult, out, n_pad_k, D_PAD: tl.constexpr, SUB: tl.constexpr, FP8: tl.constexpr):
    rows = row0 + tl.arange(0, SUB)
    cols = tl.arange(0, D_PAD)
    vx = vx * mult[None, :]
    if FP8:  # transposed (D_PAD, n_pad_k), as _quantize_v
        tl.store(out + cols[None, :] * n_pad_k + rows[:, None], vx.to(tl.float8e4nv))
    else:
        tl.store(out + rows[:, None] * D_PAD + cols[None, :], vx.to(tl.float16))


@triton.jit
def _quantize_all(Q, K, V, Q8, QS, K8, KS, VOUT, KMEAN, VAMAX, PART, QPOOL, QSIM, KPOOL, KSIM,
                  sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d,
                  q_heads, kv_heads, seq_q, seq_k, n_qblk, n_kblk, n_ktiles, n_chunks, v_part, n_pad_k, q_mult,
                  target, D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
                  CHUNKS: tl.constexpr, SMOOTH: tl.constexpr, FP8: tl.constexpr, POOL: tl.constexpr,
                  WGMMA_ORDER: tl.constexpr, SUB_Q: tl.constexpr, SUB_K: tl.constexpr, SUB_V: tl.constexpr,
                  PREFETCH: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, D_PAD)
    chunks = tl.arange(0, CHUNKS)
    if pid < n_ktiles:  # K tile: tile index = bh * n_kblk + block, as in the output's layout
        bh = pid // n_kblk
        blk = pid % n_kblk
        mean = tl.zeros([D_PAD], dtype=tl.float32)
        if SMOOTH:
            k_part = tl.load(PART + (bh * CHUNKS + chunks)[:, None] * D_PAD + cols[None, :],
                             mask=chunks[:, None] < n_chunks, other=0.0)
            mean = tl.sum(k_part, axis=0) / seq_k
            if blk == 0:  # one program per head writes the mean that QuantizedQKV carries
                tl.store(KMEAN + bh * D + cols, mean, mask=cols < D)
        _int8_tile(_head_base(K, bh, kv_heads, sk_b, sk_h), sk_n, sk_d, blk * BLOCK_K, seq_k, mean, 1.0, K8, KS, pid,
                   KPOOL, KSIM, D, D_PAD, BLOCK_K, SUB_K, SMOOTH, POOL, PREFETCH)
    elif pid < 2 * n_ktiles:  # V tile, in SUB_V-token slices (nothing to reduce: V's amax comes from the partials)
        tile = pid - n_ktiles
        bh = tile // n_kblk
        blk = tile % n_kblk
        v_parts = tl.load(PART + v_part + (bh * CHUNKS + chunks)[:, None] * D_PAD + cols[None, :],
                          mask=chunks[:, None] < n_chunks, other=0.0)
        amax = tl.max(v_parts, axis=0)
        if blk == 0:  # one program per head writes the amax that QuantizedQKV carries
            tl.store(VAMAX + bh * D + cols, amax, mask=cols < D)
        mult = target / tl.maximum(tl.where(cols < D, amax, target), 1e-30)
        base = _head_base(V, bh, kv_heads, sv_b, sv_h)
        out = VOUT + bh.to(tl.int64) * n_pad_k * D_PAD
        row0 = blk * BLOCK_K
        end = tl.minimum(row0 + BLOCK_K, seq_k)
        tl.static_assert(BLOCK_K % SUB_V == 0)
        nxt = _v_rows(base, sv_n, sv_d, row0, end, D, D_PAD, SUB_V, WGMMA_ORDER)
        for r in range(0, BLOCK_K, SUB_V):  # V's padded rows are written too (zeros), as _quantize_v writes them
            if PREFETCH:
                vx = nxt
                nxt = _v_rows(base, sv_n, sv_d, row0 + r + SUB_V, end, D, D_PAD, SUB_V, WGMMA_ORDER)
            else:
                vx = _v_rows(base, sv_n, sv_d, row0 + r, end, D, D_PAD, SUB_V, WGMMA_ORDER)
            _v_store(vx, row0 + r, mult, out, n_pad_k, D_PAD, SUB_V, FP8)
    else:  # Q tile
        tile = pid - 2 * n_ktiles
        bh = tile // n_qblk
        blk = tile % n_qblk
        _int8_tile(_head_base(Q, bh, q_heads, sq_b, sq_h), sq_n, sq_d, blk * BLOCK_Q, seq_q, cols * 0.0, q_mult, Q8,
                   QS, tile, QPOOL, QSIM, D, D_PAD, BLOCK_Q, SUB_Q, False, POOL, PREFETCH)


def _sub_rows(block: int, d_pad: int) -> int:
    """Tokens per slice of a Q/K tile in `_quantize_all`: _QUANT_SLICE elements (a power of two), within the
    block."""
    return max(1, min(block, _QUANT_SLICE // d_pad))


def _v_sub_rows(block: int, d_pad: int) -> int:
    """Tokens per slice of a V tile: at least _V_MIN_ROWS, so the transposed FP8 store writes whole 32-byte
    sectors."""
    return min(block, max(_V_MIN_ROWS, _sub_rows(block, d_pad)))


class _Plan(NamedTuple):
    """Everything about a call that depends only on the shapes and the config, computed once per shape."""
    d_pad: int
    n_qblk: int
    n_kblk: int
    q8: tuple
    k8: tuple
    v_out: tuple
    n_pad_k: int
    n_chunks: int
    chunk_len: int
    part: tuple
    v_part: int
    stats_grid: tuple
    quant_grid: tuple
    n_ktiles: int
    default_scale: float
    target: float


@functools.lru_cache(maxsize=4096)
def _plan(b: int, hq: int, hkv: int, sq: int, sk: int, d: int, block_q: int, block_k: int, fp8: bool) -> _Plan:
    if d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim {d} not in {SUPPORTED_HEAD_DIMS}")
    if hkv < 1 or hq % hkv:
        raise ValueError(f"quantize_fused: q heads ({hq}) must be a multiple of k/v heads ({hkv})")
    d_pad = triton.next_power_of_2(d)
    n_qblk, n_kblk = triton.cdiv(sq, block_q), triton.cdiv(sk, block_k)
    n_pad_k = n_kblk * block_k
    steps = max(triton.cdiv(sk, _STAT_BLOCK), 1)
    per_chunk = triton.cdiv(steps, _MAX_CHUNKS)
    n_chunks = triton.cdiv(steps, per_chunk)  # no chunk starts past the end
    n_ktiles = b * hkv * n_kblk
    return _Plan(d_pad, n_qblk, n_kblk, (b * hq, n_qblk * block_q, d_pad), (b * hkv, n_pad_k, d_pad),
                 (b * hkv, d_pad, n_pad_k) if fp8 else (b * hkv, n_pad_k, d_pad), n_pad_k, n_chunks,
                 per_chunk * _STAT_BLOCK, (2, b * hkv, _MAX_CHUNKS, d_pad), b * hkv * _MAX_CHUNKS * d_pad,
                 (n_chunks, b * hkv), (2 * n_ktiles + b * hq * n_qblk,), n_ktiles, d ** -0.5,
                 FP8_E4M3_MAX if fp8 else FP16_V_RANGE)


def _fused_buffers(p: _Plan, b: int, hq: int, hkv: int, d: int, fp8: bool, smooth: bool, pool: bool, dev) -> tuple:
    f32 = torch.float32
    q8 = torch.empty(p.q8, dtype=torch.int8, device=dev)
    qs = torch.empty((b * hq, p.n_qblk), dtype=f32, device=dev)
    k8 = torch.empty(p.k8, dtype=torch.int8, device=dev)
    ks = torch.empty((b * hkv, p.n_kblk), dtype=f32, device=dev)
    vq = torch.empty(p.v_out, dtype=torch.float8_e4m3fn if fp8 else torch.float16, device=dev)
    v_amax = torch.empty((b * hkv, d), dtype=f32, device=dev)
    k_mean = torch.empty((b, hkv, d), dtype=f32, device=dev) if smooth else None
    part = torch.empty(p.part, dtype=f32, device=dev)  # scratch: the stats launch's partials
    if not pool:
        return q8, qs, k8, ks, vq, v_amax, k_mean, part, None, None, None, None
    pooled = (torch.empty((b, hq, p.n_qblk, d), dtype=f32, device=dev),
              torch.empty((b, hq, p.n_qblk), dtype=f32, device=dev),
              torch.empty((b, hkv, p.n_kblk, d), dtype=f32, device=dev),
              torch.empty((b, hkv, p.n_kblk), dtype=f32, device=dev))
    return (q8, qs, k8, ks, vq, v_amax, k_mean, part, *pooled)


def quantize_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
                   config: SageConfig = SageConfig(), *, pool: bool = False,
                   v_wgmma_order: bool = False, reuse_buffers: bool = False, with_q: bool = True) -> QuantizedQKV:
    """quantize_staged in two launches: same arguments, same QuantizedQKV (layouts, dtypes, shapes).
    `reuse_buffers`: take the buffers a previous call of this shape gave back (kernels/scratch.py) and let the
    caller `recycle` them; only for callers that never hand the result out. with_q=False: the main launch has
    no Q tiles (q8 and q_scale allocated, not written: `QuantizedQKV.q_written`)."""
    b, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    block_q, block_k, smooth = config.block_q, config.block_k, config.smooth
    fp8 = config.pv_precision == "fp8"
    _check_order(v_wgmma_order, fp8, block_k)
    _check_with_q(with_q, pool)
    p = _plan(b, hq, hkv, sq, sk, d, block_q, block_k, fp8)
    sm_scale = scale if scale is not None else p.default_scale
    dev = q.device
    key = ("quantize_fused", p, b, hq, hkv, d, fp8, smooth, pool)
    buffers = scratch.take(dev, key) if reuse_buffers else None
    if buffers is None:
        buffers = _fused_buffers(p, b, hq, hkv, d, fp8, smooth, pool, dev)
    q8, qs, k8, ks, vq, v_amax, k_mean, part, qpool, qsim, kpool, ksim = buffers
    if pool:
        pooled = (qpool, qsim, kpool, ksim)
    else:
        pooled = None
        qpool = qsim = kpool = ksim = qs  # never written (POOL is off)
    ks_b, ks_h, ks_n, ks_d = k.stride()
    vs_b, vs_h, vs_n, vs_d = v.stride()
    launch(_kv_stats, p.stats_grid, (k, v, part, ks_b, ks_h, ks_n, ks_d, vs_b, vs_h, vs_n, vs_d, hkv, sk,
                                     p.chunk_len, p.v_part),
           dict(D=d, D_PAD=p.d_pad, BLOCK=_STAT_BLOCK, CHUNKS=_MAX_CHUNKS, SMOOTH=smooth, PREFETCH=_STATS_PREFETCH,
                num_warps=_STATS_WARPS))
    launch(_quantize_all, p.quant_grid if with_q else (2 * p.n_ktiles,),
           (q, k, v, q8, qs, k8, ks, vq, k_mean if smooth else qs, v_amax, part, qpool, qsim, kpool, ksim,
            *q.stride(), ks_b, ks_h, ks_n, ks_d, vs_b, vs_h, vs_n, vs_d, hq, hkv, sq, sk, p.n_qblk, p.n_kblk,
            p.n_ktiles, p.n_chunks, p.v_part, p.n_pad_k, sm_scale * LOG2E, p.target),
           dict(D=d, D_PAD=p.d_pad, BLOCK_Q=block_q, BLOCK_K=block_k, CHUNKS=_MAX_CHUNKS, SMOOTH=smooth, FP8=fp8,
                POOL=pool, WGMMA_ORDER=v_wgmma_order, SUB_Q=_sub_rows(block_q, p.d_pad),
                SUB_K=_sub_rows(block_k, p.d_pad), SUB_V=_v_sub_rows(block_k, p.d_pad), PREFETCH=_QUANT_PREFETCH,
                num_warps=_QUANT_WARPS))
    return QuantizedQKV(q8, qs, k8, ks, vq, v_amax, k_mean, (b, hq, hkv, sq, sk, d), sm_scale, block_q, block_k, fp8,
                        pooled, v_wgmma_order, (key, buffers) if reuse_buffers else None, with_q)


# Most elements (q, k and v together) quantize() hands to quantize_fused without pooling. Measured on the H200,
# bf16, FP8 P.V (benchmarks/bench_quantize.py, results in benchmarks/results/h200/quantize/): the fused path won
# where the inputs are small and launches and host cost dominate, B1 H24 4k D64 0.128 -> 0.089 ms (host 214 -> 81
# us, attention end to end 0.76x -> 0.86x cuDNN), 8k D64 0.179 -> 0.098 ms, 4k D128 0.249 -> 0.152 ms; it tied at
# B1 H24 8k D128 and lost on large inputs: its stats launch streams 1/16 of a head per program, where the staged
# launches are plain streams over many more programs. With the sliced quantize launch (session 8,
# bench_quant_warps.py, GPU us) B1 H24 16k D128 ties without pooling (fused 284, staged 278; Gluon blocks 370
# vs 313) and wins with it (353 vs 424): Sparge's pooled quantization always takes the fused path. With the
# stats launch's prefetch (session 9, results/h200/session9/quant_stats.log) fused wins at B1 H24 16k D128 without
# pooling too: 227 against 278 us (Gluon blocks 227 against 278). Larger inputs are not measured: staged.
FUSED_MAX_ELEMENTS = 3 * 24 * 16384 * 128  # up to B1 H24 16k D128 (151M elements) fused


def quantize(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
             config: SageConfig = SageConfig(), *, pool: bool = False, v_wgmma_order: bool = False,
             reuse_buffers: bool = False, with_q: bool = True) -> QuantizedQKV:
    """Sage's quantization of q (B, Hq, Sq, D), k/v (B, Hkv, Sk, D), any strides: quantize_fused (2 launches)
    with pooling or up to FUSED_MAX_ELEMENTS, where launches and host cost dominate, quantize_staged beyond.
    Both give the same QuantizedQKV up to K's mean and the pooled sums' summation order (module docstring).
    `reuse_buffers`: quantize_fused's (the staged path allocates; `recycle` is then a no-op). with_q=False: Q is
    left to the attention kernel (q8 and q_scale not written; not with pool)."""
    if pool or q.numel() + k.numel() + v.numel() <= FUSED_MAX_ELEMENTS:
        return quantize_fused(q, k, v, scale, config, pool=pool, v_wgmma_order=v_wgmma_order,
                              reuse_buffers=reuse_buffers, with_q=with_q)
    return quantize_staged(q, k, v, scale, config, pool=pool, v_wgmma_order=v_wgmma_order, with_q=with_q)
