"""The profile report: a terminal table, and a plot (matplotlib) of per-layer sensitivity, time
saved and the chosen backend. Built from a profiled policy's metadata, so a saved file can be
reported on later (`smartcompile profile --report` or ProfileReport.from_policy)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Union

from ..errors import SmartCompileError
from ..policies import Policy

BACKEND_COLORS = {"flash": "#4C72B0", "sage": "#DD8452", "sparge": "#55A868"}


def short_label(label: str) -> str:
    """'sparge[sim_threshold=-1.0,sparsity_ratio=0.75]' -> 'sparge 75% forced' (for plots)."""
    backend, _, rest = label.partition("[")
    words = [backend]
    for item in filter(None, rest.rstrip("]").split(",")):
        key, _, value = item.partition("=")
        if key == "pv_precision":
            words.append(value)
        elif key == "sparsity_ratio":
            words.append(f"{float(value):.0%}")
        elif key == "sim_threshold" and float(value) <= -1:
            words.append("forced")
        else:
            words.append(item)
    return " ".join(words)


def _fmt(x, spec: str = ".4f") -> str:
    return "-" if x is None else (format(x, spec) if isinstance(x, (int, float)) and math.isfinite(x) else str(x))


@dataclasses.dataclass(frozen=True)
class ProfileReport:
    summary: dict  # policy.metadata["profile"]

    @classmethod
    def from_policy(cls, policy: Policy) -> "ProfileReport":
        summary = policy.metadata.get("profile")
        if not isinstance(summary, dict) or "layers" not in summary:
            raise SmartCompileError(f"report: policy {policy.source} has no profile measurements (metadata.profile)")
        return cls(summary)

    def table(self) -> str:
        s = self.summary
        head = ("layer", "calls", "chosen", "exact ms", "chosen ms", "saved/pass ms", "local cos", f"e2e {s['metric']}")
        rows = []
        for layer, e in s["layers"].items():
            c = e["candidates"].get(e["chosen"], {})
            rows.append((layer, str(e["calls"]), e["chosen"], _fmt(e["time_exact_ms"], ".4g"),
                         _fmt(c.get("time_ms", e["time_exact_ms"]), ".4g"), _fmt(e["saved_ms"], ".4g"),
                         _fmt(c.get("cosine"), ".5f"), _fmt(c.get("e2e_value"), ".6f")))
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths))
        lines = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
        op = ">=" if s["higher_is_better"] else "<="
        lines.append(f"budget {s['metric']} {op} {s['budget']}: achieved {_fmt(s['achieved'], '.6f')} "
                     f"({'met' if s['meets_budget'] else 'NOT met'}) after {len(s['verification'])} verification run(s)")
        speed = s.get("speedup")
        if speed:
            lines.append(f"end to end: {speed['speedup_vs_torch_compile']:.2f}x torch.compile default "
                         f"({speed['torch_compile_ms']:.1f} ms -> {speed['policy_ms']:.1f} ms per calibration pass; "
                         f"{s['metric']} of the compiled policy {_fmt(speed['value_compiled'], '.6f')})")
        lines.append(f"times: {s['times']}")
        lines.append(f"profiling took {s['wall_s']:.1f} s; {s['cache']['reused_measurements']} cached measurements reused")
        return "\n".join(lines)

    def plot(self, path: Union[str, Path]) -> Path:
        try:
            import matplotlib
        except ImportError:
            raise SmartCompileError("report: the plot needs matplotlib: pip install 'smartcompile[plot]'") from None
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        s = self.summary
        layers = list(s["layers"])
        x = range(len(layers))
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 0.45 * len(layers) + 3), 7.5), sharex=True)
        markers = "o^sDvP*X"
        for j, label in enumerate(s["candidates"]):
            ys = [s["layers"][l]["candidates"].get(label, {}).get("e2e_cost") for l in layers]
            pts = [(i, y) for i, y in zip(x, ys) if y is not None]
            if pts:
                color = BACKEND_COLORS.get(label.split("[")[0], "gray")
                ax1.scatter([p[0] for p in pts], [max(p[1], 1e-12) for p in pts], marker=markers[j % len(markers)],
                            color=color, alpha=0.75, label=short_label(label))
        from .metric import BUILTIN_METRICS

        m = BUILTIN_METRICS.get(s["metric"])
        if m is not None:
            ax1.axhline(max(m.cost(s["budget"]), 1e-12), color="red", linestyle="--", label=f"budget ({s['metric']} {s['budget']})")
        ax1.set_yscale("log")
        ax1.set_ylabel(f"end-to-end error cost\n(only this layer switched)")
        ax1.legend(fontsize=7, ncol=2)
        ax1.set_title(f"{s['model']}: per-layer sensitivity and choice ({s['metric']} achieved {_fmt(s['achieved'], '.5f')})")
        saved = [s["layers"][l]["saved_ms"] for l in layers]
        colors = [BACKEND_COLORS.get(s["layers"][l]["chosen"].split("[")[0], "gray") for l in layers]
        ax2.bar(list(x), saved, color=colors)
        top = max(saved + [1e-12])
        for i, l in enumerate(layers):
            ax2.text(i, saved[i] + 0.02 * top, short_label(s["layers"][l]["chosen"]), fontsize=7, rotation=90,
                     ha="center", va="bottom")
        ax2.set_ylim(0, top * 1.45)
        ax2.set_ylabel("time saved per pass (ms)" + ("" if s["times"].startswith("cuda") else "\n(H100 estimate)"))
        ax2.set_xticks(list(x))
        ax2.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=130)
        plt.close(fig)
        return path
