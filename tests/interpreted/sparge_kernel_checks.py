"""Sparge on Triton under TRITON_INTERPRET=1 (run by tests/test_triton_interpreter.py): the GPU
predictor selects exactly the reference's blocks, and the sparse kernel (INT8 QK, FP16 PV here)
matches the reference numerics."""
import os

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_triton_interpreter.py"

from helpers import assert_close_to  # noqa: E402
from padding_cases import empty_rows, holes_keep, padding_mask  # noqa: E402
from smartcompile.kernels.config import SpargeConfig  # noqa: E402
from smartcompile.kernels.sparge_reference import (  # noqa: E402
    pool_and_similarity, predict_block_map, sparge_attention_reference,
)
from smartcompile.kernels.sparge_triton import (  # noqa: E402
    block_lists, block_lists_torch, full_block_run, pool_and_similarity_triton, predict_block_map_triton,
    sparge_attention_triton,
)
from smartcompile.masks import And, Causal, KeyPadding  # noqa: E402
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
@pytest.mark.parametrize("padded", [False, True], ids=["", "padded"])
def test_block_lists_kernel_matches_torch(causal, n_q, n_k, seq_k, padded, seed):
    block_map = torch.rand(2, 3, n_q, n_k) < 0.5
    block_map[..., 0, :] = False  # an empty row
    block_map[..., 1, :] = True  # a full row
    # key padding: [first, end) runs of fully kept K blocks, one empty
    run = torch.tensor([[1, n_k], [n_k, n_k]], dtype=torch.int32) if padded else None
    got = block_lists(block_map, seq_k, 64, 128, causal, run)
    ref = block_lists_torch(block_map, seq_k, 64, 128, causal, run)
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


def test_kernels_reject_an_additive_mask():
    q, k, v = _inputs("random")
    config = SpargeConfig(sparsity_ratio=0.5)
    bias = torch.zeros(q.shape[2], k.shape[2], dtype=torch.float16)
    for fn, args in ((sparge_attention_triton, (q, k, v)), (predict_block_map_triton, (q, k))):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: a dense mask must be a bool tensor .*got \(333, 333\) "
                                             r"torch.float16"):
            fn(*args, bias, False, None, config)


# ---- key padding: one launch for a padded batch, the reference's blocks -----------------------------
def test_full_block_run():
    keep = holes_keep(300)  # blocks of 32: rows 0, 2 and 3 have none full, row 1 from 160 to the tail block
    keep[3] = torch.arange(300) >= 40  # left padding: blocks 2.. up to the partial tail block 9
    assert full_block_run(keep, 32).tolist() == [[10, 10], [5, 9], [10, 10], [2, 9]]


# (kind, causal, selection, block_k): each padding (padding_cases) and the graph's flags, causal and not, each
# selection; blocks of 32 so that rows keep head, fully kept and tail blocks of a span
PAD_RUNS = [
    ("right", False, dict(topk=2), 32), ("left", True, dict(sparsity_ratio=0.5), 32),
    ("both", False, dict(cdf_threshold=0.5, sink=True), 32), ("both", True, dict(topk=1, sink=True), 32),
    ("lengths", True, dict(cdf_threshold=0.5), 32), ("holes", False, dict(sparsity_ratio=0.5), 32),
    ("holes", True, dict(topk=2, pv_threshold=6.0), 32), ("holes_int64", True, dict(sparsity_ratio=0.5), 64),
    ("flags", False, dict(topk=2), 32), ("flags_one_row", True, dict(sparsity_ratio=0.5, sink=True), 32),
]


def _padded_case(kind, sk):
    """(mask as the kernel takes it, (B, Sk) keep flags)."""
    if kind.startswith("holes"):
        keep = holes_keep(sk)
        return KeyPadding(keep.long() if kind == "holes_int64" else keep), keep
    if kind.startswith("flags"):  # the compiled graph's form: bool (B|1, 1, 1, Sk)
        keep = holes_keep(sk)[:1] if kind == "flags_one_row" else padding_mask("left", sk)[1]
        return keep[:, None, None, :], keep
    return padding_mask(kind, sk)


@pytest.mark.parametrize("kind, causal, sel, block_k", PAD_RUNS,
                         ids=[f"{r[0]}-{'causal' if r[1] else 'full'}-{'-'.join(map(str, r[2].values()))}-bk{r[3]}"
                              for r in PAD_RUNS])
def test_sparse_kernel_key_padding_matches_reference(kind, causal, sel, block_k, seed):
    hq, hkv, sq, sk, d = 2, 1, 97, 131, 64  # GQA, odd lengths
    mask, keep = _padded_case(kind, sk)
    b = 4 if kind == "flags_one_row" else keep.shape[0]
    q, k, v = (torch.randn(b, h, s, d, dtype=torch.float16) for h, s in ((hq, sq), (hkv, sk), (hkv, sk)))
    k = k + 4.0
    config = SpargeConfig(pv_precision="fp16", block_q=32, block_k=block_k, sim_threshold=-1.0, **sel)
    out, lse, bm = sparge_attention_triton(q, k, v, mask, causal, None, config, return_lse=True, return_block_map=True)
    dense = keep.expand(b, sk)[:, None, None, :].expand(b, hq, sq, sk)  # the equivalent dense mask
    ref, lse_ref, bm_ref = sparge_attention_reference(q, k, v, dense, causal, None, config, return_lse=True,
                                                      return_block_map=True)
    what = f"{kind} causal={causal} {sel} seed {seed}"
    assert torch.equal(bm, bm_ref), f"{(bm != bm_ref).sum().item()} blocks differ: {what}"
    assert bm.float().mean() < 0.8, what  # something was skipped
    empty = empty_rows(keep.expand(b, sk), sq, causal).expand(-1, hq, -1)
    assert torch.isfinite(out).all() and (out[empty] == 0).all(), what
    assert torch.isneginf(lse[empty]).all() and torch.isfinite(lse[~empty]).all(), what
    assert torch.equal(torch.isneginf(lse_ref), torch.isneginf(lse)), what
    assert_close_to(out[~empty].float(), ref[~empty].float(), 0.99999, 2e-3, what)
    torch.testing.assert_close(lse[~empty], lse_ref[~empty], atol=1e-3, rtol=1e-4, msg=what)


def test_causal_and_padding_as_one_mask_type(seed):
    q, k, v = (torch.randn(3, 2, 90, 64, dtype=torch.float16) for _ in range(3))
    mask, _ = padding_mask("both", 90)
    config = SpargeConfig(pv_precision="fp16", block_q=32, block_k=32, sim_threshold=-1.0, topk=2)
    a, bm_a = sparge_attention_triton(q, k, v, And((Causal(), mask)), False, None, config, return_block_map=True)
    b, bm_b = sparge_attention_triton(q, k, v, mask, True, None, config, return_block_map=True)
    assert torch.equal(a, b) and torch.equal(bm_a, bm_b)
    assert torch.equal(predict_block_map_triton(q, k, mask, True, None, config), bm_b)
