"""Output quality against fp32 exact attention (shared with benchmarks/bench_*.py).

The reference covers the first `heads` heads and `max_queries` queries (all keys): an fp32 score
matrix for 32k tokens and 24 heads would need ~100 GB, and a slice shows the same error.
"""
from __future__ import annotations

import torch

from ..kernels.exact_reference import attention_reference
from ..metrics import ErrorStats, error_stats, psnr


def sliced_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                     max_queries: int = 4096, heads: int = 2) -> torch.Tensor:
    n = min(q.shape[2], max_queries)
    return attention_reference(q[:, :heads, :n].float(), k[:, :heads].float(), v[:, :heads].float(), None, causal)


def output_slice(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The part of `out` that `ref` (from sliced_reference) covers, in fp32."""
    return out[:, :ref.shape[1], :ref.shape[2]].float()


def sliced_error(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                 max_queries: int = 4096, heads: int = 2) -> ErrorStats:
    ref = sliced_reference(q, k, v, causal, max_queries, heads)
    return error_stats(output_slice(out, ref), ref)


def quality(out: torch.Tensor, ref: torch.Tensor) -> dict:
    """cosine, relative L1 and PSNR (dB) of `out` against a sliced fp32 reference."""
    o = output_slice(out, ref)
    err = error_stats(o, ref)
    return dict(cosine=err.cosine, rel_l1=err.rel_l1, psnr=psnr(o, ref) if err.finite else float("nan"))
