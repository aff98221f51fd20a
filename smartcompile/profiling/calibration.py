"""Calibration inputs -> a function that runs a (compiled) model over them and returns outputs."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Union

import torch

from ..errors import SmartCompileError

CalibrationInputs = Union[list, Callable[[Callable], Any]]


def make_runner(calibration_inputs: CalibrationInputs) -> tuple[Callable[[Callable], Iterator], int]:
    """(run(model) -> iterator of outputs, one per item; number of items). `calibration_inputs` is a list of
    (args, kwargs) pairs, or a callable that runs the model it is given (e.g. a few denoising
    steps) and returns what the metric compares."""
    if callable(calibration_inputs) and not isinstance(calibration_inputs, (list, tuple)):
        fn = calibration_inputs
        return (lambda model: iter([fn(model)])), 1
    if not isinstance(calibration_inputs, (list, tuple)) or not calibration_inputs:
        raise SmartCompileError(
            f"calibration_inputs: expected a non-empty list of (args, kwargs) pairs or a callable(model), "
            f"got {type(calibration_inputs).__name__}{' (empty)' if isinstance(calibration_inputs, (list, tuple)) else ''}"
        )
    items = []
    for i, item in enumerate(calibration_inputs):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], (tuple, list))
                and isinstance(item[1], dict)):
            raise SmartCompileError(
                f"calibration_inputs[{i}]: expected a pair (args tuple, kwargs dict), got {type(item).__name__}"
                + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
            )
        items.append((tuple(item[0]), dict(item[1])))

    def run(model: Callable) -> Iterator:
        return (model(*args, **kwargs) for args, kwargs in items)

    return run, len(items)


def detach_output(out: Any) -> Any:
    return torch.utils._pytree.tree_map(lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t, out)
