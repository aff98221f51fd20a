"""Plan: what each attention site gets, and why. `print(plan)` is a table."""
from __future__ import annotations

import dataclasses
import textwrap
from typing import Optional

from ..spec import AttentionSpec

TABLE_WIDTH = 200  # characters per line of the printed plan
MAX_COLUMN = 48  # pattern, shape, backend, implementation: cut beyond this (the layer: only past the line's room)
MIN_WHY = 30


@dataclasses.dataclass(frozen=True)
class PlannedSite:
    layer: str
    pattern: str
    spec: Optional[AttentionSpec]
    backend: Optional[str]  # a backend name, "off", or None: not rewritten (reason says why)
    implementation: Optional[str]  # None unless rewritten
    params: dict
    reason: str  # one line: the policy rule, what it asked for, what runs and the most telling why
    rewritten: bool
    note: str = ""  # layer naming remark, relative-path warning, ...
    graph: int = 0  # which compiled graph (several with graph breaks)
    steps: tuple = ()  # backends.steps.Step records: every implementation tried and why not, then the choice
    timings: tuple = ()  # ((label, ms), ...) measured on this GPU behind an auto choice
    instances: tuple = ()  # full layer names a per-instance site serves (regional compilation)
    mask: str = ""  # the mask structure recognised in the graph, MaskType.describe() (e.g. "causal-padded")
    # auto chose exact SDPA for a plain SDPA call, which stays the graph's own call (backend.keeps_graph_sdpa)
    graph_sdpa_kept: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["spec"] = self.spec.to_dict() if self.spec is not None else None
        return d


@dataclasses.dataclass
class Plan:
    sites: list = dataclasses.field(default_factory=list)  # list[PlannedSite]
    notes: list = dataclasses.field(default_factory=list)  # list[str]
    graphs: int = 0
    # choices made at run time per module instance / denoising step (layer_dispatch.InstanceChoice)
    instances: list = dataclasses.field(default_factory=list)

    @property
    def rewritten(self) -> list:
        return [s for s in self.sites if s.rewritten]

    def by_layer(self) -> dict:
        return {s.layer: s for s in self.sites}

    def extend(self, other: "Plan") -> None:
        for s in other.sites:
            self.sites.append(dataclasses.replace(s, graph=self.graphs + s.graph))
        self.notes.extend(n for n in other.notes if n not in self.notes)
        self.graphs += max(other.graphs, 1)

    def to_dict(self) -> dict:
        return {"graphs": self.graphs, "notes": list(self.notes),
                "sites": [s.to_dict() for s in self.sites],
                "instances": [dataclasses.asdict(i) for i in self.instances]}

    def table(self, verbose: bool = False, width: int = TABLE_WIDTH) -> str:
        """One row per site, no line longer than `width`; `verbose`: every step under its row."""
        masks = any(s.mask for s in self.sites)  # the column appears only when a structure was recognised
        head = ("layer", "pattern", "shape") + (("mask",) if masks else ()) + ("backend", "implementation", "why")
        rows = []
        for s in self.sites:
            backend = s.backend if s.rewritten or s.backend == "off" else "-"
            why = s.reason + (f" [{s.note}]" if s.note and not verbose else "")
            mask = (s.mask or "-",) if masks else ()
            rows.append((s.layer, s.pattern, s.spec.short() if s.spec else "?") + mask
                        + (backend, s.implementation or "-", why))
        widths = [min(max(len(str(r[i])) for r in [head] + rows), MAX_COLUMN) for i in range(1, len(head) - 1)]
        # the layer column is what a policy rule names: whole where it fits, else its tail (attn1 vs attn2)
        room = width - sum(widths) - 2 * (len(widths) + 1) - MIN_WHY
        widths.insert(0, min(max(len(str(r[0])) for r in [head] + rows), max(room, MAX_COLUMN)))
        used = sum(widths) + 2 * len(widths)
        widths.append(max(min(max(len(r[-1]) for r in [head] + rows), width - used), MIN_WHY))
        lines = [_row(head, widths), _row(tuple("-" * w for w in widths), widths)]
        for s, r in zip(self.sites, rows):
            lines.append(_row((_cut_left(r[0], widths[0]),) + r[1:], widths))
            if verbose:
                details = [str(step) for step in s.steps] + ([f"note: {s.note}"] if s.note else [])
                if len(s.layer) > widths[0]:
                    details.insert(0, f"layer: {s.layer}")
                if len(r[-1]) > widths[-1]:
                    details.insert(0, f"why: {s.reason}")
                lines.extend(_wrap(d, width, "    ", "      ") for d in details)
        n_rw = len(self.rewritten)
        lines.append(f"{n_rw} of {len(self.sites)} attention sites rewritten in {max(self.graphs, 1)} graph(s)")
        if self.instances:
            lines.append("chosen per instance at run time:")
            for i in self.instances:
                at = "" if i.step is None else f" step {i.step}"
                lines.append(_cut(f"  {i.layer}{at}: {i.backend}/{i.implementation} ({i.reason})", width))
        lines.extend(_wrap(f"note: {n}", width, "", "      ") for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    __repr__ = __str__


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cut_left(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def _row(cells: tuple, widths: list) -> str:
    return "  ".join(_cut(str(c), w).ljust(w) for c, w in zip(cells, widths)).rstrip()


def _wrap(text: str, width: int, first: str, rest: str) -> str:
    return "\n".join(textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=rest,
                                    break_on_hyphens=False))
