"""Run-time interception of the smartattn op, for profiling.

A compiled graph calls `torch.ops.smartattn.attention` with its planned choice as literals.
Inside `intercepting(fn)`, every call is first offered to `fn`: it may record the call (capture)
or return another output (switch one layer to a candidate without recompiling). Returning None
runs the planned implementation. Outside the context the op pays one ContextVar read.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Callable, Iterator, Optional

import torch


@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """One call of the op, as the compiled graph made it: tensors (B, H, S, D)."""
    layer: str
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: Optional[torch.Tensor]
    is_causal: bool
    scale: float
    backend: str
    implementation: str
    params: dict


Interceptor = Callable[[AttentionCall], Optional[torch.Tensor]]
_CURRENT: contextvars.ContextVar[Optional[Interceptor]] = contextvars.ContextVar("smartattn_interceptor", default=None)


def current_interceptor() -> Optional[Interceptor]:
    return _CURRENT.get()


@contextlib.contextmanager
def intercepting(fn: Interceptor) -> Iterator[None]:
    token = _CURRENT.set(fn)
    try:
        yield
    finally:
        _CURRENT.reset(token)
