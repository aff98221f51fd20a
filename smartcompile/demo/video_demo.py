"""`smartcompile demo`: sample a video with the trained video DiT under several attention policies,
from the same noise, and compare each with the video that exact attention gives.

On a GPU the full model size (16 frames of 64 x 64 pixels = 16,384 video tokens, 20 Euler steps); on a
CPU 2 frames (2,048 tokens) and 6 steps, where Sage and Sparge run their pure-torch reference numerics:
the quality columns hold, the times are not GPU speed. With `out`: frames.png (rows: policies, columns:
frames), video.gif (policies side by side) and summary.json.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..compiler import backend
from ..errors import SmartCompileError
from ..metrics import error_stats, psnr, ssim
from ..policies import Policy
from . import video_data
from .flow_matching import sample
from .frame_grid import grid_array, save_frame_grid
from .trained import PROFILED_POLICY, load_trained

GUIDANCE = 2.0
DEMO_SEED = 20261203  # held-out: neither the training stream nor the model card's evaluation seeds
PROFILE_BUDGET_DB = 30.0
VIDEO_RANGE = 2.0  # videos are in [-1, 1]


@dataclasses.dataclass(frozen=True)
class DemoSize:
    frames: int
    steps: int
    repeats: int


GPU_SIZE = DemoSize(frames=16, steps=20, repeats=3)
CPU_SIZE = DemoSize(frames=2, steps=6, repeats=1)


@dataclasses.dataclass(frozen=True)
class DemoRow:
    policy: str
    compile_s: float  # the first sampling run: compilation plus one loop
    seconds: float  # one whole sampling loop (steps x a batched classifier-free-guidance call)
    speedup: float  # over torch.compile default, same run
    psnr_db: float
    ssim: float
    cosine: float
    video: torch.Tensor = dataclasses.field(repr=False)  # (3, T, H, W) in [-1, 1]

    def record(self) -> dict:
        return {"policy": self.policy, "compile_s": round(self.compile_s, 2), "sample_s": self.seconds,
                "speedup_vs_torch_compile": self.speedup, "psnr_db": self.psnr_db, "ssim": self.ssim,
                "cosine": self.cosine}


def fixed_policies() -> dict:
    """The demo's hand-set policies. Sparge rows switch the similarity check off so that the stated share
    of K blocks really is skipped; cross-attention (11 condition tokens) stays exact there."""
    def sparge(ratio: float) -> Policy:
        return Policy.from_dict({"version": 1,
                                 "default": {"backend": "sparge", "sparsity_ratio": ratio, "sim_threshold": -1.0},
                                 "layers": {"blocks.*.cross_attn": "flash"}})
    return {"flash (exact)": Policy.uniform("flash"), "sage": Policy.uniform("sage"),
            "sparge 30%": sparge(0.3), "sparge 50%": sparge(0.5), "sparge 70%": sparge(0.7)}


def check_device(device: str) -> None:
    """A short error for a device this torch cannot use (not a traceback from deep inside torch)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        why = ("this torch is a CPU-only build" if torch.version.cuda is None
               else f"this torch (CUDA {torch.version.cuda}) sees no CUDA GPU")
        raise SmartCompileError(f"demo: device {device!r} is not available: {why} (torch {torch.__version__}); "
                                "run without --device to use the CPU, or install a CUDA build of torch")


# upper bounds of the demo's sizes: 64 frames are 65,536 video tokens (4x what the model was trained on; beyond
# that a GPU's memory, not the demo, is what a user would be testing)
DEMO_LIMITS = {"steps": 1000, "frames": 64, "repeats": 100}


def _positive(name: str, value: Optional[int]) -> None:
    if value is not None and (not isinstance(value, int) or not 1 <= value <= DEMO_LIMITS[name]):
        raise SmartCompileError(f"demo: {name} must be an integer from 1 to {DEMO_LIMITS[name]}, got {value!r}")


