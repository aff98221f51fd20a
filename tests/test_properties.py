"""Property-based: generated formulations, shapes, masks and scales. Under a flash policy the
rewrite never changes the result, never crashes, and fires exactly once."""
import math

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import compile_and_plan


def build(matmul, transpose, scale_form, mask_kind, softmax_form, cast, gqa_form):
    def qk(q, k):
        if transpose == "transpose":
            kt = k.transpose(-2, -1)
        elif transpose == "transpose_pos":
            kt = k.transpose(3, 2)
        elif transpose == "mT":
            kt = k.mT
        else:
            kt = k.permute(0, 1, 3, 2)
        if matmul == "op":
            return q @ kt
        if matmul == "torch":
            return torch.matmul(q, kt)
        return torch.einsum("bhqd,bhdk->bhqk", q, kt)

    def fn(q, k, v, scale, additive, keep):
        n = q.shape[1] // k.shape[1]
        if gqa_form == "repeat_interleave":
            k, v = k.repeat_interleave(n, dim=1), v.repeat_interleave(n, dim=1)
        elif gqa_form == "expand":
            b, h, s, d = k.shape
            k = k[:, :, None].expand(b, h, n, s, d).reshape(b, h * n, s, d)
            v = v[:, :, None].expand(b, h, n, s, d).reshape(b, h * n, s, d)
        if scale_form == "mul":
            s = qk(q, k) * scale
        elif scale_form == "div":
            s = qk(q, k) / (1.0 / scale)
        elif scale_form == "q_pre":
            s = qk(q * scale, k)
        elif scale_form == "qk_root":
            s = qk(q * math.sqrt(scale), k * math.sqrt(scale))
        else:
            s = qk(q, k)
        if mask_kind == "additive":
            s = s + additive
        elif mask_kind == "masked_fill":
            s = s.masked_fill(~keep, float("-inf"))
        elif mask_kind == "where":
            s = torch.where(keep, s, -1e9)
        elif mask_kind == "tril":
            c = torch.tril(torch.ones(s.shape[-2], s.shape[-1]))
            s = s.masked_fill(c == 0, float("-inf"))
        if cast:
            s = s.float()
        if softmax_form == "method":
            p = s.softmax(dim=-1)
        elif softmax_form == "torch":
            p = torch.softmax(s, -1)
        else:
            p = F.softmax(s, dim=3)
        if cast:
            p = p.to(q.dtype)
        return p @ v

    return fn


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    matmul=st.sampled_from(["op", "torch", "einsum"]),
    transpose=st.sampled_from(["transpose", "transpose_pos", "mT", "permute"]),
    scale_form=st.sampled_from(["mul", "div", "q_pre", "qk_root", "none"]),
    mask_kind=st.sampled_from(["none", "additive", "masked_fill", "where", "tril"]),
    softmax_form=st.sampled_from(["method", "torch", "F"]),
    cast=st.booleans(),
    gqa=st.sampled_from([(4, 4, "none"), (4, 2, "repeat_interleave"), (6, 2, "expand")]),
    sq=st.integers(1, 40),
    sk=st.integers(1, 40),
    d=st.sampled_from([4, 8, 16, 24]),
    scale=st.floats(0.01, 2.0),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_generated_attention_is_rewritten_exactly(matmul, transpose, scale_form, mask_kind, softmax_form, cast, gqa,
                                                  sq, sk, d, scale, batch, seed):
    hq, hkv, gqa_form = gqa
    if mask_kind == "tril":
        sk = max(sk, sq)  # top-left causal: every query row sees at least key 0
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, hq, sq, d, generator=g)
    k = torch.randn(batch, hkv, sk, d, generator=g)
    v = torch.randn(batch, hkv, sk, d, generator=g)
    additive = torch.randn(1, hq, sq, sk, generator=g)
    keep = torch.rand(batch, 1, sq, sk, generator=g) > 0.4
    keep[..., 0] = True
    fn = build(matmul, transpose, scale_form, mask_kind, softmax_form, cast, gqa_form)
    compiled, plan = compile_and_plan(fn)
    out = compiled(q, k, v, scale, additive, keep)
    torch.testing.assert_close(out, fn(q, k, v, scale, additive, keep), atol=3e-5, rtol=1e-4)
    assert len(plan.sites) == 1 and plan.sites[0].rewritten, plan
    if mask_kind == "tril":
        assert plan.sites[0].spec.mask_kind == "causal"
    if gqa_form != "none":
        assert plan.sites[0].spec.kv_heads == hkv
