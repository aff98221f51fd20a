"""The trained video DiT shipped with the package (weights, model card and a profiled policy in trained/)."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from .video_dit import ConditionedVideoDiT, load_video_dit

TRAINED_DIR = Path(__file__).parent / "trained"
TRAINED_WEIGHTS = TRAINED_DIR / "video_dit.safetensors"
MODEL_CARD = TRAINED_DIR / "MODEL_CARD.md"
# profiled on the GPU at the full size by `smartcompile demo --profile --out DIR` (budget in video_demo)
PROFILED_POLICY = TRAINED_DIR / "profiled_policy.json"


def load_trained(device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32) -> ConditionedVideoDiT:
    """The trained model in eval mode (16 frames of 64 x 64 pixels; set_frames changes the clip length)."""
    if not TRAINED_WEIGHTS.is_file():
        raise FileNotFoundError(f"the trained video DiT's weights are missing: {TRAINED_WEIGHTS} (a broken install? "
                                "reinstall smartcompile, or train them: python -m smartcompile.demo.train_video_dit)")
    return load_video_dit(TRAINED_WEIGHTS, device=device, dtype=dtype)
