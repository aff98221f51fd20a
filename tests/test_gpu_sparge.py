"""GPU (CUDA) tests of the Sparge kernels and the sparge backend. Run on an H100 before resolving."""
import pytest
import torch

from helpers import assert_close_to, spec_id
from smartcompile.backends.sage import SAGE_ACCURACY
from smartcompile.kernels.config import SpargeConfig
from smartcompile.kernels.exact_reference import attention_reference
from smartcompile.synthetic import random_qkv, structured_qkv

pytestmark = pytest.mark.gpu

SHAPES = [  # B, Hq, Hkv, N, D, causal
    (1, 4, 4, 1025, 64, False),
    (1, 8, 2, 4097, 128, False),
    (2, 4, 2, 4097, 64, True),
    (1, 4, 4, 2048, 96, True),
]
SETTINGS = [dict(sparsity_ratio=0.0), dict(sparsity_ratio=0.5), dict(sparsity_ratio=0.75, sink=True),
            dict(cdf_threshold=0.9), dict(sparsity_ratio=0.5, pv_threshold=8.0)]


@pytest.mark.parametrize("shape", SHAPES, ids=[spec_id(s[0], s[1], s[2], s[3], s[3], s[4], extra="causal" if s[5] else "") for s in SHAPES])
@pytest.mark.parametrize("setting", SETTINGS, ids=["dense", "s50", "s75sink", "cdf90", "s50pv8"])
@pytest.mark.parametrize("pv", ["fp8", "fp16"])
def test_sparse_kernel_vs_reference_and_dense(shape, setting, pv, seed):
    from smartcompile.kernels.sparge_reference import sparge_attention_reference
    from smartcompile.kernels.sparge_triton import sparge_attention_triton

    b, hq, hkv, n, d, causal = shape
    q, k, v = random_qkv(b, hq, hkv, n, d, device="cuda", dtype=torch.bfloat16)
    args = (q, k, v, None, causal, None, SpargeConfig(pv_precision=pv, sim_threshold=-1.0, **setting))
    out, bm = sparge_attention_triton(*args, return_block_map=True)
    assert torch.isfinite(out).all()
    ref, bm_ref = sparge_attention_reference(*args, return_block_map=True)
    assert torch.equal(bm, bm_ref), f"seed {seed}: GPU and reference predictors disagree"
    bounds = SAGE_ACCURACY[pv]
    assert_close_to(out.float(), ref.float(), 0.9995, 0.03, f"vs reference numerics, seed {seed}")
    if setting.get("sparsity_ratio") == 0.0:
        exact = attention_reference(q.float(), k.float(), v.float(), None, causal)
        assert_close_to(out.float(), exact, bounds.min_cosine, bounds.max_rel_l1, f"density 1 vs fp32, seed {seed}")


def test_structured_inputs_stay_accurate_at_half_density(seed):
    from smartcompile.kernels.sparge_triton import sparge_attention_triton

    q, k, v = structured_qkv(1, 8, 8, (4, 32, 32), 128, device="cuda", dtype=torch.bfloat16)
    config = SpargeConfig(sparsity_ratio=0.5, sim_threshold=-1.0)
    out, bm = sparge_attention_triton(q, k, v, None, False, None, config, return_block_map=True)
    assert abs(bm.float().mean().item() - 0.5) < 0.02
    exact = attention_reference(q.float(), k.float(), v.float())
    assert_close_to(out.float(), exact, 0.998, 0.06, f"seed {seed}")


