"""Model code nobody here wrote (transformers, diffusers), small configs, random weights:
one rewritten site per attention module, and outputs under a flash policy equal eager."""
import warnings

import pytest
import torch

import smartcompile
from helpers import FLASH

transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")


def _ids(n=13, vocab=100, batch=2):
    return torch.randint(0, vocab, (batch, n))


def llama(impl):
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, attn_implementation=impl)
    return LlamaModel(cfg), (_ids(),), {}, "LlamaAttention"


def bert(impl):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, attn_implementation=impl)
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, 9:] = 0  # padding: an additive mask reaches the attention
    return BertModel(cfg), (_ids(),), {"attention_mask": mask}, "BertSelfAttention"


def gpt2(impl):
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0,
                     attn_implementation=impl)
    return GPT2Model(cfg), (_ids(),), {}, "GPT2Attention"


def vit(impl):
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, attn_implementation=impl)
    return ViTModel(cfg), (torch.randn(2, 3, 32, 32),), {}, "ViTAttention"


def t5(impl):
    from transformers import T5Config, T5Model

    cfg = T5Config(vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                   attn_implementation=impl)
    return T5Model(cfg), (_ids(),), {"decoder_input_ids": _ids(7)}, "T5Attention"


def diffusers_attention(processor):
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    attn = Attention(query_dim=64, heads=4, dim_head=16, cross_attention_dim=32)
    attn.set_processor({"AttnProcessor": AttnProcessor, "AttnProcessor2_0": AttnProcessor2_0}[processor]())
    return attn, (torch.randn(2, 37, 64),), {"encoder_hidden_states": torch.randn(2, 11, 32)}, "Attention"


def diffusers_dit(_):
    from diffusers import DiTTransformer2DModel

    m = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, num_layers=2,
                              sample_size=8, patch_size=2, num_embeds_ada_norm=10)
    return m, (torch.randn(1, 4, 8, 8),), {"timestep": torch.tensor([3]), "class_labels": torch.tensor([1])}, "Attention"


CASES = [(f, impl) for f in (llama, bert, gpt2, vit, t5) for impl in ("eager", "sdpa")] + [
    (diffusers_attention, "AttnProcessor"), (diffusers_attention, "AttnProcessor2_0"), (diffusers_dit, "default"),
]


@pytest.mark.slow
@pytest.mark.parametrize("factory, variant", CASES, ids=[f"{f.__name__}-{v}" for f, v in CASES])
def test_one_site_per_attention_module_and_exact_under_flash(factory, variant):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, args, kwargs, attn_type = factory(variant)
    model.eval()
    n_modules = sum(type(m).__name__ == attn_type for m in model.modules())
    plan = smartcompile.explain(model, *args, policy=FLASH, kwargs=kwargs)
    assert len(plan.rewritten) == len(plan.sites) == n_modules, plan
    module_names = {name for name, _ in model.named_modules()}
    if factory is not diffusers_attention:  # a bare Attention is the compiled frame itself
        assert all(s.layer in module_names for s in plan.sites), [s.layer for s in plan.sites]
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="smartattn", options={"policy": FLASH})
    with torch.no_grad():
        want = model(*args, **kwargs)
        got = compiled(*args, **kwargs)
    want = want[0] if isinstance(want, tuple) else getattr(want, "last_hidden_state", want)
    got = got[0] if isinstance(got, tuple) else getattr(got, "last_hidden_state", got)
    want = getattr(want, "sample", want)
    got = getattr(got, "sample", got)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def diffusers_flux(_):
    from diffusers import FluxTransformer2DModel

    m = FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
                               num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16,
                               guidance_embeds=False, axes_dims_rope=(4, 6, 6))

    def inputs(n, txt):
        return (), dict(hidden_states=torch.randn(1, n, 8), encoder_hidden_states=torch.randn(1, txt, 32),
                        pooled_projections=torch.randn(1, 16), timestep=torch.tensor([0.5]),
                        img_ids=torch.randn(n, 3), txt_ids=torch.zeros(txt, 3))
    return m, inputs


def llama_eager(_):
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager")
    return LlamaModel(cfg), lambda n, _: ((_ids(n),), {})


@pytest.mark.slow
@pytest.mark.parametrize("factory", [diffusers_flux, llama_eager], ids=["flux", "llama-eager"])
def test_dynamic_true_rewrites_every_site_and_stays_exact(factory):
    """Under dynamic=True torch reads float attributes and defaults as symbolic floats: Flux's dispatch_attention_fn
    dropout_p (a constant) and Llama's eager `self.scaling` left their sites exact whatever the policy (session 16
    review). Every site is rewritten now, and a flash policy equals eager at two lengths."""
    from smartcompile.compiler.backend import compile_graph
    from smartcompile.compiler.options import CompileOptions
    from smartcompile.compiler.plan import Plan

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs = factory(None)
    model.eval()
    torch._dynamo.reset()
    opts, plan = CompileOptions.parse(None, None, FLASH), Plan()
    compiled = torch.compile(model, dynamic=True, backend=lambda gm, ex: compile_graph(gm, ex, opts,
                                                                                      sink=plan.extend))
    for n, txt in ((16, 5), (24, 7)):
        args, kwargs = inputs(n, txt)
        with torch.no_grad():
            want, got = model(*args, **kwargs)[0], compiled(*args, **kwargs)[0]
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert plan.sites and all(s.rewritten for s in plan.sites), [s.reason for s in plan.sites if not s.rewritten]
