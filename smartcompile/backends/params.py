"""Parameters a backend accepts, as data: type, allowed values or range, default, meaning."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from ..kernels.config import field_rule

# Integer parameters without their own maximum are bounded here: a count such as topk beyond
# this is a typo, and an unbounded one overflows the kernels' int64 arithmetic at run time.
INT_PARAM_MAX = 2**20


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: type  # int, float, bool or str
    default: Any
    doc: str
    choices: Optional[tuple] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_maximum: bool = False
    nullable: bool = False

    @property
    def upper(self) -> Optional[float]:
        """The maximum that applies: the declared one, else INT_PARAM_MAX for free integers."""
        if self.maximum is None and self.kind is int and self.choices is None:
            return INT_PARAM_MAX
        return self.maximum

    def allowed(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        parts = [self.kind.__name__]
        if self.minimum is not None:
            parts.append(f">= {self.minimum}")
        if self.upper is not None:
            parts.append(f"{'<' if self.exclusive_maximum else '<='} {self.upper}")
        if self.nullable:
            parts.append("or null")
        return " ".join(parts)

    def problem(self, value: Any) -> Optional[str]:
        """None if `value` is allowed, else what is wrong (without the path)."""
        if value is None:
            return None if self.nullable else f"null is not allowed; expected {self.allowed()}"
        ok_type = isinstance(value, self.kind) and not (self.kind is not bool and isinstance(value, bool))
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok_type = True
        if not ok_type:
            return f"{show_value(value)} has type {type(value).__name__}; expected {self.allowed()}"
        if self.kind is float and not _finite_float(value):  # NaN compares false with every bound
            return f"{show_value(value)} is not a finite number; expected {self.allowed()}"
        if self.choices is not None and value not in self.choices:
            return f"{show_value(value)} is not allowed; expected {self.allowed()}"
        if self.minimum is not None and value < self.minimum:
            return f"{show_value(value)} is out of range; expected {self.allowed()}"
        if self.upper is not None and (value >= self.upper if self.exclusive_maximum else value > self.upper):
            return f"{show_value(value)} is out of range; expected {self.allowed()}"
        return None


UNCHANGED: Any = object()  # "as the field's rule has it" (None is a real value for these)


def field_param(config: type, field: str, name: str, *, default: Any = UNCHANGED, choices: Any = UNCHANGED,
                minimum: Any = UNCHANGED) -> ParamSpec:
    """The parameter `name` that sets the kernel config's `field`: type, nullability, default, choices,
    range and doc as the field's rule (kernels/config.py) has them, except what is given here."""
    kind, nullable, field_default, rule = field_rule(config, field)
    spec = ParamSpec(name, kind, field_default, rule.doc, rule.choices, rule.minimum, rule.maximum,
                     rule.exclusive_maximum, nullable)
    given = {"default": default, "choices": choices, "minimum": minimum}
    return dataclasses.replace(spec, **{k: v for k, v in given.items() if v is not UNCHANGED})


def show_value(value: Any, limit: int = 80) -> str:
    """repr() for error messages: short, and never failing (ints past 4300 digits have no repr)."""
    try:
        text = repr(value)
    except ValueError:
        if isinstance(value, int):
            return f"<an integer of {value.bit_length()} bits>"
        return f"<a {type(value).__name__} holding an integer too long to show>"
    except RecursionError:  # e.g. a deeply nested tuple used as a dict key
        return f"<a {type(value).__name__} nested too deeply to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finite_float(value: Any) -> bool:
    """A float that is not NaN/inf, or an int that converts to one (10**400 does not)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False

