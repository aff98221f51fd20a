"""The profile report: a terminal table, and a plot (matplotlib) of per-layer sensitivity, time
saved and the chosen backend. Built from a profiled policy's metadata (a ProfileSummary), so a
saved file can be reported on later (`smartcompile profile --report` or ProfileReport.from_policy).
Table and plot name candidates alike (candidate_name)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Union

from ..backends.registry import BACKENDS
from ..errors import SmartCompileError
from ..policies import Policy
from .candidates import ProfileCandidate
from .metric import metric_unit
from .summary import CandidateResult, ProfileSummary
from .units import format_ms

PLOT_INSTALL_HINT = "pip install 'smartcompile[plot]'"


def short_label(label: str) -> str:
    """'sparge[sim_threshold=-1.0,sparsity_ratio=0.75]' -> 'sparge 75% forced'; 'flash' -> 'flash (exact)'
    (each backend names its own parameters); a label of a backend not known here stays as it is."""
    cand = ProfileCandidate.from_label(label)
    return label if cand is None else cand.name


def candidate_name(summary: ProfileSummary, label: str) -> str:
    """For people: a candidate by the backend and parameters the summary records for it; the exact
    baseline (and a candidate of a summary written without candidate_rules) by its label."""
    cand = summary.candidate_rules.get(label)
    return cand.name if cand is not None and cand.backend in BACKENDS else short_label(label)


def require_matplotlib() -> None:
    """Raise now, before a long profile, when a plot is asked for and matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401 -- only whether it imports
    except ImportError:
        raise SmartCompileError(f"report: the plot needs matplotlib: {PLOT_INSTALL_HINT}") from None


def check_plot_path(path: Union[str, Path], flag: str = "plot") -> Path:
    """`path` if a plot can be written there: matplotlib takes the format from the suffix (none: it would
    write `path`.png instead), the folder must exist, and the path must not be a folder. Checked before any work."""
    require_matplotlib()
    from matplotlib.figure import Figure

    formats = sorted(Figure().canvas.get_supported_filetypes())
    p = Path(path)
    if p.is_dir():
        raise SmartCompileError(f"{flag}: {str(p)!r} is a folder; give a file name ending in one of "
                                f"{', '.join('.' + f for f in formats)}")
    if p.suffix.lower().lstrip(".") not in formats:
        raise SmartCompileError(f"{flag}: {str(p)!r}: the format comes from the file's suffix "
                                f"({p.suffix or 'none'}); allowed: {', '.join('.' + f for f in formats)}")
    if not p.parent.is_dir():
        raise SmartCompileError(f"{flag}: {str(p)!r}: the folder {str(p.parent)!r} does not exist")
    return p


def _fmt(x, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):  # NaN is stored as null (json_safe)
        return "-"
    return format(x, spec) if isinstance(x, (int, float)) and math.isfinite(x) else str(x)


@dataclasses.dataclass(frozen=True)
class ProfileReport:
    summary: ProfileSummary  # a dict (policy.metadata["profile"]) is read with ProfileSummary.from_dict

    def __post_init__(self) -> None:
        if not isinstance(self.summary, ProfileSummary):
            object.__setattr__(self, "summary", ProfileSummary.from_dict(self.summary))

    @classmethod
    def from_policy(cls, policy: Policy) -> "ProfileReport":
        """Raises PolicyError naming the field when the policy's metadata.profile is malformed."""
        if "profile" not in policy.metadata:
            raise SmartCompileError(f"report: policy {policy.source} has no profile measurements (metadata.profile)")
        return cls(ProfileSummary.from_dict(policy.metadata["profile"], f"{policy.source}: policy.metadata.profile"))

    @property
    def estimated(self) -> bool:
        """Times are FLOP estimates (no GPU was profiled), not measurements."""
        return self.summary.estimated

    def table(self) -> str:
        s = self.summary
        est = " (est.)" if self.estimated else ""
        head = ("layer", "calls", "chosen", f"exact/call{est}", f"chosen/call{est}", f"saved/pass{est}", "local cos",
                f"e2e {s.metric}")
        rows = []
        for layer, e in s.layers.items():
            c = e.candidates.get(e.chosen, CandidateResult())
            rows.append((layer, str(e.calls), candidate_name(s, e.chosen), format_ms(e.time_exact_ms),
                         format_ms(e.time_exact_ms if c.time_ms is None else c.time_ms), format_ms(e.saved_ms),
                         _fmt(c.cosine, ".5f"), _fmt(c.e2e_value, ".6f")))
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip()
        lines = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
        op = ">=" if s.higher_is_better else "<="
        lines.append(f"budget {s.metric} {op} {s.budget}{metric_unit(s.metric)}: achieved {_fmt(s.achieved, '.6f')} "
                     f"({'met' if s.meets_budget else 'NOT met'}) after {len(s.verification)} verification run(s)")
        speed = s.speedup
        if speed:
            lines.append(f"end to end: {speed.speedup_vs_torch_compile:.2f}x torch.compile default "
                         f"({format_ms(speed.torch_compile_ms)} -> {format_ms(speed.policy_ms)} per calibration "
                         f"pass; {s.metric} of the compiled policy {_fmt(speed.value_compiled, '.6f')})")
        if self.estimated:
            lines.append("(est.): no GPU here: times are FLOP estimates at H100 speeds, and so are the choices they "
                         "drive; profile on a GPU for real times")
        else:
            lines.append(f"times: {s.times}")
        lines.append(f"profiling took {s.wall_s:.1f} s; {s.reused_measurements} cached measurements reused")
        return "\n".join(lines)

    def plot(self, path: Union[str, Path]) -> Path:
        """Write the plot to `path`, in the format its suffix names (.png, .pdf, .svg...; needs matplotlib)."""
        from .plot import plot_report

        return plot_report(self.summary, check_plot_path(path), estimated=self.estimated)
