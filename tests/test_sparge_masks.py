"""Sparge block selection under attention masks (issue 9): a K block that the mask empties is never
kept, and every query row with a valid key keeps a block that holds one of its valid keys.

The checks below recompute block emptiness and row coverage from the element mask with plain loops,
independently of the selection code.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from helpers import compile_and_plan
from smartcompile.backends.sparge import SPARGE_PARAMS, run_sparge_reference
from smartcompile.kernels.config import SageConfig, SpargeConfig
from smartcompile.kernels.exact_reference import causal_keep_mask
from smartcompile.kernels.sage_reference import sage_attention_reference
from smartcompile.kernels.sparge_reference import predict_block_map, sparge_attention_reference

BLOCK_Q, BLOCK_K = 64, 128
B, H, SQ, SK, D = 2, 2, 333, 700, 32  # Sq odd, Sk not a multiple of 128
LENGTHS = (150, 611)  # valid keys per batch item (right padding)
SELECTIONS = {"topk1": dict(topk=1), "ratio0.75": dict(sparsity_ratio=0.75), "cdf0.3": dict(cdf_threshold=0.3)}


def _qkv(b, hq, hkv, sq, sk, d=D):
    return torch.randn(b, hq, sq, d), torch.randn(b, hkv, sk, d), torch.randn(b, hkv, sk, d)


def _padding_keep(lengths, sk):
    """(B, 1, 1, Sk) bool: key j of item i is valid when j < lengths[i]."""
    return (torch.arange(sk)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]


def _as_kind(keep: torch.Tensor, kind: str) -> torch.Tensor:
    """The same mask as a bool keep-mask, an additive -inf mask, or an additive finfo.min mask."""
    if kind == "bool":
        return keep
    dtype = torch.float16 if kind == "finfo_min_fp16" else torch.float32
    fill = float("-inf") if kind == "neginf" else torch.finfo(dtype).min
    return torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, fill)


def _element_valid(mask, b, hq, sq, sk, is_causal):
    """(B, Hq, Sq, Sk) bool: the (query, key) pairs that the mask (and causality) leave valid."""
    if mask.dtype == torch.bool:
        valid = mask
    else:
        valid = ~(torch.isneginf(mask) | (mask <= torch.finfo(mask.dtype).min / 2))
    valid = valid.expand(b, hq, sq, sk)
    return valid & causal_keep_mask(sq, sk, valid.device) if is_causal else valid


def _row_blocks(valid):
    """(B, Hq, Sq, nK): does K block j hold a valid key of row i."""
    n_k = math.ceil(valid.shape[-1] / BLOCK_K)
    return torch.stack([valid[..., j * BLOCK_K:(j + 1) * BLOCK_K].any(-1) for j in range(n_k)], dim=-1)


def _assert_selection_respects_mask(block_map, valid, seed):
    rows = _row_blocks(valid)
    n_q = block_map.shape[2]
    nonempty = torch.stack([rows[:, :, i * BLOCK_Q:(i + 1) * BLOCK_Q].any(2) for i in range(n_q)], dim=2)
    assert not (block_map & ~nonempty).any(), f"an empty block was kept (seed {seed})"
    kept_for_row = block_map.repeat_interleave(BLOCK_Q, dim=2)[:, :, :valid.shape[2]]
    has_valid = valid.any(-1)
    covered = (kept_for_row & rows).any(-1)
    assert covered[has_valid].all(), f"{(~covered & has_valid).sum()} rows with valid keys kept none of them (seed {seed})"


def _assert_valid_rows_nonzero(out, valid, seed):
    has_valid = valid.any(-1)
    assert torch.isfinite(out[has_valid]).all(), f"non-finite output in a row with valid keys (seed {seed})"
    zero_rows = (out.abs().sum(-1) == 0) & has_valid
    assert not zero_rows.any(), f"{zero_rows.sum()} of {has_valid.sum()} valid rows are all-zero (seed {seed})"


def _run(q, k, v, mask, is_causal=False, **selection):
    config = SpargeConfig(block_q=BLOCK_Q, block_k=BLOCK_K, sim_threshold=-1.0, **selection)
    return sparge_attention_reference(q, k, v, mask, is_causal, None, config, return_block_map=True)


def _check(q, k, v, mask, seed, is_causal=False, **selection):
    out, block_map = _run(q, k, v, mask, is_causal, **selection)
    valid = _element_valid(mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2], is_causal)
    _assert_selection_respects_mask(block_map, valid, seed)
    _assert_valid_rows_nonzero(out, valid, seed)
    return out, block_map


@pytest.mark.parametrize("kind", ["bool", "neginf", "finfo_min", "finfo_min_fp16"])
@pytest.mark.parametrize("selection", SELECTIONS.values(), ids=SELECTIONS.keys())
def test_key_padding_keeps_every_valid_row(selection, kind, seed):
    q, k, v = _qkv(B, H, H, SQ, SK)
    _check(q, k, v, _as_kind(_padding_keep(LENGTHS, SK), kind), seed, **selection)


@pytest.mark.parametrize("selection", SELECTIONS.values(), ids=SELECTIONS.keys())
def test_document_mask_covers_rows_of_every_document(selection, seed):
    # block-diagonal: documents end mid q block, so one q block holds rows of two documents
    s = 333
    doc = torch.bucketize(torch.arange(s), torch.tensor([100, 290]), right=True)
    keep = (doc[:, None] == doc[None, :])[None, None]
    q, k, v = _qkv(B, H, H, s, s)
    _check(q, k, v, keep, seed, **selection)


@pytest.mark.parametrize("selection", SELECTIONS.values(), ids=SELECTIONS.keys())
def test_causal_with_right_padding(selection, seed):
    s = 333
    q, k, v = _qkv(B, H, H, s, s)
    _check(q, k, v, _padding_keep((200, 301), s), seed, is_causal=True, sink=True, **selection)


@pytest.mark.parametrize("selection", SELECTIONS.values(), ids=SELECTIONS.keys())
def test_gqa_with_per_head_sparse_mask(selection, seed):
    # each q head keeps ~2% of keys at random: most blocks are empty for some rows, and rows of one
    # q block need different blocks
    q, k, v = _qkv(B, 4, 2, SQ, SK)
    keep = torch.rand(B, 4, SQ, SK) < 0.02
    _check(q, k, v, keep, seed, **selection)


@pytest.mark.parametrize("shape", ["B11Sk", "11SqSk", "SqSk"])
def test_broadcast_mask_shapes(shape, seed):
    q, k, v = _qkv(B, H, H, SQ, SK)
    if shape == "B11Sk":
        keep = _padding_keep(LENGTHS, SK)
    else:  # every query sees its own band of keys
        keep = (torch.arange(SK)[None, :] // 2 - torch.arange(SQ)[:, None]).abs() < 40
        keep = keep[None, None] if shape == "11SqSk" else keep
    _check(q, k, v, keep, seed, topk=1)


@pytest.mark.parametrize("kind", ["bool", "neginf", "finfo_min"])
def test_fully_masked_rows_match_sdpa_math(kind, seed):
    # left padding + causal: the first queries of item 0 see no key at all; query padding (rows
    # >= 300 of item 1) too; one whole q block of item 0 has no valid pair
    s = 333
    keep = _padding_keep((200, 333), s).flip(-1).expand(B, 1, s, s).clone()
    keep[1, :, 300:] = False
    mask = _as_kind(keep, kind)
    q, k, v = _qkv(B, H, H, s, s)
    out, _ = _check(q, k, v, mask, seed, is_causal=True, topk=1)
    causal = causal_keep_mask(s, s, q.device)
    exact_mask = mask & causal if kind == "bool" else mask.masked_fill(~causal, float("-inf"))
    with sdpa_kernel(SDPBackend.MATH):
        exact = F.scaled_dot_product_attention(q, k, v, attn_mask=exact_mask)
    fully_masked = ~_element_valid(mask, B, H, s, s, True).any(-1)
    assert fully_masked.any()
    assert not torch.isnan(out).any() or torch.isnan(exact).any(), f"NaN where the exact path has none (seed {seed})"
    # a finite fill gives eager's softmax over the fills (the mean of V over the causal keys): so does Sparge since
    # session 15 (it gave 0: its selection keeps no block for such a row)
    torch.testing.assert_close(out[fully_masked], exact[fully_masked], msg=f"seed {seed}")


@pytest.mark.parametrize("selection", [dict(sparsity_ratio=0.0), dict(cdf_threshold=1.0)], ids=["ratio0", "cdf1"])
@pytest.mark.parametrize("case", ["padding", "document_causal"])
def test_full_density_matches_dense_sage_with_mask(case, selection, seed):
    q, k, v = _qkv(B, 4, 2, SQ, SK)
    is_causal = case == "document_causal"
    if is_causal:
        keep = (torch.arange(SK)[None, :] // 250 == torch.arange(SQ)[:, None] // 250)[None, None]
    else:
        keep = _padding_keep(LENGTHS, SK)
    out, block_map = _check(q, k, v, keep, seed, is_causal=is_causal, **selection)
    dense = sage_attention_reference(q, k, v, keep, is_causal, None, SageConfig(block_q=BLOCK_Q, block_k=BLOCK_K))
    torch.testing.assert_close(out, dense, atol=1e-6, rtol=1e-6, msg=f"seed {seed}")
    assert not block_map.all(), "the mask should leave some blocks empty"


def test_sink_and_similarity_do_not_readd_empty_blocks(seed):
    # sim_threshold 1.0: every block is 'not self-similar' and would be kept, plus the sink
    q, k, _ = _qkv(B, H, H, SQ, SK)
    keep = _padding_keep(LENGTHS, SK).flip(-1)  # left padding: block 0 is empty for item 0
    bm = predict_block_map(q, k, keep, False, None,
                           SpargeConfig(block_q=BLOCK_Q, block_k=BLOCK_K, sim_threshold=1.0, sink=True, topk=1))
    rows = _row_blocks(_element_valid(keep, B, H, SQ, SK, False))
    assert torch.equal(bm, rows[:, :, :1].expand_as(bm)), f"seed {seed}"


@pytest.mark.parametrize("is_causal", [False, True], ids=["plain", "causal"])
@pytest.mark.parametrize("selection", SELECTIONS.values(), ids=SELECTIONS.keys())
def test_all_true_mask_selects_as_without_mask(selection, is_causal, seed):
    q, k, _ = _qkv(B, 4, 2, SQ, SK)
    config = SpargeConfig(block_q=BLOCK_Q, block_k=BLOCK_K, sim_threshold=-1.0, sink=True, **selection)
    ones = torch.ones(1, 1, SQ, SK, dtype=torch.bool)
    with_mask, without = (predict_block_map(q, k, m, is_causal, None, config) for m in (ones, None))
    assert torch.equal(with_mask, without), f"seed {seed}"


def test_backend_reference_receives_the_mask(seed):
    params = {name: spec.default for name, spec in SPARGE_PARAMS.items()} | {
        "cdf_threshold": None, "topk": 1, "pv_precision": "fp8",
        "sim_threshold": -1.0}  # random tokens are not self-similar: the default would keep every block
    q, k, v = _qkv(B, H, H, SQ, SK)
    keep = _padding_keep(LENGTHS, SK)
    out = run_sparge_reference(q, k, v, keep, False, D ** -0.5, params)
    _assert_valid_rows_nonzero(out, _element_valid(keep, B, H, SQ, SK, False), seed)


def test_compiled_sparge_topk_policy_with_padding_mask(seed):
    # the symptom reported in issue 9: 25-31% of query rows all-zero under a Sparge topk policy
    q, k, v = _qkv(B, H, H, SQ, SK)
    mask = _as_kind(_padding_keep(LENGTHS, SK), "finfo_min")
    fn, plan = compile_and_plan(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                                {"version": 1, "default": {"backend": "sparge", "topk": 1, "sim_threshold": -1.0}})
    out = fn(q, k, v, mask)
    assert [s.backend for s in plan.sites] == ["sparge"], plan
    _assert_valid_rows_nonzero(out, _padding_keep(LENGTHS, SK).expand(B, H, SQ, SK), seed)


@pytest.mark.parametrize("scale", [None, 1e4], ids=["default_scale", "underflowing_scores"])
@pytest.mark.parametrize("selection", [dict(topk=2), dict(sparsity_ratio=0.5)], ids=["topk2", "ratio0.5"])
def test_counts_are_over_nonempty_blocks(selection, scale, seed):
    # left padding puts the empty blocks first: with one-hot predicted probabilities (huge scale) they
    # tie with the valid blocks at 0 and must still not take a valid block's place
    q, k, _ = _qkv(B, H, H, SQ, SK)
    keep = _padding_keep((400, 611), SK).flip(-1)
    bm = predict_block_map(q, k, keep, False, scale,
                           SpargeConfig(block_q=BLOCK_Q, block_k=BLOCK_K, sim_threshold=-1.0, **selection))
    n_nonempty = _row_blocks(_element_valid(keep, B, H, SQ, SK, False))[:, :, 0].sum(-1)  # (B, H)
    expected = n_nonempty.clamp(max=2) if "topk" in selection else torch.ceil(0.5 * n_nonempty.float()).long()
    assert (bm.sum(-1) == expected[..., None]).all(), f"kept {bm.sum(-1).unique().tolist()}, expected {expected.tolist()} (seed {seed})"


@pytest.mark.parametrize("is_causal", [False, True])
def test_predicted_density_counts_only_the_blocks_the_mask_leaves(is_causal, seed):
    """Keeping every block the selection may choose is density 1, also for a padded batch: blocks of padded
    keys are not counted as skipped (they were never candidates)."""
    from smartcompile.backends.sparge import predicted_density

    params = {name: spec.default for name, spec in SPARGE_PARAMS.items()} | {
        "cdf_threshold": None, "sparsity_ratio": 0.0, "pv_precision": "fp8"}
    q, k, _ = _qkv(B, H, H, SQ, SK)
    keep = _padding_keep(LENGTHS, SK)
    assert predicted_density(q, k, keep, is_causal, D ** -0.5, params) == 1.0
    assert predicted_density(q, k, None, is_causal, D ** -0.5, params) == 1.0
    fewer = predicted_density(q, k, keep, is_causal, D ** -0.5, params | {"sparsity_ratio": 0.75, "sim_threshold": -1.0})
    assert 0 < fewer < 1


def _cover_rows_per_row(keep, scores, row_blocks, block_q, sq):
    """The rule row by row (the earlier implementation, which found the uncovered rows with nonzero)."""
    b, h, _, n_k = keep.shape
    q_block = torch.arange(sq) // block_q
    rows = row_blocks.expand(b, h, sq, n_k)
    out = keep.clone()
    for bi in range(b):
        for hi in range(h):
            for r in range(sq):
                valid = rows[bi, hi, r]
                if valid.any() and not (keep[bi, hi, q_block[r]] & valid).any():
                    row_scores = scores.expand(b, h, -1, n_k)[bi, hi, q_block[r]].masked_fill(~valid, float("-inf"))
                    out[bi, hi, q_block[r], row_scores.argmax()] = True
    return out


@pytest.mark.parametrize("rows_shape", [(2, 3, 37), (1, 1, 37), (2, 1, 1)], ids=["full", "broadcast", "one-row"])
def test_cover_rows_without_a_host_sync_matches_the_per_row_rule(rows_shape):
    from smartcompile.kernels.sparge_reference import _cover_rows

    torch.manual_seed(0)
    b, h, sq, n_k, block_q = 2, 3, 37, 6, 8
    n_q = math.ceil(sq / block_q)
    for trial in range(20):
        row_blocks = torch.rand(*rows_shape, n_k) < 0.3
        keep = torch.rand(b, h, n_q, n_k) < 0.3
        scores = torch.randint(0, 3, (b, h, n_q, n_k)).float()  # ties: the lowest index wins, as argmax
        got = _cover_rows(keep, scores, row_blocks, block_q, sq)
        assert torch.equal(got, _cover_rows_per_row(keep, scores, row_blocks, block_q, sq)), f"trial {trial}"


@pytest.mark.parametrize("rows_shape", [(2, 3, 37), (1, 1, 37), (2, 1, 1)], ids=["full", "broadcast", "one-row"])
@pytest.mark.parametrize("step_blocks", [1, 2, 4])
def test_cover_rows_in_steps_matches_the_per_row_rule(rows_shape, step_blocks, monkeypatch):
    """Rows in steps of whole q blocks (bounded memory), incl. a last step with a partial q block."""
    from smartcompile.kernels import sparge_reference

    b, h, sq, n_k, block_q = 2, 3, 37, 6, 8
    monkeypatch.setattr(sparge_reference, "_COVER_STEP_ELEMENTS", step_blocks * b * h * block_q * n_k)
    torch.manual_seed(step_blocks)
    n_q = math.ceil(sq / block_q)
    for trial in range(20):
        row_blocks = torch.rand(*rows_shape, n_k) < 0.3
        keep = torch.rand(b, h, n_q, n_k) < 0.3
        scores = torch.randint(0, 3, (1, h, n_q, n_k)).float()  # broadcast over batch, as pooled scores may be
        got = sparge_reference._cover_rows(keep, scores, row_blocks, block_q, sq)
        assert torch.equal(got, _cover_rows_per_row(keep, scores, row_blocks, block_q, sq)), f"trial {trial}"


@pytest.mark.parametrize("which", ["sage", "sparge"])
@pytest.mark.parametrize("sq, sk", [(12, 12), (5, 12), (12, 5)])
def test_a_row_masked_entirely_by_a_finite_fill_is_the_mean_of_v(which, sq, sk):
    """An additive mask whose padding holds finfo(fp32).min, one sequence all padding: eager's softmax gives each
    of that row's keys the same weight (the mean of V); the references gave 0 (finfo.min * log2(e) overflowed to
    -inf in Sage's; Sparge's selection keeps no block for the row). Review of session 15."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 2, sq, 16), torch.randn(2, 2, sk, 16), torch.randn(2, 2, sk, 16)
    mask = torch.zeros(2, 1, 1, sk)
    mask[0, ..., sk // 2:] = torch.finfo(torch.float32).min
    mask[1] = torch.finfo(torch.float32).min
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if which == "sage":
        got, lse = sage_attention_reference(q, k, v, mask, False, None, SageConfig(pv_precision="fp16"),
                                            return_lse=True)
    else:
        got, lse = sparge_attention_reference(q, k, v, mask, False, None,
                                              SpargeConfig(pv_precision="fp16", sparsity_ratio=0.5), return_lse=True)
    assert torch.allclose(got[1], v[1].mean(dim=-2, keepdim=True).expand_as(got[1]), atol=2e-3)
    assert torch.allclose(got, want, atol=5e-2)
    # the row's LSE is the fill itself (eager: finfo.min); Sage's log2 domain holds at most finfo.min / log2(e):
    # both are "masked" by the package's rule (at most finfo.min / 2), and finite
    assert torch.isfinite(lse[1]).all() and (lse[1] <= torch.finfo(torch.float32).min / 2).all()
