"""Denoising steps from a diffusers pipeline, with no change to the user's sampling loop.

`track_steps(pipe)` wraps three methods of this pipeline object (not its class):
`pipe.scheduler.set_timesteps` starts step 0, `pipe.scheduler.step` moves to the next step, and
step mode ends when the denoising loop's progress bar closes (`with self.progress_bar(...)`,
also when the loop raises) or at `pipe.maybe_free_model_hooks` (the end of every diffusers
pipeline call). Every transformer call in between (both halves of classifier-free guidance too)
sees the step of the scheduler call that follows it. A step counts `scheduler.step` calls, which
is one per denoising step for the usual (first-order) samplers.
"""
from __future__ import annotations

import functools
from typing import Any

from .backends.denoising_step import current_step, set_step

_MARK = "_smartcompile_tracks_steps"


def _after(method, then):
    @functools.wraps(method)
    def wrapped(*args: Any, **kw: Any):
        out = method(*args, **kw)
        then()
        return out
    return wrapped


class _EndsStepMode:
    """The pipeline's progress bar, unchanged, except that leaving its `with` block (normally or
    by an exception) ends step mode: later calls outside the loop see no stale step."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def __enter__(self):
        return self._bar.__enter__()

    def __exit__(self, *exc_info):
        try:
            return self._bar.__exit__(*exc_info)
        finally:
            set_step(None)

    def __iter__(self):
        return iter(self._bar)

    def __getattr__(self, name: str):
        return getattr(self._bar, name)


def track_steps(pipe: Any) -> Any:
    """Make `smartcompile.step` follow `pipe`'s denoising loop; returns `pipe`. Idempotent."""
    scheduler = getattr(pipe, "scheduler", None)
    missing = [m for m in ("set_timesteps", "step") if not callable(getattr(scheduler, m, None))]
    if missing:
        raise TypeError(f"smartcompile.track_steps: {type(pipe).__name__} has no scheduler with {missing}; "
                        "expected a diffusers pipeline (or wrap each step in `with smartcompile.step(i):`)")
    if getattr(scheduler, _MARK, False):
        return pipe
    scheduler.set_timesteps = _after(scheduler.set_timesteps, lambda: set_step(0))
    scheduler.step = _after(scheduler.step, lambda: set_step((current_step() or 0) + 1))
    if callable(getattr(pipe, "progress_bar", None)):
        make_bar = pipe.progress_bar
        pipe.progress_bar = functools.wraps(make_bar)(lambda *a, **kw: _EndsStepMode(make_bar(*a, **kw)))
    if callable(getattr(pipe, "maybe_free_model_hooks", None)):
        pipe.maybe_free_model_hooks = _after(pipe.maybe_free_model_hooks, lambda: set_step(None))
    setattr(scheduler, _MARK, True)
    return pipe
