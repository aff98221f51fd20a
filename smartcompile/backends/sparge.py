"""Sparge: predicted block-sparse attention on top of the Sage numerics."""
from __future__ import annotations

import torch

from ..kernels.sparge_reference import sparge_attention_reference
from .base import Accuracy, Implementation
from .params import ParamSpec
from .sage import REFERENCE_CAPS, SAGE_PARAMS, _SageBackend

KV_BLOCK = 64  # K tokens per sparsity (and quantization) block

SPARGE_PARAMS = {
    **SAGE_PARAMS,
    "sparsity_ratio": ParamSpec(
        "sparsity_ratio", float, None, "fraction of (valid) K blocks skipped per query block",
        minimum=0.0, maximum=1.0, exclusive_maximum=True, nullable=True,
    ),
    "topk": ParamSpec("topk", int, None, "K blocks kept per query block", minimum=1, nullable=True),
    "cdf_threshold": ParamSpec(
        "cdf_threshold", float, 0.98, "keep K blocks until their predicted attention mass reaches this",
        minimum=0.0, maximum=1.0, nullable=True,
    ),
    "sim_threshold": ParamSpec(
        "sim_threshold", float, 0.6, "blocks whose tokens' mean cosine is below this are never skipped",
        minimum=-1.0, maximum=1.0,
    ),
    "pv_threshold": ParamSpec(
        "pv_threshold", float, None, "skip P.V of a block whose row maxima trail the running max by more (log2 units)",
        minimum=0.0, nullable=True,
    ),
    "sink": ParamSpec("sink", bool, False, "always keep the first K block (attention sink)"),
}


def run_sparge_reference(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    return sparge_attention_reference(
        q, k, v, mask, is_causal, scale,
        pv_precision=params["pv_precision"], block_q=params["block_size"], block_k=KV_BLOCK,
        sim_threshold=params["sim_threshold"], cdf_threshold=params["cdf_threshold"], topk=params["topk"],
        sparsity_ratio=params["sparsity_ratio"], pv_threshold=params["pv_threshold"], sink=params["sink"],
    )


SPARGE = _SageBackend(
    name="sparge",
    description="block-sparse (predicted block map) + Sage quantization",
    params=SPARGE_PARAMS,
    implementations=(
        Implementation(
            name="sparge_reference",
            capabilities=REFERENCE_CAPS,
            run=run_sparge_reference,
            description="pure-torch reference numerics (CPU; for quality, not speed)",
            auto_eligible=False,
        ),
    ),
    # Sparsity costs accuracy by design; this is the bound at the default cdf_threshold on
    # inputs with local structure. Random inputs have none: tests use sparsity_ratio=0 there.
    accuracy=Accuracy(min_cosine=0.99, max_rel_l1=0.12),
    exclusive_params=(("sparsity_ratio", "topk", "cdf_threshold"),),
)
