"""Time estimates for devices whose own times say nothing about GPU speed (CPUs run reference
numerics), so that profiling on a CPU still exercises every stage.

The estimate is the layer's FLOPs at the long-sequence speed ratios measured on the H100
(benchmarks/results/h100, 16k-32k tokens, D 128): Sage with FP8 P.V 1.12x cuDNN, with FP16
P.V 0.92x (slower: never chosen on these estimates); Sparge at density d costs a fixed share
(prediction, quantization) plus d of the Sage time, fitted to 1.36-1.50x over dense Sage at
d = 0.5. Short sequences are slower than this on a real H100. A policy built from estimates
says so; profile on the GPU for real numbers.
"""
from __future__ import annotations

from ..spec import AttentionSpec

H100_DENSE_TFLOPS = 500.0  # exact attention, cuDNN SDPA, bf16 (benchmarks/results/h100)
SAGE_SPEEDUP = {"fp8": 1.12, "fp16": 0.92}  # by P.V precision
SPARGE_FIXED_SHARE = 0.4


def attention_flops(spec: AttentionSpec) -> float:
    f = 2.0 * spec.batch * spec.q_heads * spec.q_len * spec.kv_len * (spec.head_dim + spec.v_head_dim)
    return f / 2 if spec.is_causal else f


def estimated_ms(spec: AttentionSpec, backend: str, density: float = 1.0, pv_precision: str = "fp8") -> float:
    exact = attention_flops(spec) / (H100_DENSE_TFLOPS * 1e12) * 1e3
    if backend == "flash":
        return exact
    sage = exact / SAGE_SPEEDUP[pv_precision]
    if backend == "sage":
        return sage
    if backend == "sparge":
        return sage * (SPARGE_FIXED_SHARE + (1 - SPARGE_FIXED_SHARE) * density)
    raise ValueError(f"estimated_ms: backend {backend!r} is not one of flash, sage, sparge")
