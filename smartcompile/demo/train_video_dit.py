"""Train the demo's video DiT on the procedural videos with rectified flow; write weights, loss curve, model card.

    python -m smartcompile.demo.train_video_dit --out DIR                 # preset by device
    python -m smartcompile.demo.train_video_dit --steps 30 --size 32 --frames 4 --out /tmp/dit_smoke   # CPU smoke

The shipped weights (smartcompile/demo/trained/, preset "gpu", chosen on CUDA):
    python -m smartcompile.demo.train_video_dit --device cuda --compile --max-minutes 6.3 --out DIR
- videos of 16 frames x 64 x 64 RGB pixels, patches of 1 x 2 x 2: 16 x 32 x 32 = 16,384 video tokens per sample,
  11 condition tokens (cross-attention);
- ConditionedVideoDiT dim 192, 3 heads of 64, 8 blocks, MLP ratio 4: 6,222,284 parameters = 12.5 MB in bf16
  (limit 16 MB);
- 2,600 steps, AdamW 5e-4, bf16 autocast, EMA 0.998: the first 800 steps on 4-frame clips in batches of 32
  (4,096 tokens, a quarter of the attention FLOPs per step), then 1,800 steps on 16-frame clips in batches of 8.
- Measured on an H200 (torch 2.11, torch.compile): 2,600 steps in 5.0 minutes (0.115 s per step on average,
  compilation included); held-out loss 1.41 at init, 0.038 trained. --max-minutes stops the loop early
  and the model card records the steps actually done.
The CPU preset (dim 64, 2 heads, 2 blocks, 4 frames of 32 x 32, no short stage) only checks that everything runs.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from . import video_data
from .attention_stats import self_attention_stats, stats_table
from .flow_matching import flow_matching_loss, sample, training_times
from .frame_grid import save_frame_grid
from .video_dit import ConditionedVideoDiT, parameter_count, save_weights, video_dit_config

PRESETS = {
    "gpu": dict(steps=2600, batch=8, frames=16, size=64, patch=2, dim=192, heads=3, depth=8, lr=5e-4,
                short_frames=4, short_steps=800),
    "cpu": dict(steps=200, batch=2, frames=4, size=32, patch=2, dim=64, heads=2, depth=2, lr=1e-3,
                short_frames=None, short_steps=0),
}
_SIZES = ("steps", "batch", "frames", "size", "patch", "dim", "heads", "depth", "lr")
EVAL_SEED = 20261201  # held-out scenes: training draws from --seed, which is a different stream
EVAL_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)
WEIGHTS_FILE = "video_dit.safetensors"
MAX_WEIGHTS_BYTES = 16_000_000  # what the repository takes in committed weights


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch: int
    frames: int
    size: int
    patch: int
    dim: int
    heads: int
    depth: int
    lr: float
    mlp_ratio: float = 4.0
    warmup: int = 100
    ema: float = 0.998
    cond_drop: float = 0.1  # share of videos trained with <null> conditions, for classifier-free guidance
    seed: int = 0
    device: str = "cpu"
    compile: bool = False
    max_minutes: Optional[float] = None
    # curriculum: the first short_steps of the steps take clips of short_frames frames, in batches of
    # batch * frames // short_frames (the same frames per step): attention costs a fraction there, so the
    # model learns shapes, textures and colours from many more videos before it learns long motion
    short_frames: Optional[int] = None
    short_steps: int = 0

    def __post_init__(self):
        if self.short_steps and self.short_frames is None:
            raise ValueError(f"short_steps is {self.short_steps} but short_frames is not set")
        if self.short_frames is not None and not (0 < self.short_frames < self.frames and 0 < self.short_steps < self.steps):
            raise ValueError(f"short_frames ({self.short_frames}) must be in 1..frames-1 ({self.frames - 1}) and "
                             f"short_steps ({self.short_steps}) in 1..steps-1 ({self.steps - 1})")

    def stage(self, step: int) -> tuple[int, int]:
        """(frames, batch) at a step."""
        if self.short_frames is not None and step < self.short_steps:
            return self.short_frames, max(1, self.batch * self.frames // self.short_frames)
        return self.frames, self.batch

    def model_config(self):
        return video_dit_config(self.frames, self.size, self.patch, self.dim, self.heads, self.depth, self.mlp_ratio)


@dataclasses.dataclass
class TrainResult:
    model: ConditionedVideoDiT  # the weights as trained
    ema: ConditionedVideoDiT  # their exponential moving average: what is saved and sampled
    init: ConditionedVideoDiT  # the random initialisation, for the attention evidence
    losses: list  # per step
    seconds: float
    steps_done: int


def _autocast(device: str):
    # bf16 on CUDA (the target), full float32 on the CPU, where bf16 matmuls are slow
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))


def train(s: TrainSettings, progress: bool = True) -> TrainResult:
    torch.manual_seed(s.seed)
    model = ConditionedVideoDiT(s.model_config()).to(s.device)
    init = copy.deepcopy(model).eval()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    # dynamic=False: the switch to full clips must give a second static graph, not a dynamic-shape one
    step_fn = torch.compile(model, dynamic=False) if s.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.99), weight_decay=0.0)
    warmup = max(1, min(s.warmup, s.steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup))
    data = torch.Generator().manual_seed(s.seed)
    # one buffer on the device: no sync per step, and no 0-dim losses keeping their (larger) storage alive
    losses, start, steps_done = torch.zeros(s.steps, device=s.device), time.perf_counter(), 0
    bar = tqdm(range(s.steps), desc="train", unit="step", disable=not progress)
    for step in bar:
        frames, batch = s.stage(step)
        if frames != model.cfg.frames:
            model.set_frames(frames)
        video, cond = video_data.make_batch(data, batch, frames, s.size, s.size, device=s.device)
        drop = torch.rand(batch, device=s.device) < s.cond_drop
        cond = torch.where(drop[:, None], video_data.NULL_ID, cond)
        t = training_times(batch, video.device)
        with _autocast(s.device):
            loss = flow_matching_loss(step_fn, video, cond, t, torch.randn_like(video))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():  # EMA warm-up: early averages must not be dominated by the initialisation
            decay = min(s.ema, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p.detach(), 1 - decay)
        losses[step] = loss.detach()
        steps_done = step + 1
        if step % 25 == 0 or steps_done == s.steps:
            bar.set_postfix(loss=f"{losses[max(0, steps_done - 25):steps_done].mean().item():.4f}")  # syncs every 25 steps
        if s.max_minutes is not None and time.perf_counter() - start > 60 * s.max_minutes:
            bar.write(f"stopping after {steps_done} steps: --max-minutes {s.max_minutes} reached")
            break
    bar.close()
    model.set_frames(s.frames)  # a run stopped by --max-minutes may end in the short stage
    seconds = time.perf_counter() - start
    return TrainResult(model.eval(), ema, init, losses[:steps_done].tolist(), seconds, steps_done)


@torch.no_grad()
def held_out_loss(model: torch.nn.Module, frames: int, size: int, device: str, batch: int = 4) -> float:
    """Flow-matching loss on fixed held-out videos and noise, averaged over EVAL_TIMES."""
    video, cond = video_data.make_batch(EVAL_SEED, batch, frames, size, size, device=device)
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(EVAL_SEED)).to(device)
    total = 0.0
    for t in EVAL_TIMES:
        with _autocast(device):
            total += flow_matching_loss(model, video, cond, torch.full((batch,), t, device=device), noise).item()
    return total / len(EVAL_TIMES)


def _smooth(values: list, window: int) -> list:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v - (values[i - window] if i >= window else 0.0)
        out.append(acc / min(i + 1, window))
    return out


def write_loss_curve(losses: list, out: Path, short_steps: int = 0) -> tuple[Path, Optional[Path]]:
    """loss.json (per step, and a moving average) and loss.png (when matplotlib is installed); the
    first short_steps steps were on short clips (marked by a line)."""
    window = max(1, min(100, len(losses) // 10))
    smooth = _smooth(losses, window)
    js = out / "loss.json"
    js.write_text(json.dumps({"step": list(range(1, len(losses) + 1)), "loss": losses,
                              "moving_average": smooth, "window": window, "short_steps": short_steps}) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return js, None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = range(1, len(losses) + 1)
    ax.plot(steps, losses, color="0.75", linewidth=0.6, label="per step")
    ax.plot(steps, smooth, color="C0", label=f"moving average ({window})")
    if 0 < short_steps < len(losses):
        ax.axvline(short_steps + 0.5, color="C1", linestyle="--", linewidth=1, label="short clips | full clips")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png")
    plt.close(fig)
    return js, out / "loss.png"


def _evidence(result: TrainResult, s: TrainSettings) -> dict:
    """Self-attention entropy and locality of the trained (EMA) and the initial weights on held-out videos."""
    video, cond = video_data.make_batch(EVAL_SEED + 1, 2, s.frames, s.size, s.size, device=s.device)
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(EVAL_SEED + 1)).to(s.device)
    grid = result.ema.cfg.grid
    out = {"radius_t": 1, "radius_s": 2, "queries": 256, "times": {}}
    for t in (0.25, 0.5, 0.75):
        x_t = (1 - t) * video + t * noise
        inputs = (x_t, torch.full((2,), t, device=s.device), cond)
        with _autocast(s.device):
            out["times"][str(t)] = {name: self_attention_stats(m, inputs, grid, queries=256, radius_t=1, radius_s=2)
                                    for name, m in (("trained", result.ema), ("init", result.init))}
    return out


def _samples(result: TrainResult, s: TrainSettings, out: Path, steps: int, guidance: float) -> Path:
    """samples.png: for 4 held-out conditions, a training video and a sample (fixed noise) per condition."""
    video, cond = video_data.make_batch(EVAL_SEED + 2, 4, s.frames, s.size, s.size, device=s.device)
    noise = torch.randn(video.shape, generator=torch.Generator().manual_seed(EVAL_SEED + 2)).to(s.device)
    with _autocast(s.device):
        gen = sample(result.ema, cond, steps, noise, guidance=guidance).clamp(-1, 1)
    rows, labels = [], []
    for i in range(len(cond)):
        caption = video_data.describe(cond[i].cpu())
        rows += [video[i], gen[i]]
        labels += [f"data: {caption}", "sample"]
    return save_frame_grid(rows, out / "samples.png", labels=labels, max_frames=16,
                           title=f"held-out conditions: data, then a sample ({steps} Euler steps, guidance {guidance})")


def _stages(s: TrainSettings) -> str:
    full = f"batches of {s.batch} clips of {s.frames} frames"
    if s.short_frames is None:
        return full
    short_frames, short_batch = s.stage(0)
    return (f"the first {s.short_steps} steps in batches of {short_batch} clips of {short_frames} frames "
            f"({short_frames / s.frames:.0%} of the attention FLOPs per step), then {full}")


def _model_card(s: TrainSettings, result: TrainResult, command: str, files: dict, losses: dict, evidence: dict,
                sample_steps: int, guidance: float) -> str:
    cfg = result.ema.cfg
    params = parameter_count(result.ema)
    size = files["weights"].stat().st_size
    device = torch.cuda.get_device_name(s.device) if s.device.startswith("cuda") else platform.processor() or "CPU"
    mid = evidence["times"]["0.5"]
    lines = [
        "# Procedural-video DiT (smartcompile demo)", "",
        "A small video DiT trained from scratch on smartcompile's procedural videos, so that attention-quality "
        "numbers (PSNR / SSIM / cosine against exact attention) are measured on learned attention.", "",
        "## Reproduce", "", f"    {command}", "",
        f"seed {s.seed}; {device}; torch {torch.__version__}; {result.steps_done} steps in {result.seconds / 60:.1f} min "
        f"({result.seconds / max(1, result.steps_done):.3f} s/step, {'bf16 autocast' if s.device.startswith('cuda') else 'float32'}"
        f"{', torch.compile' if s.compile else ''}).", "",
        "## Model", "",
        f"`ConditionedVideoDiT` (smartcompile/demo/video_dit.py): the demo's `TinyVideoDiT` (3-D RoPE self-attention "
        "through SDPA, hand-written cross-attention, adaLN-Zero, MLP) with an embedding of the condition ids.", "",
        f"- video {cfg.frames} frames x {cfg.height} x {cfg.width} RGB pixels, patches {cfg.patch}: "
        f"**{cfg.tokens:,} video tokens** (grid {cfg.grid}), {cfg.text_len} condition tokens",
        f"- dim {cfg.dim}, {cfg.heads} heads of {cfg.dim // cfg.heads}, {cfg.depth} blocks, MLP ratio {cfg.mlp_ratio}: "
        f"**{params:,} parameters**",
        f"- `{files['weights'].name}`: the EMA weights in bf16, {size / 1e6:.1f} MB; config and vocabulary in its "
        "metadata; load with `smartcompile.demo.video_dit.load_video_dit(path)`", "",
        "## Data", "",
        "`smartcompile.demo.video_data` (no downloads, deterministic per seed): two textured shapes over a background "
        "that move (bounce off the borders, orbit, travel on a wave, spin), occlude each other and keep, shift or "
        f"pulse their colour. Training stream: `make_batch(torch.Generator().manual_seed({s.seed}), ...)` per step; "
        f"held-out scenes from seed {EVAL_SEED}.", "",
        "```", video_data.vocabulary_description(), "```", "",
        "## Training", "",
        f"Rectified flow (x_t = (1-t) video + t noise, predict noise - video), t ~ logit-normal(0, 1); AdamW lr {s.lr} "
        f"(warm-up {max(1, min(s.warmup, s.steps // 10))} steps, then constant), gradient clip 1.0, "
        f"{result.steps_done} steps ({sum(s.stage(i)[1] for i in range(result.steps_done)):,} videos), {_stages(s)}, "
        f"EMA {s.ema}, {s.cond_drop:.0%} of conditions replaced by <null> (classifier-free guidance).", "",
        f"Held-out flow-matching loss (mean over t in {list(EVAL_TIMES)}): random init {losses['init']:.4f}, "
        f"trained (EMA) {losses['ema']:.4f}. Training loss, moving average: first {losses['first']:.4f}, "
        f"last {losses['last']:.4f}.", "",
        f"![loss curve]({files['loss_png'].name})" if files.get("loss_png") else "(loss.png needs matplotlib)", "",
        "## Samples", "",
        f"{sample_steps} Euler steps from fixed noise, classifier-free guidance {guidance}; each sample is under a "
        "real training video with the same condition (the placement differs: it is not conditioned).", "",
        f"![samples]({files['samples'].name})", "",
        "## Attention: trained vs random init", "",
        f"Self-attention on 2 held-out videos at t = 0.5, {evidence['queries']} sampled queries per layer. Entropy is "
        "relative to uniform attention (1 = uniform); locality is the share of attention mass within "
        f"{evidence['radius_t']} frame and {evidence['radius_s']} patches (Chebyshev) of the query. "
        f"Random init in parentheses; t = 0.25 and 0.75 in `{files['evidence'].name}`.", "",
        stats_table(mid["trained"], mid["init"]), "",
    ]
    return "\n".join(lines)


def write_outputs(result: TrainResult, s: TrainSettings, out: Path, command: str, sample_steps: int = 20,
                  guidance: float = 2.0) -> dict:
    """Weights, loss curve, samples, attention evidence and MODEL_CARD.md under `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"weights": save_weights(result.ema, out / WEIGHTS_FILE,
                                     metadata={"command": command, "seed": str(s.seed), "steps": str(result.steps_done)})}
    files["loss_json"], files["loss_png"] = write_loss_curve(result.losses, out, s.short_steps)
    files["samples"] = _samples(result, s, out, sample_steps, guidance)
    evidence = _evidence(result, s)
    files["evidence"] = out / "attention_stats.json"
    files["evidence"].write_text(json.dumps(evidence, indent=1) + "\n")
    smooth = json.loads(files["loss_json"].read_text())["moving_average"]
    losses = {"init": held_out_loss(result.init, s.frames, s.size, s.device),
              "ema": held_out_loss(result.ema, s.frames, s.size, s.device),
              "first": smooth[0], "last": smooth[-1]}
    files["card"] = out / "MODEL_CARD.md"
    files["card"].write_text(_model_card(s, result, command, files, losses, evidence, sample_steps, guidance))
    return files


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m smartcompile.demo.train_video_dit",
                                description="Train the procedural-video DiT (rectified flow). Unset sizes come "
                                            "from the preset: 'gpu' on CUDA, 'cpu' otherwise.")
    p.add_argument("--out", required=True, help="directory for weights, loss curve, samples and MODEL_CARD.md")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    for name, kind in (("steps", int), ("batch", int), ("frames", int), ("size", int), ("patch", int),
                       ("dim", int), ("heads", int), ("depth", int), ("lr", float)):
        p.add_argument(f"--{name}", type=kind, default=None)
    p.add_argument("--short-frames", type=int, default=None, help="clip length of the first, short-clip stage")
    p.add_argument("--short-steps", type=int, default=None, help="steps in the short-clip stage (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the training step (worth it on a GPU)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop the training loop after this long")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default on the CPU: 1; the CPU preset's ops are too small to gain from more, "
                        "and on shared cores a descheduled OpenMP thread stalls every op)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _device(name: Optional[str]) -> str:
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch {torch.__version__} sees no CUDA GPU; use --device cpu")
    if not (name == "cpu" or name.startswith("cuda")):
        raise SystemExit(f"--device {name!r}: expected cpu, cuda or cuda:N")
    return name


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(argv)
    device = _device(a.device)
    if a.threads is not None and a.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {a.threads}")
    if a.threads is not None or device == "cpu":
        torch.set_num_threads(a.threads or 1)
    preset = PRESETS[a.preset or ("gpu" if device.startswith("cuda") else "cpu")]
    sizes = {k: getattr(a, k) if getattr(a, k) is not None else preset[k] for k in _SIZES}
    for k, v in sizes.items():
        if v <= 0:
            raise SystemExit(f"--{k} must be positive, got {v}")
    short_frames = a.short_frames if a.short_frames is not None else preset["short_frames"]
    short_steps = a.short_steps if a.short_steps is not None else preset["short_steps"]
    user_short = a.short_frames is not None or a.short_steps is not None
    if not short_steps or (not user_short and not (short_frames < sizes["frames"] and short_steps < sizes["steps"])):
        short_frames, short_steps = None, 0  # the preset's short stage does not fit these sizes: train on full clips
    try:
        s = TrainSettings(**sizes, seed=a.seed, device=device, compile=a.compile, max_minutes=a.max_minutes,
                          short_frames=short_frames, short_steps=short_steps)
        cfg = s.model_config()
    except ValueError as e:
        raise SystemExit(str(e)) from e
    command = "python -m smartcompile.demo.train_video_dit " + shlex.join(argv)
    print(f"{cfg.tokens:,} video tokens per sample, {sizes['dim']} dim x {sizes['depth']} blocks, "
          f"{parameter_count(ConditionedVideoDiT(cfg)):,} parameters, {s.steps} steps on {device}: {_stages(s)}")
    result = train(s, progress=not a.no_progress)
    files = write_outputs(result, s, Path(a.out), command, a.sample_steps, a.guidance)
    print(f"trained {result.steps_done} steps in {result.seconds:.0f} s; wrote " + ", ".join(str(p) for p in files.values() if p))
    size = files["weights"].stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        print(f"warning: {files['weights']} is {size / 1e6:.1f} MB, over the {MAX_WEIGHTS_BYTES / 1e6:.0f} MB "
              "that may be committed; lower --dim or --depth")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
