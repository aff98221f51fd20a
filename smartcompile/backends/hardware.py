"""What the device at hand is: compute capability and optional libraries, with reasons."""
from __future__ import annotations

import functools
import importlib
from typing import Optional

import torch


@functools.lru_cache(maxsize=None)
def compute_capability(device: str) -> Optional[tuple[int, int]]:
    """(major, minor) of a CUDA device, None for anything else."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    index = torch.device(device).index
    return torch.cuda.get_device_capability(0 if index is None else index)


@functools.lru_cache(maxsize=None)
def library_import_error(module: str) -> Optional[str]:
    """None when `module` imports, else the import error as a reason (cached)."""
    try:
        importlib.import_module(module)
    except ImportError as exc:  # a missing or broken optional kernel library is a reason, not a crash
        return f"{type(exc).__name__}: {exc}"
    except (OSError, RuntimeError) as exc:  # e.g. a CUDA extension built for another torch
        return f"{type(exc).__name__}: {exc}"
    return None
