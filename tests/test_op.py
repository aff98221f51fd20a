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


@pytest.mark.parametrize("strided", [True, False])
@pytest.mark.parametrize("backend,impl", [("flash", "sdpa"), ("sage", "sage_reference"), ("sparge", "sparge_reference")])
def test_output_is_token_major_as_the_fake_promises(strided, backend, impl):
    # the layout SDPA and our kernels write, so the graph's transpose(1, 2).reshape after the op is a view;
    # a compiled graph trusts the fake's strides, so the real output must have exactly them
    from torch._subclasses.fake_tensor import FakeTensorMode

    base = torch.randn(2, 17, 4, 16)
    q = base.transpose(1, 2) if strided else base.transpose(1, 2).contiguous()
    sel = select(spec_from_tensors(q, q, q, None), backend)
    args = (None, False, 0.25, backend, impl, encode_params(sel.params), "x")
    out = torch.ops.smartattn.attention(q, q, q, *args)
    with FakeTensorMode() as mode:
        fq = mode.from_tensor(q)
        fake = torch.ops.smartattn.attention(fq, fq, fq, *args)
    assert out.stride() == fake.stride() == (17 * 4 * 16, 16, 4 * 16, 1)
    assert out.transpose(1, 2).is_contiguous()
    if backend == "flash":
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, q, q, scale=0.25))


def test_token_major_of_size_one_dims_is_exact():
    from smartcompile.kernels.output_layout import as_token_major, is_token_major

    x = torch.randn(1, 1, 5, 8)  # contiguous, but not token-major by its strides
    y = as_token_major(x)
    assert is_token_major(y) and y.stride() == (40, 8, 8, 1) and torch.equal(x, y)
    assert as_token_major(y) is y


def test_decoded_params_are_shared_read_only():
    params = _decode_params(encode_params({"pv_precision": "fp8"}))
    assert params is _decode_params(encode_params({"pv_precision": "fp8"}))  # cached: one per literal
    with pytest.raises(TypeError):
        params["pv_precision"] = "fp16"  # so no call can change what the next one reads


def test_compiles_are_keyed_on_our_ops_contract():
    # a cached graph compiled against an older fake (other output strides) must not be reused
    from smartcompile.backends.op import OP_CONTRACT
    from smartcompile.compiler.backend import _cache_key_tag

    with torch.compiler.config.patch(cache_key_tag=""):  # TORCH_COMPILE_CACHE_KEY_TAG may be set
        assert _cache_key_tag() == OP_CONTRACT
    with torch.compiler.config.patch(cache_key_tag="user"):
        assert _cache_key_tag() == f"user|{OP_CONTRACT}"
