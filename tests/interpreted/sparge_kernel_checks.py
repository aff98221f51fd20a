"""Sparge on Triton under TRITON_INTERPRET=1 (run by tests/test_triton_interpreter.py): the GPU
predictor selects exactly the reference's blocks, and the sparse kernel (INT8 QK, FP16 PV here)
matches the reference numerics."""
import os

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_triton_interpreter.py"

from helpers import assert_close_to  # noqa: E402
from smartcompile.kernels.config import SpargeConfig  # noqa: E402
from smartcompile.kernels.sparge_reference import (  # noqa: E402
    pool_and_similarity, predict_block_map, sparge_attention_reference,
)
from smartcompile.kernels.sparge_triton import (  # noqa: E402
    pool_and_similarity_triton, predict_block_map_triton, sparge_attention_triton,
)
from smartcompile.synthetic import random_qkv, structured_qkv  # noqa: E402


def _inputs(kind, hq=4, hkv=2):
    if kind == "structured":
        q, k, v = structured_qkv(1, hq, hkv, (2, 12, 16), 64, dtype=torch.float16)  # 384 tokens
    else:
        q, k, v = random_qkv(1, hq, hkv, 333, 64, dtype=torch.float16)
    return q, k, v


@pytest.mark.parametrize("kind", ["random", "structured"])
def test_pooling_matches_reference(kind, seed):
    q, k, _ = _inputs(kind)
    for x, block in ((q, 64), (k, 128)):
        pr, sr = pool_and_similarity(x, block)
        pt, st = pool_and_similarity_triton(x, block)
        torch.testing.assert_close(pt, pr, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(st, sr, atol=1e-5, rtol=1e-5)


SELECTIONS = [dict(sparsity_ratio=0.5), dict(topk=2), dict(cdf_threshold=0.9), dict(sparsity_ratio=0.75, sink=True)]


@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("sel", SELECTIONS, ids=[next(iter(s)) + str(next(iter(s.values()))) for s in SELECTIONS])
def test_gpu_predictor_selects_the_reference_blocks(kind, causal, sel, seed):
    q, k, _ = _inputs(kind)
    args = (q, k, None, causal, None, SpargeConfig(block_q=64, block_k=128, sim_threshold=0.3, **sel))
    ref = predict_block_map(*args)
    got = predict_block_map_triton(*args)
    assert torch.equal(got, ref), f"seed {seed}: {(got != ref).sum().item()} blocks differ"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("pv_threshold", [None, 6.0])
def test_sparse_kernel_matches_reference(causal, pv_threshold, seed):
    q, k, v = _inputs("structured")
    config = SpargeConfig(pv_precision="fp16", block_q=64, block_k=128, sim_threshold=0.3, sparsity_ratio=0.5,
                          pv_threshold=pv_threshold)
    out, bm = sparge_attention_triton(q, k, v, None, causal, None, config, return_block_map=True)
    ref, bm_ref = sparge_attention_reference(q, k, v, None, causal, None, config, return_block_map=True)
    assert torch.equal(bm, bm_ref)
    assert bm.float().mean() < 1.0  # something was skipped
    assert torch.isfinite(out).all()
    assert_close_to(out.float(), ref.float(), 0.99999, 2e-3, f"seed {seed}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("n_q, n_k, seq_k", [(6, 3, 333), (5, 9, 1100), (4, 4, 512), (3, 1, 64)])
def test_block_lists_kernel_matches_torch(causal, n_q, n_k, seq_k, seed):
    from smartcompile.kernels.sparge_triton import block_lists, block_lists_torch

    block_map = torch.rand(2, 3, n_q, n_k) < 0.5
    block_map[..., 0, :] = False  # an empty row
    block_map[..., 1, :] = True  # a full row
    got, ref = block_lists(block_map, seq_k, 64, 128, causal), block_lists_torch(block_map, seq_k, 64, 128, causal)
    for name in ("lut", "count", "count_full"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), f"{name}, seed {seed}"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_sparse_lse_matches_reference(causal, seed):
    q, k, v = _inputs("structured")
    args = (q, k, v, None, causal, None, SpargeConfig(pv_precision="fp16", sim_threshold=-1.0, sparsity_ratio=0.5))
    out, lse, bm = sparge_attention_triton(*args, return_lse=True, return_block_map=True)
    ref, lse_ref, bm_ref = sparge_attention_reference(*args, return_lse=True, return_block_map=True)
    assert torch.equal(bm, bm_ref), f"seed {seed}"
    assert torch.isfinite(lse).all(), f"seed {seed}"
    torch.testing.assert_close(lse, lse_ref, atol=1e-3, rtol=1e-4, msg=f"seed {seed}")


def test_kernels_reject_a_mask():
    q, k, v = _inputs("random")
    config = SpargeConfig(sparsity_ratio=0.5)
    keep = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool)
    with pytest.raises(ValueError, match="sparge_attention_triton: mask must be None"):
        sparge_attention_triton(q, k, v, keep, False, None, config)
    with pytest.raises(ValueError, match="predict_block_map_triton: mask must be None"):
        predict_block_map_triton(q, k, keep, False, None, config)
