"""The Triton Sage kernel under TRITON_INTERPRET=1 on small odd shapes (CPU CI).

Run by tests/test_triton_interpreter.py in a fresh process with TRITON_INTERPRET=1 (Triton
reads it when it is imported). The interpreter's FP8 does not round as the GPU does (the FP8 kernel
trails the reference by ~0.1 here even without a mask), so the INT8 Q K^T + FP16 P V path is compared
with the reference; the FP8 path is checked only loosely (key spans, empty rows) and on the GPU.
"""
import os

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_triton_interpreter.py"

from helpers import assert_close_to, spec_id  # noqa: E402
from padding_cases import PADDINGS, empty_rows, holes_keep, padding_mask  # noqa: E402
from smartcompile.backends.sage import SAGE_ACCURACY  # noqa: E402
from smartcompile.kernels.config import SageConfig  # noqa: E402
from smartcompile.kernels.exact_reference import attention_reference  # noqa: E402
from smartcompile.kernels.sage_reference import sage_attention_reference  # noqa: E402
from smartcompile.kernels.sage_triton import sage_attention_triton  # noqa: E402
from smartcompile.masks import And, Causal, KeyLengths, KeyPadding  # noqa: E402

SHAPES = [  # B, Hq, Hkv, Sq, Sk, D, causal
    (1, 2, 2, 97, 130, 64, False),
    (1, 4, 2, 130, 77, 96, True),
    (2, 2, 1, 65, 200, 128, False),
    (1, 2, 2, 129, 129, 64, True),
]


@pytest.mark.parametrize("shape", SHAPES, ids=[spec_id(*s[:6], torch.float16, "causal" if s[6] else "") for s in SHAPES])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_interpreted_kernel_matches_reference(shape, layout, seed):
    b, hq, hkv, sq, sk, d, causal = shape

    def make(h, s):
        x = torch.randn(b, s, h, d, dtype=torch.float16) if layout == "NHD" else torch.randn(b, h, s, d, dtype=torch.float16)
        return x.transpose(1, 2) if layout == "NHD" else x

    q, k, v = make(hq, sq), make(hkv, sk), make(hkv, sk)
    k = k + 4.0  # a per-channel bias that smoothing must remove
    k_before = k.clone()
    args = (q, k, v, None, causal, None, SageConfig(pv_precision="fp16"))
    out, lse = sage_attention_triton(*args, return_lse=True)
    assert torch.equal(k, k_before), "caller's k was modified"
    ref, lse_ref = sage_attention_reference(*args, return_lse=True)
    assert_close_to(out.float(), ref.float(), 0.99999, 1e-3, f"vs reference, seed {seed}")
    torch.testing.assert_close(lse, lse_ref, atol=1e-3, rtol=1e-4)
    exact = attention_reference(q.float(), k.float(), v.float(), None, causal)
    bounds = SAGE_ACCURACY["fp16"]
    assert_close_to(out.float(), exact, bounds.min_cosine, bounds.max_rel_l1, f"vs fp32, seed {seed}")


def test_interpreted_kernel_rejects_unsupported_head_dim():
    q = torch.randn(1, 1, 16, 80, dtype=torch.float16)
    with pytest.raises(ValueError, match="head_dim 80 not in"):
        sage_attention_triton(q, q, q, None, False, None, SageConfig())


def test_interpreted_kernel_rejects_an_additive_mask():
    q = torch.randn(1, 1, 16, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"sage_attention_triton: a dense mask must be a bool tensor .* broadcastable "
                                         r"to \(1, 1, 16, 16\) \(an additive mask runs on the exact path\); got "
                                         r"\(16, 16\) torch.float16"):
        sage_attention_triton(q, q, q, torch.zeros(16, 16, dtype=torch.float16), False, None, SageConfig())
    with pytest.raises(ValueError, match=r"sage_attention_triton: a dense mask must broadcast to \(batch, heads, "
                                         r"q_len, kv_len\) = \(1, 1, 16, 16\) with each dim 1 or that size; got "
                                         r"\(1, 3, 16, 16\)"):
        sage_attention_triton(q, q, q, torch.ones(1, 3, 16, 16, dtype=torch.bool), False, None, SageConfig())


