"""Stage 4, choose: the most time saved whose summed per-layer error cost fits the budget
(a multiple-choice knapsack, solved greedily by saved time per unit of cost)."""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Option:
    layer: str
    label: str
    saved_ms: float  # per calibration pass, vs exact
    cost: float  # the metric's cost with only this layer switched


def choose_within_budget(options: dict, budget_cost: float) -> dict:
    """options {layer: [Option]} -> {layer: Option or None (exact)}.

    Repeatedly takes the upgrade (a layer to a faster option) with the best extra saving per extra
    cost that keeps the total within `budget_cost`; free upgrades (no extra cost) go first.
    """
    current: dict[str, Optional[Option]] = {layer: None for layer in options}
    total = 0.0
    while True:
        best, best_score = None, None
        for layer, opts in options.items():
            cur = current[layer]
            cur_saved, cur_cost = (cur.saved_ms, cur.cost) if cur else (0.0, 0.0)
            for o in opts:
                d_saved, d_cost = o.saved_ms - cur_saved, o.cost - cur_cost
                if d_saved <= 0 or total + d_cost > budget_cost:
                    continue
                score = (1, d_saved) if d_cost <= 0 else (0, d_saved / d_cost)
                if best_score is None or score > best_score:
                    best, best_score = o, score
        if best is None:
            return current
        prev = current[best.layer]
        total += best.cost - (prev.cost if prev else 0.0)
        current[best.layer] = best
