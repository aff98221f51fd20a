"""The demo's video DiT (dit.py) conditioned on the procedural videos' condition tokens, and its weights file.

`ConditionedVideoDiT` is `TinyVideoDiT` with an embedding of the condition ids in front of its
cross-attention, so its attention layers keep the demo's names (`blocks.N.attn`: 3-D RoPE
self-attention through SDPA; `blocks.N.cross_attn`: hand-written cross-attention) and every
policy written for the demo applies to it. It predicts the flow-matching velocity of RGB pixel
videos (no latent space: the patch embedding sees pixels).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from .dit import DiTConfig, TinyVideoDiT, rope_3d
from .video_data import N_TOKENS, VOCAB

WEIGHTS_FORMAT = "smartcompile.video_dit/1"


def video_dit_config(frames: int, size: int, patch: int, dim: int, heads: int, depth: int,
                     mlp_ratio: float = 4.0, text_dim: int = 64) -> DiTConfig:
    """A DiTConfig for square RGB videos, patches of 1 frame x patch x patch pixels, N_TOKENS condition tokens."""
    if patch < 1 or size % patch:
        raise ValueError(f"video_dit_config: size {size} must be a multiple of patch {patch}")
    if heads < 1 or dim % heads or (dim // heads) % 2:
        raise ValueError(f"video_dit_config: dim {dim} must split into {heads} heads of an even size")
    if frames < 1 or depth < 1:
        raise ValueError(f"video_dit_config: frames ({frames}) and depth ({depth}) must be >= 1")
    return DiTConfig(channels=3, frames=frames, height=size, width=size, patch=(1, patch, patch), dim=dim,
                     heads=heads, depth=depth, text_len=N_TOKENS, text_dim=text_dim, mlp_ratio=mlp_ratio)


class ConditionedVideoDiT(TinyVideoDiT):
    def __init__(self, cfg: DiTConfig, vocab_size: int = len(VOCAB)) -> None:
        super().__init__(cfg)
        self.cond_embed = nn.Embedding(vocab_size, cfg.text_dim)
        # which slot a token sits in: "red" for object 1 and "red" for object 2 share an embedding
        self.cond_pos = nn.Parameter(torch.randn(cfg.text_len, cfg.text_dim) * 0.02)
        # adaLN-Zero (as in DiT): every block starts as the identity and the output as zero velocity,
        # which keeps the first steps of a short training run stable
        for block in self.blocks:
            nn.init.zeros_(block.modulation.weight)
            nn.init.zeros_(block.modulation.bias)
            nn.init.zeros_(block.cross_attn.out.weight)
            nn.init.zeros_(block.cross_attn.out.bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, video: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Velocity (B, 3, T, H, W) of `video` at flow time t (B,) in [0, 1] (1 = pure noise) given
        condition ids (B, N_TOKENS)."""
        text = self.cond_embed(cond) + self.cond_pos
        return super().forward(video, t * 1000, text)

    def set_frames(self, frames: int) -> None:
        """Take clips of `frames` frames from now on (the RoPE tables follow); the weights are unchanged.
        Training uses it to learn from short clips first, where attention costs a fraction."""
        if frames < 1 or frames % self.cfg.patch[0]:
            raise ValueError(f"set_frames: frames must be a positive multiple of {self.cfg.patch[0]}, got {frames}")
        self.cfg = dataclasses.replace(self.cfg, frames=frames)
        cos, sin = rope_3d(self.cfg.grid, self.cfg.dim // self.cfg.heads, device=self.rope_cos.device)
        self.rope_cos, self.rope_sin = cos.to(self.rope_cos.dtype), sin.to(self.rope_sin.dtype)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as e:
        raise ImportError("the video DiT's weights file needs safetensors: pip install safetensors") from e
    return safetensors


def save_weights(model: ConditionedVideoDiT, path: Union[str, Path], dtype: torch.dtype = torch.bfloat16,
                 metadata: Optional[dict] = None) -> Path:
    """Write the weights as safetensors in `dtype`, with the config and vocabulary in the metadata."""
    st = _safetensors()
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": WEIGHTS_FORMAT, "config": json.dumps(dataclasses.asdict(model.cfg)), "vocab": json.dumps(VOCAB)}
    for key, value in (metadata or {}).items():
        if not isinstance(value, str):
            raise ValueError(f"save_weights: metadata[{key!r}] must be a str (safetensors stores strings), "
                             f"got {type(value).__name__}")
        meta[key] = value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    st.torch.save_file(state, str(path), metadata=meta)
    return path


def load_video_dit(path: Union[str, Path], device: Union[str, torch.device] = "cpu",
                   dtype: torch.dtype = torch.float32) -> ConditionedVideoDiT:
    """The model saved by save_weights, in eval mode on `device` in `dtype`."""
    st = _safetensors()
    with st.safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"load_video_dit: {path} is not a {WEIGHTS_FORMAT} file (format {meta.get('format')!r})")
    if json.loads(meta["vocab"]) != list(VOCAB):
        raise ValueError(f"load_video_dit: {path} was trained with another condition vocabulary than "
                         "smartcompile.demo.video_data.VOCAB; retrain it or use the matching version")
    fields = json.loads(meta["config"])
    fields["patch"] = tuple(fields["patch"])
    model = ConditionedVideoDiT(DiTConfig(**fields))
    model.load_state_dict(st.torch.load_file(str(path)))
    return model.to(device=device, dtype=dtype).eval()
