"""Key-padding cases shared by the reference tests and the interpreted kernel checks: padded batches
(left, right, both sides, lengths) with odd spans, a single key, and a batch row with no key; and
key flags with holes."""
from __future__ import annotations

import torch

from smartcompile.masks import KeyLengths, KeyPadding

PADDINGS = ("lengths", "right", "left", "both")


def spans_for(kind: str, sk: int) -> list:
    """[start, end) of the kept keys for 3 batch rows."""
    return {
        "lengths": [(0, sk), (0, sk // 2 + 1), (0, 0)],
        "right": [(0, sk), (0, sk // 2 + 1), (0, 1)],
        "left": [(0, sk), (sk // 2 - 1, sk), (sk - 1, sk)],
        "both": [(3, sk - 9), (sk // 3, sk // 3 + 1), (1, sk - 1)],
    }[kind]


def padding_mask(kind: str, sk: int, dtype=torch.bool):
    """(mask type, dense keep (3, Sk)) for 3 batch rows."""
    spans = spans_for(kind, sk)
    j = torch.arange(sk)
    keep = torch.stack([(j >= a) & (j < e) for a, e in spans])
    if kind == "lengths":
        return KeyLengths(torch.tensor([e for _, e in spans])), keep
    return KeyPadding(keep.to(dtype)), keep


def empty_rows(keep: torch.Tensor, sq: int, is_causal: bool) -> torch.Tensor:
    """(B, 1, Sq) True for query rows with no kept key (top-left causal: key j <= query i)."""
    sk = keep.shape[1]
    visible = keep[:, None, :] & (torch.arange(sk)[None, None, :] <= torch.arange(sq)[None, :, None] if is_causal
                                  else torch.ones(1, sq, sk, dtype=torch.bool))
    return ~visible.any(dim=-1)[:, None, :]


def holes_keep(sk: int) -> torch.Tensor:
    """(4, Sk) keep flags with holes (KeyPadding's general case; Sk >= 70): scattered holes, a span from
    a block edge with holes on both sides of later edges (blocks of 32, 64, 128), no kept key, and a few
    late keys (under causal, most queries see none)."""
    j = torch.arange(sk)
    edges = torch.tensor([63, 64, 95, 96, 127, 128])
    return torch.stack([
        j % 7 != 3,  # attention_mask [1, 1, 1, 0, 1, 1, 1, 0, ...]
        (j >= 32) & (j < sk - 1) & ~torch.isin(j, edges),
        torch.zeros(sk, dtype=torch.bool),
        (j >= sk - 9) & (j != sk - 5),
    ])
