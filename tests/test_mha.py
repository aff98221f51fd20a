"""nn.MultiheadAttention (issue 11): expanded into projections + SDPA so the layer is found and
rewritten; eager semantics kept (outputs, NaNs, gradients) for every mask form; forms it does not
reproduce are reported with their reason."""
import pytest
import torch

import smartcompile
from helpers import compile_and_plan

E, H = 32, 4


def _mha(batch_first=True, kdim=None, dropout=0.0):
    torch.manual_seed(0)
    return torch.nn.MultiheadAttention(E, H, batch_first=batch_first, kdim=kdim, vdim=kdim, dropout=dropout).eval()


def _x(n, length, batch_first=True, dim=E):
    return torch.randn(n, length, dim) if batch_first else torch.randn(length, n, dim)


def _kpm(kind, n=2, s=11, full_row=False):
    pad = torch.zeros(n, s, dtype=torch.bool)
    pad[1, -4:] = True
    if full_row:
        pad[0, :] = True
    return pad if kind == "bool" else torch.zeros(n, s).masked_fill(pad, float("-inf"))


def _attn_mask(kind, lq=7, s=11, n=2):
    m = torch.rand((n * H, lq, s) if kind.endswith("3d") else (lq, s)) > 0.7
    m[..., 0] = False
    return m if kind.startswith("bool") else torch.zeros(m.shape).masked_fill(m, -1e4)


CASES = {
    "self": dict(),
    "self_seq_first": dict(batch_first=False),
    "cross": dict(cross=True),
    "kdim_separate_proj": dict(cross=True, kdim=24),
    "kpm_bool": dict(cross=True, kpm="bool"),
    "kpm_float": dict(cross=True, kpm="float"),
    "attn_bool_2d": dict(cross=True, attn="bool"),
    "attn_float_3d": dict(cross=True, attn="float3d"),
    "attn_and_kpm": dict(cross=True, attn="bool3d", kpm="bool"),
    "causal_hint": dict(causal=True),
    "causal_hint_and_kpm": dict(causal=True, kpm="float"),
    "kpm_full_row": dict(cross=True, kpm="bool", full_row=True),
}


def _case(name):
    c = CASES[name]
    bf, kdim = c.get("batch_first", True), c.get("kdim")
    mha = _mha(bf, kdim)
    lq = 7 if c.get("cross") else 11
    q = _x(2, lq, bf)
    kv = _x(2, 11, bf, kdim or E) if c.get("cross") else q
    kw = {"need_weights": False}
    if c.get("kpm"):
        kw["key_padding_mask"] = _kpm(c["kpm"], full_row=c.get("full_row", False))
    if c.get("attn"):
        kw["attn_mask"] = _attn_mask(c["attn"], lq)
    if c.get("causal"):
        kw["attn_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(lq)
        kw["is_causal"] = True
    self_attn = not c.get("cross")

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, q, kv, kw):
            return self.mha(q, q if self_attn else kv, q if self_attn else kv, **kw)[0]

    return mha, Block(), (q, kv, kw)


@pytest.mark.parametrize("inductor", [False, True], ids=["eager-graph", "inductor"])
@pytest.mark.parametrize("name", list(CASES))
def test_multihead_attention_is_rewritten_and_exact(name, inductor):
    mha, fn, args = _case(name)
    compiled, plan = compile_and_plan(fn, inductor=inductor)
    with torch.no_grad():
        want, got = fn(*args), compiled(*args)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4, equal_nan=True)
    [site] = plan.sites
    assert site.rewritten and site.pattern.startswith("sdpa/mha"), plan
    assert site.layer == "mha"


def test_multihead_attention_gradients_match_eager():
    mha, fn, (q, kv, kw) = _case("attn_and_kpm")
    compiled, plan = compile_and_plan(fn)
    grads = []
    for f in (fn, compiled):
        mha.zero_grad()
        qq, kk = q.clone().requires_grad_(), kv.clone().requires_grad_()
        f(qq, kk, kw).sum().backward()
        grads.append([qq.grad, kk.grad, mha.in_proj_weight.grad.clone(), mha.out_proj.weight.grad.clone()])
    assert plan.sites[0].rewritten
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("form, why", [
    (dict(need_weights=True), "need_weights=True"),
    (dict(add_bias_kv=True), "bias_k/bias_v"),
    (dict(add_zero_attn=True), "add_zero_attn"),
    (dict(unbatched=True), "unbatched"),
])
def test_forms_it_cannot_keep_are_reported(form, why):
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(E, H, batch_first=True, add_bias_kv=form.get("add_bias_kv", False),
                                      add_zero_attn=form.get("add_zero_attn", False)).eval()
    x = torch.randn(9, E) if form.get("unbatched") else torch.randn(2, 9, E)
    fn = lambda x: mha(x, x, x, need_weights=form.get("need_weights", False))[0]
    compiled, plan = compile_and_plan(fn)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), fn(x), atol=2e-5, rtol=1e-4)
    [site] = plan.sites
    assert not site.rewritten and why in site.reason


def test_sage_reference_numerics_run_through_multihead_attention():
    mha, fn, args = _case("kpm_bool")
    compiled, plan = compile_and_plan(fn, policy={"default": "sage"})
    with torch.no_grad():
        want, got = fn(*args), compiled(*args)
    assert plan.sites[0].backend == "sage", plan
    cos = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)
    assert cos > 0.99


def test_transformer_encoder_layers_are_named_by_module():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(E, H, dim_feedforward=64, batch_first=True, dropout=0.0)
    model = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    x, pad = torch.randn(2, 11, E), _kpm("bool")
    plan = smartcompile.explain(model, x, kwargs={"src_key_padding_mask": pad}, policy={"default": "flash"})
    assert [s.layer for s in plan.sites] == ["layers.0.self_attn", "layers.1.self_attn"], plan
    assert all(s.rewritten for s in plan.sites)
