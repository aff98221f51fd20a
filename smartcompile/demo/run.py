"""`smartcompile demo`: compile the built-in DiT under several policies; time and error table."""
from __future__ import annotations

import time
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from ..api import explain
from ..compiler import backend
from ..errors import SmartCompileError
from ..metrics import error_stats
from ..policies import Policy
from ..profiling.runs import wall_seconds
from .dit import DiTConfig, build_demo

CPU_CONFIG = DiTConfig()  # 1024 video tokens, 4 blocks: about a minute on 2 CPU cores
GPU_CONFIG = DiTConfig(frames=16, height=64, width=64, dim=1536, heads=24, depth=8, text_len=128, text_dim=1024)  # 16k tokens


def demo_policies(depth: int) -> dict:
    last = depth - 1
    return {
        "flash (exact)": Policy.uniform("flash"),
        "sage": Policy.uniform("sage"),
        # the similarity check off, so half of the K blocks really are skipped
        "sparge 50%": Policy.from_dict({
            "version": 1, "default": {"backend": "sparge", "sparsity_ratio": 0.5, "sim_threshold": -1.0},
            "layers": {"blocks.*.cross_attn": "flash"},
        }),
        "mixed": Policy.from_dict({
            "version": 1, "default": {"backend": "sparge", "cdf_threshold": 0.95},
            "layers": {"blocks.0.attn": "flash", f"blocks.{last}.attn": "flash", "blocks.*.cross_attn": "sage"},
        }),
    }


def check_device(device: str) -> None:
    """A short error for a device this torch cannot use (not a traceback from deep inside torch)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        why = ("this torch is a CPU-only build" if torch.version.cuda is None
               else f"this torch (CUDA {torch.version.cuda}) sees no CUDA GPU")
        raise SmartCompileError(f"demo: device {device!r} is not available: {why} (torch {torch.__version__}); "
                                "run without --device to use the CPU, or install a CUDA build of torch")


def run_demo(device: Optional[str] = None, config: Optional[DiTConfig] = None, repeats: int = 3,
             show: Callable[[str], None] = print) -> list:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = config or (GPU_CONFIG if device == "cuda" else CPU_CONFIG)
    model, inputs = build_demo(cfg, device=device, dtype=dtype)
    show(f"TinyVideoDiT: {cfg.tokens} video tokens, {cfg.text_len} text tokens, {cfg.depth} blocks, "
         f"dim {cfg.dim}, {cfg.heads} heads, {str(dtype).replace('torch.', '')} on {device}")
    policies = demo_policies(cfg.depth)
    show("\nPlan for the 'mixed' policy:")
    show(str(explain(model, *inputs, policy=policies["mixed"])))
    rows = []
    with torch.no_grad():
        reference = model(*inputs).float()
        steps = [("torch.compile default", None)] + list(policies.items())
        for name, policy in tqdm(steps, desc="compile + time", unit="policy"):
            torch._dynamo.reset()
            compiled = torch.compile(model) if policy is None else torch.compile(model, backend=backend(policy=policy))
            t0 = time.perf_counter()
            out = compiled(*inputs)
            compile_s = time.perf_counter() - t0
            seconds = wall_seconds(lambda: compiled(*inputs), device, repeats)
            rows.append((name, compile_s, seconds, error_stats(out.float(), reference)))
    base = rows[0][2]
    show("\npolicy                  compile s   run ms   speedup vs torch.compile   cosine vs exact   rel L1")
    for name, compile_s, seconds, err in rows:
        show(f"{name:<22} {compile_s:>10.1f} {seconds * 1e3:>8.1f} {base / seconds:>26.2f}x {err.cosine:>17.6f} {err.rel_l1:>8.4f}")
    show("\n'sparge 50%' skips half the K blocks of every self-attention; the demo's weights are random, so its\n"
         "attention is not local and this row shows what forced sparsity costs on such a model. 'mixed' uses\n"
         "cdf_threshold 0.95 with the similarity check on, which keeps blocks it cannot predict.")
    if device == "cpu":
        show("\nOn a CPU, sage and sparge run their pure-torch reference numerics: the error columns show what\n"
             "the quantized/sparse kernels cost in quality; their times are not GPU speed.")
    return rows
