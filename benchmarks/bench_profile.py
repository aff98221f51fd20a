"""Profile the built-in video DiT and report: profiling wall time, the profiled policy's speedup
over torch.compile default (same run), and the achieved output metric.

    python benchmarks/bench_profile.py --out benchmarks/results/h100            # GPU: 16k tokens, 15 blocks
    python benchmarks/bench_profile.py --small --out /tmp/p                      # CPU smoke run

15 blocks = 30 attention layers (self-attention over the video tokens, cross-attention to text).
Calibration: the same latents at two denoising timesteps.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import smartcompile
from smartcompile.demo.dit import DiTConfig, build_demo
from smartcompile.demo.run import GPU_CONFIG
from smartcompile.profiling.report import ProfileReport


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=15, help="DiT blocks (two attention layers each)")
    p.add_argument("--budget", type=float, default=0.995, help="output cosine budget")
    p.add_argument("--small", action="store_true", help="CPU-sized model (1024 tokens, 4 blocks)")
    p.add_argument("--out", type=Path, required=True)
    ns = p.parse_args()
    device = "cuda" if torch.cuda.is_available() and not ns.small else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = DiTConfig(depth=4) if ns.small else dataclasses.replace(GPU_CONFIG, depth=ns.depth)
    model, (latents, timestep, text) = build_demo(cfg, device=device, dtype=dtype)
    calibration = [((latents, torch.full_like(timestep, t), text), {}) for t in (900.0, 300.0)]
    ns.out.mkdir(parents=True, exist_ok=True)
    print(f"TinyVideoDiT {cfg.tokens} tokens, {cfg.depth} blocks ({2 * cfg.depth} attention layers), dim {cfg.dim}, "
          f"{cfg.heads} heads, {str(dtype).replace('torch.', '')} on {device}; budget cosine >= {ns.budget}")
    t0 = time.perf_counter()
    policy = smartcompile.profile(model, calibration, budget=ns.budget, out=ns.out / "profiled_policy.json", cache=False)
    wall = time.perf_counter() - t0
    report = ProfileReport.from_policy(policy)
    report.plot(ns.out / "profile_report.png")
    s = policy.metadata["profile"]
    result = {"tokens": cfg.tokens, "attention_layers": 2 * cfg.depth, "device": s.get("hardware", policy.metadata["hardware"]).get("device_name"),
              "wall_s": wall, "budget": ns.budget, "achieved": s["achieved"], "speedup": s["speedup"],
              "chosen": {l: e["chosen"] for l, e in s["layers"].items()}}
    (ns.out / "bench_profile.json").write_text(json.dumps(result, indent=1) + "\n")
    print(report.table())
    speed = s["speedup"] or {}
    print(f"\nprofiling wall time {wall:.1f} s for {2 * cfg.depth} attention layers; "
          f"speedup vs torch.compile default: {speed.get('speedup_vs_torch_compile', float('nan')):.2f}x; "
          f"achieved cosine {s['achieved']:.6f} (compiled policy: {speed.get('value_compiled', float('nan')):.6f})")


if __name__ == "__main__":
    main()
