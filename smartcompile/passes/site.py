"""AttentionSite: one attention found in a graph, with everything the rewrite needs.

Immutable: a matcher builds it once; a guard that finds a problem returns a copy with `rejected`
set (the reason shown in explain); later stages (naming, spec) also return copies."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from torch.fx import Node

from ..spec import AttentionSpec


@dataclasses.dataclass(frozen=True)
class MaskTerm:
    node: Node
    kind: str  # "keep" (True = attend), "drop" (True = masked out), "additive" (added to scores)
    factor: float = 1.0  # scale applied to the scores after this term was added (additive only)
    fill: float = float("-inf")  # keep/drop: the value masked scores are replaced by, in the scores' dtype
    cast_to: Optional[torch.dtype] = None  # additive: a bool/int/other-dtype tensor added to the scores


@dataclasses.dataclass(frozen=True)
class AttentionSite:
    pattern: str  # which form matched, e.g. "sdpa", "matmul/softmax/matmul"
    output: Node  # node whose uses the op replaces
    q: Node
    k: Node
    v: Node
    core: tuple = ()  # nodes whose module path names the layer
    chain: tuple = ()  # intermediates the rewrite removes
    k_transposed: bool = False  # `k` holds K^T (pre-transposed by the model)
    masks: tuple = ()  # tuple[MaskTerm, ...]
    is_causal: bool = False
    scale: Optional[float] = None  # None: SDPA default 1/sqrt(D)
    # factors of `scale` computed from symbolic sizes (SymFloat/SymInt; `scale` holds their example
    # values): finish_site guards them when they depend on the head dim only, else rejects the site
    scale_symbols: tuple = ()
    dropout: float = 0.0
    rank: int = 4  # 3 for (B*H, S, D) bmm-style attention
    # eager's value for query rows whose every key is masked, where the op's (0) differs:
    # "nan" (softmax over all -inf), "uniform" (a finite fill: every key weighs the same), or None
    masked_rows: Optional[str] = None
    # the mask's structure recovered from its producer subgraph (masks.MaskType; tensor fields hold graph
    # nodes); reported only: the rewrite still passes the dense mask. None: no mask, or not understood
    mask_structure: Optional[Any] = None
    rejected: Optional[str] = None  # why it is not rewritten
    layer: str = ""
    layer_note: str = ""
    spec: Optional[AttentionSpec] = None

    def rejecting(self, why: str) -> "AttentionSite":
        return dataclasses.replace(self, rejected=why)

    def remapped(self, replaced: dict) -> "AttentionSite":
        """This site with q/k/v/masks pointing at the replacements of nodes that earlier rewrites
        removed (an attention whose input is another attention's output)."""
        def fix(n):
            while n in replaced:
                n = replaced[n]
            return n

        masks = tuple(dataclasses.replace(m, node=fix(m.node)) for m in self.masks)
        structure = None if self.mask_structure is None else self.mask_structure.bind(fix)
        return dataclasses.replace(self, q=fix(self.q), k=fix(self.k), v=fix(self.v), masks=masks,
                                   mask_structure=structure)
