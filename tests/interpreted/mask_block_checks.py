"""Dense masks at tile granularity under TRITON_INTERPRET=1 (run by tests/test_triton_interpreter.py):
the classification and block lists against their torch references, and the Sage / Sparge kernels with
sliding windows, documents, prefix-LM, random and broadcast bool masks against the reference numerics
(INT8 Q K^T + FP16 P V here: the interpreter's FP8 does not round as the GPU does)."""
import os

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_triton_interpreter.py"

from helpers import assert_close_to  # noqa: E402
from smartcompile.backends.sage import SAGE_ACCURACY  # noqa: E402
from smartcompile.kernels.config import SageConfig, SpargeConfig  # noqa: E402
from smartcompile.kernels.exact_reference import attention_reference  # noqa: E402
from smartcompile.kernels.mask_blocks import (  # noqa: E402
    DenseKeep, classify_tiles, classify_tiles_torch, dense_keep, mask_lists, mask_lists_torch,
)
from smartcompile.kernels.sage_reference import sage_attention_reference  # noqa: E402
from smartcompile.kernels.sage_triton import sage_attention_triton  # noqa: E402
from smartcompile.kernels.sparge_reference import predict_block_map, sparge_attention_reference  # noqa: E402
from smartcompile.kernels.sparge_triton import predict_block_map_triton, sparge_attention_triton  # noqa: E402
from smartcompile.masks import BlockKind, Document, PrefixLM, Shape, SlidingWindow  # noqa: E402


def _random_keep(shape, density=0.7):
    return torch.rand(shape) < density


def _documents(b, s, n_docs=3):
    cuts = torch.sort(torch.randint(1, s, (b, n_docs - 1)), dim=-1).values
    seg = (torch.arange(s)[None, :, None] >= cuts[:, None, :]).sum(dim=-1)
    return Document(seg, seg)


