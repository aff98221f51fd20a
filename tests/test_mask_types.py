"""Mask types: per-block classification and partial blocks' element masks agree with each type's dense
mask; bottom-right vs top-left causal; composition."""
import itertools
import random

import pytest
import torch
import torch.nn.functional as F

from smartcompile.masks import (And, BlockKind, Causal, DenseAdditive, DenseBool, Document, KeyLengths, KeyPadding,
                                NoMask, PrefixLM, Shape, SlidingWindow, intersect)
from smartcompile.masks.base import classify_dense

SHAPES = [Shape(2, 3, 13, 13), Shape(1, 2, 7, 29), Shape(3, 1, 31, 9), Shape(2, 2, 1, 17), Shape(1, 1, 64, 64)]
BLOCKS = [(1, 1), (4, 8), (16, 16), (5, 3), (64, 128)]


def _padding(shape, g):
    keep = torch.rand(shape.batch, shape.kv_len, generator=g) > 0.3
    keep[:, 0] = True
    return keep


def _types(shape, g):
    lengths = torch.randint(0, shape.kv_len + 1, (shape.batch,), generator=g)
    qseg = torch.sort(torch.randint(0, 3, (shape.batch, shape.q_len), generator=g), dim=1).values
    kseg = torch.sort(torch.randint(0, 3, (shape.batch, shape.kv_len), generator=g), dim=1).values
    bias = torch.randn(shape.batch, 1, shape.q_len, shape.kv_len, generator=g)
    bias[torch.rand(bias.shape, generator=g) > 0.6] = float("-inf")
    pad = KeyPadding(_padding(shape, g))
    return {
        "none": NoMask(), "causal": Causal(), "causal-br": Causal("bottom_right"),
        "sliding": SlidingWindow(3, 0), "sliding-sym": SlidingWindow(2, 5), "sliding-br": SlidingWindow(4, None, "bottom_right"),
        "padded": pad, "varlen": KeyLengths(lengths), "document": Document(qseg, kseg),
        "document-unsorted": Document(torch.randint(0, 4, (shape.batch, shape.q_len), generator=g),
                                      torch.randint(0, 4, (shape.batch, shape.kv_len), generator=g)),
        "prefix": PrefixLM(5),
        "bool": DenseBool(torch.rand(shape.batch, shape.heads, shape.q_len, shape.kv_len, generator=g) > 0.5),
        "additive": DenseAdditive(bias),
        "causal-padded": And((Causal(), pad)), "sliding-br-varlen": And((SlidingWindow(2, 1, "bottom_right"), KeyLengths(lengths))),
        "disjoint-bands": And((SlidingWindow(1, 0), SlidingWindow(None, 3, "bottom_right"))),
        "document-causal-padded": And((Document(qseg, qseg if shape.q_len == shape.kv_len else kseg), Causal(), pad)),
    }


CASES = list(itertools.product(range(len(SHAPES)), range(len(BLOCKS))))


@pytest.mark.parametrize("si, bi", CASES, ids=[f"B{SHAPES[s].batch}-H{SHAPES[s].heads}-Sq{SHAPES[s].q_len}-Sk{SHAPES[s].kv_len}"
                                               f"-bq{BLOCKS[b][0]}-bk{BLOCKS[b][1]}" for s, b in CASES])
def test_block_kinds_and_partial_blocks_match_dense(si, bi):
    shape, (bq, bk) = SHAPES[si], BLOCKS[bi]
    g = torch.Generator().manual_seed(si * 10 + bi)
    for name, mask in _types(shape, g).items():
        dense = mask.dense(shape)
        assert dense.shape == tuple(shape) and dense.dtype == torch.bool, name
        kinds = mask.classify(shape, bq, bk)
        want = classify_dense(dense, bq, bk)
        assert kinds.shape == want.shape and torch.equal(kinds, want), name
        for qb, kb in [(0, 0), (kinds.shape[2] - 1, kinds.shape[3] - 1), (kinds.shape[2] // 2, kinds.shape[3] // 3)]:
            block = mask.block(shape, bq, bk, qb, kb)
            assert torch.equal(block, dense[..., qb * bq:(qb + 1) * bq, kb * bk:(kb + 1) * bk]), (name, qb, kb)


def test_random_shapes_and_blocks():
    rng = random.Random(0)
    for trial in range(25):
        shape = Shape(rng.randint(1, 3), rng.randint(1, 2), rng.randint(1, 70), rng.randint(1, 70))
        bq, bk = rng.choice([1, 2, 7, 16, 32]), rng.choice([1, 3, 16, 64])
        g = torch.Generator().manual_seed(trial)
        for name, mask in _types(shape, g).items():
            assert torch.equal(mask.classify(shape, bq, bk), classify_dense(mask.dense(shape), bq, bk)), (name, shape, bq, bk)


@pytest.mark.parametrize("sq, sk", [(5, 9), (9, 5), (6, 6), (1, 8)])
def test_causal_alignment_against_sdpa(sq, sk):
    """SDPA's is_causal is top-left; bottom-right keeps the last query on the last key."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, sq, 8), torch.randn(1, 2, sk, 8), torch.randn(1, 2, sk, 8)
    shape = Shape(1, 2, sq, sk)
    stock = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=Causal().dense(shape)), stock)
    br = Causal("bottom_right").dense(shape)
    assert bool(br[0, 0, -1].all())  # the last query sees every key
    assert torch.equal(br, torch.ones(sq, sk, dtype=torch.bool).tril(sk - sq).expand(1, 2, sq, sk))
    if sq != sk:
        assert not torch.equal(br, Causal().dense(shape))
    else:
        assert torch.equal(br, Causal().dense(shape))


def test_known_values():
    shape = Shape(1, 1, 4, 4)
    assert SlidingWindow(1, 0).dense(shape)[0, 0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    assert PrefixLM(2).dense(shape)[0, 0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert KeyLengths(torch.tensor([3])).dense(shape)[0, 0, 0].int().tolist() == [1, 1, 1, 0]
    kinds = Causal().classify(Shape(1, 1, 8, 8), 4, 4)[0, 0]
    assert kinds.tolist() == [[BlockKind.PARTIAL, BlockKind.EMPTY], [BlockKind.FULL, BlockKind.PARTIAL]]


def test_composition_and_describe():
    pad = KeyPadding(torch.tensor([[True, True, False]]))
    assert intersect(Causal(), pad).describe() == "causal-padded"
    assert intersect(NoMask(), Causal()).describe() == "causal"
    assert intersect(NoMask()).describe() == "none"
    assert intersect(intersect(SlidingWindow(128, 0), pad), Causal("bottom_right")).describe() == "sliding(128,0)-padded-causal-br"
    shape = Shape(1, 1, 3, 3)
    both = And((Causal(), pad))
    assert torch.equal(both.dense(shape), Causal().dense(shape) & pad.dense(shape))
    assert pad.lengths().tolist() == [2]
    assert KeyPadding(torch.tensor([[False, True]])).lengths() is None
    with pytest.raises(ValueError):
        And((Causal(),))
    with pytest.raises(ValueError):
        Causal("middle")
    with pytest.raises(ValueError):
        SlidingWindow(-1, 0)


def test_bind_replaces_tensor_fields_only():
    placeholder = object()
    m = And((Causal(), KeyPadding(placeholder)))
    bound = m.bind(lambda x: torch.tensor([[True, False]]) if x is placeholder else x)
    assert bound.parts[0] == Causal() and torch.equal(bound.parts[1].keep, torch.tensor([[True, False]]))