def test_sparge_policy_runs_our_kernel_for_every_capable_site():
    import smartcompile
    from smartcompile.demo.dit import DiTConfig, build_demo

    cfg = DiTConfig(frames=4, height=32, width=32, dim=512, heads=8, depth=2, text_len=64, text_dim=256)
    model, inputs = build_demo(cfg, device="cuda", dtype=torch.bfloat16)
    policy = {"default": {"backend": "sparge", "sparsity_ratio": 0.5}}
    plan = smartcompile.explain(model, *inputs, policy=policy)
    assert all(s.implementation == "sparge_triton" for s in plan.sites), plan
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(model, backend="smartattn", options={"policy": policy})(*inputs)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("causal", [False, True])
def test_block_lists_kernel_matches_torch_on_gpu(causal, seed):
    from smartcompile.kernels.sparge_triton import block_lists, block_lists_torch

    block_map = torch.rand(2, 24, 256, 128, device="cuda") < 0.3
    got, ref = block_lists(block_map, 16300, 64, 128, causal), block_lists_torch(block_map, 16300, 64, 128, causal)
    for name in ("lut", "count", "count_full"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), f"{name}, seed {seed}"


@pytest.mark.parametrize("causal", [False, True])
def test_sparse_lse_matches_reference_on_gpu(causal, seed):
    from smartcompile.kernels.sparge_reference import sparge_attention_reference
    from smartcompile.kernels.sparge_triton import sparge_attention_triton

    q, k, v = random_qkv(1, 8, 2, 4097, 128, device="cuda", dtype=torch.bfloat16)
    args = (q, k, v, None, causal, None, SpargeConfig(pv_precision="fp8", sim_threshold=-1.0, sparsity_ratio=0.5))
    out, lse = sparge_attention_triton(*args, return_lse=True)
    ref, lse_ref = sparge_attention_reference(*args, return_lse=True)
    assert torch.isfinite(lse).all() and torch.isfinite(out).all()
    torch.testing.assert_close(lse, lse_ref, atol=2e-2, rtol=1e-3, msg=f"seed {seed}")


@pytest.mark.parametrize("n_k", [7, 130, 1500])  # rows sorted in 16, 256 and 2048 lanes (8 warps)
@pytest.mark.parametrize("kind", ["random", "ties", "underflow", "nan"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sel", [dict(sparsity_ratio=0.5), dict(sparsity_ratio=0.8), dict(topk=5, sink=True),
                                 dict(cdf_threshold=0.9)], ids=["s50", "s80", "top5sink", "cdf90"])
def test_fused_selection_is_the_reference_on_gpu(n_k, kind, causal, sel, seed):
    from smartcompile.kernels.sparge_reference import select_from_pooled
    from smartcompile.kernels.sparge_select import select_block_lists
    from smartcompile.kernels.sparge_triton import block_lists_torch

    config = SpargeConfig(block_q=64, block_k=128, sim_threshold=0.1, **sel)
    b, hq, hkv, d, sk = 2, 8, 2, 64, n_k * 128 - 37
    sq = min(sk + 100, 4000)  # n_k 7: causal rows past the last key; wider: sq < sk
    n_q = -(-sq // 64)
    pq, pk = torch.randn(b, hq, n_q, d, device="cuda"), torch.randn(b, hkv, n_k, d, device="cuda")
    if kind == "ties":
        pk[:, :, 1::2] = pk[:, :, 0:-1:2][:, :, : pk[:, :, 1::2].shape[2]]
        pq[:, :, 1::3] = 0.0
    elif kind == "underflow":
        pq = pq * 40.0
    elif kind == "nan":
        pq[:, :, 1] = float("nan")
    pooled = (pq, torch.rand(b, hq, n_q, device="cuda"), pk, torch.rand(b, hkv, n_k, device="cuda"))
    q, k = torch.empty(b, hq, sq, d, device="cuda"), torch.empty(b, hkv, sk, d, device="cuda")
    ref = select_from_pooled(pooled, q, k, None, causal, config)
    got, lists = select_block_lists(pooled, q, k, None, causal, config)
    assert torch.equal(got, ref), f"seed {seed}: {(got != ref).sum().item()} of {ref.numel()} blocks differ"
    want = block_lists_torch(ref, sk, 64, 128, causal)
    for name in ("lut", "count", "count_full"):
        assert torch.equal(getattr(lists, name), getattr(want, name)), f"{name}, seed {seed}"
