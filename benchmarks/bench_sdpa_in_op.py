"""One attention site, Wan2.1-shaped (B1 H12 D128, 4,680 tokens by default), three ways: torch SDPA called directly,
the same SDPA through our custom op `smartattn::attention` (flash/sdpa), and a compiled block (to_q/k/v, SDPA,
to_out) under `torch.compile` default against smartattn with the "flash" policy (SDPA inside our op). Inputs are
(B, H, S, D) views of (B, S, H, D) tensors, as diffusers' attention processors pass them. Prints wall ms
(CUDA events, median) and the GPU kernels of one call, so a slowdown shows as host time or as another kernel.

    python benchmarks/bench_sdpa_in_op.py --out DIR      # GPU
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_regional import costliest_kernels  # noqa: E402
from smartcompile.timing import median_call_ms  # noqa: E402


def median_ms(fn, repeats: int = 50) -> float:
    for _ in range(5):  # warm-up
        fn()
    return median_call_ms(fn, "cuda", repeats)


class Block(torch.nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v, self.to_out = (torch.nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (lin(x).unflatten(2, (self.heads, -1)).transpose(1, 2) for lin in (self.to_q, self.to_k, self.to_v))
        return self.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=4680)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--out", type=Path, required=True)
    ns = p.parse_args()
    import smartcompile
    from smartcompile.backends.op import register_ops

    register_ops()
    dev, dt = "cuda", torch.bfloat16
    h, d, s = ns.heads, ns.head_dim, ns.tokens
    q, k, v = (torch.randn(1, s, h, d, device=dev, dtype=dt).transpose(1, 2) for _ in range(3))
    scale = d ** -0.5
    rows = {}
    cases = {
        "sdpa, strided views": lambda: F.scaled_dot_product_attention(q, k, v, scale=scale),
        "sdpa, contiguous": (lambda qc, kc, vc: lambda: F.scaled_dot_product_attention(qc, kc, vc, scale=scale))(
            q.contiguous(), k.contiguous(), v.contiguous()),
        "our op (flash/sdpa)": lambda: torch.ops.smartattn.attention(q, k, v, None, False, scale, "flash", "sdpa",
                                                                     "{}", "probe"),
    }
    block = Block(h * d, h).to(dev, dt)
    x = torch.randn(1, s, h * d, device=dev, dtype=dt)
    with torch.no_grad():
        torch._dynamo.reset()
        default = torch.compile(block)
        cases["block, torch.compile default"] = lambda: default(x)
        ref = default(x)
        smart = torch.compile(block, backend="smartattn", options={"policy": {"version": 1, "default": "flash"}})
        cases["block, smartattn flash (SDPA in our op)"] = lambda: smart(x)
        out = smart(x)
        print("block outputs agree:", torch.allclose(out.float(), ref.float(), atol=2e-2, rtol=2e-2), flush=True)
        for name, fn in cases.items():
            ms = median_ms(fn)
            kernels = costliest_kernels(fn, top=6)
            rows[name] = {"ms": ms, "kernels": kernels}
            print(f"{name:<42} {ms:8.3f} ms   GPU sum {kernels['(all kernels)'] / 1e3:7.3f} ms", flush=True)
            for kname, us in list(kernels.items())[1:]:
                print(f"      {us:9.1f} us  {kname[:110]}")
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "sdpa_in_op.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "tokens": s, "heads": h, "head_dim": d,
         "smartcompile": smartcompile.__name__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
