"""Mask structure recovered from the graph that builds the mask (informational: the rewrite still
passes the dense mask). Each recovered structure is checked against the dense mask the model really
built, captured by running the graph, and outputs under the exact policy still equal eager."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.fx import Interpreter

from helpers import FLASH, compile_and_plan
from smartcompile.masks import Shape
from smartcompile.passes.find import find_attention_sites

transformers = pytest.importorskip("transformers")


def _keep_of(term, value: torch.Tensor) -> torch.Tensor:
    """The keep-mask a site's mask term means, from the tensor the graph computed."""
    if term.kind == "keep":
        return value.to(torch.bool)
    if term.kind == "drop":
        return ~value.to(torch.bool)
    return value > -1e30  # additive: 0 kept, -inf / finfo.min dropped


class _Capture(Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n] = out
        return out


def recovered(fn, *args, **kwargs):
    """[(describe, recovered dense keep-mask, the graph's dense keep-mask)] per site with a mask."""
    found = []

    def backend(gm, example_inputs):
        sites = find_attention_sites(gm)
        run = _Capture(gm)
        run.run(*example_inputs)
        for s in sites:
            if not s.masks:
                continue
            want = _keep_of(s.masks[0], run.values[s.masks[0].node])
            for term in s.masks[1:]:
                want = want & _keep_of(term, run.values[term.node])
            q, k = run.values[s.q], run.values[s.k]
            if s.is_causal:
                want = want & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
            shape = Shape(q.shape[0], want.shape[1] if want.dim() == 4 else 1, q.shape[-2], k.shape[-2])
            if s.mask_structure is None:
                found.append((None, None, want))
                continue
            structure = s.mask_structure.bind(lambda x: run.values.get(x, x))
            found.append((structure.describe(), structure.dense(shape), want.expand(*shape)))
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(fn, backend=backend)(*args, **kwargs)
    torch._dynamo.reset()
    return found


def check(fn, args, kwargs, expect):
    """Every masked site recovers `expect` (None: nothing recorded), it materialises to the graph's own
    mask, explain shows it, and the rewritten graph (exact policy) still equals eager."""
    found = recovered(fn, *args, **kwargs)
    assert found, "no masked attention site"
    for text, dense, want in found:
        assert text == expect
        if dense is not None:
            assert torch.equal(dense, want), (text, dense.int(), want.int())
    compiled, plan = compile_and_plan(fn, FLASH)
    with torch.no_grad():
        want_out, got_out = fn(*args, **kwargs), compiled(*args, **kwargs)
    torch._dynamo.reset()
    pick = lambda o: o[0] if isinstance(o, tuple) else getattr(o, "last_hidden_state", o)
    torch.testing.assert_close(pick(got_out), pick(want_out), atol=1e-5, rtol=1e-5)
    assert plan.sites and all(s.rewritten for s in plan.sites), plan
    masked = [s for s in plan.sites if s.spec.mask_kind != "none" and s.spec.mask_kind != "causal"]
    assert all(s.mask == (expect or "") for s in masked), plan
    if expect:
        table = plan.table().splitlines()
        assert table[0].split()[3] == "mask" and all(row.split()[3] == expect for row in table[2:2 + len(plan.sites)]), plan
    return plan


# ---- transformers models, small configs, sdpa and eager attention, with and without padding ----------
def _model(name, impl):
    T = transformers
    common = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                  attn_implementation=impl)
    if name == "llama":
        return T.LlamaModel(T.LlamaConfig(num_key_value_heads=2, **common))
    if name == "mistral":
        return T.MistralModel(T.MistralConfig(num_key_value_heads=2, sliding_window=4, **common))
    if name == "qwen2":
        return T.Qwen2Model(T.Qwen2Config(num_key_value_heads=2, **common))
    if name == "bert":
        return T.BertModel(T.BertConfig(**common))
    return T.GPT2Model(T.GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=4, bos_token_id=0, eos_token_id=0,
                                    attn_implementation=impl))


