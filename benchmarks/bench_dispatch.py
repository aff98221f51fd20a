"""Per-call cost of choosing per module instance / step at run time (issue 12).

Times the same tiny attention through the literal op (`smartattn::attention`, choice baked in)
and through `smartattn::attention_by_layer` (choice looked up per call), in eager op calls, and
reports the difference per call. Tiny tensors, so the difference is the dispatch cost.

    python benchmarks/bench_dispatch.py [--device cuda] [--calls 20000]
"""
from __future__ import annotations

import argparse
import time

import torch

import smartcompile
from smartcompile.backends.op import encode_params, register_ops
from smartcompile.backends.denoising_step import current_step
from smartcompile.compiler.layer_dispatch import Choice, DispatchSite, dispatch, register_site
from smartcompile.policies import Policy
from smartcompile.spec import AttentionSpec


def _per_call_us(fn, calls: int, sync) -> float:
    for _ in range(200):
        fn()
    sync()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--calls", type=int, default=20000)
    ns = ap.parse_args()
    register_ops()
    q = torch.randn(1, 1, 16, 16, device=ns.device)
    anchor = torch.nn.Parameter(torch.randn(4, device=ns.device))
    root = torch.nn.Module()
    root.block = torch.nn.Module()
    root.block.register_parameter("w", anchor)
    smartcompile.name_layers(root)
    spec = AttentionSpec(1, 1, 1, 16, 16, 16, 16, q.dtype, ns.device)
    params = encode_params({})
    site = register_site(DispatchSite("attn", ("w",), spec, Policy.from_dict({"default": "flash"}), "static",
                                      Choice("flash", "sdpa", params, "attn")))
    sync = torch.cuda.synchronize if ns.device.startswith("cuda") else (lambda: None)
    literal = lambda: torch.ops.smartattn.attention(q, q, q, None, False, 0.25, "flash", "sdpa", params, "block.attn")
    by_layer = lambda: torch.ops.smartattn.attention_by_layer(q, q, q, None, False, 0.25, [anchor], site)
    with torch.no_grad():  # as a compiled graph calls it (AOTAutograd's forward runs without grad)
        a, b = _per_call_us(literal, ns.calls, sync), _per_call_us(by_layer, ns.calls, sync)
        with smartcompile.step(3):
            c = _per_call_us(by_layer, ns.calls, sync)
    lookup = _per_call_us(lambda: dispatch(site, [anchor], current_step()), ns.calls, lambda: None)
    print(f"device {ns.device}, torch {torch.__version__}, {ns.calls} calls, best of 5")
    print(f"literal op          {a:8.2f} us/call")
    print(f"per-instance op     {b:8.2f} us/call  (+{b - a:.2f})")
    print(f"per-instance, step  {c:8.2f} us/call  (+{c - a:.2f})")
    print(f"the lookup alone    {lookup:8.2f} us/call")


if __name__ == "__main__":
    main()
