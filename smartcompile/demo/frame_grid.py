"""Frame grids for eyeballing videos: one row per video, one column per frame, written as a PNG."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch


def grid_array(videos: Sequence[torch.Tensor], max_frames: Optional[int] = None, gap: int = 2) -> np.ndarray:
    """RGB uint8 array (rows * (H + gap), columns * (W + gap), 3) from videos (3, T, H, W) in [-1, 1]."""
    if len(videos) == 0:
        raise ValueError("grid_array: videos is empty")
    shape = tuple(videos[0].shape)
    for i, v in enumerate(videos):
        if v.dim() != 4 or v.shape[0] != 3 or tuple(v.shape) != shape:
            raise ValueError(f"grid_array: videos[{i}] has shape {tuple(v.shape)}; every video must be "
                             f"(3, T, H, W) and all the same shape as videos[0] {shape}")
    _, t, h, w = shape
    cols = t if max_frames is None else min(t, max_frames)
    out = np.full((len(videos) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for r, v in enumerate(videos):
        frames = ((v.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()
        for c in range(cols):
            out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = frames[c]
    return out


def save_frame_grid(videos: Sequence[torch.Tensor], path: Union[str, Path], labels: Optional[Sequence[str]] = None,
                    max_frames: Optional[int] = None, scale: int = 2, title: Optional[str] = None) -> Path:
    """Write a PNG with one row per video (3, T, H, W) in [-1, 1], each row labelled on its left."""
    if labels is not None and len(labels) != len(videos):
        raise ValueError(f"save_frame_grid: labels has {len(labels)} entries for {len(videos)} videos")
    if scale < 1:
        raise ValueError(f"save_frame_grid: scale must be >= 1, got {scale}")
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: never open a window
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("save_frame_grid needs matplotlib: pip install 'smartcompile[plot]'") from e
    img = grid_array(videos, max_frames).repeat(scale, axis=0).repeat(scale, axis=1)
    dpi = 100
    label_w = 0 if labels is None else min(6.0, 0.052 * max(len(s) for s in labels) + 0.15)
    fig_w = img.shape[1] / dpi + label_w
    if title:  # wrapped to the figure's width (about 0.065 inch per character at 9 pt), never cut off
        title = "\n".join(textwrap.wrap(title, max(20, int(fig_w / 0.065))))
    title_h = 0.05 + 0.16 * (title.count("\n") + 1) if title else 0.0
    fig_h = img.shape[0] / dpi + title_h
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes((label_w / fig_w, 0, img.shape[1] / dpi / fig_w, img.shape[0] / dpi / fig_h))
    ax.imshow(img, interpolation="nearest")
    ax.set_axis_off()
    rows, row_h = len(videos), img.shape[0] / len(videos)
    for r, text in enumerate(labels or ()):
        ax.text(-6, (r + 0.5) * row_h, text, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.03 / fig_h, va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