# (model, padded) -> what the mask means; None: no mask tensor reaches the attention (is_causal or nothing)
HF_CASES = {
    ("llama", False): None, ("llama", True): "causal-padded",
    ("qwen2", False): None, ("qwen2", True): "causal-padded",
    ("mistral", False): "sliding(3,0)", ("mistral", True): "sliding(3,0)-padded",  # window 4 keys, self included
    ("bert", False): None, ("bert", True): "padded",
    ("gpt2", False): None, ("gpt2", True): "causal-padded",
}
# eager attention adds a float mask; without padding the sdpa path passes is_causal and no mask instead
EAGER_NO_PAD = {"llama": "causal", "qwen2": "causal", "mistral": "sliding(3,0)", "gpt2": "causal", "bert": None}


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("name, padded", list(HF_CASES), ids=[f"{n}-{'pad' if p else 'nopad'}" for n, p in HF_CASES])
def test_transformers_masks(name, padded, impl):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _model(name, impl).eval()
    ids = torch.randint(0, 100, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0  # right padding
    if name == "llama" and padded:
        mask[0, :2] = 0  # and left padding in the other sequence: flags per key, not lengths
    kwargs = {"input_ids": ids, "attention_mask": mask if padded else None}
    expect = HF_CASES[name, padded] if impl == "sdpa" or padded else EAGER_NO_PAD[name]
    if expect is None:
        compiled, plan = compile_and_plan(model, FLASH)
        with torch.no_grad():
            torch.testing.assert_close(compiled(**kwargs).last_hidden_state, model(**kwargs).last_hidden_state)
        torch._dynamo.reset()
        assert plan.sites and all(s.mask == "" for s in plan.sites), plan
        return
    check(model, (), kwargs, expect)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("name, expect", [("llama", "causal-document"), ("mistral", "sliding(3,0)-document")])
def test_transformers_packed_sequences(name, expect, impl):
    """position_ids restarting inside a row (packed sequences, no attention_mask, no cache): a document
    mask over segments found where the positions do not step by 1, causal inside each."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _model(name, impl).eval()
    kwargs = {"input_ids": torch.randint(0, 100, (2, 9)), "use_cache": False,
              "position_ids": torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2], [0, 1, 0, 1, 2, 3, 4, 5, 6]])}
    check(model, (), kwargs, expect)


# ---- hand-written masks -----------------------------------------------------------------------------
def _qkv(sq=9, sk=9, b=2, h=2, d=8):
    torch.manual_seed(0)
    return torch.randn(b, h, sq, d), torch.randn(b, h, sk, d), torch.randn(b, h, sk, d)


def sdpa_causal(q, k, v):
    i, j = torch.arange(q.shape[-2])[:, None], torch.arange(k.shape[-2])[None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=i >= j)


def sdpa_bottom_right(q, k, v):
    i = torch.arange(q.shape[-2]).unsqueeze(-1) + (k.shape[-2] - q.shape[-2])
    j = torch.arange(k.shape[-2]).unsqueeze(0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=j <= i)


def sdpa_band(q, k, v):
    i, j = torch.arange(q.shape[-2])[:, None], torch.arange(k.shape[-2])[None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=(j >= i - 2) & (j <= i + 3))


def sdpa_causal_padded(q, k, v, keep):
    b = torch.arange(q.shape[0])[:, None, None, None]
    i = torch.arange(q.shape[-2])[None, None, :, None]
    j = torch.arange(k.shape[-2])[None, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=(j <= i) & keep[b, j])


def manual_drop_future(q, k, v):
    i, j = torch.arange(q.shape[-2])[:, None], torch.arange(k.shape[-2])[None, :]
    s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return s.masked_fill(j > i, float("-inf")).softmax(-1) @ v


def manual_where_additive(q, k, v):
    i, j = torch.arange(q.shape[-2])[:, None], torch.arange(k.shape[-2])[None, :]
    bias = torch.where(i - j < 4, 0.0, float("-inf"))  # keeps j > i - 4: a window open to the future
    s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias
    return s.softmax(-1) @ v


def _gathered(ids, q, k):
    b = torch.arange(q.shape[0])[:, None, None, None]
    i = torch.arange(q.shape[-2])[None, None, :, None]
    j = torch.arange(k.shape[-2])[None, None, None, :]
    return ids[b, i], ids[b, j]


def sdpa_document(q, k, v, seg):
    sq, sk = _gathered(seg, q, k)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=sq == sk)


def sdpa_positions_without_segments(q, k, v, pos):
    """pos[kv] <= pos[q] alone is not an index band (positions may be anything): not recognised."""
    pq, pk = _gathered(pos, q, k)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=pk <= pq)


def sdpa_shared_subexpressions(q, k, v, keep):
    """m & m, forty times over: read once per node (memoised), not 2**40 times; one padding."""
    b = torch.arange(q.shape[0])[:, None, None, None]
    i = torch.arange(q.shape[-2])[None, None, :, None]
    j = torch.arange(k.shape[-2])[None, None, None, :]
    m = (j <= i) & keep[b, j]
    for _ in range(40):
        m = m & m
    return F.scaled_dot_product_attention(q, k, v, attn_mask=m)


def sdpa_huge_mask_graph(q, k, v):
    """More nodes than recognition reads: nothing recorded, still rewritten and exact."""
    i, j = torch.arange(q.shape[-2])[:, None], torch.arange(k.shape[-2])[None, :]
    m = j <= i
    for n in range(200):
        m = m & (j <= i + n)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=m)


def sdpa_data_mask(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=q.sum(-1, keepdim=True) > k.sum(-1).unsqueeze(-2))


def sdpa_strided(q, k, v):
    i, j = torch.arange(q.shape[-2])[:, None], torch.arange(k.shape[-2])[None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=(j <= i) | (j % 2 == 0))


def sdpa_mask_input(q, k, v, keep):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


HAND = [
    (sdpa_causal, _qkv(), "causal"),
    (sdpa_bottom_right, _qkv(5, 11), "causal-br"),
    (sdpa_bottom_right, _qkv(7, 7), "causal"),
    (sdpa_band, _qkv(9, 9), "sliding(2,3)"),
    (sdpa_band, _qkv(9, 12), "sliding(5,0)-br"),  # the same keys as sliding(2,3): one side 0 reads best
    (sdpa_causal_padded, _qkv() + (torch.tensor([[True] * 9, [True] * 6 + [False] * 3]),), "causal-padded"),
    (manual_drop_future, _qkv(), "causal"),
    (manual_where_additive, _qkv(10, 10), "sliding(3,inf)"),
    (sdpa_document, _qkv() + (torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 1, 1, 1, 1, 1, 3, 3]]),), "document"),
    (sdpa_positions_without_segments, _qkv() + (torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4, 5]] * 2),), None),
    (sdpa_shared_subexpressions, _qkv() + (torch.tensor([[True] * 9, [True] * 6 + [False] * 3]),), "causal-padded"),
    (sdpa_huge_mask_graph, _qkv(), None),
    (sdpa_data_mask, _qkv(), None),
    (sdpa_strided, _qkv(), None),
    (sdpa_mask_input, _qkv() + (torch.rand(9, 9) > 0.5,), None),
]


@pytest.mark.parametrize("fn, args, expect", HAND, ids=[f"{f.__name__}-Sq{a[0].shape[2]}-Sk{a[1].shape[2]}" for f, a, _ in HAND])
def test_hand_written_masks(fn, args, expect):
    check(fn, args, {}, expect)
