"""sage_quantize.wgmma_key_order against the two register layouts it bridges (the Gluon kernel's P: wgmma
accumulator -> FP8 wgmma register operand). The bases are Triton 3.6's linear layouts of
NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 128, 32]) and of its
DotOperandLayout(operand_index=0, k_width=4) over (64, 128), as `gl.to_linear_layout` prints them; each basis
is the (row, column) that one bit of the register / lane / warp index adds."""
import itertools

import pytest
import torch

sage_quantize = pytest.importorskip("smartcompile.kernels.sage_quantize")

ACC = dict(reg=[(0, 1), (8, 0), (0, 8), (0, 16), (0, 32), (0, 64)], lane=[(0, 2), (0, 4), (1, 0), (2, 0), (4, 0)],
           warp=[(16, 0), (32, 0)])
DOT = dict(reg=[(0, 1), (0, 2), (8, 0), (0, 16), (0, 32), (0, 64)], lane=[(0, 4), (0, 8), (1, 0), (2, 0), (4, 0)],
           warp=[(16, 0), (32, 0)])


def _place(layout, reg: int, lane: int, warp: int):
    row = col = 0
    for index, bases in ((reg, layout["reg"]), (lane, layout["lane"]), (warp, layout["warp"])):
        for bit, (r, c) in enumerate(bases):
            if index >> bit & 1:
                row ^= r
                col ^= c
    return row, col


def test_accumulator_column_moves_to_the_operand_column_in_the_same_register():
    """A thread's register holds S's column c as an accumulator; after renaming, the same register holds the
    operand's column k, and V's key c must sit at k: wgmma_key_order(n)[c] == k, for every register and lane."""
    pos = sage_quantize.wgmma_key_order(128)
    seen = set()
    for reg, lane, warp in itertools.product(range(64), range(32), range(4)):
        (row_a, col_a), (row_d, col_d) = _place(ACC, reg, lane, warp), _place(DOT, reg ^ _swap(reg), lane, warp)
        assert row_a == row_d, (reg, lane, warp)
        assert int(pos[col_a]) == col_d, (reg, lane, warp, col_a, col_d)
        seen.add((row_a, col_a))
    assert len(seen) == 64 * 128  # every element once


def _swap(reg: int) -> int:
    """The renaming is free but not the identity: register bits 1 and 2 trade places (row + 8 and column + 2
    sit in opposite order in the two layouts); the XOR that does it."""
    b1, b2 = reg >> 1 & 1, reg >> 2 & 1
    return (b1 ^ b2) << 1 | (b1 ^ b2) << 2


def test_order_is_a_permutation_within_each_16_keys():
    pos = sage_quantize.wgmma_key_order(256)
    assert sorted(pos.tolist()) == list(range(256))
    assert torch.equal(pos // 16, torch.arange(256) // 16)  # so any multiple of 16 keys stays in bounds
    assert pos[:16].tolist() == [0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15]


def test_key_at_inverts_the_order():
    # the quantize kernels gather V's tokens by _key_at and store them contiguously
    t = torch.arange(512)
    pos = sage_quantize.wgmma_key_order(512)
    assert torch.equal(sage_quantize._key_at(pos), t)
    assert torch.equal(sage_quantize._key_position(sage_quantize._key_at(t)), t)
