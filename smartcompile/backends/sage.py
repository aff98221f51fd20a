"""Sage: INT8 Q/K with smoothed K, FP8 or FP16 P.V, FP32 accumulation."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import torch

from ..kernels.config import SageConfig
from ..kernels.constants import GLUON_BLOCK_Q, PV_PRECISIONS, SUPPORTED_HEAD_DIMS
from ..kernels.sage_reference import sage_attention_reference
from ..spec import AttentionSpec
from .base import Accuracy, AutoGate, Backend, Implementation
from .capabilities import Capabilities
from . import key_padding
from .hardware import compute_capability
from .params import UNCHANGED, ParamSpec, field_param
from .._logging import logger

# The policy's parameter -> the config field it sets, where their names differ (the others are named as
# their field): the one place the two vocabularies meet.
CONFIG_FIELD = {"block_size": "block_q", "smooth_k": "smooth"}


def config_param(config: type, name: str, *, default: Any = UNCHANGED, choices: Any = UNCHANGED,
                 minimum: Any = UNCHANGED) -> ParamSpec:
    """The policy parameter `name`, ruled as the `config` field it sets (kernels/config.py)."""
    return field_param(config, CONFIG_FIELD.get(name, name), name, default=default, choices=choices, minimum=minimum)


def config_fields(config: type, params: Mapping[str, Any]) -> dict:
    """The `config` fields that resolved `params` set (parameters of the policy alone set none)."""
    names = {f.name for f in dataclasses.fields(config)}
    return {CONFIG_FIELD.get(n, n): v for n, v in params.items() if CONFIG_FIELD.get(n, n) in names}


_PV = config_param(SageConfig, "pv_precision", default="auto", choices=("auto",) + PV_PRECISIONS)
SAGE_PARAMS = {
    "pv_precision": dataclasses.replace(_PV, doc=f"{_PV.doc}; auto = fp8 on sm89+, fp16 below"),
    # of the sizes SageConfig takes, a policy offers two
    "block_size": config_param(SageConfig, "block_size", choices=(64, 128), minimum=None),
    "smooth_k": config_param(SageConfig, "smooth_k"),
}
# Speed over cuDNN SDPA by P.V precision, at 16k-32k tokens, D 128 on the H100
# (benchmarks/results/h100): FP16 P.V is slower, so estimates never choose it. Short sequences
# are slower than this on a real H100.
SAGE_SPEEDUP = {"fp8": 1.12, "fp16": 0.92}


def estimate_sage_ms(exact_ms: float, params: Mapping[str, Any], density: float = 1.0) -> float:
    return exact_ms / SAGE_SPEEDUP[params["pv_precision"]]


def describe_sage_params(params: Mapping[str, Any]) -> str:
    """'fp8': the P.V precision by its value, other parameters as name=value."""
    return " ".join(str(v) if k == "pv_precision" else f"{k}={v}" for k, v in sorted(params.items()))


def resolve_pv_precision(requested: str, spec: AttentionSpec) -> str:
    cc = compute_capability(spec.device)
    no_fp8 = cc is not None and cc < (8, 9)  # no FP8 tensor cores before Ada
    if requested == "fp8" and no_fp8:
        logger.warning("pv_precision 'fp8' needs compute capability >= 8.9 (device has %s): using 'fp16'", cc)
        return "fp16"
    if requested != "auto":
        return requested
    return "fp16" if no_fp8 else "fp8"  # on CPU the reference models the GPU (FP8) numerics


@functools.lru_cache(maxsize=None, typed=True)
def cached_config(cls, **fields):
    """cls(**fields), validated once per distinct rule (the runs below are called for every attention call)."""
    return cls(**fields)


def sage_config(params: Mapping[str, Any]) -> SageConfig:
    return cached_config(SageConfig, **config_fields(SageConfig, params))


def run_sage_reference(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    return sage_attention_reference(q, k, v, mask, is_causal, scale, sage_config(params))


def run_sage_triton(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    from ..kernels.sage_triton import sage_attention_triton  # imports triton: only when it runs

    # key flags that keep every key or a prefix run without per-key flags (10-16% faster on the H200)
    return sage_attention_triton(q, k, v, key_padding.simplest(mask, q, k), is_causal, scale, sage_config(params))


def run_sage_gluon(q, k, v, mask, is_causal: bool, scale: float, params) -> torch.Tensor:
    from ..kernels.sage_gluon import sage_attention_gluon  # imports triton: only when it runs

    return sage_attention_gluon(q, k, v, mask, is_causal, scale, sage_config(params))


# auto's gate for sage_gluon (sage_triton's too: quantized attention measured slower than cuDNN below 16k keys), and
# Sparge's Gluon launch's length rule (backends/sparge.py: faster than sparge_triton from 16k keys; D64 causal
# not measured)
GLUON_MIN_KV_LEN = 16384
# Sage's, per (D_PAD, causal): the fewest keys where sage_gluon ran faster than sage_triton end to end (H200,
# benchmarks/bench_gluon.py --variants default, session 16, with cached TMA encodings): D64 1.03x at 4k keys and
# 1.07x at 16k; causal D64 0.92x at 4k, 1.02x at 16k; causal D128 1.01x at 4k (a tie: sage_triton kept), 1.14x at
# 16k; D128 with rounds of two tiles (session 17): 1.07x at 4k, 1.21x at 16k. Fewer keys than 4k were not measured.
SAGE_GLUON_MIN_KV_LEN = {(64, False): 4096, (64, True): 16384, (128, False): 4096, (128, True): 16384}


def gluon_spec_reasons(spec: AttentionSpec, faster_below: str = "sage_triton") -> list:
    """Why the Gluon kernel does not take `spec`: unavailable here, or fewer keys than where it was measured
    faster than `faster_below` (the Triton implementation of the same backend: sage_triton or sparge_triton)."""
    from ..kernels.sage_gluon import gluon_unavailable_reason

    why = gluon_unavailable_reason()
    if why is not None:
        return [why]
    d_pad = 64 if spec.head_dim <= 64 else 128
    sage = faster_below == "sage_triton"
    if not sage and d_pad == 64 and spec.is_causal:
        return [f"head_dim {spec.head_dim} causal: not measured against {faster_below} on the H200 (D64 non-causal was)"]
    least = SAGE_GLUON_MIN_KV_LEN[(d_pad, spec.is_causal)] if sage else GLUON_MIN_KV_LEN
    if spec.kv_len < least:
        return [f"kv_len {spec.kv_len} < {least}: {faster_below} is faster there (H200)"]
    return []


def gluon_params_reasons(params: dict, spec: AttentionSpec) -> list:
    out = []
    if params["pv_precision"] != "fp8":
        out.append(f"pv_precision {params['pv_precision']!r}: the Gluon kernel has FP8 P.V only")
    if params["block_size"] != GLUON_BLOCK_Q:
        out.append(f"block_size {params['block_size']}: the Gluon kernel quantizes Q per {GLUON_BLOCK_Q} rows")
    return out


def run_sageattention_package(q, k, v, mask, is_causal: bool, scale: float, params: dict) -> torch.Tensor:
    """The `sageattention` package (v1 `sageattn` API; v2 has the same entry point). Version
    1.0.6 smooths K in place, so we smooth a copy ourselves and pass smooth_k=False."""
    from sageattention import sageattn

    if params["smooth_k"]:
        k = k - k.mean(dim=-2, keepdim=True)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return sageattn(q, k, v, tensor_layout="HND", is_causal=is_causal, sm_scale=scale, smooth_k=False)


class _SageBackend(Backend):
    """Sage-family backends resolve pv_precision="auto" for the device of the spec."""

    def resolve_params(self, params: dict, spec: AttentionSpec) -> dict:
        full = super().resolve_params(params, spec)
        full["pv_precision"] = resolve_pv_precision(full["pv_precision"], spec)
        return full


REFERENCE_CAPS = Capabilities(devices=frozenset({"cpu"}), max_head_dim=256)
HALF = frozenset({torch.float16, torch.bfloat16})
TRITON_CAPS = Capabilities(
    devices=frozenset({"cuda"}), min_compute_capability=(8, 0), dtypes=HALF, head_dims=SUPPORTED_HEAD_DIMS,
    # key padding as spans ("padded", "causal-padded"); any other bool mask classified per tile (kernels/mask_blocks.py)
    mask_kinds=frozenset({"none", "causal", "padded", "causal-padded", "bool"}), different_v_dim=False, requires="triton",
)
GLUON_CAPS = Capabilities(
    devices=frozenset({"cuda"}), min_compute_capability=(9, 0), dtypes=HALF, head_dims=(64, 128),
    mask_kinds=frozenset({"none", "causal"}), different_v_dim=False, requires="triton",
)
PACKAGE_CAPS = Capabilities(
    devices=frozenset({"cuda"}), min_compute_capability=(8, 0), dtypes=HALF, head_dims=(64, 96, 128),
    mask_kinds=frozenset({"none", "causal"}), causal_q_ne_k=False, different_v_dim=False, requires="sageattention",
)

SAGE = _SageBackend(
    name="sage",
    description="INT8 QK^T, FP8/FP16 P.V (SageAttention numerics)",
    params=SAGE_PARAMS,
    implementations=(
        Implementation(
            name="sage_gluon",
            capabilities=GLUON_CAPS,
            run=run_sage_gluon,
            description="our Gluon kernel for sm90: warp-specialised, TMA K/V ring, INT8 wgmma QK^T, FP8 wgmma P.V",
            auto_gate=AutoGate(min_kv_len=GLUON_MIN_KV_LEN, min_compute_capability=(9, 0),
                               why="quantized attention measured slower than cuDNN SDPA below (H200, benchmarks/bench_gluon.py)"),
            params_reasons=gluon_params_reasons,
            spec_reasons=gluon_spec_reasons,
        ),
        Implementation(
            name="sage_triton",
            capabilities=TRITON_CAPS,
            run=run_sage_triton,
            description="our Triton kernel: INT8 QK^T, FP8 (sm89+) or FP16 P.V, FP32 accumulation",
            # benchmarks/results/h100: >= 1.02x cuDNN from 16k keys on, slower below; other GPUs unmeasured
            auto_gate=AutoGate(min_kv_len=16384, min_compute_capability=(9, 0),
                               why="measured slower than cuDNN SDPA elsewhere (H100, benchmarks/bench_sage.py)"),
        ),
        Implementation(
            name="sageattention",
            capabilities=PACKAGE_CAPS,
            run=run_sageattention_package,
            description="the sageattention package (INT8 QK^T, FP16 P.V in 1.x)",
            auto_eligible=False,  # 1.0.6 measured 0.6-0.9x cuDNN SDPA on an H100
        ),
        Implementation(
            name="sage_reference",
            capabilities=REFERENCE_CAPS,
            run=run_sage_reference,
            description="pure-torch reference numerics (CPU; for quality, not speed)",
            auto_eligible=False,
        ),
    ),
    accuracy=Accuracy(min_cosine=0.999, max_rel_l1=0.05),
    auto_priority=1,
    ladder=({"pv_precision": "fp16"}, {"pv_precision": "fp8"}),
    ladder_params=("pv_precision",),
    estimate_ms=estimate_sage_ms,
    describe_params=describe_sage_params,
)

# Bounds against fp32 exact attention on random inputs, per P.V precision (test data). Random
# inputs are the hard case for relative L1: near-uniform attention averages V towards 0. fp16: CI drew
# cos 0.99988 and 0.99990 in one run against the old 0.9999; 3,000 draws of the first one's shape (B1 Hq4 Hkv1
# Sq130 Sk77 D128) gave mean 0.999926, std 7e-6, 0.27% under 0.9999, worst 0.99989: the bound sits at 1 - 2e-4.
SAGE_ACCURACY = {"fp8": Accuracy(min_cosine=0.999, max_rel_l1=0.05), "fp16": Accuracy(min_cosine=0.9998, max_rel_l1=0.02)}
