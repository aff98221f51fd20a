"""An HF transformers LLM prefill through smartattn: explain the plan, then compare with eager.

A small Llama config with random weights (offline); with a real checkpoint use
`AutoModelForCausalLM.from_pretrained(..., attn_implementation="sdpa")` on a GPU. A padded batch, as a
tokenizer returns it: the plan's mask column shows `causal-padded`, recovered from the mask transformers
builds, and the kernels get the padding as structure instead of a dense mask.

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
    ids = torch.randint(0, config.vocab_size, (2, tokens))
    attention_mask = torch.ones(2, tokens, dtype=torch.long)
    attention_mask[1, : tokens // 4] = 0  # the second prompt is shorter: left-padded
    inputs = {"input_ids": ids, "attention_mask": attention_mask}
    print(smartcompile.explain(model, kwargs=inputs))
    compiled = smartcompile.compile(model)  # auto: exact on a CPU, measured choices on a GPU
    with torch.no_grad():
        eager, ours = model(**inputs).logits, compiled(**inputs).logits
    real = attention_mask.bool()  # padded positions' logits are not used by anyone
    diff = (eager - ours)[real].abs().max().item()
    print(f"max |logits - eager| = {diff:.2e}")
    return diff


if __name__ == "__main__":
    main()
