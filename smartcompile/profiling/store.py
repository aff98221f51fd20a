"""The profiler's measurement cache: one JSON line per finished measurement, flushed at once, so
an interrupted run (Ctrl-C) keeps what it measured and the next run with the same model,
inputs, hardware and candidates picks up from there."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from .._cache import cache_dir
from .._logging import logger


def json_safe(value):
    """Floats JSON cannot hold (inf, nan) as "inf" / "-inf" / null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _restore(value):
    if value == "inf":
        return float("inf")
    if value == "-inf":
        return float("-inf")
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    return value


class MeasurementStore:
    """{(stage, layer, label): record}, persisted as JSON lines under cache_dir()/profile/."""

    def __init__(self, key: Optional[str]) -> None:
        self.path: Optional[Path] = cache_dir() / "profile" / f"{key}.jsonl" if key else None
        self.records: dict = {}
        self.reused = 0
        if self.path is not None and self.path.exists():
            for n, line in enumerate(self.path.read_text().splitlines()):
                try:
                    rec = _restore(json.loads(line))
                    self.records[(rec["stage"], rec["layer"], rec["label"])] = rec
                except (ValueError, KeyError):  # a line cut by an interrupt: ignore it
                    logger.info("profile cache %s: skipping unreadable line %d", self.path, n + 1)

    def get(self, stage: str, layer: str, label: str) -> Optional[dict]:
        rec = self.records.get((stage, layer, label))
        if rec is not None:
            self.reused += 1
        return rec

    def put(self, record: dict) -> None:
        self.records[(record["stage"], record["layer"], record["label"])] = record
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(json_safe(record), sort_keys=True) + "\n")
                f.flush()
        except OSError as exc:
            logger.warning("profile cache %s not written: %s", self.path, exc)
            self.path = None
