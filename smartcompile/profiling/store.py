"""The profiler's measurement cache: one JSON line per finished measurement, flushed at once, so
an interrupted run (Ctrl-C) keeps what it measured and the next run with the same model,
inputs, hardware and candidates picks up from there.

Every line carries "format": CACHE_FORMAT. On reading, a line that is unreadable (binary, cut
by an interrupt, too long), of another format, or not a valid record of its stage is skipped
and measured again; one warning per file says how many, and the file is rewritten without them.
A failed measurement (a non-finite or negative time) is never written.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from .._cache import CACHE_FORMAT, cache_dir, iter_json_lines, read_cache_bytes, warn_once, write_text_atomic
from .._logging import logger
from ..backends.params import show_value


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


# ---- what a record of each stage must hold (the fields later stages read) ----------------
def _is_number(v: Any) -> bool:
    """int or float, not bool, not NaN, within float range (±inf is a real outcome: an error
    metric of a non-finite output)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return not math.isnan(float(v))
    except OverflowError:  # an integer beyond float range (a JSON literal of 400 digits)
        return False


def _is_time(v: Any) -> bool:
    return _is_number(v) and 0 <= v < math.inf


def _is(kind: type):
    return lambda v: isinstance(v, kind)


def _number_or_none(v: Any) -> bool:
    return v is None or _is_number(v)


_FIELDS = {
    "exact": {"implementation": _is(str), "time_ms": _is_time},
    "local_unrunnable": {"backend": _is(str), "why": _is(str)},
    "local": {"backend": _is(str), "runnable": _is(bool), "implementation": _is(str), "params": _is(dict),
              "time_ms": _is_time, "cosine": _is_number, "rel_l1": _is_number, "finite": _is(bool),
              "rmse": _number_or_none, "density": _number_or_none},
    "sensitivity": {"value": _is_number},
}


def record_problem(rec: Any) -> Optional[str]:
    """None if `rec` (as read back from JSON) is a complete measurement record, else what is wrong."""
    if not isinstance(rec, dict):
        return f"a {type(rec).__name__}, not a record object"
    for key in ("stage", "layer", "label"):
        if not isinstance(rec.get(key), str):
            return f"{key!r} missing or not a string"
    kind = "local_unrunnable" if rec["stage"] == "local" and rec.get("runnable") is False else rec["stage"]
    if kind not in _FIELDS:
        return f"unknown stage {rec['stage']!r}"
    for key, ok in _FIELDS[kind].items():
        if key not in rec or not ok(rec[key]):
            return f"{kind} record: {key!r} is missing or invalid ({show_value(rec.get(key))})"
    return None


class MeasurementStore:
    """{(stage, layer, label): record}, persisted as JSON lines under cache_dir()/profile/."""

    def __init__(self, key: Optional[str]) -> None:
        self.path: Optional[Path] = cache_dir() / "profile" / f"{key}.jsonl" if key else None
        self.records: dict = {}
        self.reused = 0
        if self.path is not None:
            self._load(self.path)

    def _load(self, path: Path) -> None:
        data, problem = read_cache_bytes(path)
        if problem is not None:
            warn_once(path, f"profile cache {path}: ignored ({problem}); measuring again")
            self._rewrite(path)
            return
        skipped: list[str] = []
        other_format = 0
        for n, value, why in iter_json_lines(data or b""):
            if why is None and not isinstance(value, dict):
                why = f"a {type(value).__name__}, not a record object"
            if why is None and value.get("format") != CACHE_FORMAT:
                other_format += 1
                continue
            if why is None:
                rec = _restore({k: v for k, v in value.items() if k != "format"})
                why = record_problem(rec)
            if why is not None:
                skipped.append(f"line {n}: {why}")
                continue
            self.records[(rec["stage"], rec["layer"], rec["label"])] = rec
        if skipped:
            warn_once(path, f"profile cache {path}: skipped {len(skipped)} unreadable or invalid line(s), measuring "
                            f"them again (first: {skipped[0]})")
        elif other_format:
            logger.info("profile cache %s: %d line(s) of another cache format ignored", path, other_format)
        if skipped or other_format:
            self._rewrite(path)

    def _rewrite(self, path: Path) -> None:
        """Keep only the valid records, so the next run neither warns again nor grows the file."""
        try:
            write_text_atomic(path, "".join(_line(r) for r in self.records.values()))
        except OSError as exc:
            logger.warning("profile cache %s not rewritten: %s", path, exc)
            self.path = None

    def get(self, stage: str, layer: str, label: str) -> Optional[dict]:
        rec = self.records.get((stage, layer, label))
        if rec is not None:
            self.reused += 1
        return rec

    def put(self, record: dict) -> None:
        self.records[(record["stage"], record["layer"], record["label"])] = record
        try:
            line = _line(record)
        except (TypeError, ValueError) as exc:  # not JSON data: used this run, not kept
            logger.info("profile cache: not keeping %s: %s", _key_text(record), exc)
            return
        problem = record_problem(_restore(json.loads(line)))
        if problem is not None:  # a failed measurement is used this run, never cached as a verdict
            logger.info("profile cache: not keeping %s: %s", _key_text(record), problem)
            return
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
        except OSError as exc:
            logger.warning("profile cache %s not written: %s", self.path, exc)
            self.path = None


def _key_text(record: dict) -> str:
    return "/".join(str(record.get(k)) for k in ("stage", "layer", "label"))


def _line(record: dict) -> str:
    return json.dumps({"format": CACHE_FORMAT, **json_safe(record)}, sort_keys=True, allow_nan=False) + "\n"
