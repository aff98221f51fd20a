"""Time estimates for devices whose own times say nothing about GPU speed (CPUs run reference
numerics), so that profiling on a CPU still exercises every stage.

The estimate is the layer's FLOPs at exact attention's H100 speed, scaled by each backend's own
estimate (Backend.estimate_ms: speed ratios measured on the H100, benchmarks/results/h100). A
policy built from estimates says so; profile on the GPU for real numbers.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..backends.registry import get_backend
from ..spec import AttentionSpec

H100_DENSE_TFLOPS = 500.0  # exact attention, cuDNN SDPA, bf16 (benchmarks/results/h100)


def attention_flops(spec: AttentionSpec) -> float:
    f = 2.0 * spec.batch * spec.q_heads * spec.q_len * spec.kv_len * (spec.head_dim + spec.v_head_dim)
    return f / 2 if spec.is_causal else f


def estimated_ms(spec: AttentionSpec, backend: str, params: Mapping[str, Any], density: float = 1.0) -> float:
    """`backend` with resolved `params` at predicted `density` (1: dense), at H100 speed."""
    exact = attention_flops(spec) / (H100_DENSE_TFLOPS * 1e12) * 1e3
    return get_backend(backend).estimate_ms(exact, params, density)
