"""Small models for the profiler tests (also loadable by `smartcompile profile --model`)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

SENSITIVE = "blocks.1"


class Block(nn.Module):
    """Self-attention block; `temperature` sharpens its attention, `gain` weights its output."""

    def __init__(self, dim: int, heads: int, temperature: float = 1.0, gain: float = 1.0) -> None:
        super().__init__()
        self.heads, self.temperature, self.gain = heads, temperature, gain
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q * self.temperature, k, v)
        return x + self.gain * self.out(o.transpose(1, 2).reshape(b, n, d))


class SensitiveNet(nn.Module):
    """Four blocks; blocks.1 has peaky attention (temperature 80) and a dominant output, so 8-bit
    or sparse attention there moves the model's output far more than anywhere else."""

    def __init__(self, dim: int = 64, heads: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, heads, temperature=80.0, gain=10.0) if i == 1 else Block(dim, heads) for i in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def sensitive_net(seed: int = 0) -> tuple:
    torch.manual_seed(seed)
    model = SensitiveNet().eval()
    calibration = [((torch.randn(2, 300, 64),), {}) for _ in range(2)]
    return model, calibration


def factory():
    """For the CLI: (model, args)."""
    model, calibration = sensitive_net()
    return model, calibration[0][0]


class NoAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x).relu()
