"""Sparge on the sm90 Gluon kernel: sparge_triton's prediction and selection, then sage_gluon's kernel over
each query block's kept K blocks.

The Gluon kernel's CTA is two consumer warpgroups of 64 query rows sharing one K/V ring, so both must walk
the same K blocks: the Sparge query block is the CTA's 128 rows (config.block_q 128; SpargeAttn's own
kernels use 128 too). Q is then quantized per 128 rows, the kernel reads one scale per 128 rows
(Q_SCALE_ROWS), and the numerics are sparge_reference's with that config, as sparge_triton's are.

Taken: no mask or causal (top-left), FP8 P.V, block_k 128, no pv_threshold (P.V skipping is sparge_triton's).
"""
from __future__ import annotations

from typing import Optional

import torch

from .config import SpargeConfig
from .constants import GLUON_SPARSE_BLOCK_Q, KV_BLOCK, SUPPORTED_HEAD_DIMS

# the Gluon kernel's launch for block lists: 4-deep ring, P.V retired before the next Q K^T (DEFAULT_LAUNCH's
# choices that apply with two consumers)
SPARSE_LAUNCH = dict(stages=4, pingpong=False, split=True)
# rounds of two kept blocks (sage_gluon's PAIR_LAUNCH on block lists: one-level accumulation, row sums by wgmma)
SPARSE_PAIR_LAUNCH = dict(SPARSE_LAUNCH, stages=2, pair=True, direct=True, sum_mma=True)


def sparse_launch(return_lse: bool) -> dict:
    """The launch for block lists: rounds of two kept blocks (SPARSE_PAIR_LAUNCH) when no LSE is asked for
    (attend_gluon has no LSE with the row sums by wgmma or in pairs), else SPARSE_LAUNCH. Measured on the H200
    (session 17, D128 16,200 tokens, density 0.5, structured): 2.51x cuDNN in pairs against 2.32x with the row
    sums by wgmma alone (session 15) and 2.28x with the FADD sums."""
    return dict(SPARSE_LAUNCH) if return_lse else dict(SPARSE_PAIR_LAUNCH)


def sparge_gluon_unsupported(config: SpargeConfig, head_dim: int) -> Optional[str]:
    """Why sparge_attention_gluon cannot take this config (None: it can)."""
    if config.pv_precision != "fp8":
        return f"pv_precision {config.pv_precision!r}: the Gluon kernel has FP8 P.V only"
    if config.block_q != GLUON_SPARSE_BLOCK_Q or config.block_k != KV_BLOCK:
        return (f"block_q {config.block_q}, block_k {config.block_k}: the Gluon kernel's sparse blocks are "
                f"{GLUON_SPARSE_BLOCK_Q} x {KV_BLOCK} (one CTA's query rows)")
    if config.pv_threshold is not None:
        return f"pv_threshold {config.pv_threshold}: P.V skipping is sparge_triton's"
    if head_dim not in SUPPORTED_HEAD_DIMS:
        return f"head_dim {head_dim} not in {SUPPORTED_HEAD_DIMS}"
    return None


def sparge_attention_gluon(q, k, v, mask, is_causal: bool, scale: Optional[float], config: SpargeConfig, *,
                           return_block_map: bool = False, return_lse: bool = False, launch: Optional[dict] = None):
    """Same arguments, numerics and outputs as sparge_triton.sparge_attention_triton for the configs
    `sparge_gluon_unsupported` accepts, with no mask (None) or `is_causal`. `launch`: attend_gluon's keyword
    arguments (`sparse_launch(return_lse)` when None)."""
    # the kernels import triton: imported here, so that sparge_gluon_unsupported stays importable without it
    from .sage_gluon import attend_gluon
    from .sage_quantize import quantize, recycle
    from .sage_triton import no_mask, unsmoothed_lse
    from .sparge_reference import select_from_pooled
    from .sparge_select import fused_selection_unsupported, select_block_lists
    from .sparge_triton import block_lists

    no_mask(mask, "sparge_attention_gluon")
    why = sparge_gluon_unsupported(config, q.shape[-1])
    if why is not None:
        raise ValueError(f"sparge_attention_gluon: {why}")
    # the quantization pass also pools the blocks (one read of Q and K for both)
    x = quantize(q, k, v, scale, config, pool=True, v_wgmma_order=True, reuse_buffers=True)
    if fused_selection_unsupported(None, x.pooled[2].shape[2]) is None:
        block_map, lists = select_block_lists(x.pooled, q, k, scale, is_causal, config)
    else:  # more K blocks than the fused selection sorts in registers
        block_map = select_from_pooled(x.pooled, q, k, scale, is_causal, config, None)
        lists = block_lists(block_map, k.shape[2], config.block_q, config.block_k, is_causal)
    launch = sparse_launch(return_lse) if launch is None else launch
    res = attend_gluon(x, is_causal, q.dtype, return_lse, blocks=lists, **launch)
    out = (res[0], unsmoothed_lse(res[1], q, x)) if return_lse else (res,)
    recycle(x)  # every kernel reading x is enqueued
    out = out + (block_map,) if return_block_map else out
    return out if len(out) > 1 else out[0]