def test_interpreted_kernel_rejects_wrong_lengths():
    q = torch.randn(2, 1, 16, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"sage_attention_triton: KeyLengths.lengths must be an integer tensor of "
                                         r"shape \(2,\)"):
        sage_attention_triton(q, q, q, KeyLengths(torch.tensor([[16], [3]])), False, None, SageConfig())


# ---- key padding as structure: one launch for a padded batch --------------------------------------
PAD_CASES = [  # B (3: padding_cases), Hq, Hkv, Sq, Sk, D, block_q, block_k
    (3, 2, 1, 70, 150, 64, 64, 128),  # the default blocks: head and tail tiles of a span
    (3, 2, 2, 97, 131, 64, 32, 32),  # small blocks: unmasked tiles inside the span too
]


def _check_padded(out, lse, ref, lse_ref, keep, sq, hq, causal, what):
    empty = empty_rows(keep, sq, causal).expand(-1, hq, -1)
    assert torch.isfinite(out).all(), what
    assert (out[empty] == 0).all() and torch.isneginf(lse[empty]).all(), what
    assert torch.equal(torch.isneginf(lse_ref), torch.isneginf(lse)) and torch.isfinite(lse[~empty]).all(), what
    return empty


@pytest.mark.parametrize("case", PAD_CASES, ids=[spec_id(*c[:6], torch.float16, f"bq{c[6]}-bk{c[7]}") for c in PAD_CASES])
@pytest.mark.parametrize("kind", PADDINGS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_interpreted_kernel_key_padding_matches_reference(case, kind, causal, seed):
    b, hq, hkv, sq, sk, d, bq, bk = case
    q, k, v = (torch.randn(b, h, s, d, dtype=torch.float16) for h, s in ((hq, sq), (hkv, sk), (hkv, sk)))
    k = k + 4.0
    mask, keep = padding_mask(kind, sk)
    args = (q, k, v, mask, causal, None, SageConfig(pv_precision="fp16", block_q=bq, block_k=bk))
    out, lse = sage_attention_triton(*args, return_lse=True)
    ref, lse_ref = sage_attention_reference(*args, return_lse=True)
    what = f"{kind} causal={causal} seed {seed}"
    empty = _check_padded(out, lse, ref, lse_ref, keep, sq, hq, causal, what)
    assert_close_to(out[~empty].float(), ref[~empty].float(), 0.99999, 1e-3, f"vs reference, {what}")
    torch.testing.assert_close(lse[~empty], lse_ref[~empty], atol=1e-3, rtol=1e-4)
    exact = attention_reference(q.float(), k.float(), v.float(), keep[:, None, None, :], causal)
    bounds = SAGE_ACCURACY["fp16"]
    assert_close_to(out[~empty].float(), exact[~empty], bounds.min_cosine, bounds.max_rel_l1, f"vs fp32, {what}")


def test_interpreted_kernel_causal_and_padding_as_one_mask_type(seed):
    q, k, v = (torch.randn(3, 2, 90, 64, dtype=torch.float16) for _ in range(3))
    mask, _ = padding_mask("left", 90, dtype=torch.int64)  # transformers' 0/1 attention_mask
    config = SageConfig(pv_precision="fp16", block_q=32, block_k=32)
    a = sage_attention_triton(q, k, v, And((Causal(), mask)), False, None, config)
    b = sage_attention_triton(q, k, v, mask, True, None, config)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["left", "both", "holes"])
def test_interpreted_fp8_kernel_key_padding_loosely(kind, seed):
    """FP8 P V under the interpreter (no GPU rounding): spans and empty rows exact, values loose."""
    hq, hkv, sq, sk, d = 2, 1, 70, 150, 64
    mask, keep = (KeyPadding(holes_keep(sk)), holes_keep(sk)) if kind == "holes" else padding_mask(kind, sk)
    b = keep.shape[0]
    q, k, v = (torch.randn(b, h, s, d, dtype=torch.float16) for h, s in ((hq, sq), (hkv, sk), (hkv, sk)))
    args = (q, k, v, mask, True, None, SageConfig(pv_precision="fp8"))
    out, lse = sage_attention_triton(*args, return_lse=True)
    ref, lse_ref = sage_attention_reference(*args, return_lse=True)
    empty = _check_padded(out, lse, ref, lse_ref, keep, sq, hq, True, f"{kind} seed {seed}")
    torch.testing.assert_close(lse[~empty], lse_ref[~empty], atol=1e-3, rtol=1e-4)
    exact = attention_reference(q.float(), k.float(), v.float(), keep[:, None, None, :], True)
    assert_close_to(out[~empty].float(), exact[~empty], 0.99, 0.15, f"vs fp32, {kind} seed {seed}")


