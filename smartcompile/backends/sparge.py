"""Sparge: predicted block-sparse attention on top of the Sage numerics."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from ..kernels.config import SELECTIONS, SpargeConfig
from ..kernels.sparge_reference import sparge_attention_reference
from ..spec import AttentionSpec
from . import key_padding
from .base import Accuracy, Implementation
from .sage import gluon_spec_reasons as sage_gluon_spec_reasons
from .sage import (GLUON_CAPS, PACKAGE_CAPS, REFERENCE_CAPS, SAGE_PARAMS, TRITON_CAPS, _SageBackend, cached_config,
                   config_fields, config_param, describe_sage_params, estimate_sage_ms)

# At density d Sparge costs a fixed share (prediction, quantization) plus d of dense Sage's time:
# fitted to 1.36-1.50x over dense Sage at d = 0.5 on the H100 (benchmarks/results/h100).
SPARGE_FIXED_SHARE = 0.4
# the profiler's sparsities, least to most aggressive: it stops climbing at the first rung that
# alone breaks the budget
SPARSITY_LADDER = (0.5, 0.75)

SPARGE_PARAMS = {
    **SAGE_PARAMS,
    **{name: config_param(SpargeConfig, name) for name in ("sparsity_ratio", "topk")},
    # SpargeConfig wants one selection given: a rule that gives none selects by cdf_threshold
    "cdf_threshold": config_param(SpargeConfig, "cdf_threshold", default=0.98),
    **{name: config_param(SpargeConfig, name) for name in ("sim_threshold", "pv_threshold", "sink")},
}


def sparge_config(params: Mapping[str, Any]) -> SpargeConfig:
    return cached_config(SpargeConfig, **config_fields(SpargeConfig, params))


def estimate_sparge_ms(exact_ms: float, params: Mapping[str, Any], density: float) -> float:
    return estimate_sage_ms(exact_ms, params) * (SPARGE_FIXED_SHARE + (1 - SPARGE_FIXED_SHARE) * density)


def _forced(params: Mapping[str, Any]) -> bool:
    """sim_threshold -1: every block may be skipped, self-similar or not."""
    return params.get("sim_threshold") is not None and params["sim_threshold"] <= -1


def describe_sparge_params(params: Mapping[str, Any]) -> str:
    """'75% forced': the sparsity as a share, and 'forced' (no similarity check) after it."""
    words = [f"{v:.0%}" if k == "sparsity_ratio" and v is not None else describe_sage_params({k: v})
             for k, v in sorted(params.items()) if not (k == "sim_threshold" and _forced(params))]
    return " ".join(words + (["forced"] if _forced(params) else []))


def run_sparge_reference(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    return sparge_attention_reference(q, k, v, mask, is_causal, scale, sparge_config(params))


def run_sparge_triton(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    from ..kernels.sparge_triton import sparge_attention_triton  # imports triton: only when it runs

    # as run_sage_triton: flags that keep every key or a prefix run without per-key flags
    return sparge_attention_triton(q, k, v, key_padding.simplest(mask, q, k), is_causal, scale, sparge_config(params))


def run_sparge_gluon(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    from ..kernels.sparge_gluon import sparge_attention_gluon  # imports triton: only when it runs

    return sparge_attention_gluon(q, k, v, mask, is_causal, scale, sparge_config(params))


def gluon_params_reasons(params: dict, spec: AttentionSpec) -> list:
    from ..kernels.sparge_gluon import sparge_gluon_unsupported

    try:
        config = sparge_config(params)
    except ValueError as exc:  # the rule itself is invalid: the backend's own checks name it
        return [str(exc)]
    why = sparge_gluon_unsupported(config, spec.head_dim)
    return [] if why is None else [why]


def gluon_spec_reasons(spec: AttentionSpec) -> list:
    return sage_gluon_spec_reasons(spec, faster_below="sparge_triton")


def run_spas_sage_attn(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    """The SpargeAttn package. Its thresholds are its own (cdf, similarity, PV); topk/sparsity_ratio
    are not its parameters, so the capabilities send such rules elsewhere. K is smoothed on a copy."""
    from spas_sage_attn import spas_sage_attn_meansim_cuda

    if params["smooth_k"]:
        k = k - k.mean(dim=-2, keepdim=True)
    return spas_sage_attn_meansim_cuda(
        q, k, v, is_causal=False, scale=scale, smooth_k=False, simthreshd1=params["sim_threshold"],
        cdfthreshd=params["cdf_threshold"], pvthreshd=params["pv_threshold"] if params["pv_threshold"] is not None else 50,
        attention_sink=params["sink"], tensor_layout="HND", output_dtype=q.dtype,
    )


def predicted_density(q, k, mask, is_causal: bool, scale: float, params: dict) -> float:
    """Fraction of the valid K blocks (not in the future, holding a key the mask keeps) that the predictor
    keeps for these inputs."""
    from ..kernels.sparge_reference import predict_block_map, selection_mask, valid_block_map

    c = sparge_config(params)
    mask, is_causal = selection_mask(mask, is_causal, q, k)
    block_map = predict_block_map(q, k, mask, is_causal, scale, c)
    valid = valid_block_map(mask, is_causal, q.shape[2], k.shape[2], c.block_q, c.block_k, q.device).expand_as(block_map)
    return (block_map & valid).sum().item() / max(valid.sum().item(), 1)


def triton_params_reasons(params: dict, spec: AttentionSpec) -> list:
    # with a dense mask the kernel walks each row's full tiles before its partial ones; P.V skipping
    # depends on the running max, so that order would skip other blocks than the reference's
    if spec.mask_kind == "bool" and params["pv_threshold"] is not None:
        return [f"pv_threshold {params['pv_threshold']} with a dense bool mask: its tile order would skip other "
                "P.V blocks than the reference"]
    return []


SPARGE = _SageBackend(
    name="sparge",
    description="block-sparse (predicted block map) + Sage quantization",
    params=SPARGE_PARAMS,
    implementations=(
        # H200, B1 H24, structured inputs, density 0.5, block_size 128 for both (benchmarks/results/h200/session10):
        # D128 16k 2.31x cuDNN against sparge_triton's 1.98x; D64 16k 1.87x against 2.14x; 3.7k 0.46-0.49x
        # against 0.50-0.76x. So D128 from 16k keys only, and only for rules with block_size 128 (the default
        # 64 keeps sparge_triton: finer query blocks, rel L1 0.038 against 0.048 at D128 16k, 2.21x cuDNN).
        Implementation(
            name="sparge_gluon",
            capabilities=dataclasses.replace(GLUON_CAPS, head_dims=(128,)),  # D64: sparge_triton measured faster
            run=run_sparge_gluon,
            params_reasons=gluon_params_reasons,
            spec_reasons=gluon_spec_reasons,
            description="our Gluon kernel for sm90 over the kept blocks (query blocks of 128: block_size=128)",
            auto_eligible=False,
        ),
        Implementation(
            name="sparge_triton",
            capabilities=TRITON_CAPS,  # key padding and dense bool masks too, as sage_triton
            run=run_sparge_triton,
            params_reasons=triton_params_reasons,
            description="our Triton kernels: block-map prediction + the Sage kernel over kept blocks",
            # sparsity trades accuracy for speed: auto picks it only with measured, bounded error (profiling)
            auto_eligible=False,
        ),
        Implementation(
            name="spas_sage_attn",
            # SpargeAttn's causal mode lets diagonal blocks see future tokens: non-causal only here
            capabilities=dataclasses.replace(PACKAGE_CAPS, mask_kinds=frozenset({"none"}), requires="spas_sage_attn"),
            run=run_spas_sage_attn,
            description="the SpargeAttn package (spas_sage_attn), non-causal, cdf selection only",
            auto_eligible=False,
            params_reasons=lambda p, spec: [] if p["cdf_threshold"] is not None else
            ["selects by cdf_threshold only (topk / sparsity_ratio given)"],
        ),
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
    exclusive_params=(tuple(name for name in SPARGE_PARAMS if name in SELECTIONS),),
    auto_priority=2,
    not_timed_reason=("not timed by auto (its error depends on the layer's inputs; a profiled policy from "
                      "smartcompile.profile chooses it)"),
    # with the similarity check (blocks that are not self-similar are kept, so the real sparsity
    # can be lower) and without it (forced: safe to try because the profiler measures its cost)
    ladder=tuple({"sparsity_ratio": r} for r in SPARSITY_LADDER)
    + tuple({"sparsity_ratio": r, "sim_threshold": -1.0} for r in SPARSITY_LADDER),
    ladder_params=("pv_precision", "sparsity_ratio", "topk", "cdf_threshold"),
    estimate_ms=estimate_sparge_ms,
    predicted_density=predicted_density,
    describe_params=describe_sparge_params,
)

