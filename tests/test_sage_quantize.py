"""sage_quantize.quantize_fused (two launches) against quantize_staged (6-7 launches), field by field, and
quantize's choice between them.

Triton reads TRITON_INTERPRET when a kernel is decorated (sage_triton's import), so without a GPU this module
re-runs itself in a fresh process with TRITON_INTERPRET=1 (as tests/test_triton_interpreter.py does for
tests/interpreted/); with TRITON_INTERPRET=1 already set, or on a GPU, the checks run in this process.
Bounds: Q's INT8 values and scales, V's amax and values are bit-identical; K's mean differs from torch's
only by fp32 summation order, so K's INT8 values may move by 1 at a rounding tie and its scales by an ulp.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
IN_PROCESS = INTERPRETED or torch.cuda.is_available()
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETED else "cpu"
in_process = pytest.mark.skipif(not IN_PROCESS, reason="run with TRITON_INTERPRET=1 by test_interpreted_in_subprocess")

if IN_PROCESS:
    pytest.importorskip("triton")
    from helpers import assert_close_to
    from smartcompile.kernels import sage_quantize
    from smartcompile.kernels.config import SageConfig
    from smartcompile.kernels.sage_quantize import quantize_fused
    from smartcompile.kernels.sage_triton import attend
    from smartcompile.kernels.sage_quantize import quantize, quantize_staged


@pytest.mark.skipif(IN_PROCESS, reason="the checks run in this process")
def test_interpreted_in_subprocess():
    pytest.importorskip("triton")
    here = Path(__file__).parent
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(here),
                        "--confcutdir", str(here), __file__], cwd=here, env={**os.environ, "TRITON_INTERPRET": "1"},
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout, r.stdout[-2000:]


def _make(b, h, s, d, dtype, layout, magnitude, offset=0.0):
    """(B, H, S, D) view: HND contiguous, NHD (a transposed (B, S, H, D)), or every other column of a wider
    tensor (stride_d = 2). `offset` is a per-channel bias (what smoothing removes)."""
    shape = {"HND": (b, h, s, d), "NHD": (b, s, h, d), "strided": (b, h, s, 2 * d)}[layout]
    x = torch.randn(shape, device=DEVICE) * magnitude
    if layout == "NHD":
        x = x.transpose(1, 2)
    elif layout == "strided":
        x = x[..., ::2]
    x = x + offset * torch.linspace(-1.0, 1.0, d, device=DEVICE)
    return x.clamp(-6e4, 6e4).to(dtype)  # finite in fp16 at 1e4 magnitudes


CASES = [  # B, Hq, Hkv, Sq, Sk, D, dtype, layout, pv, smooth, block_q, block_k, pool, magnitude
    (1, 2, 2, 77, 129, 64, torch.float16, "HND", "fp8", True, 64, 128, False, 1.0),
    (1, 4, 2, 1, 1000, 128, torch.bfloat16, "NHD", "fp16", True, 64, 128, False, 1.0),
    (2, 2, 1, 129, 77, 96, torch.float16, "NHD", "fp8", False, 64, 128, True, 1.0),
    (1, 2, 2, 1000, 1, 64, torch.bfloat16, "HND", "fp8", True, 32, 64, True, 1.0),
    (1, 4, 1, 129, 200, 128, torch.float16, "strided", "fp16", True, 32, 64, True, 1e4),
    (2, 2, 2, 33, 129, 96, torch.bfloat16, "HND", "fp8", True, 64, 128, False, 1e4),
]


def _ids(c):
    return f"B{c[0]}-Hq{c[1]}-Hkv{c[2]}-Sq{c[3]}-Sk{c[4]}-D{c[5]}-{str(c[6])[6:]}-{c[7]}-{c[8]}" \
           f"{'' if c[9] else '-nosmooth'}-bq{c[10]}-bk{c[11]}{'-pool' if c[12] else ''}-x{c[13]:g}"


def _bits(t):
    """The raw bits, so that equality is bitwise (fp8 has no CPU equal kernel; -0.0 != 0.0 here)."""
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()])


def _same_layout(a, b, name):
    assert (a.shape, a.dtype, a.stride(), a.device) == (b.shape, b.dtype, b.stride(), b.device), \
        f"{name}: {tuple(a.shape)} {a.dtype} {a.stride()} vs {tuple(b.shape)} {b.dtype} {b.stride()}"


@in_process
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_fused_matches_staged(case, seed):
    b, hq, hkv, sq, sk, d, dtype, layout, pv, smooth, block_q, block_k, pool, mag = case
    q = _make(b, hq, sq, d, dtype, layout, mag)
    k = _make(b, hkv, sk, d, dtype, layout, mag, offset=3.0 * mag)
    v = _make(b, hkv, sk, d, dtype, layout, mag)
    config = SageConfig(pv_precision=pv, smooth=smooth, block_q=block_q, block_k=block_k)
    order = pv == "fp8" and block_k % 16 == 0  # V in wgmma key order where it applies (the Gluon kernel's input)
    ref = quantize_staged(q, k, v, None, config, pool=pool, v_wgmma_order=order)
    got = quantize_fused(q, k, v, None, config, pool=pool, v_wgmma_order=order)
    what = f"seed {seed}"
    assert (got.shape, got.sm_scale, got.block_q, got.block_k, got.fp8) == \
           (ref.shape, ref.sm_scale, ref.block_q, ref.block_k, ref.fp8)
    for name in ("q8", "q_scale", "k8", "k_scale", "v", "v_amax"):
        _same_layout(getattr(got, name), getattr(ref, name), name)
    for name in ("q8", "q_scale", "v", "v_amax"):  # bit-identical
        assert torch.equal(_bits(getattr(got, name)), _bits(getattr(ref, name))), f"{name} differs, {what}"
    for t in (got.q_scale, got.k_scale, got.v_amax, got.v.float()):
        assert torch.isfinite(t).all(), what
    if smooth:
        _same_layout(got.k_mean, ref.k_mean, "k_mean")
        # fp32 summation order only: a few ulps of the mean of |k|
        tol = 32 * torch.finfo(torch.float32).eps * k.float().abs().mean(dim=-2)
        assert ((got.k_mean - ref.k_mean).abs() <= tol).all(), f"k_mean, {what}"
    else:
        assert got.k_mean is None and ref.k_mean is None
    k_diff = (got.k8.int() - ref.k8.int()).abs()
    assert k_diff.max() <= 1 and (k_diff > 0).float().mean() <= 1e-3, f"k8: {int((k_diff > 0).sum())} differ, {what}"
    torch.testing.assert_close(got.k_scale, ref.k_scale, rtol=1e-5, atol=0, msg=lambda m: f"k_scale, {what}: {m}")
    if pool:
        for name, g, r in zip(("pooled q", "sim q", "pooled k", "sim k"), got.pooled, ref.pooled):
            _same_layout(g, r, name)
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6 * mag, msg=lambda m: f"{name}, {what}: {m}")
    else:
        assert got.pooled is None and ref.pooled is None


@in_process
@pytest.mark.parametrize("quant_prefetch, stats_prefetch", [(False, False), (False, True), (True, True)])
def test_prefetching_changes_no_bit(quant_prefetch, stats_prefetch, seed, monkeypatch):
    # prefetch moves loads, not arithmetic: every output, pooled sums included, is the default launch's
    q = _make(1, 3, 200, 128, torch.bfloat16, "NHD", 1.0)
    k = _make(1, 3, 301, 128, torch.bfloat16, "NHD", 1.0, offset=3.0)
    v = _make(1, 3, 301, 128, torch.bfloat16, "NHD", 1.0)
    config = SageConfig(block_q=64, block_k=128)
    ref = quantize_fused(q, k, v, None, config, pool=True, v_wgmma_order=True)
    monkeypatch.setattr(sage_quantize, "_QUANT_PREFETCH", quant_prefetch)
    monkeypatch.setattr(sage_quantize, "_STATS_PREFETCH", stats_prefetch)
    got = quantize_fused(q, k, v, None, config, pool=True, v_wgmma_order=True)
    for name in ("q8", "q_scale", "k8", "k_scale", "v", "v_amax", "k_mean"):
        assert torch.equal(_bits(getattr(got, name)), _bits(getattr(ref, name))), f"{name}, seed {seed}"
    for g, r in zip(got.pooled, ref.pooled):
        assert torch.equal(_bits(g), _bits(r)), f"pooled, seed {seed}"


class _DeviceOps(TorchDispatchMode):
    """Records the torch ops run outside Triton launches (the interpreter's own copies run inside them)."""

    def __init__(self):
        super().__init__()
        self.ops = []
        self.in_launch = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.in_launch:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@in_process
@pytest.mark.parametrize("pv", ["fp8", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attend_through_fused_matches(pv, causal, seed, monkeypatch):
    b, hq, hkv, sq, sk, d = 1, 4, 2, 65, 130, 64
    q = _make(b, hq, sq, d, torch.float16, "NHD", 1.0)
    k = _make(b, hkv, sk, d, torch.float16, "NHD", 1.0, offset=3.0)
    v = _make(b, hkv, sk, d, torch.float16, "NHD", 1.0)
    config = SageConfig(pv_precision=pv)
    kernel_class = type(sage_quantize._quantize_all)  # JITFunction, or InterpretedFunction under the interpreter
    assert type(sage_quantize._kv_stats) is kernel_class and type(sage_quantize._quantize_int8) is kernel_class
    launches, ops, run = [], _DeviceOps(), kernel_class.run

    def counted_run(self, *args, grid, warmup, **kwargs):  # same signature as the method it wraps
        launches.append(self.fn.__name__)
        ops.in_launch = True
        try:
            return run(self, *args, grid=grid, warmup=warmup, **kwargs)
        finally:
            ops.in_launch = False

    monkeypatch.setattr(kernel_class, "run", counted_run)
    with ops:
        fused = quantize_fused(q, k, v, None, config)
    assert launches == ["_kv_stats", "_quantize_all"], launches
    assert set(ops.ops) <= {"aten.empty.memory_format"}, ops.ops  # allocations only: no other torch kernel
    launches.clear()
    ref = quantize_staged(q, k, v, None, config)
    assert len(launches) >= 3, launches  # the unfused path, for the record
    monkeypatch.undo()
    again = quantize_fused(q, k, v, None, config)  # deterministic: no atomics
    assert torch.equal(again.k_mean, fused.k_mean) and torch.equal(again.k8, fused.k8)
    out = attend(fused, causal, torch.float16)
    expected = attend(ref, causal, torch.float16)
    assert_close_to(out.float(), expected.float(), 0.99999, 1e-3, f"attend(fused) vs attend(quantize), seed {seed}")


@in_process
@pytest.mark.parametrize("past_limit, pool, want", [(0, False, "fused"), (1, False, "staged"), (0, True, "fused"),
                                                    (1, True, "fused")])
def test_quantize_takes_the_fused_path_up_to_its_size_limit_or_to_pool(past_limit, pool, want, monkeypatch):
    taken = []
    monkeypatch.setattr(sage_quantize, "quantize_fused",
                        lambda *a, pool, v_wgmma_order, reuse_buffers, with_q: taken.append(("fused", with_q)))
    monkeypatch.setattr(sage_quantize, "quantize_staged",
                        lambda *a, pool, v_wgmma_order, with_q: taken.append(("staged", with_q)))
    q = torch.empty(1, 1, 1, 64, device=DEVICE)
    kv = torch.empty(1, 1, 1, 64, device=DEVICE).expand(1, 1, (sage_quantize.FUSED_MAX_ELEMENTS - 64) // 128, 64)
    v = kv if not past_limit else torch.empty(1, 1, 1, 64, device=DEVICE).expand(1, 1, kv.shape[2] + 2, 64)
    assert (q.numel() + kv.numel() + v.numel() > sage_quantize.FUSED_MAX_ELEMENTS) == bool(past_limit)
    sage_quantize.quantize(q, kv, v, None, SageConfig(), pool=pool)
    assert taken == [(want, True)]
    if not pool:  # with_q reaches either path
        taken.clear()
        sage_quantize.quantize(q, kv, v, None, SageConfig(), with_q=False)
        assert taken == [(want, False)]


@in_process
def test_fused_rejects_bad_shapes():
    q = torch.randn(1, 2, 8, 80, dtype=torch.float16, device=DEVICE)
    with pytest.raises(ValueError, match="head_dim 80 not in"):
        quantize_fused(q, q, q)
    q = torch.randn(1, 3, 8, 64, dtype=torch.float16, device=DEVICE)
    kv = torch.randn(1, 2, 8, 64, dtype=torch.float16, device=DEVICE)
    with pytest.raises(ValueError, match="multiple of k/v heads"):
        quantize_fused(q, kv, kv)


@in_process
@pytest.mark.parametrize("fused", [False, True], ids=["staged", "fused"])
def test_v_wgmma_order_permutes_only_vs_keys(fused, seed):
    """v_wgmma_order=True: V's values move to wgmma_key_order's columns, everything else is unchanged."""
    quant = quantize_fused if fused else quantize_staged
    q = _make(1, 4, 77, 64, torch.bfloat16, "NHD", 1.0)
    k = _make(1, 2, 300, 64, torch.bfloat16, "NHD", 1.0, offset=3.0)
    v = _make(1, 2, 300, 64, torch.bfloat16, "NHD", 1.0)
    config = SageConfig(pv_precision="fp8")
    natural = quant(q, k, v, None, config)
    ordered = quant(q, k, v, None, config, v_wgmma_order=True)
    assert ordered.v_wgmma_order and not natural.v_wgmma_order
    for name in ("q8", "q_scale", "k8", "k_scale", "v_amax"):
        assert torch.equal(_bits(getattr(ordered, name)), _bits(getattr(natural, name))), name
    _same_layout(ordered.v, natural.v, "v")
    pos = sage_quantize.wgmma_key_order(natural.v.shape[-1], DEVICE)
    moved = torch.empty_like(_bits(natural.v))
    moved[..., pos] = _bits(natural.v)
    assert torch.equal(_bits(ordered.v), moved), f"seed {seed}"
    assert not torch.equal(_bits(ordered.v), _bits(natural.v))  # the order did change something
    with pytest.raises(ValueError, match="v_wgmma_order=True"):
        attend(ordered, False, torch.bfloat16)  # the Triton kernel reads V in token order
    with pytest.raises(ValueError, match="needs pv_precision='fp8'"):
        quant(q, k, v, None, SageConfig(pv_precision="fp16"), v_wgmma_order=True)
    with pytest.raises(ValueError, match="block_k a multiple of 16; got block_k=8"):  # its stores would overrun
        quant(q, k, v, None, SageConfig(pv_precision="fp8", block_k=8), v_wgmma_order=True)


@in_process
@pytest.mark.parametrize("fused", [False, True], ids=["staged", "fused"])
def test_with_q_false_leaves_q_and_nothing_else(fused, seed):
    """with_q=False (a kernel that quantizes Q itself, sage_gluon's fold_q): K and V are the same bits, Q is marked
    unwritten, the Triton kernel refuses it, and pooling (which reads Q) refuses with_q=False."""
    quant = quantize_fused if fused else quantize_staged
    q = _make(1, 4, 77, 64, torch.bfloat16, "NHD", 1.0)
    k = _make(1, 2, 300, 64, torch.bfloat16, "NHD", 1.0, offset=3.0)
    v = _make(1, 2, 300, 64, torch.bfloat16, "NHD", 1.0)
    config = SageConfig(pv_precision="fp8")
    full = quant(q, k, v, None, config, v_wgmma_order=True)
    no_q = quant(q, k, v, None, config, v_wgmma_order=True, with_q=False)
    assert full.q_written and not no_q.q_written
    for name in ("k8", "k_scale", "v", "v_amax"):
        assert torch.equal(_bits(getattr(no_q, name)), _bits(getattr(full, name))), f"{name}, seed {seed}"
    assert no_q.q8.shape == full.q8.shape and no_q.q_scale.shape == full.q_scale.shape
    with pytest.raises(ValueError, match="Q was not quantized"):
        attend(quant(q, k, v, None, config, with_q=False), False, torch.bfloat16)
    with pytest.raises(ValueError, match="with_q=False with pool=True"):
        quant(q, k, v, None, config, pool=True, with_q=False)
