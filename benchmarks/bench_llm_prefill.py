"""LLM prefill through transformers under torch.compile: smartattn policies vs `torch.compile` default (issue 11).

The Llama-style model of issue 11 (random weights: speed; outputs compared with the eager model):
8 layers, hidden 2048, 16 query / 4 KV heads (D 128), FFN 5632, bf16, `attn_implementation="sdpa"`.
transformers under torch.compile hands SDPA a dense bool `causal & attention_mask` mask (it cannot
drop an all-ones mask while tracing); smartattn recovers the structure, so exact attention runs
SDPA's causal path and Sage skips future and padded blocks. Cases:
- `ones`: batch 1, N tokens, the all-ones `attention_mask` a tokenizer returns;
- `none`: batch 1, no attention_mask (transformers passes is_causal itself);
- `padded`: batch 2, N and 10/16 N real tokens, left-padded (as for generation).
Each policy: first-call time (compile), median forward time after warm-up (CUDA events), ratio against
`torch.compile` default measured in the same run, cosine of the last hidden state (real tokens) vs eager.

    python benchmarks/bench_llm_prefill.py --out benchmarks/results/h200          # GPU, N = 16k
    python benchmarks/bench_llm_prefill.py --small --out /tmp/p                     # CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from smartcompile.timing import first_call, median_call_ms

POLICIES = {  # name -> options for backend="smartattn"; None: torch.compile default (Inductor)
    "torch.compile default": None,
    "smartattn exact": {"policy": {"version": 1, "default": "flash"}},
    "smartattn auto": {"policy": {"version": 1, "default": "auto"}},
    "smartattn sage": {"policy": {"version": 1, "default": "sage"}},
}


def build(small: bool, device: str, dtype: torch.dtype):
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if small:
            cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
        else:
            cfg = transformers.LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=8,
                                           num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=32768,
                                           attn_implementation="sdpa")
        torch.manual_seed(0)
        return transformers.LlamaModel(cfg).to(device, dtype).eval()


def inputs_for(case: str, tokens: int, vocab: int, device: str) -> dict:
    g = torch.Generator().manual_seed(1)
    batch = 2 if case == "padded" else 1
    ids = torch.randint(0, vocab, (batch, tokens), generator=g).to(device)
    if case == "none":
        return {"input_ids": ids}
    mask = torch.ones(batch, tokens, dtype=torch.long)
    if case == "padded":
        mask[1, : tokens - tokens * 10 // 16] = 0  # left padding: the second sequence has 10/16 of the tokens
    return {"input_ids": ids, "attention_mask": mask.to(device)}


def cosine_on_real_tokens(out: torch.Tensor, ref: torch.Tensor, kwargs: dict) -> float:
    keep = kwargs.get("attention_mask")
    o, r = out.float(), ref.float()
    if keep is not None:  # padded queries' hidden states are not used by anyone
        o, r = o[keep.bool()], r[keep.bool()]
    return torch.nn.functional.cosine_similarity(o.flatten(), r.flatten(), dim=0).item()


def measure(model, options, kwargs: dict, device: str, repeats: int, reference: torch.Tensor) -> dict:
    import smartcompile  # noqa: F401  (registers nothing at import; the backend comes from its entry point)

    torch._dynamo.reset()
    call = torch.compile(model) if options is None else torch.compile(model, backend="smartattn", options=options)
    with torch.no_grad():
        out, compile_s = first_call(lambda: call(**kwargs).last_hidden_state, device)
        call(**kwargs)
        ms = median_call_ms(lambda: call(**kwargs), device, repeats)
    row = {"compile_s": compile_s, "ms": ms, "cosine_vs_eager": cosine_on_real_tokens(out, reference, kwargs)}
    if options is not None:
        plan = smartcompile.explain(model, kwargs=kwargs, policy=options["policy"])
        row["sites"] = sorted({f"{s.spec.short() if s.spec else '?'} -> "
                               + ("graph's own SDPA" if s.graph_sdpa_kept else f"{s.backend}/{s.implementation}")
                               for s in plan.sites})
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--cases", default="ones,none,padded")
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated names from: " + ", ".join(POLICIES))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--small", action="store_true", help="tiny config on the CPU (smoke run)")
    p.add_argument("--out", type=Path, required=True)
    ns = p.parse_args()
    device = "cuda" if torch.cuda.is_available() and not ns.small else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokens = 64 if ns.small and ns.tokens == 16384 else ns.tokens
    model = build(ns.small, device, dtype)
    names = [n.strip() for n in ns.policies.split(",")]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        p.error(f"--policies: unknown {unknown}; allowed: {list(POLICIES)}")
    ns.out.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "tokens": tokens, "model": "Llama-style 8 x 2048, 16 q / 4 kv heads, D128" if not ns.small else "tiny",
              "cases": {}}
    for case in ns.cases.split(","):
        kwargs = inputs_for(case, tokens, model.config.vocab_size, device)
        with torch.no_grad():
            reference = model(**kwargs).last_hidden_state
        rows = {}
        for name in names:
            try:
                rows[name] = measure(model, POLICIES[name], kwargs, device, ns.repeats, reference)
            except Exception as exc:  # noqa: BLE001 - one failing policy is a row with its error, not a lost run
                rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print(case, name, rows[name], flush=True)
        base = rows.get("torch.compile default", {}).get("ms")
        for r in rows.values():
            if base and "ms" in r:
                r["vs_default"] = base / r["ms"]
        result["cases"][case] = rows
        (ns.out / "bench_llm_prefill.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{result['model']}, {tokens} tokens, {result['device']}, torch {torch.__version__}")
    print(f"{'case':<7} {'policy':<24} {'first call s':>12} {'ms':>9} {'vs default':>10} {'cos vs eager':>12}")
    for case, rows in result["cases"].items():
        for name, r in rows.items():
            if "error" in r:
                print(f"{case:<7} {name:<24} {r['error'][:80]}")
                continue
            vs = f"{r['vs_default']:.3f}x" if "vs_default" in r else "-"
            print(f"{case:<7} {name:<24} {r['compile_s']:>12.1f} {r['ms']:>9.2f} {vs:>10} {r['cosine_vs_eager']:>12.6f}")


if __name__ == "__main__":
    main()
