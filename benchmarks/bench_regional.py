"""Regional compilation vs whole-model compilation with the same per-layer policy (issue 12).

The Wan2.1-1.3B transformer configuration with fewer blocks (random weights: speed only), at the
480p x 81-frame token count (21 x 30 x 52 = 32,760 video tokens), bf16 on CUDA:
- `torch.compile(model, backend="smartattn")` (whole model) and
- `model.compile_repeated_blocks(backend="smartattn")` (diffusers' regional compilation),
both under one policy that names single layers (blocks.0.attn1 exact, the other self-attentions
Sage, cross-attentions exact). Reports the first call (compile) time, the median run time after
warm-up (CUDA events) against `torch.compile` default in the same run, and the per-layer choices.

    python benchmarks/bench_regional.py --out benchmarks/results/h200            # GPU
    python benchmarks/bench_regional.py --small --out /tmp/r                      # CPU smoke
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import smartcompile
from smartcompile.compiler.layer_dispatch import INSTANCES
from smartcompile.timing import first_call, median_call_ms

POLICY = {"version": 1, "default": "sage",
          "layers": {"blocks.0.attn1": "flash", "blocks.*.attn2": "flash"}}


def build(small: bool, blocks: int, device: str, dtype: torch.dtype, frames: int = 21):
    """The model and its inputs; `frames` latent frames of 30 x 52 tokens each (21: 32,760 tokens)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    if small:
        cfg = dict(num_attention_heads=2, attention_head_dim=32, in_channels=4, out_channels=4, text_dim=32,
                   freq_dim=32, ffn_dim=128, num_layers=blocks, rope_max_seq_len=64)
        latents, text = (1, 4, 3, 16, 16), (1, 7, 32)
    else:  # Wan2.1-T2V-1.3B: dim 1536 = 12 heads x 128, FFN 8960, text 4096 (umT5), 16 latent channels
        cfg = dict(num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
                   freq_dim=256, ffn_dim=8960, num_layers=blocks, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                   eps=1e-6)
        latents, text = (1, 16, frames, 60, 104), (1, 512, 4096)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), **cfg).to(device, dtype).eval()
    inputs = (torch.randn(latents, device=device, dtype=dtype), torch.tensor([500], device=device),
              torch.randn(text, device=device, dtype=dtype))
    return model, inputs


