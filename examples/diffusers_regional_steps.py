"""A diffusers pipeline compiled block by block (`compile_repeated_blocks`), with a per-layer,
per-denoising-step policy (examples/policies/per_step.json).

Runs offline on a CPU in seconds: a tiny WanPipeline with random weights, prompt embeddings given
directly (no text encoder). On a GPU with a real checkpoint, replace `tiny_pipeline()` by
`WanPipeline.from_pretrained(...)` and keep the three smartcompile lines.

    python examples/diffusers_regional_steps.py
"""
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

import smartcompile
from smartcompile.compiler.layer_dispatch import INSTANCES

POLICY = Path(__file__).with_name("policies") / "per_step.json"


def tiny_pipeline() -> WanPipeline:
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=32).eval()
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    return WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


def main(steps: int = 4) -> dict:
    pipe = tiny_pipeline()
    smartcompile.name_layers(pipe.transformer)  # rules by full path: blocks.1.attn1, ...
    smartcompile.track_steps(pipe)  # smartcompile.step follows the denoising loop
    pipe.transformer.compile_repeated_blocks(backend="smartattn", options={"policy": str(POLICY)})
    seen = len(INSTANCES)
    with torch.no_grad():
        pipe(prompt_embeds=torch.randn(1, 7, 32), negative_prompt_embeds=torch.randn(1, 7, 32), height=32, width=32,
             num_frames=5, num_inference_steps=steps, guidance_scale=5.0, output_type="latent")
    chosen = {}
    for choice in list(INSTANCES.values())[seen:]:
        chosen[(choice.layer, choice.step)] = f"{choice.backend}/{choice.implementation}"
        print(f"{choice.layer:16s} step {choice.step}: {choice.backend}/{choice.implementation}  ({choice.reason})")
    return chosen


if __name__ == "__main__":
    main()
