"""Sparge's selection keeps its shape-only tensors per shape (host work at short sequences), except while a
CUDA graph is captured (a tensor made then has no values until replay)."""
import torch

from smartcompile.kernels import sparge_reference


def _fresh(n_q, n_k, causal):
    return sparge_reference.block_validity.__wrapped__(n_q, n_k, 64, 128, n_q * 64 - 5, n_k * 128 - 7, causal,
                                                      torch.device("cpu"))


def test_shape_tensors_are_kept_per_shape_and_equal_fresh_ones():
    for causal in (False, True):
        args = (7, 5, 64, 128, 7 * 64 - 5, 5 * 128 - 7, causal, torch.device("cpu"))
        first = sparge_reference.block_validity(*args)
        again = sparge_reference.block_validity(*args)
        assert all(a is b for a, b in zip(first, again))  # kept, not rebuilt
        assert all(torch.equal(a, b) for a, b in zip(first, _fresh(7, 5, causal)))
    limits = sparge_reference._row_limits(7, 64, 443, 633, True, torch.device("cpu"))
    assert all(a is b for a, b in zip(limits, sparge_reference._row_limits(7, 64, 443, 633, True, torch.device("cpu"))))


def test_not_kept_while_a_cuda_graph_is_captured(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    args = (3, 4, 64, 128, 190, 500, True, torch.device("cpu"))
    first = sparge_reference.block_validity(*args)
    again = sparge_reference.block_validity(*args)
    assert first[0] is not again[0] and torch.equal(first[0], again[0])
