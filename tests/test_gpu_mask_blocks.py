"""GPU (CUDA) tests of dense masks at tile granularity (kernels/mask_blocks.py): sliding windows, documents,
prefix-LM, random and broadcast bool masks and rows with no key through the Sage and Sparge Triton kernels,
against the reference numerics on the same device and fp32 attention. Run on the GPU before resolving."""
import pytest
import torch

from helpers import assert_close_to
from smartcompile.backends.sage import SAGE_ACCURACY
from smartcompile.kernels.config import SageConfig, SpargeConfig
from smartcompile.kernels.exact_reference import attention_reference
from smartcompile.masks import Causal, Document, PrefixLM, SlidingWindow

pytestmark = pytest.mark.gpu


def _documents(b, s, n_docs, device):
    cuts = torch.sort(torch.randint(1, s, (b, n_docs - 1), device=device), dim=-1).values
    seg = (torch.arange(s, device=device)[None, :, None] >= cuts[:, None, :]).sum(dim=-1)
    return Document(seg, seg)


def _masks(b, hq, sq, sk, device):
    yield "sliding", SlidingWindow(300, 0)
    yield "sliding-both", SlidingWindow(129, 200)
    if sq == sk:
        yield "documents", _documents(b, sq, 4, device)
    yield "prefix-lm", PrefixLM(333)
    yield "random", torch.rand(b, hq, sq, sk, device=device) < 0.5
    yield "broadcast", torch.rand(1, 1, sq, sk, device=device) < 0.9
    empty = torch.rand(b, 1, sq, sk, device=device) < 0.8
    empty[:, :, 70:200] = False
    yield "empty-rows", empty


SHAPES = [  # B, Hq, Hkv, Sq, Sk, D
    (2, 8, 2, 1025, 1025, 128),
    (1, 4, 4, 777, 1500, 64),
    (1, 4, 2, 2048, 2048, 96),
]


def _keep(mask, b, hq, sq, sk, causal, device):
    from smartcompile.kernels.mask_blocks import dense_keep

    keep = dense_keep(mask, b, hq, sq, sk, device, "test").keep.expand(b, hq, sq, sk)
    return keep & torch.ones(sq, sk, device=device).tril().bool() if causal else keep


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("pv", ["fp8", "fp16"])
def test_sage_kernel_dense_masks(shape, causal, pv, seed):
    from smartcompile.kernels.sage_reference import sage_attention_reference
    from smartcompile.kernels.sage_triton import sage_attention_triton

    b, hq, hkv, sq, sk, d = shape
    for name, mask in _masks(b, hq, sq, sk, "cuda"):
        q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16) for h, s in ((hq, sq), (hkv, sk), (hkv, sk)))
        args = (q, k, v, mask, causal, None, SageConfig(pv_precision=pv))
        out, lse = sage_attention_triton(*args, return_lse=True)
        ref, lse_ref = sage_attention_reference(*args, return_lse=True)
        keep = _keep(mask, b, hq, sq, sk, causal, "cuda")
        live = keep.any(dim=-1)
        what = f"{name} causal={causal} {pv} seed {seed}"
        assert torch.isfinite(out).all() and (out[~live] == 0).all() and torch.isneginf(lse[~live]).all(), what
        assert torch.equal(torch.isneginf(lse_ref), ~live), what
        assert_close_to(out[live].float(), ref[live].float(), 0.9995, 0.03, f"vs reference, {what}")
        exact = attention_reference(q.float(), k.float(), v.float(), keep, False)
        bounds = SAGE_ACCURACY[pv]
        assert_close_to(out[live].float(), exact[live], bounds.min_cosine, bounds.max_rel_l1, f"vs fp32, {what}")


@pytest.mark.parametrize("shape", SHAPES[:2], ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("setting", [dict(sparsity_ratio=0.5)], ids=["s50"])  # pv_threshold: refused with a dense mask
def test_sparge_kernel_dense_masks(shape, causal, setting, seed):
    from smartcompile.kernels.sparge_reference import sparge_attention_reference
    from smartcompile.kernels.sparge_triton import sparge_attention_triton

    b, hq, hkv, sq, sk, d = shape
    for name, mask in _masks(b, hq, sq, sk, "cuda"):
        q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16) for h, s in ((hq, sq), (hkv, sk), (hkv, sk)))
        args = (q, k, v, mask, causal, None, SpargeConfig(sim_threshold=-1.0, **setting))
        out, bm = sparge_attention_triton(*args, return_block_map=True)
        ref, bm_ref = sparge_attention_reference(*args, return_block_map=True)
        what = f"{name} causal={causal} seed {seed}"
        assert torch.equal(bm, bm_ref), f"{what}: GPU and reference predictors disagree"
        live = _keep(mask, b, hq, sq, sk, causal, "cuda").any(dim=-1)
        assert torch.isfinite(out).all() and (out[~live] == 0).all(), what
        assert_close_to(out[live].float(), ref[live].float(), 0.9995, 0.03, f"vs reference, {what}")


def test_causal_structure_is_the_causal_kernel(seed):
    from smartcompile.kernels.sage_triton import sage_attention_triton

    q, k, v = (torch.randn(1, 4, 1024, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    a = sage_attention_triton(q, k, v, Causal(), False, None, SageConfig())
    assert torch.equal(a, sage_attention_triton(q, k, v, None, True, None, SageConfig()))
    dense = sage_attention_triton(q, k, v, torch.ones(1024, 1024, device="cuda").tril().bool(), False, None, SageConfig())
    assert_close_to(dense.float(), a.float(), 0.99999, 1e-3, f"dense causal vs is_causal, seed {seed}")
