"""AttentionSite: one attention found in a graph, with everything the rewrite needs."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch.fx import Node

from ..spec import AttentionSpec


@dataclasses.dataclass
class MaskTerm:
    node: Node
    kind: str  # "keep" (True = attend), "drop" (True = masked out), "additive" (added to scores)
    factor: float = 1.0  # scale applied to the scores after this term was added (additive only)
    fill: float = float("-inf")  # keep/drop: the value masked scores are replaced by, in the scores' dtype
    cast_to: Optional[torch.dtype] = None  # additive: a bool/int/other-dtype tensor added to the scores


@dataclasses.dataclass
class AttentionSite:
    pattern: str  # which form matched, e.g. "sdpa", "matmul/softmax/matmul"
    output: Node  # node whose uses the op replaces
    q: Node
    k: Node
    v: Node
    k_transposed: bool = False  # `k` holds K^T (pre-transposed by the model)
    masks: list = dataclasses.field(default_factory=list)  # list[MaskTerm]
    is_causal: bool = False
    scale: Optional[float] = None  # None: SDPA default 1/sqrt(D)
    dropout: float = 0.0
    rank: int = 4  # 3 for (B*H, S, D) bmm-style attention
    chain: list = dataclasses.field(default_factory=list)  # intermediates the rewrite removes
    core: list = dataclasses.field(default_factory=list)  # nodes whose module path names the layer
    layer: str = ""
    layer_note: str = ""
    rejected: Optional[str] = None  # why it is not rewritten
    # eager's value for query rows whose every key is masked, where the op's (0) differs:
    # "nan" (softmax over all -inf), "uniform" (a finite fill: every key weighs the same), or None
    masked_rows: Optional[str] = None
    spec: Optional[AttentionSpec] = None

    def remap(self, replaced: dict) -> None:
        """Point q/k/v/masks at the replacements of nodes that earlier rewrites removed
        (an attention whose input is another attention's output)."""
        def fix(n):
            while n in replaced:
                n = replaced[n]
            return n

        self.q, self.k, self.v = fix(self.q), fix(self.k), fix(self.v)
        for term in self.masks:
            term.node = fix(term.node)
