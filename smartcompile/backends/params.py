"""Parameters a backend accepts, as data: type, allowed values or range, default, meaning."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional


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

    def allowed(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        parts = [self.kind.__name__]
        if self.minimum is not None:
            parts.append(f">= {self.minimum}")
        if self.maximum is not None:
            parts.append(f"{'<' if self.exclusive_maximum else '<='} {self.maximum}")
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
            return f"{value!r} has type {type(value).__name__}; expected {self.allowed()}"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not allowed; expected {self.allowed()}"
        if self.minimum is not None and value < self.minimum:
            return f"{value!r} is out of range; expected {self.allowed()}"
        if self.maximum is not None and (value >= self.maximum if self.exclusive_maximum else value > self.maximum):
            return f"{value!r} is out of range; expected {self.allowed()}"
        return None


def fill_defaults(specs: dict[str, ParamSpec], params: dict) -> dict:
    out = {name: p.default for name, p in specs.items()}
    out.update({k: v for k, v in params.items() if k in specs})
    return out
