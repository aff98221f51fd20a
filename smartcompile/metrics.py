"""Output-error metrics against a reference (used by tests, the demo and profiling)."""
from __future__ import annotations

import dataclasses
import math

import torch


@dataclasses.dataclass(frozen=True)
class ErrorStats:
    cosine: float
    rel_l1: float
    rmse: float
    max_abs: float
    finite: bool

    def __str__(self) -> str:
        return f"cos={self.cosine:.6f} relL1={self.rel_l1:.4f} rmse={self.rmse:.3g} max={self.max_abs:.3g}"


def error_stats(out: torch.Tensor, ref: torch.Tensor) -> ErrorStats:
    o, r = out.detach().double().flatten(), ref.detach().double().flatten()
    finite = bool(torch.isfinite(o).all())
    diff = o - r
    denom = r.abs().sum().item()
    cos = torch.nn.functional.cosine_similarity(o, r, dim=0, eps=1e-30).item() if finite else float("nan")
    return ErrorStats(
        cosine=cos,
        rel_l1=diff.abs().sum().item() / denom if denom > 0 else float(diff.abs().sum().item() > 0),
        rmse=math.sqrt(diff.pow(2).mean().item()) if finite else float("inf"),
        max_abs=diff.abs().max().item() if finite else float("inf"),
        finite=finite,
    )


def psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB, peak = max |ref|."""
    mse = (out.double() - ref.double()).pow(2).mean().item()
    peak = ref.double().abs().max().item()
    return float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse)
