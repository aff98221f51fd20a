"""Evidence that attention is learned: per-layer entropy and locality of the self-attention maps.

Trained video DiTs attend locally in space and time (and keep a few global or sink-like heads);
random-init attention is near uniform. Two numbers per layer and head tell them apart:
- entropy of each query's attention distribution (nats; log(N) is uniform attention), and
- locality: the share of its mass on keys within `radius_t` frames and `radius_s` patches
  (Chebyshev distance in height and width) of the query; `uniform_locality` is what uniform
  attention would put there.
SDPA does not return its probabilities, so a forward pre-hook captures each self-attention's
input and the maps are recomputed, for a sample of queries, from the module's own weights.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from .dit import SelfAttention, apply_rope


def token_positions(grid: tuple) -> torch.Tensor:
    """(t, h, w) of every token (N, 3), in the order the DiT flattens its patches."""
    axes = torch.meshgrid(*[torch.arange(n) for n in grid], indexing="ij")
    return torch.stack([a.reshape(-1) for a in axes], dim=-1)


def entropy_and_locality(probs: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor, radius_t: int,
                         radius_s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) and local mass of each attention row: probs (..., Nq, Nk) with rows summing to 1,
    q_pos (Nq, 3) and k_pos (Nk, 3) the (t, h, w) of queries and keys. Returns two (..., Nq) tensors."""
    if probs.shape[-2:] != (len(q_pos), len(k_pos)):
        raise ValueError(f"entropy_and_locality: probs ends in {tuple(probs.shape[-2:])}, expected "
                         f"({len(q_pos)}, {len(k_pos)}) from q_pos and k_pos")
    p = probs.float()
    entropy = -torch.special.xlogy(p, p).sum(-1)
    d = (q_pos[:, None, :] - k_pos[None, :, :]).abs().to(p.device)
    window = (d[..., 0] <= radius_t) & (d[..., 1] <= radius_s) & (d[..., 2] <= radius_s)
    return entropy, (p * window).sum(-1)


def _queries_keys(attn: SelfAttention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q and k (B, heads, N, head_dim) exactly as SelfAttention.forward computes them."""
    b, n, d = x.shape
    q, k, _ = attn.qkv(x).view(b, n, 3, attn.heads, d // attn.heads).permute(2, 0, 3, 1, 4)
    return apply_rope(attn.q_norm(q), cos, sin), apply_rope(attn.k_norm(k), cos, sin)


@torch.no_grad()
def self_attention_stats(model: nn.Module, inputs: tuple, grid: tuple, queries: int = 256, radius_t: int = 1,
                         radius_s: int = 2, seed: int = 0) -> list:
    """Per self-attention layer of `model` run on `inputs`: a dict with its name, mean entropy, entropy
    relative to uniform (entropy / log N), locality, uniform_locality, and the per-head means.

    grid: the (t, h, w) token grid; queries: how many query tokens to sample (all when >= N)."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, SelfAttention)]
    if not layers:
        raise ValueError("self_attention_stats: model has no smartcompile.demo.dit.SelfAttention layer")
    pos = token_positions(grid)
    n = len(pos)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:queries].sort().values
    window = ((pos[pick, None] - pos[None]).abs() <= torch.tensor([radius_t, radius_s, radius_s])).all(-1)
    uniform_locality = window.float().mean().item()
    captured: dict = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: captured.__setitem__(name, args))
             for name, m in layers]
    try:
        model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for name, m in layers:
        if name not in captured:
            raise ValueError(f"self_attention_stats: layer {name} did not run on these inputs")
        x, cos, sin = captured.pop(name)
        if x.shape[1] != n:
            raise ValueError(f"self_attention_stats: layer {name} saw {x.shape[1]} tokens, grid {grid} has {n}")
        q, k = _queries_keys(m, x, cos, sin)
        q = q[:, :, pick.to(q.device)].float()
        probs = (q @ k.float().transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
        entropy, local = entropy_and_locality(probs, pos[pick], pos, radius_t, radius_s)
        head_entropy, head_local = entropy.mean(dim=(0, 2)), local.mean(dim=(0, 2))
        out.append({
            "layer": name, "entropy": head_entropy.mean().item(),
            "relative_entropy": head_entropy.mean().item() / math.log(n),
            "locality": head_local.mean().item(), "uniform_locality": uniform_locality,
            "heads": {"entropy": head_entropy.tolist(), "locality": head_local.tolist()},
        })
    return out


def stats_table(trained: list, init: Optional[list] = None) -> str:
    """A markdown table of self_attention_stats, with random-init columns beside when given."""
    head = "| layer | entropy / log N | locality | uniform locality | per-head locality |"
    rule = "|---|---|---|---|---|"
    if init is not None:
        head = "| layer | entropy / log N (init) | locality (init) | uniform locality | per-head locality (init) |"
    rows = [head, rule]
    for i, s in enumerate(trained):
        heads = " ".join(f"{v:.2f}" for v in s["heads"]["locality"])
        if init is None:
            rows.append(f"| {s['layer']} | {s['relative_entropy']:.3f} | {s['locality']:.3f} | "
                        f"{s['uniform_locality']:.3f} | {heads} |")
        else:
            r = init[i]
            init_heads = " ".join(f"{v:.2f}" for v in r["heads"]["locality"])
            rows.append(f"| {s['layer']} | {s['relative_entropy']:.3f} ({r['relative_entropy']:.3f}) | "
                        f"{s['locality']:.3f} ({r['locality']:.3f}) | {s['uniform_locality']:.3f} | "
                        f"{heads} ({init_heads}) |")
    return "\n".join(rows)
