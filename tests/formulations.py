"""Attention written in many ways, as small modules (q/k/v from one linear projection).

Each formulation maps (q, k, v, extra) -> out with q (B, H, S, D), k/v (B, Hkv, Sk, D) and is
exercised by the pass tests and the property-based tests.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def repeat_kv(x: torch.Tensor, n: int) -> torch.Tensor:
    """The Llama way: expand + reshape."""
    b, h, s, d = x.shape
    if n == 1:
        return x
    return x[:, :, None, :, :].expand(b, h, n, s, d).reshape(b, h * n, s, d)


def f_sdpa_positional(q, k, v, extra):
    return F.scaled_dot_product_attention(q, k, v, None, 0.0, False)


def f_sdpa_kwargs_mask(q, k, v, extra):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=extra["additive"], scale=0.3)


def f_sdpa_causal(q, k, v, extra):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def f_sdpa_gqa(q, k, v, extra):
    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


def f_div_transpose(q, k, v, extra):
    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    return s.softmax(dim=-1) @ v


def f_mul_mT_torch(q, k, v, extra):
    s = torch.matmul(q, k.mT) * (q.shape[-1] ** -0.5)
    return torch.matmul(torch.softmax(s, dim=3), v)


def f_einsum(q, k, v, extra):
    s = torch.einsum("bhqd,bhkd->bhqk", q, k) * 0.2
    return torch.einsum("bhqk,bhkd->bhqd", F.softmax(s, -1), v)


def f_bmm_3d(q, k, v, extra):
    b, h, s, d = q.shape
    q3, k3, v3 = (t.reshape(b * h, t.shape[2], d) for t in (q, k, v))
    p = torch.bmm(q3, k3.transpose(1, 2)).div(math.sqrt(d)).softmax(-1)
    return torch.bmm(p, v3).reshape(b, h, s, d)


def f_baddbmm_mask(q, k, v, extra):
    b, h, s, d = q.shape
    q3, k3, v3 = (t.reshape(b * h, t.shape[2], d) for t in (q, k, v))
    bias = extra["additive"].expand(b, h, s, k.shape[2]).reshape(b * h, s, k.shape[2])
    p = torch.baddbmm(bias, q3, k3.transpose(-1, -2), beta=1, alpha=d ** -0.5).softmax(dim=-1)
    return torch.bmm(p, v3).reshape(b, h, s, d)


def f_prescaled_q(q, k, v, extra):
    q = q * (q.shape[-1] ** -0.5)
    return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v


def f_sqrt_scaled_qk(q, k, v, extra):
    r = q.shape[-1] ** -0.25
    return ((q * r) @ (k * r).transpose(-2, -1)).softmax(-1) @ v


def f_t5_bias(q, k, v, extra):
    scores = torch.matmul(q, k.transpose(3, 2))
    scores += extra["additive"]
    w = F.softmax(scores.float(), dim=-1).type_as(scores)
    w = F.dropout(w, p=0.1, training=False)
    return torch.matmul(w, v)


def f_masked_fill(q, k, v, extra):
    s = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    s = s.masked_fill(extra["keep"] == 0, float("-inf"))
    return s.softmax(-1) @ v


def f_where_finfo(q, k, v, extra):
    s = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    s = torch.where(extra["keep"], s, torch.finfo(s.dtype).min)
    return s.softmax(-1) @ v


def f_causal_tril(q, k, v, extra):
    sq, sk = q.shape[-2], k.shape[-2]
    keep = torch.tril(torch.ones(sq, sk, device=q.device))
    s = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(keep == 0, float("-inf"))
    return F.softmax(s, dim=-1) @ v


def f_causal_triu(q, k, v, extra):
    sq, sk = q.shape[-2], k.shape[-2]
    future = torch.triu(torch.ones(sq, sk, device=q.device), diagonal=1).bool()
    s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return s.masked_fill(future, float("-inf")).softmax(-1) @ v


def f_repeat_kv(q, k, v, extra):
    n = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n), repeat_kv(v, n)
    w = torch.matmul(q, k.transpose(2, 3)) * q.shape[-1] ** -0.5 + extra["additive"]
    w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(w, v)


def f_repeat_interleave(q, k, v, extra):
    n = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(n, dim=1), v.repeat_interleave(n, dim=1)
    return (q @ k.transpose(-2, -1) * 0.125).softmax(-1) @ v


def f_pre_transposed_k(q, k, v, extra):
    kt = k.permute(0, 1, 3, 2).contiguous()  # the model keeps K^T around
    return ((q @ kt) * q.shape[-1] ** -0.5).softmax(-1) @ v


def f_unscaled(q, k, v, extra):
    return torch.softmax(q @ k.transpose(-2, -1), -1) @ v


FORMULATIONS = {  # name -> (fn, needs GQA-able kv heads, mask kind expected in the spec, causal)
    "sdpa_positional": (f_sdpa_positional, False, "none"),
    "sdpa_kwargs_mask": (f_sdpa_kwargs_mask, False, "additive"),
    "sdpa_causal": (f_sdpa_causal, False, "causal"),
    "sdpa_gqa": (f_sdpa_gqa, True, "none"),
    "div_transpose": (f_div_transpose, False, "none"),
    "mul_mT_torch": (f_mul_mT_torch, False, "none"),
    "einsum": (f_einsum, False, "none"),
    "bmm_3d": (f_bmm_3d, False, "none"),
    "baddbmm_mask": (f_baddbmm_mask, False, "additive"),
    "prescaled_q": (f_prescaled_q, False, "none"),
    "sqrt_scaled_qk": (f_sqrt_scaled_qk, False, "none"),
    "t5_bias": (f_t5_bias, False, "additive"),
    "masked_fill": (f_masked_fill, False, "bool"),
    "where_finfo": (f_where_finfo, False, "bool"),
    "causal_tril": (f_causal_tril, False, "causal"),
    "causal_triu": (f_causal_triu, False, "causal"),
    "repeat_kv": (f_repeat_kv, True, "additive"),
    "repeat_interleave": (f_repeat_interleave, True, "none"),
    "pre_transposed_k": (f_pre_transposed_k, False, "none"),
    "unscaled": (f_unscaled, False, "none"),
}


class AttnBlock(nn.Module):
    """Projections around one attention formulation; `self.attn` is where the site lives."""

    def __init__(self, fn, dim=32, heads=4, kv_heads=4):
        super().__init__()
        self.fn, self.heads, self.kv_heads, self.hd = fn, heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.hd)
        self.o = nn.Linear(dim, dim)

    def forward(self, x, ctx, extra):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.heads, self.hd).transpose(1, 2)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.kv_heads, self.hd).permute(2, 0, 3, 1, 4)
        return self.o(self.fn(q, k, v, extra).transpose(1, 2).reshape(b, s, -1))


class Model(nn.Module):
    def __init__(self, fn, gqa: bool):
        super().__init__()
        self.attn = AttnBlock(fn, kv_heads=2 if gqa else 4)

    def forward(self, x, ctx, extra):
        return self.attn(x, ctx, extra)


def make_inputs(sq=13, sk=13, dim=32, heads=4, batch=2, requires_grad=False):
    x = torch.randn(batch, sq, dim, requires_grad=requires_grad)
    ctx = x if sq == sk else torch.randn(batch, sk, dim, requires_grad=requires_grad)
    keep = torch.rand(batch, 1, sq, sk) > 0.3
    keep[..., 0] = True
    extra = {"additive": torch.randn(1, heads, sq, sk, requires_grad=requires_grad), "keep": keep}
    return x, ctx, extra
