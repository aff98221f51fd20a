"""Rectified flow (flow matching): the training loss and an Euler sampler.

Convention: x_t = (1 - t) * video + t * noise, so t = 1 is pure noise and t = 0 the video; the
model predicts the velocity noise - video, and sampling integrates from t = 1 down to t = 0.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .video_data import NULL_ID


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def training_times(batch: int, device: torch.device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """t ~ logit-normal(0, 1), as in SD3: most samples at mid noise, where the velocity is hardest to predict."""
    return torch.sigmoid(torch.randn(batch, device=device, generator=generator))


def flow_matching_loss(model: nn.Module, video: torch.Tensor, cond: torch.Tensor, t: torch.Tensor,
                       noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted velocity at (video, t, noise); float32 scalar."""
    if noise.shape != video.shape or t.shape != video.shape[:1]:
        raise ValueError(f"flow_matching_loss: noise {tuple(noise.shape)} and t {tuple(t.shape)} must match "
                         f"video {tuple(video.shape)} and its batch")
    x_t = (1 - _bcast(t, video)) * video + _bcast(t, video) * noise
    return F.mse_loss(model(x_t, t, cond).float(), (noise - video).float())


@torch.no_grad()
def sample(model: nn.Module, cond: torch.Tensor, steps: int, noise: torch.Tensor, guidance: float = 1.0,
           progress: bool = False) -> torch.Tensor:
    """Videos from `noise` (B, 3, T, H, W) under condition ids `cond` (B, tokens) by `steps` Euler steps.

    guidance > 1 applies classifier-free guidance against the <null> condition (two model calls
    per step, batched). The state is integrated in float32 whatever the model's dtype; the
    result is float32 and not clamped."""
    if steps < 1:
        raise ValueError(f"sample: steps must be >= 1, got {steps}")
    if cond.shape[0] != noise.shape[0]:
        raise ValueError(f"sample: cond has batch {cond.shape[0]}, noise has batch {noise.shape[0]}")
    dtype = next(model.parameters()).dtype
    x = noise.float()
    times = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    if guidance != 1.0:
        cond = torch.cat([cond, torch.full_like(cond, NULL_ID)])
    for i in tqdm(range(steps), desc="sample", unit="step", disable=not progress):
        t = times[i].expand(x.shape[0])
        if guidance == 1.0:
            v = model(x.to(dtype), t, cond).float()
        else:
            v_cond, v_null = model(torch.cat([x, x]).to(dtype), torch.cat([t, t]), cond).float().chunk(2)
            v = v_null + guidance * (v_cond - v_null)
        x = x + (times[i + 1] - times[i]) * v
    return x
