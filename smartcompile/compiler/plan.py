"""Plan: what each attention site gets, and why. `print(plan)` is a table."""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..spec import AttentionSpec


@dataclasses.dataclass(frozen=True)
class PlannedSite:
    layer: str
    pattern: str
    spec: Optional[AttentionSpec]
    backend: str  # flash | sage | sparge | off | "-" (not rewritten)
    implementation: str
    params: dict
    reason: str  # policy rule and, after "|", the fallback steps
    rewritten: bool
    note: str = ""  # layer naming remark, relative-path warning, ...
    graph: int = 0  # which compiled graph (several with graph breaks)
    steps: tuple = ()  # every implementation tried, with its rejection reasons, then the choice
    timings: tuple = ()  # ((label, ms), ...) measured on this GPU behind an auto choice

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["spec"] = self.spec.to_dict() if self.spec is not None else None
        return d


@dataclasses.dataclass
class Plan:
    sites: list = dataclasses.field(default_factory=list)  # list[PlannedSite]
    notes: list = dataclasses.field(default_factory=list)  # list[str]
    graphs: int = 0

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
                "sites": [s.to_dict() for s in self.sites]}

    def __str__(self) -> str:
        head = ("layer", "pattern", "shape", "backend", "implementation", "why")
        rows = []
        for s in self.sites:
            backend = s.backend if s.rewritten or s.backend == "off" else "-"
            why = s.reason + (f" [{s.note}]" if s.note else "")
            rows.append((s.layer, s.pattern, s.spec.short() if s.spec else "?", backend, s.implementation, why))
        widths = [min(max(len(str(r[i])) for r in [head] + rows), 48 if i < 5 else 10_000) for i in range(len(head))]
        fmt = lambda r: "  ".join(str(c)[: widths[i]].ljust(widths[i]) if i < 5 else str(c) for i, c in enumerate(r))
        lines = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
        n_rw = len(self.rewritten)
        lines.append(f"{n_rw} of {len(self.sites)} attention sites rewritten in {max(self.graphs, 1)} graph(s)")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    __repr__ = __str__
