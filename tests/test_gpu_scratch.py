"""GPU tests of the reused intermediate buffers (kernels/scratch.py): a Sage/Sparge call with buffers a previous
call of the same shape gave back writes the same bits as one with fresh buffers, shapes interleaved and another
stream included, and CUDA graphs (torch.compile "reduce-overhead") beside eager calls."""
import pytest
import torch

from smartcompile.kernels import scratch
from smartcompile.kernels.config import SageConfig, SpargeConfig
from helpers import skip_without_gluon
from smartcompile.kernels.sage_gluon import GLUON_CONFIG, sage_attention_gluon
from smartcompile.kernels.sage_triton import sage_attention_triton
from smartcompile.kernels.sparge_triton import sparge_attention_triton

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    scratch.clear()
    yield
    scratch.clear()


def _qkv(s, d, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return tuple(torch.randn(1, 4, s, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))


CALLS = {
    "sage": lambda q, k, v: sage_attention_triton(q, k, v, None, False, None, SageConfig(pv_precision="fp8")),
    "sage-lse": lambda q, k, v: sage_attention_triton(q, k, v, None, True, None, SageConfig(pv_precision="fp8"),
                                                      return_lse=True),
    "sparge": lambda q, k, v: sparge_attention_triton(q, k, v, None, False, None,
                                                      SpargeConfig(sparsity_ratio=0.5, sim_threshold=-1.0)),
    "gluon": lambda q, k, v: sage_attention_gluon(q, k, v, None, False, None, GLUON_CONFIG),
    "gluon-causal-lse": lambda q, k, v: sage_attention_gluon(q, k, v, None, True, None, GLUON_CONFIG,
                                                             return_lse=True),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_reused_buffers_give_the_same_bits_as_fresh_ones(name, monkeypatch):
    if name.startswith("gluon"):
        skip_without_gluon()
    call = CALLS[name]
    inputs = [_qkv(s, d, seed) for seed, (s, d) in enumerate([(300, 64), (513, 128), (300, 64), (513, 128)])]
    monkeypatch.setattr(scratch, "ENABLED", False)
    want = [call(*x) for x in inputs]
    assert scratch.held_bytes() == 0
    monkeypatch.setattr(scratch, "ENABLED", True)
    give, take = scratch.give, scratch.take
    taken = []

    def poisoning_give(device, key, buffers):  # stale values must never reach a result: fill them with junk
        for t in buffers:
            if t is not None:
                t.view(torch.uint8).fill_(0x7F)
        give(device, key, buffers)

    def logging_take(device, key):
        got = take(device, key)
        taken.append((torch.cuda.current_stream().cuda_stream, got is not None))
        return got

    monkeypatch.setattr(scratch, "give", poisoning_give)
    monkeypatch.setattr(scratch, "take", logging_take)
    got = [call(*x) for x in inputs]  # the 3rd and 4th calls reuse the 1st and 2nd calls' buffers
    assert [hit for _, hit in taken] == [False, False, True, True]
    assert scratch.held_bytes() > 0
    held = scratch.held_bytes()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got_side = call(*inputs[0])  # another stream: fresh buffers, none kept
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    assert taken[-1] == (side.cuda_stream, False)
    assert scratch.held_bytes() == held
    for a, b in zip(want + want[:1], got + [got_side]):
        for ta, tb in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(ta, tb)


def test_cuda_graph_replays_are_not_disturbed_by_eager_calls_that_reuse():
    """mode="reduce-overhead" captures our op in a CUDA graph (its warm-up allocates from the graph's pool on
    a side stream, where nothing is kept); eager calls of the same shape in between, which take and give back
    on the default stream, must not change what a replay writes."""
    class Attend(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v) * 2

    policy = {"default": {"backend": "sage"}}
    shape_inputs = [_qkv(1024, 64, seed) for seed in range(3)]
    torch._dynamo.reset()
    compiled = torch.compile(Attend(), backend="smartattn", options={"policy": policy, "mode": "reduce-overhead"})
    scratch.clear()
    with torch.no_grad():
        want = [compiled(*x).clone() for x in shape_inputs for _ in range(3)]  # warm-up, capture, replays
        # the warm-up ran on the tree's own stream (allocating from the graph's pool) and the capture on a side
        # stream: neither may keep buffers
        assert scratch.held_bytes() == 0
        for i, x in enumerate(shape_inputs):
            sage_attention_triton(*x, None, False, None, SageConfig(pv_precision="fp8"))  # eager, reusing
            got = compiled(*x).clone()
            sage_attention_triton(*reversed(x), None, False, None, SageConfig(pv_precision="fp8"))
            assert torch.equal(got, want[3 * i + 2]), f"input {i}"
        assert torch.equal(compiled(*shape_inputs[0]), want[2])
    assert scratch.held_bytes() > 0  # the eager calls did keep buffers
    torch._dynamo.reset()
