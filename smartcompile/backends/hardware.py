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


# Libraries whose versions change which kernels run, or how fast. Every one of them runs on CUDA
# only, so a CPU's fingerprint leaves them out: installing triton on a laptop changes nothing
# that a CPU profile measured (reference numerics, estimated times).
FINGERPRINT_LIBRARIES = ("triton", "flash-attn", "flash_attn_3", "sageattention", "spas-sage-attn")


def _driver_version() -> Optional[str]:
    try:
        import pynvml  # optional: gives the driver release ("580.159.04")
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            version = pynvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else str(version)
        except pynvml.NVMLError:
            pass
    get = getattr(torch._C, "_cuda_getDriverVersion", None)  # the CUDA API version the driver supports
    return f"cuda-api-{get()}" if get is not None else None


def _library_versions() -> dict:
    from importlib import metadata

    out = {}
    for name in FINGERPRINT_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.lru_cache(maxsize=None)
def _fingerprint(device_type: str, index: int) -> tuple:
    on_gpu = device_type == "cuda" and torch.cuda.is_available()
    libraries = _library_versions() if on_gpu else {}
    fp: dict = {"device_type": device_type, "torch": torch.__version__, "libraries": libraries}
    if on_gpu:
        props = torch.cuda.get_device_properties(index)
        fp.update(
            device_name=props.name, compute_capability=f"{props.major}.{props.minor}",
            sm_count=props.multi_processor_count, cuda=torch.version.cuda, driver=_driver_version(),
        )
    else:
        fp.update(device_name=device_type)
    return tuple(sorted(fp.items(), key=lambda kv: kv[0]))


def hardware_fingerprint(device: str = "cuda") -> dict:
    """What measurements on `device` depend on: GPU name, compute capability, SM count, driver,
    CUDA, torch and kernel-library versions. Policies and timing caches carry it."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        dev = torch.device("cpu")
    fp = dict(_fingerprint(dev.type, dev.index or 0))
    fp["libraries"] = dict(fp["libraries"])
    return fp


# keys whose difference means measured times or errors may not carry over
FINGERPRINT_KEYS = ("device_name", "compute_capability", "sm_count", "driver", "cuda", "torch", "libraries")


def fingerprint_differences(recorded: dict, current: dict) -> list[str]:
    """['device_name: H100 -> cpu', ...] for the keys that differ. Between two CPUs the kernel
    libraries are not compared: none of them runs there (older CPU policies recorded them)."""
    out = []
    cpu_only = recorded.get("device_type") != "cuda" and current.get("device_type") != "cuda"
    for key in FINGERPRINT_KEYS:
        if cpu_only and key == "libraries":
            continue
        a, b = recorded.get(key), current.get(key)
        if a != b:
            out.append(f"{key}: {a} -> {b}")
    return out
