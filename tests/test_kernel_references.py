"""Pure-torch references: exact attention (+ backward), Sage numerics, Sparge block maps."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close_to, spec_id
from smartcompile.kernels.config import SageConfig, SpargeConfig
from smartcompile.kernels.exact_reference import attention_reference, attention_reference_backward, expand_kv_heads
from smartcompile.kernels.sage_reference import sage_attention_reference
from smartcompile.kernels.sparge_reference import block_map_to_lists, predict_block_map, sparge_attention_reference

SHAPES = [  # B, Hq, Hkv, Sq, Sk, D
    (1, 2, 2, 64, 64, 64),
    (2, 8, 2, 97, 201, 64),
    (1, 4, 1, 130, 77, 128),
    (2, 3, 3, 33, 300, 80),
]
IDS = [spec_id(*s) for s in SHAPES]


def _qkv(b, hq, hkv, sq, sk, d, dtype=torch.float32):
    return torch.randn(b, hq, sq, d, dtype=dtype), torch.randn(b, hkv, sk, d, dtype=dtype), torch.randn(b, hkv, sk, d, dtype=dtype)


def _fp64_sdpa(q, k, v, mask=None, is_causal=False, scale=None):
    hq = q.shape[1]
    return F.scaled_dot_product_attention(
        q.double(), expand_kv_heads(k.double(), hq), expand_kv_heads(v.double(), hq),
        attn_mask=None if mask is None else (mask if mask.dtype == torch.bool else mask.double()),
        is_causal=is_causal, scale=scale,
    )


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("mode", ["plain", "causal", "bool", "additive"])
def test_exact_reference_matches_fp64(shape, mode, seed):
    q, k, v = _qkv(*shape)
    sq, sk = shape[3], shape[4]
    mask = None
    if mode == "bool":
        mask = torch.rand(sq, sk) > 0.3
        mask[:, 0] = True  # no fully-masked rows (fp64 SDPA gives NaN there)
    elif mode == "additive":
        mask = torch.randn(shape[0], 1, sq, sk)
    out = attention_reference(q, k, v, mask, mode == "causal", 0.3)
    ref = _fp64_sdpa(q, k, v, mask, mode == "causal", 0.3)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)


def test_exact_reference_fully_masked_row_is_zero_not_nan():
    q, k, v = _qkv(1, 2, 2, 5, 7, 16)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[2] = False
    out = attention_reference(q, k, v, mask)
    assert torch.isfinite(out).all() and out[:, :, 2].abs().max() == 0


@pytest.mark.parametrize("shape", SHAPES[:3], ids=IDS[:3])
def test_exact_backward_matches_autograd(shape, seed):
    q, k, v = (t.double().requires_grad_() for t in _qkv(*shape))
    mask = torch.randn(1, 1, shape[3], shape[4], dtype=torch.double, requires_grad=True)
    out = F.scaled_dot_product_attention(q, expand_kv_heads(k, shape[1]), expand_kv_heads(v, shape[1]), attn_mask=mask, scale=0.2)
    g = torch.randn_like(out)
    want = torch.autograd.grad(out, (q, k, v, mask), g)
    got = attention_reference_backward(g, q.detach(), k.detach(), v.detach(), mask.detach(), False, 0.2, True)
    for a, b, name in zip(got, want, "qkvm"):
        torch.testing.assert_close(a.double(), b, atol=1e-6, rtol=1e-5, msg=f"d{name}")


from smartcompile.backends.sage import SAGE_ACCURACY  # noqa: E402


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("pv", ["fp8", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_sage_reference_within_bounds(shape, pv, causal, seed):
    q, k, v = _qkv(*shape)
    out = sage_attention_reference(q, k, v, None, causal, None, SageConfig(pv_precision=pv))
    ref = attention_reference(q, k, v, is_causal=causal)
    bounds = SAGE_ACCURACY[pv]
    assert_close_to(out, ref, bounds.min_cosine, bounds.max_rel_l1, f"{pv} seed {seed}")


def test_sage_reference_fp16_is_tighter_than_fp8(seed):
    q, k, v = _qkv(1, 4, 4, 256, 256, 64)
    ref = attention_reference(q, k, v)
    b8, b16 = SAGE_ACCURACY["fp8"], SAGE_ACCURACY["fp16"]  # the data bounds, not copies (a copy of fp16's was flaky)
    e8 = assert_close_to(sage_attention_reference(q, k, v, None, False, None, SageConfig("fp8")), ref, b8.min_cosine,
                         b8.max_rel_l1)
    e16 = assert_close_to(sage_attention_reference(q, k, v, None, False, None, SageConfig("fp16")), ref, b16.min_cosine,
                          b16.max_rel_l1)
    assert e16.rel_l1 < e8.rel_l1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_sage_reference_large_magnitudes_stay_finite(dtype, seed):
    """K with a large per-channel bias (smoothing removes it), large-magnitude V (bf16 beyond
    fp16 range), large Q: no NaN/Inf and still accurate."""
    b, h, s, d = 1, 2, 193, 64
    q = torch.randn(b, h, s, d) * 8
    k = torch.randn(b, h, s, d) + 50 * torch.randn(1, 1, 1, d)
    vmax = 1e5 if dtype == torch.bfloat16 else 1e4  # bf16 V beyond fp16's range; fp16 V near its top
    v = (torch.randn(b, h, s, d) * vmax).clamp(-6 * vmax, 6 * vmax)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    ref = attention_reference(q.float(), k.float(), v.float())
    for pv in ("fp8", "fp16"):
        out = sage_attention_reference(q, k, v, None, False, None, SageConfig(pv_precision=pv))
        assert out.dtype == dtype
        assert_close_to(out.float(), ref, 0.995, 0.08, f"{pv} seed {seed}")


def test_sage_smoothing_matters_for_biased_k(seed):
    q = torch.randn(1, 2, 128, 64)
    k = torch.randn(1, 2, 128, 64) + 30 * torch.randn(1, 1, 1, 64)
    v = torch.randn(1, 2, 128, 64)
    ref = attention_reference(q, k, v)
    smooth = sage_attention_reference(q, k, v, None, False, None, SageConfig(smooth=True, pv_precision="fp16"))
    raw = sage_attention_reference(q, k, v, None, False, None, SageConfig(smooth=False, pv_precision="fp16"))
    assert ((smooth - ref).abs().mean() < (raw - ref).abs().mean())


def test_sage_reference_does_not_mutate_inputs():
    q, k, v = _qkv(1, 2, 2, 64, 64, 32)
    copies = [t.clone() for t in (q, k, v)]
    sage_attention_reference(q, k, v, None, False, None, SageConfig())
    sparge_attention_reference(q, k, v, None, False, None, SpargeConfig(sparsity_ratio=0.5))
    for a, b in zip((q, k, v), copies):
        assert torch.equal(a, b)


def test_sage_lse_matches_exact(seed):
    q, k, v = _qkv(1, 2, 2, 70, 90, 32)
    _, lse = sage_attention_reference(q, k, v, None, False, None, SageConfig(pv_precision="fp16"), return_lse=True)
    exact = torch.logsumexp((q @ k.transpose(-2, -1)) * 32 ** -0.5, dim=-1)
    torch.testing.assert_close(lse, exact, atol=0.05, rtol=0.01)


# ---- Sparge ---------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75])
def test_block_map_sparsity_as_asked(ratio, seed):
    q, k, _ = _qkv(2, 4, 2, 512, 1024, 64)
    bm = predict_block_map(q, k, None, False, None,
                           SpargeConfig(block_q=64, block_k=64, sparsity_ratio=ratio, sim_threshold=-1.0))
    n_k = bm.shape[-1]
    kept = bm.sum(-1)
    assert (kept == math.ceil((1 - ratio) * n_k)).all()


def test_block_map_topk_and_cdf(seed):
    q, k, _ = _qkv(1, 2, 2, 256, 512, 32)
    blocks = dict(block_q=64, block_k=64, sim_threshold=-1.0)
    bm = predict_block_map(q, k, None, False, None, SpargeConfig(topk=3, **blocks))
    assert (bm.sum(-1) == 3).all()
    low = predict_block_map(q, k, None, False, None, SpargeConfig(cdf_threshold=0.3, **blocks))
    high = predict_block_map(q, k, None, False, None, SpargeConfig(cdf_threshold=0.99, **blocks))
    assert (low.sum(-1) >= 1).all() and (low <= high).all() and high.sum() > low.sum()


def test_block_map_causal_rules(seed):
    q, k, _ = _qkv(1, 2, 2, 300, 300, 32)
    bm = predict_block_map(q, k, None, True, None,
                           SpargeConfig(block_q=64, block_k=32, sparsity_ratio=0.9, sim_threshold=-1.0, sink=True))
    n_q, n_k = bm.shape[-2:]
    for i in range(n_q):
        q_first, q_last = i * 64, min((i + 1) * 64, 300) - 1
        for j in range(n_k):
            k_first, k_last = j * 32, min((j + 1) * 32, 300) - 1
            if k_first > q_last:
                assert not bm[..., i, j].any(), "future block kept"
            elif k_last > q_first:
                assert bm[..., i, j].all(), "diagonal block skipped"
        assert bm[..., i, 0].all(), "sink block skipped"


def test_block_map_keeps_blocks_that_are_not_self_similar():
    q = torch.randn(1, 1, 256, 32)
    k = torch.randn(1, 1, 256, 32)  # random tokens: mean cosine ~ 0, below the threshold
    bm = predict_block_map(q, k, None, False, None,
                           SpargeConfig(block_q=64, block_k=64, sparsity_ratio=0.75, sim_threshold=0.5))
    assert bm.all()


def test_block_map_lists():
    bm = torch.tensor([[[[True, False, True], [False, False, True]]]])
    lists, counts = block_map_to_lists(bm)
    assert lists.tolist() == [[[[0, 2, -1], [2, -1, -1]]]] and counts.tolist() == [[[2, 1]]]


def test_sparge_density_one_equals_sage(seed):
    q, k, v = _qkv(1, 2, 2, 200, 200, 64)
    a = sparge_attention_reference(q, k, v, None, False, None, SpargeConfig(sparsity_ratio=0.0, sim_threshold=-1.0))
    b = sage_attention_reference(q, k, v, None, False, None, SageConfig())
    torch.testing.assert_close(a, b)


def _local_qkv(n_side=16, d=64, heads=2):
    """Tokens on a 2-D grid with smooth q/k fields: attention is local, as in image tokens."""
    ys, xs = torch.meshgrid(torch.arange(n_side), torch.arange(n_side), indexing="ij")
    pos = torch.stack([ys, xs], -1).reshape(-1, 2).float()
    freqs = torch.randn(2, d // 2) * 0.3
    phase = pos @ freqs
    field = torch.cat([phase.sin(), phase.cos()], -1)
    q = (field * 3 + 0.1 * torch.randn(heads, n_side * n_side, d))[None]
    k = (field * 3 + 0.1 * torch.randn(heads, n_side * n_side, d))[None]
    v = torch.randn(1, heads, n_side * n_side, d)
    return q, k, v


def test_sparge_error_grows_with_sparsity_on_local_inputs(seed):
    q, k, v = _local_qkv(24)
    ref = attention_reference(q, k, v)
    errs = []
    for ratio in (0.0, 0.5, 0.8):
        config = SpargeConfig(sparsity_ratio=ratio, block_q=64, sim_threshold=-1.0)
        out = sparge_attention_reference(q, k, v, None, False, None, config)
        errs.append(((out - ref).abs().sum() / ref.abs().sum()).item())
    assert errs[0] <= errs[1] + 1e-6 and errs[1] <= errs[2] + 1e-6 and errs[2] > 1.5 * errs[0], errs


def test_sparge_pv_threshold_skips_and_stays_close(seed):
    """Block 0 holds keys aligned with every query; later blocks trail by ~10 (log2 units):
    a threshold of 8 skips their P.V (close result), a threshold of 30 skips nothing."""
    d = 64
    u = torch.nn.functional.normalize(torch.randn(d), dim=0)
    q = u * 8 + 0.05 * torch.randn(1, 2, 128, d)
    k = 0.05 * torch.randn(1, 2, 256, d)
    k[:, :, :64] += u * 16  # score ~ 8*16/8 = 16 nat in block 0 vs ~0 elsewhere
    v = torch.randn(1, 2, 256, d)
    common = dict(sparsity_ratio=0.0, sim_threshold=-1.0, block_q=128, pv_precision="fp16")
    dense, loose, skipped = (sparge_attention_reference(q, k, v, None, False, None, SpargeConfig(pv_threshold=t, **common))
                             for t in (None, 30.0, 8.0))
    assert torch.equal(loose, dense)
    assert not torch.equal(skipped, dense)
    assert_close_to(skipped, dense, 0.9999, 0.01)


# ---- configs ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls, fields, message", [
    (SageConfig, dict(pv_precision="fp32"), r"SageConfig.pv_precision: got 'fp32'; allowed: one of \('fp8', 'fp16'\)"),
    (SageConfig, dict(block_q=0), r"SageConfig.block_q: got 0; allowed: a positive int"),
    (SpargeConfig, dict(topk=0), r"SpargeConfig.topk: got 0; allowed: None or an int >= 1"),
    (SpargeConfig, dict(sparsity_ratio=1.0), r"SpargeConfig.sparsity_ratio: got 1.0; allowed: None or a number in \[0, 1\)"),
    (SpargeConfig, dict(topk=1, sim_threshold=2.0), r"SpargeConfig.sim_threshold: got 2.0; allowed: a number in \[-1, 1\]"),
    (SpargeConfig, dict(topk=1, pv_precision="auto"), r"SpargeConfig.pv_precision: got 'auto'"),
    (SpargeConfig, dict(), r"give exactly one of cdf_threshold, topk, sparsity_ratio \(got none\)"),
    (SpargeConfig, dict(topk=2, cdf_threshold=0.9), r"give exactly one of .* \(got \['cdf_threshold', 'topk'\]\)"),
])
def test_config_validation_names_field_value_and_allowed(cls, fields, message):
    with pytest.raises(ValueError, match=message):
        cls(**fields)


def test_backend_params_become_one_config():
    from smartcompile.backends.sparge import SPARGE_PARAMS, sparge_config

    params = {name: spec.default for name, spec in SPARGE_PARAMS.items()} | {"pv_precision": "fp16", "smooth_k": False}
    config = sparge_config(params)
    assert config == SpargeConfig(pv_precision="fp16", smooth=False, cdf_threshold=0.98)
    assert sparge_config(dict(params)) is config  # built once per distinct params


def test_sparge_reference_honours_smooth_k():
    # K with a large shared offset: smoothing removes it before INT8 quantization (exact for softmax),
    # without smoothing the offset eats the quantization range; the kernel honours smooth_k, so must the reference
    from smartcompile.backends.sparge import SPARGE_PARAMS, run_sparge_reference

    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 256, 64, generator=g) for _ in range(3))
    k = k + 30.0
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    params = {name: spec.default for name, spec in SPARGE_PARAMS.items()} | {
        "pv_precision": "fp16", "cdf_threshold": None, "sparsity_ratio": 0.0001, "sim_threshold": -1.0}
    errors = {smooth: (run_sparge_reference(q, k, v, None, False, 64 ** -0.5, params | {"smooth_k": smooth}) - exact)
              .abs().max().item() for smooth in (True, False)}
    assert errors[False] > 3 * errors[True], errors


# ---- key padding as structure (KeyLengths / KeyPadding) ---------------------------------------
from padding_cases import PADDINGS, empty_rows, padding_mask  # noqa: E402
from smartcompile.kernels.sage_reference import key_spans  # noqa: E402
from smartcompile.masks import And, Causal, DenseBool, KeyLengths, KeyPadding  # noqa: E402

PAD_SHAPES = [(3, 4, 2, 70, 150, 64), (3, 2, 2, 133, 133, 32), (3, 3, 1, 150, 70, 64)]  # B=3 (padding_cases)


@pytest.mark.parametrize("shape", PAD_SHAPES, ids=[spec_id(*s) for s in PAD_SHAPES])
@pytest.mark.parametrize("kind", PADDINGS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("pv", ["fp8", "fp16"])
def test_sage_reference_key_padding_within_bounds(shape, kind, causal, pv, seed):
    q, k, v = _qkv(*shape)
    mask, keep = padding_mask(kind, shape[4])
    out, lse = sage_attention_reference(q, k, v, mask, causal, None, SageConfig(pv_precision=pv), return_lse=True)
    ref = attention_reference(q, k, v, keep[:, None, None, :], causal)
    empty = empty_rows(keep, shape[3], causal).expand(-1, shape[1], -1)
    assert torch.isfinite(out).all()
    assert (out[empty] == 0).all() and torch.isneginf(lse[empty]).all() and torch.isfinite(lse[~empty]).all()
    bounds = SAGE_ACCURACY[pv]
    assert_close_to(out[~empty], ref[~empty], bounds.min_cosine, bounds.max_rel_l1, f"{kind} {pv} seed {seed}")
    exact_lse = torch.logsumexp(((q @ expand_kv_heads(k, shape[1]).transpose(-2, -1)) * shape[5] ** -0.5).masked_fill(
        ~(keep[:, None, None, :] & (torch.ones(shape[3], shape[4], dtype=torch.bool).tril() if causal else True)),
        float("-inf")), dim=-1)
    # a row with one or two kept keys (left padding under causal) has the LSE of those scores alone: their INT8
    # error is not averaged over many keys, so single rows reach ~0.06 (max over 25 seeds x these cases)
    diff = (lse[~empty] - exact_lse[~empty]).abs()
    torch.testing.assert_close(lse[~empty], exact_lse[~empty], atol=0.1, rtol=0.01, msg=lambda m: f"seed {seed}: {m}")
    assert diff.mean() < 0.015, f"seed {seed}: mean LSE error {diff.mean():.4f} (max over 25 seeds: 0.006)"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_sage_reference_key_padding_large_magnitudes(dtype, seed):
    b, h, s, d = 3, 2, 193, 64
    q = torch.randn(b, h, s, d) * 8
    k = torch.randn(b, h, s, d) + 50 * torch.randn(1, 1, 1, d)
    vmax = 1e5 if dtype == torch.bfloat16 else 1e4
    v = (torch.randn(b, h, s, d) * vmax).clamp(-6 * vmax, 6 * vmax)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    mask, keep = padding_mask("left", s)
    for causal in (False, True):
        ref = attention_reference(q.float(), k.float(), v.float(), keep[:, None, None, :], causal)
        empty = empty_rows(keep, s, causal).expand(-1, h, -1)
        for pv in ("fp8", "fp16"):
            out = sage_attention_reference(q, k, v, mask, causal, None, SageConfig(pv_precision=pv))
            assert torch.isfinite(out).all() and (out[empty] == 0).all()
            assert_close_to(out[~empty].float(), ref[~empty], 0.995, 0.08, f"{pv} causal={causal} seed {seed}")


def test_sage_reference_structured_padding_equals_the_dense_mask(seed):
    q, k, v = _qkv(3, 2, 1, 40, 90, 32)
    mask, keep = padding_mask("both", 90, dtype=torch.int64)  # transformers' 0/1 attention_mask
    for causal in (False, True):
        a = sage_attention_reference(q, k, v, mask, causal, None, SageConfig())
        b = sage_attention_reference(q, k, v, keep[:, None, None, :], causal, None, SageConfig())
        c = sage_attention_reference(q, k, v, And((Causal(), mask)) if causal else mask, False, None, SageConfig())
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        torch.testing.assert_close(a, c, atol=0, rtol=0)


@pytest.mark.parametrize("kind", PADDINGS)
def test_key_spans_of_padding(kind):
    mask, keep = padding_mask(kind, 150)
    ks, causal = key_spans(mask, False, 3, 150, "cpu", "k")
    assert ks.spans.dtype == torch.int32 and not causal
    j = torch.arange(150)
    assert torch.equal((j >= ks.spans[:, :1]) & (j < ks.spans[:, 1:]), keep)
    # KeyLengths' span is exact (no flags); a KeyPadding passes its flags (holes are not known on the host)
    assert ks.keep is None if kind == "lengths" else torch.equal(ks.keep, keep.to(torch.int32))
    ks2, causal = key_spans(And((mask, Causal())), False, 3, 150, "cpu", "k")
    assert torch.equal(ks.spans, ks2.spans) and causal
    assert key_spans(None, True, 3, 150, "cpu", "k") == (None, True)


def test_key_spans_clamps_lengths_and_takes_a_broadcast_keep():
    ks, _ = key_spans(KeyLengths(torch.tensor([200, -1])), False, 2, 150, "cpu", "k")
    assert ks.spans.tolist() == [[0, 150], [0, 0]] and ks.keep is None
    keep = torch.zeros(1, 10, dtype=torch.bool)
    keep[0, 4:7] = True
    ks, _ = key_spans(KeyPadding(keep), False, 2, 10, "cpu", "k")
    assert ks.spans.tolist() == [[4, 7], [4, 7]] and ks.keep.shape == (2, 10) and ks.keep.is_contiguous()


@pytest.mark.parametrize("mask, message", [
    (torch.ones(4, 4, dtype=torch.bool), r"k: got a \(4, 4\) torch.bool tensor mask \(key flags here: bool \(1, 1, 1, "
                                         r"4\) or \(1, 1, 1, 4\)\); allowed: None, KeyLengths"),
    (DenseBool(torch.ones(4, 4, dtype=torch.bool)), r"k: got a DenseBool mask \(bool\); allowed"),
    (And((Causal("bottom_right"), KeyLengths(torch.tensor([2])))), r"k: got a And mask \(causal-br-varlen\); allowed"),
    (KeyLengths(torch.tensor([[2]])), r"k: KeyLengths.lengths must be an integer tensor of shape \(1,\)"),
    (KeyLengths(torch.tensor([2.0])), r"k: KeyLengths.lengths must be an integer tensor"),
    (KeyPadding(torch.ones(1, 5, dtype=torch.bool)), r"k: KeyPadding.keep must be a bool .* of shape \(1, 4\)"),
])
def test_key_spans_rejects_what_the_kernel_cannot_run(mask, message):
    with pytest.raises(ValueError, match=message):
        key_spans(mask, False, 1, 4, "cpu", "k")


def test_sage_reference_rejects_wrong_shaped_lengths():
    q, k, v = _qkv(2, 1, 1, 8, 8, 16)
    with pytest.raises(ValueError, match=r"sage_attention_reference: KeyLengths.lengths must be an integer tensor of "
                                         r"shape \(2,\)"):
        sage_attention_reference(q, k, v, KeyLengths(torch.tensor([3])), False, None, SageConfig())
