"""Backend registry: capabilities as data, selection along the fallback chain, auto."""
import pytest
import torch

from smartcompile.backends import select
from smartcompile.backends.registry import BACKENDS, get_implementation
from smartcompile.errors import UnknownNameError, UnsupportedError
from smartcompile.spec import AttentionSpec


def spec(**over):
    base = dict(batch=1, q_heads=8, kv_heads=2, q_len=97, kv_len=130, head_dim=64, v_head_dim=64,
                dtype=torch.float32, device="cpu")
    base.update(over)
    return AttentionSpec(**base)


def test_every_backend_selects_on_cpu():
    for name in ("flash", "sage", "sparge"):
        sel = select(spec(), name, {})
        assert sel.backend == name and sel.steps[-1] == f"-> {name}/{sel.implementation}"


def test_auto_never_picks_a_reference_implementation():
    sel = select(spec(), "auto")
    assert (sel.backend, sel.implementation) == ("flash", "sdpa")
    assert any("reference numerics" in s for s in sel.steps)


def test_fallback_chain_records_reasons_and_drops_params():
    # head_dim 512 is beyond the Sage/Sparge references (256): sparge -> sage -> flash
    sel = select(spec(head_dim=512, v_head_dim=512), "sparge", {"sparsity_ratio": 0.5, "pv_precision": "fp16"})
    assert sel.backend == "flash"
    text = " ".join(sel.steps)
    assert "sparge/sparge_reference: head_dim 512" in text and "sage/sage_reference: head_dim 512" in text
    assert "dropped" in text and sel.params == {}


def test_sparge_to_sage_keeps_shared_params():
    sel = select(spec(head_dim=512, v_head_dim=512), "sparge", {"pv_precision": "fp16"})
    assert sel.backend == "flash"  # sage can't either
    sel = select(spec(), "sage", {"pv_precision": "fp16"})
    assert sel.params["pv_precision"] == "fp16"


def test_defaults_fill_and_exclusive_groups():
    sel = select(spec(), "sparge", {"topk": 3})
    assert sel.params["topk"] == 3 and sel.params["cdf_threshold"] is None
    sel = select(spec(), "sparge", {})
    assert sel.params["cdf_threshold"] == 0.98
    assert sel.params["pv_precision"] == "fp8"  # auto on CPU models the GPU (FP8) numerics


def test_capability_reasons_are_specific():
    flash_attn = get_implementation("flash", "flash_attn")
    reasons = flash_attn.not_supported_reasons(spec(mask_kind="additive", dtype=torch.float32))
    text = "; ".join(reasons)
    assert "needs cuda, not cpu" in text
    assert "dtype float32 not in ['bfloat16', 'float16']" in text
    assert "mask kind 'additive'" in text
    assert "needs package 'flash_attn'" in text or "flash_attn" in text


def test_flash_attn_rejects_causal_with_different_lengths():
    caps = get_implementation("flash", "flash_attn").capabilities
    reasons = caps.not_supported_reasons(spec(mask_kind="causal", causal_alignment="top_left", device="cuda", dtype=torch.float16))
    assert any("alignment differs" in r for r in reasons)


def test_unknown_backend_is_an_error():
    with pytest.raises(UnknownNameError, match="'warp' is not one of"):
        select(spec(), "warp")


def test_accuracy_bounds_are_data():
    assert BACKENDS["sage"].accuracy.min_cosine >= 0.999
    assert BACKENDS["flash"].accuracy.min_cosine > BACKENDS["sage"].accuracy.min_cosine


def test_auto_gate_reasons_are_visible():
    from smartcompile.backends.base import AutoGate

    gate = AutoGate(min_kv_len=16384, why="slower below")
    assert gate.reasons(spec(kv_len=4096)) == ["auto uses it only for kv_len >= 16384 (kv_len 4096): slower below"]
    assert gate.reasons(spec(kv_len=16384)) == []



def test_params_the_implementation_cannot_honour_are_a_reason():
    impl = get_implementation("sparge", "spas_sage_attn")
    cuda_spec = spec(device="cuda", dtype=torch.float16)
    reasons = impl.not_supported_reasons(cuda_spec, {"cdf_threshold": None, "topk": 3})
    assert "selects by cdf_threshold only (topk / sparsity_ratio given)" in reasons
    assert "selects by cdf_threshold only" not in " ".join(impl.not_supported_reasons(cuda_spec, {"cdf_threshold": 0.9}))


def test_sparge_gluon_is_offered_only_where_it_was_measured_faster(monkeypatch):
    """sparge_gluon: sm90 Gluon, D128 from 16k keys, rules with block_size 128, no pv_threshold; each refusal
    names its reason (the implementation's own checks, with the device check stubbed: no GPU here)."""
    from smartcompile.backends import sparge
    from smartcompile.kernels import sage_gluon
    from smartcompile.spec import AttentionSpec

    def spec(n):
        return AttentionSpec(1, 24, 24, n, n, 128, 128, torch.bfloat16, "cuda")

    monkeypatch.setattr(sage_gluon, "gluon_unavailable_reason", lambda: None)
    rule = sparge.SPARGE.resolve_params({"sparsity_ratio": 0.5, "block_size": 128}, spec(16384))
    assert sparge.gluon_params_reasons(rule, spec(16384)) == [] and sparge.gluon_spec_reasons(spec(16384)) == []
    assert "kv_len 4096" in sparge.gluon_spec_reasons(spec(4096))[0]
    default = sparge.SPARGE.resolve_params({"sparsity_ratio": 0.5}, spec(16384))
    assert "block_q 64" in sparge.gluon_params_reasons(default, spec(16384))[0]
    skipping = sparge.SPARGE.resolve_params({"sparsity_ratio": 0.5, "block_size": 128, "pv_threshold": 8.0},
                                            spec(16384))
    assert "pv_threshold" in sparge.gluon_params_reasons(skipping, spec(16384))[0]
    monkeypatch.setattr(sage_gluon, "gluon_unavailable_reason", lambda: "no CUDA device")
    assert sparge.gluon_spec_reasons(spec(16384)) == ["no CUDA device"]
    assert sparge.SPARGE.implementations[0].name == "sparge_gluon"  # tried before sparge_triton


def test_selection_works_without_triton():
    """Triton is optional (the `gpu` extra): choosing a backend must not import it. A fresh interpreter with
    triton blocked selects every backend for a CPU spec and a CUDA spec (the CUDA one refused, with reasons)."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["triton"] = None  # import triton raises ImportError
import torch
from smartcompile.backends.registry import select
from smartcompile.spec import AttentionSpec
for device in ("cpu", "cuda"):
    spec = AttentionSpec(1, 4, 4, 16384, 16384, 128, 128, torch.bfloat16, device)
    for backend, params in (("sage", {}), ("sparge", {"sparsity_ratio": 0.5}),
                            ("sparge", {"sparsity_ratio": 0.5, "block_size": 128})):
        sel = select(spec, backend, params, "static")
        print(device, backend, sel.implementation)
assert "triton" not in [m for m in sys.modules if sys.modules[m] is not None]
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cpu sparge sparge_reference" in done.stdout, done.stdout
