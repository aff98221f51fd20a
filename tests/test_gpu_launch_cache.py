"""GPU tests of the launch cache (kernels/launch_cache.py): a repeated call launches directly, and the direct
launches write the same bits as Triton's usual path, for the Sage quantization, the Triton attention kernel
(fixed and autotuned configurations), the Gluon kernel (TMA descriptors) and inputs whose address is not
16-byte aligned (another specialization: a new key, never a hit on the aligned kernel)."""
import pytest
import torch

from smartcompile.kernels import launch_cache, sage_quantize, sage_triton
from smartcompile.kernels.config import SageConfig

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")


def _inputs(b, h, s, d, offset=0, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    flat = torch.randn(3 * b * h * s * d + offset, device="cuda", dtype=torch.bfloat16, generator=g)
    n = b * h * s * d
    return tuple(flat[offset + i * n: offset + (i + 1) * n].view(b, h, s, d) for i in range(3))


def _bits(t):
    return t.contiguous().view(torch.uint8) if t.dtype.itemsize == 1 else t.contiguous().view(torch.int16) \
        if t.dtype.itemsize == 2 else t.contiguous().view(torch.int32)


def _both_paths(fn, inputs, other_inputs, kernel, monkeypatch):
    """fn(*inputs) through the usual path, then fn(*other_inputs) (same shapes, other values: it records the key)
    and fn(*inputs) again through the cache, which must hit. The first result stays alive, so a hit that
    launched nothing cannot find the right answer left in a recycled block."""
    monkeypatch.setattr(launch_cache, "ENABLED", False)
    want = fn(*inputs)
    monkeypatch.setattr(launch_cache, "ENABLED", True)
    fn(*other_inputs)
    hits = launch_cache.direct_launches(kernel)
    got = fn(*inputs)
    torch.cuda.synchronize()
    assert launch_cache.direct_launches(kernel) > hits, "the second call with the same key did not launch directly"
    return want, got


@pytest.mark.parametrize("offset", [0, 3], ids=["aligned", "unaligned"])
def test_quantize_and_triton_attention_hit_with_the_same_bits(offset, monkeypatch):
    config = SageConfig(pv_precision="fp8")

    def run(q, k, v):
        x = sage_quantize.quantize_fused(q, k, v, None, config)
        return x, sage_triton.attend(x, False, torch.bfloat16)

    (x0, o0), (x1, o1) = _both_paths(run, _inputs(1, 3, 333, 64, offset=offset),
                                     _inputs(1, 3, 333, 64, offset=offset, seed=1), sage_quantize._quantize_all,
                                     monkeypatch)
    for a, b in ((x0.q8, x1.q8), (x0.k8, x1.k8), (x0.q_scale, x1.q_scale), (x0.k_scale, x1.k_scale), (o0, o1)):
        assert torch.equal(_bits(a), _bits(b))
    assert launch_cache.direct_launches(sage_triton._sage_fwd) >= 1
    assert launch_cache.usual_path_reason(sage_quantize._quantize_all) is None


def test_autotuned_attention_hits_with_the_same_bits(monkeypatch):
    monkeypatch.setattr(sage_triton, "AUTOTUNE_MIN_WORK", 0)  # the tuned kernel at a small shape
    config = SageConfig(pv_precision="fp8")
    xs = [sage_quantize.quantize(*_inputs(1, 2, 1000, 128, seed=seed), None, config) for seed in (0, 1)]
    tuned = sage_triton._tuned_kernel()
    want, got = _both_paths(lambda x: sage_triton.attend(x, True, torch.bfloat16), (xs[0],), (xs[1],), tuned,
                            monkeypatch)
    assert torch.equal(_bits(want), _bits(got))
    assert launch_cache.usual_path_reason(tuned) is None


def test_gluon_kernel_hits_with_the_same_bits(monkeypatch):
    from smartcompile.kernels import sage_gluon

    if sage_gluon.gluon_unavailable_reason() is not None:
        pytest.skip(sage_gluon.gluon_unavailable_reason())
    want, got = _both_paths(lambda q, k, v: sage_gluon.sage_attention_gluon(q, k, v, None, False, None,
                                                                            sage_gluon.GLUON_CONFIG),
                            _inputs(1, 4, 1111, 128), _inputs(1, 4, 1111, 128, seed=1),
                            sage_gluon._sage_fwd_sm90_ws2, monkeypatch)
    assert torch.equal(_bits(want), _bits(got))


@pytest.mark.parametrize("reuse", [True, False], ids=["scratch", "fresh-buffers"])
def test_gluon_descriptors_encoded_once_per_buffer_with_the_same_bits(reuse, monkeypatch):
    """The Gluon kernel's hits pass cached descriptor encodings (kernels/tma_launch.py): a repeated call on reused
    buffers encodes nothing new; on fresh buffers (other addresses, other shapes in between) each new address is
    encoded and the outputs are still Triton's usual path's, bit for bit."""
    from smartcompile.kernels import scratch, sage_gluon

    if sage_gluon.gluon_unavailable_reason() is not None:
        pytest.skip(sage_gluon.gluon_unavailable_reason())
    monkeypatch.setattr(scratch, "ENABLED", reuse)
    kernel = sage_gluon._sage_fwd_sm90_ws2
    shapes = [(1, 4, 1111, 128), (2, 3, 700, 64), (1, 4, 1111, 128)]
    inputs = [_inputs(*s, seed=i) for i, s in enumerate(shapes)]

    def run(q, k, v, causal=False):
        return sage_gluon.sage_attention_gluon(q, k, v, None, causal, None, sage_gluon.GLUON_CONFIG)

    monkeypatch.setattr(launch_cache, "ENABLED", False)
    want = [run(*x) for x in inputs] + [run(*inputs[1], causal=True)]
    monkeypatch.setattr(launch_cache, "ENABLED", True)
    for _ in range(2):  # the first round records the keys
        got = [run(*x) for x in inputs] + [run(*inputs[1], causal=True)]
    torch.cuda.synchronize()
    assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(want, got))
    encoded = launch_cache.tma_encodings(kernel)
    assert encoded is not None, "the Gluon kernel's hits did not take the cached-encoding launcher"
    again = run(*inputs[0])
    torch.cuda.synchronize()
    assert torch.equal(_bits(again), _bits(want[0]))
    if reuse:  # the same scratch buffers and ones tile: every encoding cached
        assert launch_cache.tma_encodings(kernel) == encoded


def test_a_runtime_argument_by_keyword_takes_the_usual_path(monkeypatch):
    mask = torch.rand(1, 1, 300, 300, device="cuda") > 0.3
    mask[..., 0] = True
    config = SageConfig(pv_precision="fp8")
    q, k, v = _inputs(1, 2, 300, 64)
    monkeypatch.setattr(launch_cache, "ENABLED", False)
    want = sage_triton.sage_attention_triton(q, k, v, mask, False, None, config)
    monkeypatch.setattr(launch_cache, "ENABLED", True)
    got = [sage_triton.sage_attention_triton(q, k, v, mask, False, None, config) for _ in range(2)]
    assert all(torch.equal(_bits(want), _bits(g)) for g in got)
    # the dense mask's tensor is passed by keyword (MASK): those calls are never keyed
    assert any("MASK" in names for names in launch_cache._launches(sage_triton._sage_fwd).uncacheable_meta)
