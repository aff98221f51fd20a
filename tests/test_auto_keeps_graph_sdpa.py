"""Under "auto", a plain SDPA call whose choice is exact SDPA stays the graph's own call (stock torch.compile
runs it); masked calls, explicit flash rules and per-step policies are still rewritten."""
import json

import torch
import torch.nn.functional as F

import smartcompile
from smartcompile.compiler.backend import keeps_graph_sdpa


class TwoAttentions(torch.nn.Module):
    """A plain SDPA call, then one with a key-padding mask on the first one's output."""

    def forward(self, x, keep):
        y = F.scaled_dot_product_attention(x, x, x)
        return F.scaled_dot_product_attention(y, x, x, attn_mask=keep[:, None, None, :])


def _inputs():
    keep = torch.ones(2, 24, dtype=torch.bool)
    keep[1, 17:] = False
    return torch.randn(2, 3, 24, 16), keep


def _by_pattern(plan):
    return {s.pattern: s for s in plan.sites}


def test_auto_keeps_the_plain_call_and_rewrites_the_masked_one():
    x, keep = _inputs()
    plan = smartcompile.explain(TwoAttentions(), x, keep)
    assert len(plan.sites) == 2
    plain, masked = plan.sites
    assert not plain.rewritten and plain.reason.endswith("the graph's own SDPA call, kept"), plain.reason
    assert plain.steps and plain.steps[-1].outcome == "chosen"  # explain still shows what auto chose
    assert plain.graph_sdpa_kept and not masked.graph_sdpa_kept
    assert json.loads(json.dumps(plan.to_dict()))["sites"][0]["graph_sdpa_kept"] is True
    assert masked.rewritten and (masked.backend, masked.implementation) == ("flash", "sdpa"), masked
    assert "1 of 2 attention sites rewritten" in plan.table()


def test_auto_output_equals_eager_with_a_kept_site_feeding_a_rewritten_one():
    x, keep = _inputs()
    model = TwoAttentions()
    torch._dynamo.reset()
    with torch.no_grad():
        eager = model(x, keep)
        compiled = torch.compile(model, backend="smartattn")(x, keep)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_explicit_flash_and_per_step_rules_still_rewrite():
    x, keep = _inputs()
    flash = smartcompile.explain(TwoAttentions(), x, keep, policy={"version": 1, "default": "flash"})
    assert all(s.rewritten for s in flash.sites)
    by_step = {"version": 2, "default": {"by_step": {"0-": "auto"}}}
    stepped = smartcompile.explain(TwoAttentions(), x, keep, policy=by_step)
    assert all(s.rewritten for s in stepped.sites)  # chosen per call at run time: the op must be in the graph


def test_keeps_graph_sdpa_needs_auto_exact_sdpa_and_a_plain_call():
    class Choice:
        backend, implementation = "flash", "sdpa"

    class Site:
        pattern, masks, mask_structure = "sdpa", (), None

    assert keeps_graph_sdpa("auto", Site(), Choice())
    assert not keeps_graph_sdpa("flash", Site(), Choice())
    sage = Choice()
    sage.backend, sage.implementation = "sage", "sage_triton"
    assert not keeps_graph_sdpa("auto", Site(), sage)
    for field, value in (("pattern", "sdpa/mha"), ("pattern", "matmul/softmax/matmul"), ("masks", ("term",)),
                         ("mask_structure", "causal")):
        site = Site()
        setattr(site, field, value)
        assert not keeps_graph_sdpa("auto", site, Choice()), (field, value)
