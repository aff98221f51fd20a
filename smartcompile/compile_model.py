"""smartcompile.compile: torch.compile with the smartattn backend, its options checked now.

`torch.compile(model, backend="smartattn", options=...)` hands the options to the backend only at
the first call, where a typo surfaces inside Dynamo's BackendCompilerFailed report. This checks
them (policy file, keys, mode) before anything is compiled, with a short error.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

from .compiler.backend import SmartAttnBackend


def compile(model: Union[torch.nn.Module, Callable], policy: Any = None, mode: Optional[str] = None,
            auto: Optional[str] = None, dynamic: Optional[bool] = None, fullgraph: bool = False):
    """`torch.compile(model, backend=smartcompile.backend(policy, mode, auto), dynamic=dynamic,
    fullgraph=fullgraph)`, with policy, mode and auto validated now (OptionsError / PolicyError)."""
    return torch.compile(model, backend=SmartAttnBackend(policy=policy, mode=mode, auto=auto), dynamic=dynamic,
                         fullgraph=fullgraph)
