"""Per-denoising-step rules (policy version 2):

    {"by_step": {"0-1": "flash", "2-": {"backend": "sparge", "sparsity_ratio": 0.7}}}

Keys are inclusive step ranges "A-B", open ranges "A-" or single steps "A" (0-based); ranges may
not overlap. Values are ordinary rules. Outside any step (no `smartcompile.step`) and at steps no
range covers, the rule's "otherwise" applies, or exact attention ("flash") when it has none: a
step-less call never gets a lossy choice by accident.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from ..backends.registry import exact_baseline
from ..errors import PolicyError

MAX_STEP = 1_000_000  # far beyond any sampler's step count; bounds the integers read
STEP_RANGE_PATTERN = r"^([0-9]{1,7})(?:-([0-9]{1,7})?)?$"  # ASCII: Python's \d takes any Unicode digit
_RANGE = re.compile(STEP_RANGE_PATTERN)


def _parse_range(key: Any, where: str) -> tuple:
    m = _RANGE.fullmatch(key) if isinstance(key, str) else None
    if m is None:
        raise PolicyError(f"{where}: step range {key!r} is not allowed; expected \"A-B\" (inclusive), \"A-\" "
                          "(A and later) or \"A\", with 0 <= A <= B")
    first = int(m.group(1))
    last = first if "-" not in key else (int(m.group(2)) if m.group(2) else None)
    if first > MAX_STEP or (last is not None and (last > MAX_STEP or last < first)):
        raise PolicyError(f"{where}: step range {key!r} is not allowed; expected 0 <= A <= B <= {MAX_STEP}")
    return first, last


def _overlap(a: tuple, b: tuple) -> bool:
    a_last = float("inf") if a[1] is None else a[1]
    b_last = float("inf") if b[1] is None else b[1]
    return a[0] <= b_last and b[0] <= a_last


def parse_by_step(value: dict, where: str, parse_rule: Callable[[Any, str], Any], path: Callable) -> tuple:
    """(the "otherwise" rule's JSON value, ((first, last, Rule), ...) sorted by first step).
    `parse_rule` and `path` are policy.py's (the rule parser and the JSON path builder)."""
    ranges = value["by_step"]
    where_steps = path(where, "by_step")
    if not isinstance(ranges, dict) or not ranges:
        got = "an empty object" if isinstance(ranges, dict) else f"{type(ranges).__name__} {ranges!r}"
        raise PolicyError(f"{where_steps}: expected a non-empty object of step ranges to rules, got {got}")
    parsed = []
    for key, rule_value in ranges.items():
        at = path(where_steps, key, True)
        first, last = _parse_range(key, at)
        if isinstance(rule_value, dict) and "by_step" in rule_value:
            raise PolicyError(f"{at}: a per-step rule cannot hold another \"by_step\"")
        for other in parsed:
            if _overlap((first, last), other[:2]):
                raise PolicyError(f"{at}: overlaps the step range {other[3]!r}; each step may have one rule")
        parsed.append((first, last, parse_rule(rule_value, at), key))
    unknown = sorted(set(value) - {"by_step", "otherwise"})
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {unknown} beside \"by_step\"; allowed: \"otherwise\" "
                          "(the rule outside any step)")
    otherwise = value.get("otherwise", exact_baseline())
    if isinstance(otherwise, dict) and "by_step" in otherwise:
        raise PolicyError(f"{path(where, 'otherwise')}: cannot hold another \"by_step\"")
    return otherwise, tuple((a, b, r) for a, b, r, _ in sorted(parsed, key=lambda p: p[0]))


def parse_step_ranges(keys, where: str) -> tuple:
    """((first, last or None, key), ...) sorted, from range keys such as ["0-1", "2-"]; the
    profiler's step_ranges argument (same syntax and rules as by_step's keys)."""
    if not isinstance(keys, (list, tuple)) or not keys:
        raise PolicyError(f"{where}: expected a non-empty list of step ranges such as [\"0-1\", \"2-\"], got {keys!r}")
    parsed = []
    for i, key in enumerate(keys):
        first, last = _parse_range(key, f"{where}[{i}]")
        for other in parsed:
            if _overlap((first, last), other[:2]):
                raise PolicyError(f"{where}[{i}]: {key!r} overlaps {other[2]!r}; each step may have one range")
        parsed.append((first, last, key))
    return tuple(sorted(parsed, key=lambda p: p[0]))
