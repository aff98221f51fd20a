"""torch.ops.smartattn.attention: opcheck, exact gradients, no mutation of inputs."""
import pytest
import torch
import torch.nn.functional as F

from smartcompile.backends import select
from smartcompile.backends.op import _decode_params, encode_params, register_ops
from smartcompile.spec import spec_from_tensors


@pytest.fixture(scope="module", autouse=True)
def _ops():
    register_ops()


def _inputs(mask_kind):
    q = torch.randn(2, 4, 17, 16, requires_grad=True)
    k = torch.randn(2, 2, 23, 16, requires_grad=True)
    v = torch.randn(2, 2, 23, 16, requires_grad=True)
    mask = None
    if mask_kind == "additive":
        mask = torch.randn(1, 1, 17, 23, requires_grad=True)
    elif mask_kind == "bool":
        mask = torch.rand(2, 1, 17, 23) > 0.2
        mask[..., 0] = True
    return q, k, v, mask


@pytest.mark.parametrize("backend", ["flash", "sage", "sparge"])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive", "causal"])
def test_opcheck(backend, mask_kind):
    q, k, v, mask = _inputs(mask_kind)
    sel = select(spec_from_tensors(q, k, v, mask, mask_kind == "causal"), backend, {})
    args = (q, k, v, mask, mask_kind == "causal", 0.25, sel.backend, sel.implementation, encode_params(sel.params), "layer")
    torch.library.opcheck(torch.ops.smartattn.attention.default, args)


@pytest.mark.parametrize("mask_kind", ["none", "additive", "causal"])
def test_gradients_are_exact_attention_gradients(mask_kind):
    q, k, v, mask = _inputs(mask_kind)
    causal = mask_kind == "causal"
    out = torch.ops.smartattn.attention(q, k, v, mask, causal, 0.25, "sage", "sage_reference",
                                        encode_params(select(spec_from_tensors(q, k, v), "sage").params), "x")
    g = torch.randn_like(out)
    inputs = (q, k, v) + ((mask,) if mask is not None else ())
    got = torch.autograd.grad(out, inputs, g)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=0.25, enable_gqa=True)
    want = torch.autograd.grad(ref, inputs, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_inputs_are_not_mutated():
    q, k, v, mask = _inputs("additive")
    before = [t.detach().clone() for t in (q, k, v, mask)]
    for backend, impl in (("flash", "sdpa"), ("sage", "sage_reference"), ("sparge", "sparge_reference")):
        sel = select(spec_from_tensors(q, k, v, mask), backend)
        torch.ops.smartattn.attention(q, k, v, mask, False, 0.25, backend, impl, encode_params(sel.params), "x")
    for a, b in zip((q, k, v, mask), before):
        assert torch.equal(a.detach(), b)


def test_output_is_contiguous_for_strided_inputs():
    base = torch.randn(2, 17, 4, 16)
    q = base.transpose(1, 2)  # (B, H, S, D) view with NHD strides
    out = torch.ops.smartattn.attention(q, q, q, None, False, 0.25, "flash", "sdpa", "{}", "x")
    assert out.is_contiguous()
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q, scale=0.25))


def test_decoded_params_are_shared_read_only():
    params = _decode_params(encode_params({"pv_precision": "fp8"}))
    assert params is _decode_params(encode_params({"pv_precision": "fp8"}))  # cached: one per literal
    with pytest.raises(TypeError):
        params["pv_precision"] = "fp16"  # so no call can change what the next one reads
