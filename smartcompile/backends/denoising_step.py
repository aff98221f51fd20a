"""The denoising step the running forward belongs to: `with smartcompile.step(i): ...`.

The op reads it at run time (one ContextVar read), so per-step policy rules switch attention
without recompiling. Outside any step it is None and rules use their step-less form.
"""
from __future__ import annotations

import contextlib
import contextvars
import operator
from typing import Iterator, Optional

_STEP: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar("smartattn_step", default=None)


def current_step() -> Optional[int]:
    return _STEP.get()


@contextlib.contextmanager
def step(index: int) -> Iterator[None]:
    """Every attention call inside the block belongs to denoising step `index` (0-based)."""
    try:
        index = operator.index(index)
    except TypeError:
        raise TypeError(f"smartcompile.step: index must be an int, got {type(index).__name__} {index!r}") from None
    if index < 0:
        raise ValueError(f"smartcompile.step: index must be >= 0, got {index}")
    token = _STEP.set(index)
    try:
        yield
    finally:
        _STEP.reset(token)


def set_step(index: Optional[int]) -> None:
    """For integrations that cannot wrap the loop in `step()` (a scheduler hook): set the step
    until the next call; None leaves step mode."""
    _STEP.set(None if index is None else operator.index(index))
