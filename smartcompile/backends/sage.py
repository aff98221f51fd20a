"""Sage: INT8 Q/K with smoothed K, FP8 or FP16 P.V, FP32 accumulation."""
from __future__ import annotations

import torch

from ..kernels.sage_reference import sage_attention_reference
from ..spec import AttentionSpec
from .base import Accuracy, Backend, Implementation
from .capabilities import Capabilities
from .hardware import compute_capability
from .params import ParamSpec

SAGE_PARAMS = {
    "quant_bits": ParamSpec("quant_bits", int, 8, "bits of the Q/K quantization", choices=(8,)),
    "quant_symmetric": ParamSpec("quant_symmetric", bool, True, "symmetric Q/K quantization", choices=(True,)),
    "pv_precision": ParamSpec(
        "pv_precision", str, "auto", "precision of P and V in the P.V product; auto = fp8 on sm89+, fp16 below",
        choices=("auto", "fp8", "fp16"),
    ),
    "block_size": ParamSpec("block_size", int, 128, "query tokens per quantization (and sparsity) block", choices=(64, 128)),
    "smooth_k": ParamSpec("smooth_k", bool, True, "subtract K's mean over tokens before quantizing (exact)"),
}
KV_BLOCK = 64


def resolve_pv_precision(requested: str, spec: AttentionSpec) -> str:
    if requested != "auto":
        return requested
    cc = compute_capability(spec.device)
    if cc is not None and cc < (8, 9):
        return "fp16"  # no FP8 tensor cores before Ada
    return "fp8"  # Ada/Hopper, and on CPU the reference models the GPU numerics


def sage_reference_args(params: dict) -> dict:
    return dict(pv_precision=params["pv_precision"], smooth=params["smooth_k"], block_q=params["block_size"], block_k=KV_BLOCK)


def run_sage_reference(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    return sage_attention_reference(q, k, v, mask, is_causal, scale, **sage_reference_args(params))


class _SageBackend(Backend):
    """Sage-family backends resolve pv_precision="auto" for the device of the spec."""

    def resolve_params(self, params: dict, spec: AttentionSpec) -> dict:
        full = super().resolve_params(params, spec)
        full["pv_precision"] = resolve_pv_precision(full["pv_precision"], spec)
        return full


REFERENCE_CAPS = Capabilities(devices=frozenset({"cpu"}), max_head_dim=256)

SAGE = _SageBackend(
    name="sage",
    description="INT8 QK^T, FP8/FP16 P.V (SageAttention numerics)",
    params=SAGE_PARAMS,
    implementations=(
        Implementation(
            name="sage_reference",
            capabilities=REFERENCE_CAPS,
            run=run_sage_reference,
            description="pure-torch reference numerics (CPU; for quality, not speed)",
            auto_eligible=False,
        ),
    ),
    accuracy=Accuracy(min_cosine=0.999, max_rel_l1=0.05),
)
