"""Times for people: '92.2 ns', '41.3 µs', '12.5 ms', '3.20 s' rather than '9.216e-05 ms'."""
from __future__ import annotations

import math
from typing import Optional

_STEPS = ((1e3, "s", 1e-3), (1.0, "ms", 1.0), (1e-3, "µs", 1e3), (0.0, "ns", 1e6))  # (from ms, unit, factor)


def format_ms(ms: Optional[float]) -> str:
    """A duration given in milliseconds, in the unit that keeps 1-999 before the point, 3 significant digits."""
    if ms is None:
        return "-"
    if not isinstance(ms, (int, float)) or not math.isfinite(ms):
        return str(ms)
    if ms == 0:
        return "0"
    unit, factor = ms_scale(ms)
    value = ms * factor
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{digits}f} {unit}"


def ms_scale(largest_ms: float) -> tuple[str, float]:
    """(unit, factor from ms) for an axis whose largest value is `largest_ms`."""
    largest = abs(largest_ms) if math.isfinite(largest_ms) else 0.0
    return next((unit, factor) for lower, unit, factor in _STEPS if largest >= lower)  # the last lower is 0
