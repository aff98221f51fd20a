"""Masks that carry values (an additive bias given as a mask type) and the dense-mask entry points of the
quantized kernels: a bias is never reduced to its keep-mask, a broadcast mask is classified once, and Sparge's
P.V skipping is refused where the dense-mask tile order would change which blocks it skips. CPU only: every
check here runs before a kernel launch, or on the torch references."""
import pytest
import torch

from smartcompile.backends.sparge import SPARGE
from smartcompile.kernels.config import SageConfig, SpargeConfig
from smartcompile.kernels.mask_blocks import dense_keep
from smartcompile.kernels.sage_reference import sage_attention_reference
from smartcompile.kernels.sparge_reference import sparge_attention_reference
from smartcompile.masks import And, Causal, DenseAdditive, DenseBool, Shape, SlidingWindow
from smartcompile.spec import AttentionSpec


def _bias(b, h, sq, sk):
    bias = torch.randn(b, h, sq, sk) * 4
    bias[..., 3] = float("-inf")  # a dropped key too
    return bias


def test_a_mask_type_with_values_says_so_and_keeps_them():
    bias = _bias(1, 2, 5, 7)
    shape = Shape(1, 2, 5, 7)
    assert DenseAdditive(bias).needs_values and not DenseBool(bias > 0).needs_values
    assert And((Causal(), DenseAdditive(bias))).needs_values and not And((Causal(), SlidingWindow(2, 0))).needs_values
    assert torch.equal(DenseAdditive(bias).dense_bias(shape), bias)
    both = And((Causal(), DenseAdditive(bias))).dense_bias(shape)
    assert torch.equal(both, bias.masked_fill(~torch.ones(5, 7, dtype=torch.bool).tril(), float("-inf")))
    keep = SlidingWindow(2, 0).dense(shape)
    assert torch.equal(SlidingWindow(2, 0).dense_bias(shape).isneginf(), ~keep)


ADDITIVE_TYPES = [DenseAdditive(torch.zeros(1, 1, 8, 8)), And((Causal(), DenseAdditive(torch.zeros(8, 8))))]


@pytest.mark.parametrize("mask", ADDITIVE_TYPES, ids=["additive", "causal-additive"])
def test_the_kernels_refuse_a_mask_type_with_values(mask):
    with pytest.raises(ValueError, match="adds values to the scores"):
        dense_keep(mask, 1, 2, 8, 8, "cpu", "sage_attention_triton")


@pytest.mark.parametrize("causal", [False, True])
def test_references_add_the_bias_of_a_mask_type(causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 64) for n in (40, 70, 70))
    bias = _bias(1, 2, 40, 70)
    sage = SageConfig(pv_precision="fp16")
    as_type = sage_attention_reference(q, k, v, DenseAdditive(bias), causal, None, sage)
    assert torch.equal(as_type, sage_attention_reference(q, k, v, bias, causal, None, sage))
    assert not torch.allclose(as_type, sage_attention_reference(q, k, v, bias.isfinite(), causal, None, sage),
                              atol=1e-2)  # the values matter: the keep-mask alone gives another output
    sparge = SpargeConfig(pv_precision="fp16", sparsity_ratio=0.5, sim_threshold=-1.0, block_q=16, block_k=16)
    got, bm = sparge_attention_reference(q, k, v, DenseAdditive(bias), causal, None, sparge, return_block_map=True)
    want, bm_want = sparge_attention_reference(q, k, v, bias, causal, None, sparge, return_block_map=True)
    assert torch.equal(bm, bm_want) and torch.equal(got, want)


def test_an_expanded_mask_is_classified_once():
    window = dense_keep(SlidingWindow(16, 0), 4, 32, 256, 256, "cpu", "t")
    assert window.keep.shape == (1, 1, 256, 256)
    per_batch = torch.rand(4, 1, 256, 256) < 0.5
    d = dense_keep(per_batch.expand(4, 32, 256, 256), 4, 32, 256, 256, "cpu", "t")
    assert d.keep.shape == (4, 1, 256, 256) and torch.equal(d.keep, per_batch)
    own = torch.rand(4, 32, 256, 256) < 0.5  # every (batch, head) its own: nothing to collapse
    assert dense_keep(own, 4, 32, 256, 256, "cpu", "t").keep.shape == (4, 32, 256, 256)


def test_sparge_refuses_pv_skipping_with_a_dense_mask():
    from smartcompile.kernels.sparge_triton import sparge_attention_triton

    q, k, v = (torch.randn(1, 2, 64, 64) for _ in range(3))
    config = SpargeConfig(sparsity_ratio=0.5, pv_threshold=8.0)
    with pytest.raises(ValueError, match="pv_threshold=8.0 with a dense mask"):
        sparge_attention_triton(q, k, v, SlidingWindow(16, 0), False, None, config)
    impl = next(i for i in SPARGE.implementations if i.name == "sparge_triton")
    spec = AttentionSpec(1, 8, 8, 4096, 4096, 128, 128, torch.bfloat16, "cuda", mask_kind="bool")
    params = SPARGE.resolve_params({"pv_threshold": 8.0}, spec)
    assert any("pv_threshold 8.0 with a dense bool mask" in r for r in impl.params_reasons(params, spec))
    assert impl.params_reasons(SPARGE.resolve_params({}, spec), spec) == []
    causal = AttentionSpec(1, 8, 8, 4096, 4096, 128, 128, torch.bfloat16, "cuda", mask_kind="causal")
    assert impl.params_reasons(params, causal) == []
