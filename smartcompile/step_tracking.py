"""Denoising steps from a diffusers pipeline, with no change to the user's sampling loop.

`track_steps(pipe)` wraps two methods of this pipeline object (not its class). Step mode is the
scope of the denoising loop's progress bar (`with self.progress_bar(...)`, or `for t in
self.progress_bar(timesteps)`): it starts at step 0 there and ends when the bar closes, also when
the loop raises; `pipe.scheduler.step` moves to the next step inside it. The scheduler is wrapped
when the loop starts, so a scheduler replaced after `track_steps` or shared with another pipeline
is followed too. Every transformer call in the loop (both halves of classifier-free guidance
too) sees the step of the scheduler call that follows it. A step counts `scheduler.step` calls,
one per denoising step for the usual (first-order) samplers.
"""
from __future__ import annotations

import functools
from typing import Any

from .backends.denoising_step import current_step, set_step

_MARK = "_smartcompile_tracks_steps"


def _next_step() -> None:
    step = current_step()
    if step is not None:  # outside the loop (e.g. a second pipeline sharing the scheduler) nothing moves
        set_step(step + 1)


def _follow_scheduler(scheduler: Any) -> None:
    if getattr(scheduler, _MARK, False) or not callable(getattr(scheduler, "step", None)):
        return
    step_fn = scheduler.step

    @functools.wraps(step_fn)
    def step(*args: Any, **kw: Any):
        out = step_fn(*args, **kw)
        _next_step()
        return out

    scheduler.step = step
    setattr(scheduler, _MARK, True)


class _StepScope:
    """The pipeline's progress bar, unchanged, except that its scope is step mode."""

    def __init__(self, bar: Any, pipe: Any) -> None:
        self._bar, self._pipe = bar, pipe

    def _start(self) -> None:
        _follow_scheduler(getattr(self._pipe, "scheduler", None))
        set_step(0)

    def __enter__(self):
        self._start()
        return self._bar.__enter__()

    def __exit__(self, *exc_info):
        try:
            return self._bar.__exit__(*exc_info)
        finally:
            set_step(None)

    def __iter__(self):
        self._start()
        try:
            yield from self._bar
        finally:
            set_step(None)

    def __getattr__(self, name: str):
        return getattr(self._bar, name)


def track_steps(pipe: Any) -> Any:
    """Make `smartcompile.step` follow `pipe`'s denoising loop; returns `pipe`. Idempotent."""
    missing = [m for m in ("progress_bar",) if not callable(getattr(pipe, m, None))]
    if not callable(getattr(getattr(pipe, "scheduler", None), "step", None)):
        missing.append("scheduler.step")
    if missing:
        raise TypeError(f"smartcompile.track_steps: {type(pipe).__name__} has no {missing}; expected a diffusers "
                        "pipeline (or wrap each step in `with smartcompile.step(i):`)")
    if getattr(pipe, _MARK, False):
        return pipe
    make_bar = pipe.progress_bar
    pipe.progress_bar = functools.wraps(make_bar)(lambda *a, **kw: _StepScope(make_bar(*a, **kw), pipe))
    setattr(pipe, _MARK, True)
    return pipe