def costliest_kernels(fn, top: int = 8) -> dict:
    """{kernel name: GPU us} of the `top` costliest kernels of one call of `fn` (torch.profiler), plus
    "(all kernels)": their sum, which, set against the wall time, says whether the call is host-bound."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = [(r.key, getattr(r, "self_device_time_total", 0) or getattr(r, "self_cuda_time_total", 0))
            for r in prof.key_averages()]
    costliest = dict(sorted(((k, us) for k, us in rows if us > 0), key=lambda kv: -kv[1])[:top])
    return {"(all kernels)": sum(us for _, us in rows), **costliest}


def prepare(name: str, make, inputs, device: str, reference: torch.Tensor, planned: dict = None,
            kernels: bool = False, reset: bool = True) -> tuple:
    """(row without its time, a call of the compiled model): compiled, run once (compile time), checked against
    the eager reference, warmed up, optionally profiled. Compiled models stay alive side by side (dynamo keys
    its cache entries by backend), so `interleaved_ms` can time them in turns; `reset` clears dynamo first
    (False there)."""
    if reset:
        torch._dynamo.reset()
    seen = len(INSTANCES)
    compiled = make()

    def call():  # a new step each call: under CUDA graphs (reduce-overhead) a replay overwrites the last outputs
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*inputs, return_dict=False)[0]

    with torch.no_grad():
        out, compile_s = first_call(lambda: call().clone(), device)
        for _ in range(2):
            call()
        top = costliest_kernels(call) if kernels and device == "cuda" else {}
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), reference.float().flatten(), dim=0).item()
    # regional: the per-instance choices made at run time; whole model: the plan made at compile time
    chosen = planned if planned is not None else \
        {c.layer: f"{c.backend}/{c.implementation}" for c in list(INSTANCES.values())[seen:]}
    return {"name": name, "compile_s": compile_s, "cosine_vs_eager": cos, "chosen": chosen, "kernels": top}, call


def interleaved_ms(calls: list, device: str, rounds: int, per_round: int) -> list:
    """[(median ms, min and max of the round medians)] per call: `rounds` rounds, each timing every call
    `per_round` times in turn, so clock and thermal drift fall on all of them alike. Round r starts at call
    r mod len(calls): with rounds a multiple of the call count each call holds every position equally often
    (in a fixed order a position effect falls on one call alone: at Wan 4,680 tokens, session 9, `auto` with
    nothing rewritten measured 0.985x of the default in third place while the default's second run gave 0.996x)."""
    per_call = [[] for _ in calls]
    n = len(calls)
    with torch.no_grad():
        for r in range(rounds):
            for i in range(n):
                j = (r + i) % n
                per_call[j].append(median_call_ms(calls[j], device, per_round))
    out = []
    for times in per_call:
        s = sorted(times)
        out.append((s[len(s) // 2], (s[0], s[-1])))
    return out


def measure(name: str, make, inputs, device: str, repeats: int, reference: torch.Tensor,
            planned: dict = None, kernels: bool = False) -> dict:
    row, call = prepare(name, make, inputs, device, reference, planned, kernels)
    with torch.no_grad():
        row["ms"] = median_call_ms(call, device, repeats)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--small", action="store_true", help="tiny config on the CPU (smoke run)")
    p.add_argument("--out", type=Path, required=True)
    ns = p.parse_args()
    device = "cuda" if torch.cuda.is_available() and not ns.small else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, inputs = build(ns.small, ns.blocks, device, dtype)
    smartcompile.name_layers(model)
    opts = {"policy": POLICY}
    with torch.no_grad():
        reference = model(*inputs, return_dict=False)[0]

    def regional():
        fresh, _ = build(ns.small, ns.blocks, device, dtype)  # compile_repeated_blocks compiles in place
        fresh.load_state_dict(model.state_dict())
        smartcompile.name_layers(fresh)
        fresh.compile_repeated_blocks(backend="smartattn", options=opts)
        return fresh

    plan = smartcompile.explain(model, *inputs, policy=POLICY)
    planned = {s.layer: f"{s.backend}/{s.implementation}" for s in plan.sites if s.rewritten}
    rows = [measure("torch.compile default (whole model)", lambda: torch.compile(model), inputs, device, ns.repeats,
                    reference, planned={}),
            measure("smartattn, whole model", lambda: torch.compile(model, backend="smartattn", options=opts),
                    inputs, device, ns.repeats, reference, planned),
            measure("smartattn, compile_repeated_blocks", regional, inputs, device, ns.repeats, reference)]
    tokens = inputs[0].shape[2] * (inputs[0].shape[3] // 2) * (inputs[0].shape[4] // 2)
    base = rows[0]["ms"]
    ns.out.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "blocks": ns.blocks, "tokens": tokens, "policy": POLICY, "rows": rows}
    (ns.out / "bench_regional.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"Wan2.1-1.3B config, {ns.blocks} blocks, {tokens:,} video tokens, {result['device']}, torch {torch.__version__}")
    print(f"{'compilation':<38} {'first call s':>12} {'run ms':>9} {'vs default':>10} {'cos vs eager':>13}")
    for r in rows:
        print(f"{r['name']:<38} {r['compile_s']:>12.1f} {r['ms']:>9.2f} {base / r['ms']:>9.3f}x {r['cosine_vs_eager']:>13.6f}")
    whole, regional_row = rows[1], rows[2]
    print(f"regional / whole-model run time: {regional_row['ms'] / whole['ms']:.3f}")
    differ = {k: (whole["chosen"].get(k), v) for k, v in regional_row["chosen"].items() if whole["chosen"].get(k) != v}
    print("per-layer choices (regional): " + ", ".join(f"{k}={v}" for k, v in sorted(regional_row["chosen"].items())[:6])
          + (" ..." if len(regional_row["chosen"]) > 6 else ""))
    print("choices identical in both compilations" if not differ else f"choices differ: {differ}")


if __name__ == "__main__":
    main()
