"""End to end on the Wan2.1-1.3B transformer configuration (issue 13's targets): `torch.compile` default against
smartattn under several policies, in one process, same inputs.

The model is bench_regional.py's: diffusers `WanTransformer3DModel`, Wan2.1-T2V-1.3B configuration (dim 1536,
12 heads of 128, FFN 8960), random weights (speed only), 8 blocks by default, 32,760 video tokens (21 x 30 x 52),
512 text tokens, bf16. Policies: auto (the default: measured per attention spec on this GPU), Sage everywhere,
Sparge at 50% on the self-attentions (cross-attentions exact). Reports the median run time (CUDA events, after
warm-up) against `torch.compile` default and the output cosine against the eager model.

    python benchmarks/bench_wan.py --out DIR                  # GPU
    python benchmarks/bench_wan.py --small --out /tmp/w       # CPU smoke
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
import smartcompile  # noqa: E402
from bench_regional import build, interleaved_ms, prepare  # noqa: E402

POLICIES = {
    "auto": {"version": 1, "default": "auto"},
    # every site rewritten to exact SDPA inside our op (auto keeps plain SDPA calls as the graph's own)
    "flash": {"version": 1, "default": "flash"},
    "sage": {"version": 1, "default": "sage", "layers": {"blocks.*.attn2": "flash"}},
    "sparge 50% self-attention": {"version": 1, "default": {"backend": "sparge", "sparsity_ratio": 0.5,
                                                            "sim_threshold": -1.0},
                                  "layers": {"blocks.*.attn2": "flash"}},
    # the same on 128-row query blocks: sparge_gluon on sm90 at D128 from 16k keys (coarser blocks, higher error)
    "sparge 50% self-attention 128-row blocks": {"version": 1, "default": {
        "backend": "sparge", "sparsity_ratio": 0.5, "sim_threshold": -1.0, "block_size": 128},
        "layers": {"blocks.*.attn2": "flash"}},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per round")
    p.add_argument("--rounds", type=int, default=6,
                   help="rounds, each timing every policy in turn from a rotating start (drift and position fall "
                        "on all alike); the default is timed twice, as rows 1 and 2: their difference is the noise")
    p.add_argument("--frames", type=int, default=21, help="latent frames of 1,560 tokens (21: 32,760; 3: 4,680)")
    p.add_argument("--mode", default=None, choices=[None, "reduce-overhead"],
                   help="Inductor mode of every compilation (reduce-overhead: CUDA graphs, no per-call host cost)")
    p.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated, of: {', '.join(POLICIES)}")
    p.add_argument("--kernels", action="store_true",
                   help="also list each row's 8 costliest GPU kernels in one forward (torch.profiler)")
    p.add_argument("--small", action="store_true", help="tiny config on the CPU (smoke run)")
    p.add_argument("--out", type=Path, required=True)
    ns = p.parse_args()
    names = ns.policies.split(",")
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        p.error(f"--policies: unknown {unknown}; known: {list(POLICIES)}")
    device = "cuda" if torch.cuda.is_available() and not ns.small else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, inputs = build(ns.small, ns.blocks, device, dtype, ns.frames)
    smartcompile.name_layers(model)
    with torch.no_grad():
        reference = model(*inputs, return_dict=False)[0]
    torch._dynamo.reset()
    prepared = [prepare("torch.compile default", lambda: torch.compile(model, mode=ns.mode), inputs, device,
                        reference, {}, kernels=ns.kernels, reset=False)]
    for name in names:
        policy = POLICIES[name]
        plan = smartcompile.explain(model, *inputs, policy=policy)
        chosen = {s.layer: f"{s.backend}/{s.implementation}" for s in plan.sites if s.rewritten}
        # torch.compile takes mode= or options=, not both: smartattn reads the Inductor mode from its options
        options = {"policy": policy} if ns.mode is None else {"policy": policy, "mode": ns.mode}
        prepared.append(prepare(name, lambda: torch.compile(model, backend="smartattn", options=options),
                                inputs, device, reference, chosen, kernels=ns.kernels, reset=False))
    rows = [r for r, _ in prepared]
    rows.insert(1, dict(rows[0], name="torch.compile default (again)", kernels={}))
    calls = [c for _, c in prepared]
    calls.insert(1, calls[0])
    for r, (ms, spread) in zip(rows, interleaved_ms(calls, device, ns.rounds, ns.repeats)):
        r["ms"], r["round_spread_ms"] = ms, spread
    tokens = inputs[0].shape[2] * (inputs[0].shape[3] // 2) * (inputs[0].shape[4] // 2)
    base = rows[0]["ms"]
    for r in rows:
        r["vs_default"] = base / r["ms"]
    ns.out.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "blocks": ns.blocks, "tokens": tokens, "mode": ns.mode or "default",
              "policies": {n: POLICIES[n] for n in names}, "rows": rows}
    (ns.out / f"bench_wan_{tokens}_{result['mode']}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"Wan2.1-1.3B config, {ns.blocks} blocks, {tokens:,} video tokens, mode {result['mode']}, "
          f"{result['device']}, torch {torch.__version__}")
    for r in rows[1:]:
        kinds = sorted(set(r["chosen"].values()))
        print(f"  {r['name']}: {len(r['chosen'])} sites rewritten, implementations {kinds}")
    print(f"{'policy':<30} {'run ms':>9} {'rounds min-max':>15} {'vs default':>10} {'cos vs eager':>13}")
    for r in rows:
        lo, hi = r["round_spread_ms"]
        print(f"{r['name']:<30} {r['ms']:>9.2f} {lo:>7.2f}-{hi:<7.2f} {r['vs_default']:>9.3f}x "
              f"{r['cosine_vs_eager']:>13.6f}")
    for r in rows:
        if r.get("kernels"):
            print(f"{r['name']}: costliest GPU kernels of one forward (us)")
            for name, us in r["kernels"].items():
                print(f"    {us:9.1f}  {name[:100]}")


if __name__ == "__main__":
    main()