def profile_policy(model: torch.nn.Module, sampler: Callable, out: Optional[Path]) -> Policy:
    """Profile the trained model on the demo's own sampling loop: the fastest per-layer choice whose
    video stays within PROFILE_BUDGET_DB of the exact one."""
    from ..profiling import profile
    from ..profiling.metric import BUILTIN_METRICS

    # the built-in PSNR's error model, with the video's value range as the peak (as in the table)
    video_psnr = dataclasses.replace(BUILTIN_METRICS["psnr"], name="video_psnr",
                                     fn=lambda ref, o: psnr(o.float(), ref.float(), VIDEO_RANGE))
    return profile(model, sampler, budget=PROFILE_BUDGET_DB, metric=video_psnr,
                   out=None if out is None else out / "profiled_policy.json", cache=False)


def _time_policy(name: str, model, policy: Optional[Policy], run: Callable, device: str, repeats: int):
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=False) if policy is None else \
        torch.compile(model, dynamic=False, backend=backend(policy=policy))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t0 = time.perf_counter()
    video = run(compiled)  # compiles, and warms up what the timed runs use
    sync()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(compiled)
        sync()
        times.append(time.perf_counter() - t0)
    return compile_s, sorted(times)[len(times) // 2], video


def run_video_demo(device: Optional[str] = None, out: Optional[Path] = None, steps: Optional[int] = None,
                   frames: Optional[int] = None, repeats: Optional[int] = None, profile: bool = False,
                   policies: Optional[Sequence[str]] = None, show: Callable[[str], None] = print) -> list:
    """Run the demo; returns its DemoRows (the first is torch.compile default) and writes `out` when given.

    profile: profile the model here (GPU: about a minute) instead of using the shipped profiled policy.
    policies: a subset of the rows by name (default: all)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    for name, value in (("steps", steps), ("frames", frames), ("repeats", repeats)):
        _positive(name, value)
    size = GPU_SIZE if device.startswith("cuda") else CPU_SIZE
    size = DemoSize(frames or size.frames, steps or size.steps, repeats or size.repeats)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = load_trained(device, dtype)
    if size.frames != model.cfg.frames:
        model.set_frames(size.frames)
    cfg = model.cfg
    out = None if out is None else Path(out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    video, cond = video_data.make_batch(DEMO_SEED, 1, cfg.frames, cfg.height, cfg.width, device=device)
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(DEMO_SEED)).to(device)
    run = lambda m: sample(m, cond, size.steps, noise, guidance=GUIDANCE).clamp(-1, 1)  # noqa: E731
    show(f"trained video DiT: {cfg.tokens:,} video tokens ({cfg.frames} frames of {cfg.height}x{cfg.width} px), "
         f"{cfg.depth} blocks, {str(dtype).replace('torch.', '')} on {device}; {size.steps} Euler steps, "
         f"guidance {GUIDANCE}; condition: {video_data.describe(cond[0].cpu())}")

    table, profile_s = dict(fixed_policies()), None
    if profile:
        show(f"profiling (budget: PSNR >= {PROFILE_BUDGET_DB:.0f} dB against the exact video) ...")
        t0 = time.perf_counter()
        table["profiled"] = profile_policy(model, run, out)
        profile_s = time.perf_counter() - t0
        show(f"profiled in {profile_s:.0f} s")
    elif PROFILED_POLICY.is_file():
        table["profiled"] = shipped = Policy.load(PROFILED_POLICY)
        where = shipped.metadata.get("hardware", {}).get("device_name", "another machine")
        show(f"'profiled' is the policy shipped with the model, profiled on {where} at the full size; "
             "--profile profiles it here")
    unknown = sorted(set(policies or ()) - set(table))
    if unknown:
        raise SmartCompileError(f"demo: unknown policies {unknown}; known: {sorted(table)}")
    if policies is not None:
        table = {k: v for k, v in table.items() if k in policies}

    with torch.no_grad():
        exact = run(model)[0].float()  # eager, exact attention: what every row is compared with
        rows = []
        for name, policy in tqdm([("torch.compile default", None)] + list(table.items()),
                                 desc="compile + sample", unit="policy"):
            compile_s, seconds, got = _time_policy(name, model, policy, run, device, size.repeats)
            got = got[0].float()
            base = rows[0].seconds if rows else seconds
            rows.append(DemoRow(name, compile_s, seconds, base / seconds, psnr(got, exact, VIDEO_RANGE),
                                ssim(got[None], exact[None], VIDEO_RANGE), error_stats(got, exact).cosine, got))
    show("\npolicy               first run s   sample ms   speedup vs torch.compile   PSNR dB    SSIM    cosine")
    for r in rows:
        show(f"{r.policy:<22} {r.compile_s:>9.1f} {r.seconds * 1e3:>11.1f} {r.speedup:>25.2f}x "
             f"{r.psnr_db:>8.2f} {r.ssim:>7.4f} {r.cosine:>9.5f}")
    show("\nPSNR / SSIM / cosine: against the video sampled with exact attention (eager) from the same noise; "
         "the torch.compile default row is the floor that compilation and rounding alone give. "
         "First run: compilation plus one sampling loop.")
    if device == "cpu":
        show("On a CPU, sage and sparge run their pure-torch reference numerics: the quality columns hold, "
             "the times are not GPU speed. The video is short and coarse there (few frames and steps); "
             "`--device cuda` samples the full 16 frames in 20 steps.")
    if out is not None:
        written = write_demo_outputs(rows, exact, out, summary={
            "model": "smartcompile.demo trained video DiT", "device": _device_name(device),
            "torch": torch.__version__, "python": platform.python_version(), "tokens": cfg.tokens,
            "frames": cfg.frames, "height": cfg.height, "width": cfg.width, "steps": size.steps,
            "guidance": GUIDANCE, "repeats": size.repeats, "profile_s": profile_s,
            "condition": video_data.describe(cond[0].cpu())})
        show("wrote " + ", ".join(str(p) for p in written))
    return rows


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else (platform.processor() or "cpu")


def write_demo_outputs(rows: list, exact: torch.Tensor, out: Path, summary: dict) -> list:
    """frames.png, video.gif (when Pillow is importable) and summary.json under `out`."""
    videos = [exact] + [r.video for r in rows]
    labels = ["exact attention (eager)"] + [f"{r.policy}: {r.psnr_db:.1f} dB, {r.speedup:.2f}x" for r in rows]
    written = [save_frame_grid(videos, out / "frames.png", labels=labels, max_frames=16,
                               title=f"{summary['steps']} Euler steps from the same noise "
                                     f"({summary['condition']}); PSNR against exact, speed against torch.compile")]
    gif = write_gif(videos, [label.split(":")[0] for label in labels], out / "video.gif")
    if gif is not None:
        written.append(gif)
    summary = dict(summary, rows=[r.record() for r in rows])
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    written.append(out / "summary.json")
    return written


def write_gif(videos: Sequence[torch.Tensor], labels: Sequence[str], path: Path, scale: int = 2,
              frame_ms: int = 150) -> Optional[Path]:
    """An animated GIF with the videos side by side, each under its label; None without Pillow."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return None
    frames, gap = videos[0].shape[1], 2
    strips = []
    for t in range(frames):
        panels = [grid_array([v[:, t:t + 1]], gap=0) for v in videos]  # (H, W, 3) each
        white = np.full((panels[0].shape[0], gap, 3), 255, dtype=np.uint8)
        strip = np.concatenate([x for p in panels for x in (p, white)][:-1], axis=1)
        img = Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST)
        canvas = Image.new("RGB", (img.width, img.height + 14), "white")
        canvas.paste(img, (0, 14))
        draw = ImageDraw.Draw(canvas)
        panel_w = (panels[0].shape[1] + gap) * scale
        for i, label in enumerate(labels):
            draw.text((i * panel_w + 2, 1), label[:panel_w // 6], fill="black")
        strips.append(canvas)
    strips[0].save(path, save_all=True, append_images=strips[1:], duration=frame_ms, loop=0)
    return path
