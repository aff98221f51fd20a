"""The profile report's plot: per-layer sensitivity on the budget's own metric (top) and the time
each layer's choice saves (bottom). Every candidate has its own colour and marker and sits at its
own offset in a layer's column, so no candidate hides another; the legend is outside the axes."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Optional

from ..backends.registry import BACKENDS
from .candidates import ProfileCandidate
from .metric import metric_unit
from .report import candidate_name
from .summary import CandidateResult, ProfileSummary
from .units import ms_scale

MARKERS = "o^sDvP*XhH"
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD")
LOG_FLOOR = 1e-12  # an exactly-zero error still gets a point on a log axis


@dataclasses.dataclass(frozen=True)
class SensitivityAxis:
    """How the budget's metric is drawn: which value, on what scale, under which name."""
    label: str
    log: bool
    y: Callable[[float], float]  # metric value -> plotted value


def sensitivity_axis(metric: str) -> Optional[SensitivityAxis]:
    """The axis for a built-in metric; None for another metric (drawn as its error cost)."""
    if metric == "cosine":
        return SensitivityAxis("1 − cosine of the model output\n(log; lower is better)", True, lambda v: 1.0 - v)
    if metric == "rel_l1":
        return SensitivityAxis("relative L1 error of the model output\n(log; lower is better)", True, lambda v: v)
    if metric == "psnr":
        return SensitivityAxis("PSNR of the model output, dB\n(higher is better)", False, lambda v: v)
    return None


def _point(axis: Optional[SensitivityAxis], entry: CandidateResult) -> Optional[float]:
    """The plotted value of one measurement, None when it was skipped or is not finite."""
    raw = entry.e2e_value if axis is not None else entry.e2e_cost
    if raw is None:
        return None
    y = axis.y(raw) if axis is not None else raw
    if not math.isfinite(y):
        return None
    log = axis.log if axis is not None else True
    return max(y, LOG_FLOOR) if log else y


def candidate_styles(labels: list) -> dict:
    """{label: (colour, marker)}: no two candidates alike (up to 10 candidates, then repeats)."""
    return {label: (PALETTE[j % len(PALETTE)], MARKERS[j % len(MARKERS)]) for j, label in enumerate(labels)}


def baseline_color(label: str) -> str:
    """The bar colour of a layer left on a backend that is not a candidate (the exact baseline)."""
    cand = ProfileCandidate.from_label(label)
    return BACKENDS[cand.backend].plot_color if cand is not None else "lightgrey"


def plot_report(summary: ProfileSummary, path: Path, estimated: bool) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    s = summary
    layers = list(s.layers)
    labels = list(s.candidates)
    style = candidate_styles(labels)
    axis = sensitivity_axis(s.metric)
    width = 0.8 / max(len(labels), 1)  # each candidate at its own offset inside the layer's column
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8.0, 0.5 * len(layers) + 4), 8), sharex=True)

    handles = []
    for j, label in enumerate(labels):
        color, marker = style[label]
        xs, ys, chosen_xs, chosen_ys = [], [], [], []
        for i, layer in enumerate(layers):
            e = s.layers[layer]
            y = _point(axis, e.candidates.get(label, CandidateResult()))
            if y is None:
                continue
            x = i + (j - (len(labels) - 1) / 2) * width
            xs.append(x)
            ys.append(y)
            if e.chosen == label:
                chosen_xs.append(x)
                chosen_ys.append(y)
        ax1.scatter(xs, ys, marker=marker, s=36, color=color, edgecolors="black", linewidths=0.4, zorder=3)
        ax1.scatter(chosen_xs, chosen_ys, marker="o", s=150, facecolors="none", edgecolors="black", linewidths=1.4,
                    zorder=4)
        shown = candidate_name(s, label) + ("" if xs else " (not measured: see the table)")
        handles.append(Line2D([], [], linestyle="", marker=marker, color=color, markeredgecolor="black",
                              markeredgewidth=0.4, label=shown))
    handles.append(Line2D([], [], linestyle="", marker="o", markersize=11, markerfacecolor="none",
                          markeredgecolor="black", label="chosen"))

    op = ">=" if s.higher_is_better else "<="
    bound = f"{s.metric} {op} {s.budget}{metric_unit(s.metric)}"
    budget_y = _budget_y(axis, s)
    if budget_y is not None:
        ax1.axhline(budget_y, color="red", linestyle="--", zorder=2)
        handles.append(Line2D([], [], color="red", linestyle="--", label=f"budget: {bound}"))
    if axis is None or axis.log:
        ax1.set_yscale("log")
    ax1.set_ylabel((axis.label if axis is not None else f"error cost of {s.metric}\n(log; lower is better)")
                   + "\nwith only this layer switched", fontsize=8)
    ax1.grid(axis="y", alpha=0.3)
    ax1.set_title(f"{s.model}: per-layer sensitivity and choice\n{bound}, "
                  f"achieved {_fmt(s.achieved)}", fontsize=10)

    saved = [s.layers[l].saved_ms for l in layers]
    unit, factor = ms_scale(max([abs(v) for v in saved] + [0.0]))
    chosen = [s.layers[l].chosen for l in layers]
    bar_colors = [style[c][0] if c in style else baseline_color(c) for c in chosen]
    ax2.bar(range(len(layers)), [v * factor for v in saved], color=bar_colors, edgecolor="black", linewidth=0.4)
    ax2.set_ylabel(f"time saved per pass ({unit})" + ("\nFLOP estimate at H100 speed" if estimated else ""), fontsize=8)
    ax2.grid(axis="y", alpha=0.3)
    ax2.set_xticks(range(len(layers)))
    ax2.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    ax2.set_xlim(-0.6, len(layers) - 0.4)
    for c in sorted({c for c in chosen if c not in style}):
        handles.append(Patch(facecolor=baseline_color(c), edgecolor="black", label=f"{candidate_name(s, c)}: nothing saved"))

    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8,
               title="candidates (bars: chosen)", title_fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")  # "tight": the outside legend and tick labels are kept
    plt.close(fig)
    return path


def _budget_y(axis: Optional[SensitivityAxis], s: ProfileSummary) -> Optional[float]:
    if axis is not None:
        y = axis.y(s.budget)
        return max(y, LOG_FLOOR) if axis.log else y
    cost = s.budget_cost  # written by profile since the per-metric axes; older files lack it
    return max(cost, LOG_FLOOR) if isinstance(cost, (int, float)) and math.isfinite(cost) else None


def _fmt(x) -> str:
    return f"{x:.6g}" if isinstance(x, (int, float)) and math.isfinite(x) else str(x)
