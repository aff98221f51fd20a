"""AttentionSpec: the one description of an attention call that every stage reads.

Built by the passes from fake-tensor metadata, read by policies and backends. It lives
at the package root because every layer needs it and it imports nothing of ours.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

# "padded": a (B|1, 1, 1, Sk) bool mask (key padding); "causal-padded": that mask AND top-left causal
MASK_KINDS = ("none", "bool", "additive", "causal", "padded", "causal-padded")


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    v_head_dim: int
    dtype: torch.dtype
    device: str  # "cpu", "cuda", ...
    layout: str = "bhsd"  # the op always receives (batch, heads, seq, dim); passes transpose views for free
    mask_kind: str = "none"  # one of MASK_KINDS; "causal" means no mask tensor, is_causal=True
    causal_alignment: Optional[str] = None  # "top_left" (SDPA convention) when causal
    dropout: float = 0.0
    scale: Optional[float] = None  # None = 1/sqrt(head_dim)
    requires_grad: bool = False

    def __post_init__(self) -> None:
        if self.mask_kind not in MASK_KINDS:
            raise ValueError(f"AttentionSpec.mask_kind: {self.mask_kind!r} is not one of {MASK_KINDS}")
        if self.q_heads % max(self.kv_heads, 1) != 0:
            raise ValueError(
                f"AttentionSpec: q_heads={self.q_heads} is not a multiple of kv_heads={self.kv_heads}"
            )

    @property
    def is_causal(self) -> bool:
        return self.mask_kind in ("causal", "causal-padded")

    @property
    def gqa(self) -> bool:
        return self.q_heads != self.kv_heads

    @property
    def effective_scale(self) -> float:
        return self.scale if self.scale is not None else self.head_dim ** -0.5

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    def short(self) -> str:
        """Readable one-line id, e.g. B2-Hq8-Hkv2-Sq97-Sk1025-D80-bf16-causal."""
        dt = str(self.dtype).replace("torch.", "").replace("float", "f").replace("bf16", "bf16")
        dt = {"f16": "fp16", "bf16": "bf16", "f32": "fp32", "bfloat16": "bf16"}.get(dt, dt)
        s = f"B{self.batch}-Hq{self.q_heads}-Hkv{self.kv_heads}-Sq{self.q_len}-Sk{self.kv_len}-D{self.head_dim}"
        if self.v_head_dim != self.head_dim:
            s += f"-Dv{self.v_head_dim}"
        s += f"-{dt}"
        if self.mask_kind != "none":
            s += f"-{self.mask_kind}"
        return s

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dtype"] = str(self.dtype).replace("torch.", "")
        return d


def is_key_padding(mask: torch.Tensor, batch: int, kv_len: int) -> bool:
    """A bool (B|1, 1, 1, Sk) mask: it keeps or drops whole keys per sequence, i.e. key padding."""
    return (mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[1] == mask.shape[2] == 1
            and mask.shape[3] == kv_len and mask.shape[0] in (1, batch))


def spec_from_tensors(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    scale: Optional[float] = None,
    dropout: float = 0.0,
) -> AttentionSpec:
    """Spec of concrete (B, H, S, D) tensors; used by tests, profiling and run-time checks."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"expected 4-D (B, H, S, D) q/k/v, got {q.dim()}-D, {k.dim()}-D, {v.dim()}-D")
    if mask is None:
        kind = "causal" if is_causal else "none"
    elif is_key_padding(mask, q.shape[0], k.shape[2]):
        kind = "causal-padded" if is_causal else "padded"
    else:
        kind = "bool" if mask.dtype == torch.bool else "additive"
    return AttentionSpec(
        batch=q.shape[0], q_heads=q.shape[1], kv_heads=k.shape[1], q_len=q.shape[2], kv_len=k.shape[2],
        head_dim=q.shape[3], v_head_dim=v.shape[3], dtype=q.dtype, device=str(q.device),
        mask_kind=kind, causal_alignment="top_left" if kind in ("causal", "causal-padded") else None, dropout=dropout,
        scale=scale, requires_grad=q.requires_grad or k.requires_grad or v.requires_grad,
    )
