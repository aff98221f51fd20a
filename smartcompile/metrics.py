"""Output-error metrics against a reference: plain functions of two tensors (used by tests, the
demo, bench and profiling). The profiler's Metric (a model-level criterion with a budget and an
error cost) is a different thing: smartcompile.profiling.metric, built on these."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

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


def psnr(out: torch.Tensor, ref: torch.Tensor, peak: Optional[float] = None) -> float:
    """Peak signal-to-noise ratio in dB; peak: the signal's peak (default max |ref|; for images
    and videos, their value range, e.g. 2.0 for [-1, 1])."""
    mse = (out.double() - ref.double()).pow(2).mean().item()
    peak = ref.double().abs().max().item() if peak is None else peak
    return float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse)


def ssim(out: torch.Tensor, ref: torch.Tensor, data_range: float = 2.0) -> float:
    """Mean structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)
    of images (N, C, H, W) or videos (B, C, T, H, W), frame by frame; H and W must be >= 11."""
    if out.shape != ref.shape or out.dim() not in (4, 5):
        raise ValueError(f"ssim: expected two (N, C, H, W) or (B, C, T, H, W) tensors of one shape, got "
                         f"{tuple(out.shape)} and {tuple(ref.shape)}")
    if out.dim() == 5:  # frames as images
        out, ref = (v.transpose(1, 2).flatten(0, 1) for v in (out, ref))
    if min(out.shape[-2:]) < 11:
        raise ValueError(f"ssim: images must be at least 11x11 pixels, got {tuple(out.shape[-2:])}")
    x, y = out.double(), ref.double()
    c = x.shape[1]
    g = torch.exp(-((torch.arange(11, dtype=torch.float64, device=x.device) - 5) ** 2) / (2 * 1.5 ** 2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(c, 1, 11, 11)
    blur = lambda z: torch.nn.functional.conv2d(z, window, groups=c)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean().item()
