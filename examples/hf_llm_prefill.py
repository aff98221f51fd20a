"""An HF transformers LLM prefill through smartattn: explain the plan, then compare with eager.

A small Llama config with random weights (offline); with a real checkpoint use
`AutoModelForCausalLM.from_pretrained(..., attn_implementation="sdpa")` on a GPU.

    python examples/hf_llm_prefill.py
"""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import smartcompile


def main(tokens: int = 64) -> float:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=1000, attn_implementation="sdpa")
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, tokens))
    print(smartcompile.explain(model, kwargs={"input_ids": ids}))
    compiled = smartcompile.compile(model)  # auto: exact on a CPU, measured choices on a GPU
    with torch.no_grad():
        eager, ours = model(input_ids=ids).logits, compiled(input_ids=ids).logits
    diff = (eager - ours).abs().max().item()
    print(f"max |logits - eager| = {diff:.2e}")
    return diff


if __name__ == "__main__":
    main()
