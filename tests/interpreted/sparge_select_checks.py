"""The fused Sparge selection (kernels/sparge_select.py) under TRITON_INTERPRET=1 (run by
tests/test_triton_interpreter.py): from the same pooled statistics it selects exactly the blocks of the
reference's select_from_pooled and lists them exactly as block_lists_torch, on inputs built to stress the
rank rule: exact ties, probabilities that underflow to 0, similarity thresholds hit exactly, GQA, odd sizes."""
import os

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_triton_interpreter.py"

from smartcompile.kernels.config import SpargeConfig  # noqa: E402
from smartcompile.kernels.sparge_reference import select_from_pooled  # noqa: E402
from smartcompile.kernels.sparge_select import (  # noqa: E402
    FUSED_MAX_K_BLOCKS, fused_selection_unsupported, select_block_lists,
)
from smartcompile.kernels.sparge_triton import block_lists_torch  # noqa: E402


def _pooled(b, hq, hkv, sq, sk, d, kind, config):
    n_q, n_k = -(-sq // config.block_q), -(-sk // config.block_k)
    pq = torch.randn(b, hq, n_q, d)
    pk = torch.randn(b, hkv, n_k, d)
    if kind == "ties":  # pairs of identical K blocks: exactly tied scores, the order decides by index
        pk[:, :, 1::2] = pk[:, :, 0:-1:2][:, :, : pk[:, :, 1::2].shape[2]]
        pq[:, :, 1::3] = 0.0  # all-zero pooled q: every score of the row ties
    elif kind == "underflow":  # scores far apart: most probabilities are exactly 0 and tie there
        pq = pq * 40.0
    elif kind == "nan":  # a NaN pooled q (a NaN token): its rows' probabilities are all NaN, sorted first by torch
        pq[:, :, 1] = float("nan")
    sim_q = torch.rand(b, hq, n_q) * 2 - 1
    sim_k = torch.rand(b, hkv, n_k) * 2 - 1
    sim_k[..., ::5] = config.sim_threshold  # on the threshold: not below it
    return pq, sim_q, pk, sim_k


SELECTIONS = [dict(sparsity_ratio=0.5), dict(sparsity_ratio=0.0), dict(sparsity_ratio=0.9), dict(topk=3),
              dict(cdf_threshold=0.9), dict(sparsity_ratio=0.7, sink=True), dict(topk=1, sim_threshold=0.25)]
# b hq hkv sq sk d block_k: square, sq < sk, sq > sk (causal rows past the last key), rows of 81 K blocks
# (a 128-lane sort), one K block
SHAPES = [(1, 4, 4, 1000, 1000, 32, 64), (2, 6, 2, 333, 1290, 16, 64), (1, 2, 1, 1290, 333, 16, 64),
          (1, 2, 2, 200, 1290, 16, 16), (1, 2, 2, 100, 50, 16, 64)]
KINDS = ["random", "ties", "underflow", "nan"]
# each selection with two input kinds, causal and not (the second with similarity in play), the shapes in turn
# (the interpreter runs one program at a time)
CASES = [(SHAPES[(2 * i + j) % 5], KINDS[(2 * i + j) % 4], j == 1, sel) for i, sel in enumerate(SELECTIONS)
         for j in (0, 1)]


@pytest.mark.parametrize("shape, kind, causal, sel", CASES, ids=[
    f"{'x'.join(map(str, s))}-{kind}-{'causal' if c else 'full'}-" + "-".join(f"{k}{v}" for k, v in sel.items())
    for s, kind, c, sel in CASES])
def test_fused_selection_is_the_reference(shape, kind, causal, sel, seed):
    b, hq, hkv, sq, sk, d, block_k = shape
    sim = 0.25 if causal else -1.0
    config = SpargeConfig(**{"block_q": 64, "block_k": block_k, "sim_threshold": sim, **sel})
    pooled = _pooled(b, hq, hkv, sq, sk, d, kind, config)
    q, k = torch.empty(b, hq, sq, d), torch.empty(b, hkv, sk, d)  # shapes only
    ref = select_from_pooled(pooled, q, k, None, causal, config)
    got, lists = select_block_lists(pooled, q, k, None, causal, config)
    assert torch.equal(got, ref), f"seed {seed}: {(got != ref).sum().item()} of {ref.numel()} blocks differ"
    want = block_lists_torch(ref, sk, config.block_q, config.block_k, causal)
    for name in ("lut", "count", "count_full"):
        assert torch.equal(getattr(lists, name), getattr(want, name)), f"{name}, seed {seed}"


def test_fused_selection_says_what_it_cannot_take():
    assert fused_selection_unsupported(None, FUSED_MAX_K_BLOCKS) is None
    assert "mask" in fused_selection_unsupported(torch.ones(1, 1, 1, 8, dtype=torch.bool), 4)
    assert str(FUSED_MAX_K_BLOCKS) in fused_selection_unsupported(None, FUSED_MAX_K_BLOCKS + 1)
    config = SpargeConfig(block_q=64, block_k=1, sparsity_ratio=0.5)
    pooled = (torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1), torch.zeros(1, 1, FUSED_MAX_K_BLOCKS + 1, 4),
              torch.zeros(1, 1, FUSED_MAX_K_BLOCKS + 1))
    with pytest.raises(ValueError, match="K blocks"):
        select_block_lists(pooled, torch.empty(1, 1, 64, 4), torch.empty(1, 1, FUSED_MAX_K_BLOCKS + 1, 4), None,
                           False, config)
