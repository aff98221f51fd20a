"""Profile a video DiT and report: profiling wall time, the profiled policy's speedup over
torch.compile default (same run), and the achieved output metric.

    python benchmarks/bench_profile.py --out benchmarks/results/h200            # GPU: the trained DiT
    python benchmarks/bench_profile.py --small --out /tmp/p                      # CPU smoke run
    python benchmarks/bench_profile.py --random-weights --out DIR                # speed only (see below)

Default: the trained video DiT (smartcompile/demo/trained, 16,384 tokens, 8 blocks = 16 attention
layers), calibrated on the demo's whole sampling loop (20 Euler steps, classifier-free guidance) with
the video's PSNR against exact attention as the metric (budget 30 dB).
--random-weights: the random-weight TinyVideoDiT (15 blocks, 30 layers, output cosine): its attention is
near uniform, so its quality numbers say nothing; kept as a speed-only reference.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import smartcompile
from smartcompile.demo.dit import LARGE_CONFIG, DiTConfig, build_demo
from smartcompile.profiling.report import ProfileReport


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=15, help="DiT blocks (two attention layers each)")
    p.add_argument("--budget", type=float, default=0.995, help="output cosine budget")
    p.add_argument("--small", action="store_true", help="CPU-sized model (CPU smoke run)")
    p.add_argument("--random-weights", action="store_true", help="the random-weight TinyVideoDiT (speed only)")
    p.add_argument("--out", type=Path, required=True)
    ns = p.parse_args()
    if not ns.random_weights:
        trained(ns)
        return
    device = "cuda" if torch.cuda.is_available() and not ns.small else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = DiTConfig(depth=4) if ns.small else dataclasses.replace(LARGE_CONFIG, depth=ns.depth)
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


def trained(ns) -> None:
    from smartcompile.demo.video_demo import run_video_demo

    device = "cuda" if torch.cuda.is_available() and not ns.small else "cpu"
    small = dict(steps=2, frames=1) if ns.small else {}
    lines: list = []
    rows = run_video_demo(device=device, out=ns.out, profile=True, policies=["flash (exact)", "sage", "profiled"],
                          show=lambda s: (print(s), lines.append(s)), **small)
    policy = smartcompile.Policy.load(ns.out / "profiled_policy.json")
    report = ProfileReport.from_policy(policy)
    report.plot(ns.out / "profile_report.png")
    s = policy.metadata["profile"]
    chosen = {l: e["chosen"] for l, e in s["layers"].items()}
    (ns.out / "bench_profile.json").write_text(json.dumps({
        "model": "trained video DiT", "metric": s["metric"], "budget": s["budget"], "wall_s": s["wall_s"],
        "achieved": s["achieved"], "speedup": s["speedup"], "chosen": chosen,
        "rows": [r.record() for r in rows]}, indent=1) + "\n")
    print(report.table())
    print(f"\nprofiling wall time {s['wall_s']:.1f} s for {len(chosen)} attention layers; profiled policy "
          f"{rows[-1].speedup:.2f}x over torch.compile default at {rows[-1].psnr_db:.1f} dB (same run)")


if __name__ == "__main__":
    main()