@pytest.mark.parametrize("mshape", [(2, 3, 70, 150), (1, 1, 70, 150), (2, 1, 70, 150), (1, 3, 1, 150), (2, 3, 70, 1)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("blocks", [(64, 128), (32, 32), (16, 64)])
def test_classification_and_lists_match_torch(mshape, causal, blocks, seed):
    bq, bk = blocks
    keep = _random_keep(mshape, 0.97)  # high density: FULL tiles exist
    keep[..., :5] = True
    if mshape[2] > 1:
        keep[:, :, 40:, 60:] = False  # EMPTY tiles too
    dense = dense_keep(keep, 2, 3, 70, 150, keep.device, "test")
    kind = classify_tiles(dense, 70, 150, bq, bk, causal)
    assert torch.equal(kind, classify_tiles_torch(dense, 70, 150, bq, bk, causal)), f"seed {seed}"
    # against the mask types' own classification: equal but for the tail tile of Sk, never FULL here
    ref = DenseKeep(keep.expand(2, 3, 70, 150) & (torch.ones(70, 150).tril().bool() if causal else True))
    from smartcompile.masks.base import classify_dense
    expect = classify_dense(ref.keep, bq, bk)
    if 150 % bk:
        expect[..., -1][expect[..., -1] == int(BlockKind.FULL)] = int(BlockKind.PARTIAL)
    assert torch.equal(kind.expand(2, 3, -1, -1), expect), f"seed {seed}"
    block_map = torch.rand(2, 3, kind.shape[2], kind.shape[3]) < 0.5
    for bmap in (None, block_map):
        got, want = mask_lists(kind, bmap), mask_lists_torch(kind, bmap)
        assert torch.equal(got.lut, want.lut) and torch.equal(got.count, want.count), f"seed {seed}"
        assert torch.equal(got.count_full, want.count_full) and (got.row_b, got.row_h) == (want.row_b, want.row_h)
    # each row: its FULL tiles ascending, then its PARTIAL ones ascending, then -1
    lists = mask_lists(kind, None)
    flat = kind.expand(lists.row_b and 2 or 1, lists.row_h and 3 or 1, -1, -1).reshape(-1, kind.shape[3])
    for r in range(flat.shape[0]):
        full = (flat[r] == int(BlockKind.FULL)).nonzero().flatten().tolist()
        part = (flat[r] == int(BlockKind.PARTIAL)).nonzero().flatten().tolist()
        n = len(full) + len(part)
        assert lists.lut[r, :n].tolist() == full + part and (lists.lut[r, n:] == -1).all(), f"row {r} seed {seed}"
        assert lists.count_full[r] == len(full) and lists.count[r] == n


def _mask_cases(b, hq, sq, sk):
    yield "sliding", SlidingWindow(20, 0)
    yield "sliding-both", SlidingWindow(33, 17)
    yield "documents", _documents(b, sq) if sq == sk else SlidingWindow(None, 5)
    yield "prefix-lm", PrefixLM(37)
    yield "random", _random_keep((b, hq, sq, sk), 0.5)
    yield "random-broadcast", _random_keep((1, 1, sq, sk), 0.9)
    empty = _random_keep((b, 1, sq, sk), 0.8)
    empty[:, :, 3:9] = False  # query rows with no kept key
    yield "empty-rows", empty


def _cases(b=2, hq=4, sq=97, sk=97):
    return [(name, m) for name, m in _mask_cases(b, hq, sq, sk)]


SAGE_CASES = [  # B, Hq, Hkv, Sq, Sk, D, block_q, block_k
    (2, 4, 2, 97, 97, 64, 32, 32),
    # 4 heads, not 2: against fp32 the Sage numerics (the reference's too) give cos 0.999927 on average here, and
    # with 2 heads 0.7% of draws fell under the then 0.9999 bound (150 seeds, random-broadcast mask; CI failed on
    # one); with 4 heads none did, min 0.99991 (the fp16 bound is 0.9998 since session 12)
    (1, 4, 2, 70, 150, 64, 64, 128),
]


@pytest.mark.parametrize("case", SAGE_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_sage_kernel_with_dense_masks_matches_reference(case, causal, seed):
    b, hq, hkv, sq, sk, d, bq, bk = case
    config = SageConfig(pv_precision="fp16", block_q=bq, block_k=bk)
    for name, mask in _mask_cases(b, hq, sq, sk):
        q, k, v = (torch.randn(b, h, s, d, dtype=torch.float16) for h, s in ((hq, sq), (hkv, sk), (hkv, sk)))
        k = k + 4.0
        args = (q, k, v, mask, causal, None, config)
        out, lse = sage_attention_triton(*args, return_lse=True)
        ref, lse_ref = sage_attention_reference(*args, return_lse=True)
        what = f"{name} causal={causal} seed {seed}"
        keep = dense_keep(mask, b, hq, sq, sk, q.device, "test").keep.expand(b, hq, sq, sk)
        if causal:
            keep = keep & torch.ones(sq, sk).tril().bool()
        empty = ~keep.any(dim=-1)
        assert torch.isfinite(out).all(), what
        assert (out[empty] == 0).all() and torch.isneginf(lse[empty]).all(), what
        assert torch.equal(torch.isneginf(lse_ref), torch.isneginf(lse)), what
        assert_close_to(out[~empty].float(), ref[~empty].float(), 0.99999, 1e-3, f"vs reference, {what}")
        torch.testing.assert_close(lse[~empty], lse_ref[~empty], atol=1e-3, rtol=1e-4)
        exact = attention_reference(q.float(), k.float(), v.float(), keep, False)
        bounds = SAGE_ACCURACY["fp16"]
        assert_close_to(out[~empty].float(), exact[~empty], bounds.min_cosine, bounds.max_rel_l1, f"vs fp32, {what}")


def test_sage_kernel_sliding_window_skips_empty_tiles(seed):
    """The lists of a sliding window over 512 keys in tiles of 32 hold only the band's tiles."""
    dense = dense_keep(SlidingWindow(40, 0), 1, 1, 512, 512, "cpu", "test")
    lists = mask_lists(classify_tiles(dense, 512, 512, 32, 32, True))
    counts = lists.count.tolist()
    assert max(counts) <= 3 and min(counts) >= 1, counts
    assert ((lists.count - lists.count_full) >= 1).all()  # the diagonal tile (and the window's left edge) is PARTIAL


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("sel", [dict(sparsity_ratio=0.5), dict(cdf_threshold=0.9)], ids=["ratio", "cdf"])
def test_sparge_with_dense_masks_matches_reference(causal, sel, seed):
    b, hq, hkv, sq, sk, d = 2, 2, 1, 150, 150, 64  # GQA and per-batch masks; few heads (interpreted: slow)
    config = SpargeConfig(block_q=32, block_k=32, pv_precision="fp16", **sel)
    for name, mask in _mask_cases(b, hq, sq, sk):
        q, k, v = (torch.randn(b, h, s, d, dtype=torch.float16) for h, s in ((hq, sq), (hkv, sk), (hkv, sk)))
        what = f"{name} causal={causal} seed {seed}"
        bmap = predict_block_map_triton(q, k, mask, causal, None, config)
        assert torch.equal(bmap, predict_block_map(q, k, mask, causal, None, config)), what
        out, lse, got_map = sparge_attention_triton(q, k, v, mask, causal, None, config, return_lse=True,
                                                    return_block_map=True)
        ref, lse_ref = sparge_attention_reference(q, k, v, mask, causal, None, config, return_lse=True)
        assert torch.equal(got_map, bmap), what
        assert torch.isfinite(out).all(), what
        live = torch.isfinite(lse_ref)
        assert torch.equal(live, torch.isfinite(lse)) and (out[~live] == 0).all(), what
        assert_close_to(out[live].float(), ref[live].float(), 0.9999, 5e-3, f"vs reference, {what}")
        torch.testing.assert_close(lse[live], lse_ref[live], atol=1e-3, rtol=1e-4)


def test_dense_keep_takes_mask_types_and_broadcasts():
    d = dense_keep(SlidingWindow(4, 0), 2, 3, 10, 12, "cpu", "t")
    assert d.keep.shape == (1, 1, 10, 12) and d.strides()[:2] == (0, 0)  # expanded batch/head: one copy
    assert torch.equal(d.keep[0, 0], SlidingWindow(4, 0).dense(Shape(1, 1, 10, 12))[0, 0])
    d = dense_keep(torch.ones(10, 12, dtype=torch.bool), 2, 3, 10, 12, "cpu", "t")
    assert d.keep.shape == (1, 1, 10, 12)
    with pytest.raises(ValueError, match=r"t: mask must be a bool tensor or a mask type; got list"):
        dense_keep([1], 2, 3, 10, 12, "cpu", "t")