# ---- key flags with holes, and the graph's (B|1, 1, 1, Sk) tensor form -------------------------------
HOLE_CASES = [  # B (4: padding_cases.holes_keep), Hq, Hkv, Sq, Sk, D, block_q, block_k
    (4, 2, 1, 70, 150, 64, 64, 128),  # holes on the 127/128 edge
    (4, 2, 2, 97, 131, 64, 32, 32),  # holes on 63/64 and 95/96, a span from the 32 edge, unmasked-loop tiles
]


@pytest.mark.parametrize("case", HOLE_CASES, ids=[spec_id(*c[:6], torch.float16, f"bq{c[6]}-bk{c[7]}") for c in HOLE_CASES])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.bool, torch.int64], ids=["bool", "int64"])
def test_interpreted_kernel_key_padding_with_holes_matches_reference(case, causal, dtype, seed):
    b, hq, hkv, sq, sk, d, bq, bk = case
    q, k, v = (torch.randn(b, h, s, d, dtype=torch.float16) for h, s in ((hq, sq), (hkv, sk), (hkv, sk)))
    k = k + 4.0
    keep = holes_keep(sk)
    args = (q, k, v, KeyPadding(keep.to(dtype)), causal, None, SageConfig(pv_precision="fp16", block_q=bq, block_k=bk))
    out, lse = sage_attention_triton(*args, return_lse=True)
    ref, lse_ref = sage_attention_reference(*args, return_lse=True)
    what = f"holes {dtype} causal={causal} seed {seed}"
    empty = _check_padded(out, lse, ref, lse_ref, keep, sq, hq, causal, what)
    assert empty[2].all() and not empty[0].any(), what  # the row with no kept key; the row with key 0
    assert_close_to(out[~empty].float(), ref[~empty].float(), 0.99999, 1e-3, f"vs reference, {what}")
    torch.testing.assert_close(lse[~empty], lse_ref[~empty], atol=1e-3, rtol=1e-4)
    exact = attention_reference(q.float(), k.float(), v.float(), keep[:, None, None, :], causal)
    bounds = SAGE_ACCURACY["fp16"]
    assert_close_to(out[~empty].float(), exact[~empty], bounds.min_cosine, bounds.max_rel_l1, f"vs fp32, {what}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_interpreted_kernel_takes_the_graphs_key_flags(causal, seed):
    """The compiled graph hands key padding as bool (B|1, 1, 1, Sk) flags + is_causal: run as a KeyPadding
    (whose agreement with the reference is checked above; the reference's, in test_key_padding_forms)."""
    b, hq, sq, sk, d = 4, 2, 40, 90, 64
    config = SageConfig(pv_precision="fp16", block_q=32, block_k=32)
    q, k, v = (torch.randn(b, hq, s, d, dtype=torch.float16) for s in (sq, sk, sk))
    for keep in (holes_keep(sk), holes_keep(sk)[:1]):  # per batch row, and one row for all
        out, lse = sage_attention_triton(q, k, v, keep[:, None, None, :], causal, None, config, return_lse=True)
        out2, lse2 = sage_attention_triton(q, k, v, KeyPadding(keep), causal, None, config, return_lse=True)
        assert torch.equal(out, out2) and torch.equal(lse, lse2), tuple(keep.shape)
        empty = empty_rows(keep.expand(b, sk), sq, causal).expand(-1, hq, -1)
        assert (out[empty] == 0).all() and torch.isneginf(lse[empty]).all() and torch.isfinite(lse[~empty]).all()
