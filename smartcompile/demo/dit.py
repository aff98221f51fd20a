"""A DiT-style video model: patchified video tokens with 3-D RoPE self-attention (written with
SDPA), cross-attention to text tokens (written by hand), adaLN modulation, MLPs.

Random weights: it exists to exercise attention at realistic shapes, not to generate video.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    channels: int = 4
    frames: int = 4
    height: int = 32
    width: int = 32
    patch: tuple = (1, 2, 2)
    dim: int = 256
    heads: int = 4
    depth: int = 4
    text_len: int = 32
    text_dim: int = 128
    mlp_ratio: float = 4.0

    @property
    def grid(self) -> tuple:
        return (self.frames // self.patch[0], self.height // self.patch[1], self.width // self.patch[2])

    @property
    def tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w


# the random-weight model at 16k tokens with wide heads (benchmarks/bench_profile.py --random-weights)
LARGE_CONFIG = DiTConfig(frames=16, height=64, width=64, dim=1536, heads=24, depth=8, text_len=128, text_dim=1024)


def rope_3d(grid: tuple, head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (tokens, head_dim) for 3-D rotary embedding: the head dim is split over t, h, w."""
    parts = [head_dim // 3 // 2 * 2] * 2
    parts.insert(0, head_dim - sum(parts))
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float32, device=device) for n in grid], indexing="ij")
    angles = []
    for pos, d in zip(axes, parts):
        freqs = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
        a = pos.reshape(-1, 1) * freqs[None]
        angles.append(torch.cat([a, a], dim=-1))
    ang = torch.cat(angles, dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads)
        self.k_norm = nn.RMSNorm(dim // heads)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, text_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(text_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h, hd = self.heads, d // self.heads
        q = self.q(x).view(b, n, h, hd).transpose(1, 2)
        k, v = self.kv(text).view(b, text.shape[1], 2, h, hd).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        probs = scores.float().softmax(dim=-1).to(q.dtype)
        return self.out((probs @ v).transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.attn = SelfAttention(d, cfg.heads)
        self.norm2 = nn.LayerNorm(d)
        self.cross_attn = CrossAttention(d, cfg.text_dim, cfg.heads)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(d, int(d * cfg.mlp_ratio)), nn.GELU(approximate="tanh"), nn.Linear(int(d * cfg.mlp_ratio), d))
        self.modulation = nn.Linear(d, 6 * d)

    def forward(self, x, text, temb, cos, sin):
        s1, b1, g1, s2, b2, g2 = self.modulation(F.silu(temb))[:, None].chunk(6, dim=-1)
        x = x + g1 * self.attn(self.norm1(x) * (1 + s1) + b1, cos, sin)
        x = x + self.cross_attn(self.norm2(x), text)
        return x + g2 * self.mlp(self.norm3(x) * (1 + s2) + b2)


class TinyVideoDiT(nn.Module):
    def __init__(self, cfg: DiTConfig = DiTConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        pt, ph, pw = cfg.patch
        self.patch_embed = nn.Linear(cfg.channels * pt * ph * pw, cfg.dim)
        self.time_embed = nn.Sequential(nn.Linear(256, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.dim)
        self.proj_out = nn.Linear(cfg.dim, cfg.channels * pt * ph * pw)
        cos, sin = rope_3d(cfg.grid, cfg.dim // cfg.heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def timestep_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        a = t.float()[:, None] * freqs[None]
        return torch.cat([a.cos(), a.sin()], dim=-1)

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = latents.shape
        pt, ph, pw = self.cfg.patch
        gt, gh, gw = f // pt, h // ph, w // pw
        x = latents.reshape(b, c, gt, pt, gh, ph, gw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, gt * gh * gw, -1)
        x = self.patch_embed(x)
        temb = self.time_embed(self.timestep_embedding(timestep).to(x.dtype))
        cos, sin = self.rope_cos.to(x.device), self.rope_sin.to(x.device)
        for block in self.blocks:
            x = block(x, text, temb, cos, sin)
        x = self.proj_out(self.norm_out(x))
        x = x.reshape(b, gt, gh, gw, c, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, c, f, h, w)


def demo_inputs(cfg: DiTConfig, batch: int = 1, device="cpu", dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, cfg.channels, cfg.frames, cfg.height, cfg.width, generator=g)
    text = torch.randn(batch, cfg.text_len, cfg.text_dim, generator=g)
    timestep = torch.full((batch,), 500.0)
    return latents.to(device, dtype), timestep.to(device), text.to(device, dtype)


def build_demo(cfg: DiTConfig = DiTConfig(), device="cpu", dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    model = TinyVideoDiT(cfg).to(device=device, dtype=dtype).eval()
    return model, demo_inputs(cfg, device=device, dtype=dtype, seed=seed)


def factory():
    """Entry for `smartcompile explain --model smartcompile.demo.dit:factory`."""
    return build_demo()
