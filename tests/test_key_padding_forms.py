"""Key padding as the Sage kernels take it (CPU, no interpreter): key_spans' spans and flags for holes,
the graph's bool (B|1, 1, 1, Sk) tensor form, and no host sync (CUDA-graph capture, no stall per call)."""
import pytest
import torch

from helpers import assert_close_to
from padding_cases import empty_rows, holes_keep
from smartcompile.backends.sage import SAGE_ACCURACY
from smartcompile.kernels.config import SageConfig
from smartcompile.kernels.exact_reference import attention_reference
from smartcompile.kernels.sage_reference import KeySpans, key_spans, sage_attention_reference
from smartcompile.masks import And, Causal, KeyLengths, KeyPadding

SK = 150


def _span_of(keep: torch.Tensor) -> list:
    idx = [row.nonzero()[:, 0].tolist() for row in keep]
    return [[i[0], i[-1] + 1] if i else [0, 0] for i in idx]


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.uint8], ids=["bool", "int64", "uint8"])
def test_key_spans_of_holes(dtype):
    keep = holes_keep(SK)
    ks, causal = key_spans(KeyPadding(keep.to(dtype)), False, 4, SK, "cpu", "k")
    assert ks.spans.dtype == torch.int32 and ks.spans.tolist() == _span_of(keep) == [[0, 150], [32, 149], [0, 0],
                                                                                      [141, 150]]
    assert ks.keep.dtype == torch.int32 and ks.keep.is_contiguous() and torch.equal(ks.keep.bool(), keep)
    assert not causal


@pytest.mark.parametrize("batch_rows", [4, 1], ids=["B-1-1-Sk", "1-1-1-Sk"])
def test_key_spans_takes_the_graphs_key_flags(batch_rows):
    keep = holes_keep(SK)[:batch_rows]
    flags = keep[:, None, None, :]
    for causal in (False, True):
        ks, c = key_spans(flags, causal, 4, SK, "cpu", "k")
        ref, c2 = key_spans(KeyPadding(keep), causal, 4, SK, "cpu", "k")
        assert c == c2 == causal
        assert torch.equal(ks.spans, ref.spans) and torch.equal(ks.keep, ref.keep) and ks.keep.shape == (4, SK)


@pytest.mark.parametrize("flags, message", [
    (torch.ones(4, 1, 8, SK, dtype=torch.bool), r"\(4, 1, 8, 150\) torch.bool"),  # per query: not key padding
    (torch.ones(4, 2, 1, SK, dtype=torch.bool), r"\(4, 2, 1, 150\) torch.bool"),  # per head
    (torch.ones(4, 1, 1, SK), r"\(4, 1, 1, 150\) torch.float32"),  # an additive bias
    (torch.ones(4, 1, 1, SK, dtype=torch.int64), r"\(4, 1, 1, 150\) torch.int64"),
    (torch.ones(2, 1, 1, SK, dtype=torch.bool), r"\(2, 1, 1, 150\) torch.bool"),  # wrong batch
    (torch.ones(4, 1, 1, SK + 1, dtype=torch.bool), r"\(4, 1, 1, 151\) torch.bool"),  # wrong key count
    (torch.ones(4, SK, dtype=torch.bool), r"\(4, 150\) torch.bool"),  # flags as a tensor: wrap in KeyPadding
])
def test_key_spans_rejects_other_tensors(flags, message):
    with pytest.raises(ValueError, match=r"^k: got a " + message + r" tensor mask \(key flags here: bool \(4, 1, 1, "
                                         r"150\) or \(1, 1, 1, 150\)\); allowed: None, KeyLengths .*KeyPadding"):
        key_spans(flags, True, 4, SK, "cpu", "k")


def _forbid_host_reads(monkeypatch):
    """Make every Python-level read of tensor data onto the host raise (what a sync would need)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("key_spans read tensor data on the host (a device sync)")
    for name in ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "numpy", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    monkeypatch.setattr(torch, "nonzero", forbidden)


@pytest.mark.parametrize("form", ["lengths", "holes", "flags", "causal-and"])
def test_key_spans_does_not_sync(form, monkeypatch):
    keep = holes_keep(SK)
    mask = {"lengths": KeyLengths(torch.tensor([SK, 7, 0, 200])), "holes": KeyPadding(keep),
            "flags": keep[:, None, None, :], "causal-and": And((Causal(), KeyPadding(keep.to(torch.int64))))}[form]
    with monkeypatch.context() as m:
        _forbid_host_reads(m)
        ks, causal = key_spans(mask, False, 4, SK, "cpu", "k")
    assert isinstance(ks, KeySpans) and causal == (form == "causal-and")
    if form == "lengths":
        assert ks.spans.tolist() == [[0, SK], [0, 7], [0, 0], [0, SK]] and ks.keep is None
    else:
        assert ks.spans.tolist() == _span_of(keep) and torch.equal(ks.keep.bool(), keep)


def test_the_sync_check_catches_a_sync(monkeypatch):
    with monkeypatch.context() as m:
        _forbid_host_reads(m)
        with pytest.raises(AssertionError, match="read tensor data on the host"):
            bool(torch.ones(2).any())


@pytest.mark.gpu
def test_key_spans_does_not_sync_on_the_gpu():
    keep = holes_keep(SK).cuda()
    masks = (KeyPadding(keep), keep[:, None, None, :], KeyLengths(torch.tensor([SK, 7, 0, 200], device="cuda")))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):  # the mode catches a sync
            bool(keep.any())
        for mask in masks:
            key_spans(mask, True, 4, SK, "cuda", "k")
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_sage_reference_takes_holes_and_the_graphs_key_flags(causal, seed):
    b, hq, sq, d = 4, 2, 70, 32
    q, k, v = (torch.randn(b, hq, s, d) for s in (sq, SK, SK))
    keep = holes_keep(SK)
    config = SageConfig(pv_precision="fp16", block_q=32, block_k=32)
    out, lse = sage_attention_reference(q, k, v, KeyPadding(keep.to(torch.int64)), causal, None, config, return_lse=True)
    out2, lse2 = sage_attention_reference(q, k, v, keep[:, None, None, :], causal, None, config, return_lse=True)
    assert torch.equal(out, out2) and torch.equal(lse, lse2)
    out3 = sage_attention_reference(q, k, v, keep[:1, None, None, :], causal, None, config)  # one row for all
    assert torch.equal(out3, sage_attention_reference(q, k, v, KeyPadding(keep[:1]), causal, None, config))
    empty = empty_rows(keep, sq, causal).expand(-1, hq, -1)
    assert (out[empty] == 0).all() and torch.isneginf(lse[empty]).all() and torch.isfinite(lse[~empty]).all()
    exact = attention_reference(q, k, v, keep[:, None, None, :], causal)
    bounds = SAGE_ACCURACY["fp16"]
    assert_close_to(out[~empty], exact[~empty], bounds.min_cosine, bounds.max_rel_l1, f"causal={causal} seed {seed}")

