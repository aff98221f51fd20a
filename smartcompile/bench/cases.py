"""What `smartcompile bench` measures: the shape grid and the kernel variants, validated.

Defaults differ by device: the GPU grid is the one docs/benchmarks.md reports (B1 H24 bf16, 4k-32k
tokens); the CPU grid is small because on a CPU Sage and Sparge run their pure-torch reference
numerics, which are for quality, not speed.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..errors import SmartCompileError

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32}
DEVICES = ("cpu", "cuda")
MAX_BENCH_HEAD_DIM = 1024  # Capabilities' default max_head_dim: the largest head dim any implementation takes
GPU_DEFAULTS = dict(seq_lens=(4096, 16384, 32768), head_dims=(64, 128), heads=24, batch=1, dtype="bfloat16")
CPU_DEFAULTS = dict(seq_lens=(256, 512), head_dims=(64,), heads=4, batch=1, dtype="float32")
SPARSITIES = (0.5, 0.75)


class BenchError(SmartCompileError, ValueError):
    """A bad `smartcompile bench` option; the message names the option, the value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row kind of the tables: a backend with fixed parameters, run through the registry."""
    label: str
    backend: str
    params: tuple = ()  # ((name, value), ...): hashable, printable

    @property
    def param_dict(self) -> dict:
        return dict(self.params)


def default_variants(sparsities: tuple = SPARSITIES) -> tuple[Variant, ...]:
    # the similarity check off, so that the density is the one asked for (as benchmarks/bench_sparge.py)
    sparse = tuple(Variant(f"sparge {s:g}", "sparge", (("sparsity_ratio", s), ("sim_threshold", -1.0)))
                   for s in sparsities)
    return (Variant("flash", "flash"),
            Variant("sage fp16", "sage", (("pv_precision", "fp16"),)),
            Variant("sage fp8", "sage", (("pv_precision", "fp8"),))) + sparse


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    seq_lens: tuple
    head_dims: tuple
    heads: int
    batch: int
    dtype: torch.dtype
    device: str
    causal: bool = False
    variants: tuple = default_variants()
    max_ref_queries: int = 4096  # the fp32 reference covers this many queries ...
    max_ref_heads: int = 2  # ... of this many heads (a full fp32 reference at 32k x 24 heads is ~100 GB)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")

    def shapes(self) -> list[tuple[int, int]]:
        """(head_dim, seq_len) pairs, head dim outermost (the tables' order)."""
        return [(d, n) for d in self.head_dims for n in self.seq_lens]

    def to_dict(self) -> dict:
        return dict(seq_lens=list(self.seq_lens), head_dims=list(self.head_dims), heads=self.heads, batch=self.batch,
                    dtype=self.dtype_name, device=self.device, causal=self.causal,
                    variants=[v.label for v in self.variants],
                    reference=f"fp32 exact on {self.max_ref_heads} heads x up to {self.max_ref_queries} queries")


def _positive_ints(option: str, text: str, example: str = "e.g. 4096 or 4k; comma-separated list") -> tuple:
    """'4096,16k' -> (4096, 16384)."""
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        mult = 1024 if item.endswith("k") else 1
        digits = item[:-1] if mult > 1 else item
        if not (digits.isascii() and digits.isdigit()) or int(digits) <= 0:  # ascii: '²'.isdigit() is True
            raise BenchError(f"{option}: {item!r} is not a positive integer ({example})")
        out.append(int(digits) * mult)
    return tuple(dict.fromkeys(out))


def positive_int(option: str, text: Optional[str]) -> Optional[int]:
    """A command-line count: None stays None (the default)."""
    if text is None:
        return None
    values = _positive_ints(option, text, "one number, e.g. 4")
    if len(values) != 1 or "," in text:
        raise BenchError(f"{option}: {text!r} is not one positive integer")
    return values[0]


def resolve_device(device: Optional[str]) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in DEVICES:
        raise BenchError(f"--device: {device!r} is not one of {list(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device: 'cuda' is not available here (torch {torch.__version__} sees no CUDA GPU); "
                         "use --device cpu")
    return device


def resolve_dtype(dtype: Optional[str], device: str) -> torch.dtype:
    name = dtype if dtype is not None else (GPU_DEFAULTS if device == "cuda" else CPU_DEFAULTS)["dtype"]
    if name not in DTYPES:
        raise BenchError(f"--dtype: {name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[name]


def build_config(device: Optional[str] = None, dtype: Optional[str] = None, seq_lens: Optional[str] = None,
                 head_dims: Optional[str] = None, heads: Optional[int] = None, batch: Optional[int] = None,
                 causal: bool = False) -> BenchConfig:
    """The grid from command-line strings; None = the device's default."""
    dev = resolve_device(device)
    defaults = GPU_DEFAULTS if dev == "cuda" else CPU_DEFAULTS
    dims = _positive_ints("--head-dims", head_dims) if head_dims is not None else defaults["head_dims"]
    too_large = [d for d in dims if d > MAX_BENCH_HEAD_DIM]
    if too_large:  # checked up front: every row would be '-' with each backend's own refusal
        raise BenchError(f"--head-dims: {too_large[0]} is larger than any backend takes (at most {MAX_BENCH_HEAD_DIM})")
    odd = [d for d in dims if d % 2]
    if odd:
        raise BenchError(f"--head-dims: {odd} must be even (the structured inputs pair sin/cos features)")
    for option, value in (("--heads", heads), ("--batch", batch)):
        if value is not None and value <= 0:
            raise BenchError(f"{option}: {value} must be a positive integer")
    return BenchConfig(
        seq_lens=_positive_ints("--seq-lens", seq_lens) if seq_lens is not None else defaults["seq_lens"],
        head_dims=dims,
        heads=heads if heads is not None else defaults["heads"],
        batch=batch if batch is not None else defaults["batch"],
        dtype=resolve_dtype(dtype, dev), device=dev, causal=causal,
    )


def token_grid(n: int) -> tuple[int, int, int]:
    """T x S x S == n with S the largest side whose square divides n and leaves T >= 4 frames,
    so the structured inputs are a small video of exactly n tokens."""
    side = max(1, int((n // 4) ** 0.5))
    while side > 1 and n % (side * side):
        side -= 1
    return (n // (side * side), side, side)
