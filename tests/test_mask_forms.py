"""Recognised masks reach the op as structure: `is_causal` and/or (B|1, 1, 1, Sk) key flags instead of the
dense (B, 1, Sq, Sk) tensor transformers materialises under torch.compile; outputs still equal eager."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from helpers import FLASH
from smartcompile.backends.flash import run_sdpa
from smartcompile.backends.key_padding import CHECK_MIN_SCORES, simplest
from smartcompile.backends.intercept import intercepting
from smartcompile.compiler.backend import compile_graph
from smartcompile.compiler.options import CompileOptions
from smartcompile.compiler.plan import Plan
from smartcompile.kernels.exact_reference import attention_reference
from smartcompile.passes.normalize import meta_tensor
from smartcompile.spec import spec_from_tensors

transformers = pytest.importorskip("transformers")


def compile_capturing(fn, policy=FLASH):
    """(compiled fn, Plan, graphs after our rewrite, the op's calls at run time)."""
    opts, plan, graphs, calls = CompileOptions.parse(None, None, policy), Plan(), [], []

    def backend(gm, example_inputs):
        out = compile_graph(gm, example_inputs, opts, sink=plan.extend, run_inductor=False)
        graphs.append(gm)
        return out

    def run(*args, **kwargs):
        def capture(call):
            calls.append(call)
            return None
        with intercepting(capture), torch.no_grad():
            return torch.compile(fn, backend=backend)(*args, **kwargs)
    return run, plan, graphs, calls


def run_like_eager(net, **kwargs):
    """Compile `net` under the exact policy, check its last hidden state equals eager's, and return
    (plan, graphs after our rewrite, the op's calls)."""
    run, plan, graphs, calls = compile_capturing(net)
    got = run(**kwargs).last_hidden_state
    with torch.no_grad():
        want = net(**kwargs).last_hidden_state
    torch._dynamo.reset()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    return plan, graphs, calls


def _llama(impl="sdpa", cls="LlamaModel", config="LlamaConfig"):
    T = transformers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = getattr(T, config)(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, attn_implementation=impl)
        return getattr(T, cls)(cfg).eval()


def _dense_masks(graphs, sq, sk) -> list:
    """Live nodes that hold a (B, 1, Sq, Sk) mask-sized tensor (what the structured form avoids building;
    dead ones Inductor drops)."""
    live, work = set(), [n for gm in graphs for n in gm.graph.nodes if n.op == "output"]
    while work:  # what the outputs depend on
        n = work.pop()
        if n not in live:
            live.add(n)
            work.extend(n.all_input_nodes)
    return [n for n in live if (mt := meta_tensor(n)) is not None and mt.dim() == 4 and tuple(mt.shape[-2:]) == (sq, sk)
            and mt.shape[1] == 1]


@pytest.mark.parametrize("attention_mask", ["padded", "all-ones"])
@pytest.mark.parametrize("model", [("LlamaModel", "LlamaConfig"), ("Qwen2Model", "Qwen2Config")], ids=["llama", "qwen2"])
def test_causal_and_padding_reach_the_op_as_flags(attention_mask, model):
    torch.manual_seed(0)
    net = _llama("sdpa", *model)
    ids = torch.randint(0, 100, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    if attention_mask == "padded":
        mask[0, :3] = 0  # left padding
        mask[1, 6:] = 0  # right padding
    plan, graphs, calls = run_like_eager(net, input_ids=ids, attention_mask=mask)
    assert len(calls) == 2 and all(c.is_causal for c in calls)
    for c in calls:
        assert c.mask.dtype == torch.bool and tuple(c.mask.shape) == (2, 1, 1, 9)
        assert torch.equal(c.mask[:, 0, 0], mask.bool())
    assert all(s.spec.short().endswith("-causal-padded") for s in plan.sites), plan
    assert not _dense_masks(graphs, 9, 9), "the dense causal & padding mask is still built"


def test_sdpa_key_padding_mask_is_padded_by_its_shape():
    def attend(q, k, v, keep):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])

    q, k, v = (torch.randn(3, 2, 11, 16) for _ in range(3))
    keep = torch.rand(3, 11) > 0.3
    keep[:, 0] = True
    run, plan, _, calls = compile_capturing(attend)
    torch.testing.assert_close(run(q, k, v, keep), attend(q, k, v, keep), atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()
    assert plan.sites[0].spec.short().endswith("-padded") and not calls[0].is_causal
    assert tuple(calls[0].mask.shape) == (3, 1, 1, 11)


def test_eager_attention_with_padding_keeps_the_dense_mask():
    """Eager attention's empty rows (left padding under causal) have eager's own values (mean of V for a
    finite fill): only the dense mask says which rows those are, so it stays."""
    torch.manual_seed(0)
    net = _llama("eager")
    ids = torch.randint(0, 100, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, :2] = 0
    plan, _, calls = run_like_eager(net, input_ids=ids, attention_mask=mask)
    assert all(c.mask is not None and c.mask.shape[-2] == 7 for c in calls)


def test_eager_attention_causal_only_drops_the_mask():
    torch.manual_seed(0)
    net = _llama("eager")
    ids = torch.randint(0, 100, (1, 7))
    plan, _, calls = run_like_eager(net, input_ids=ids)
    assert all(c.mask is None and c.is_causal for c in calls)
    assert all(s.spec.short().endswith("-causal") for s in plan.sites), plan


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32])
def test_sdpa_runner_means_mask_and_causal(dtype):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 33, 16), torch.randn(2, 2, 33, 16), torch.randn(2, 2, 33, 16)
    keep = torch.rand(2, 1, 1, 33) > 0.4
    keep[..., 0] = True
    mask = keep if dtype == torch.bool else torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    ref = attention_reference(q, k, v, keep, True, 0.25)
    torch.testing.assert_close(run_sdpa(q, k, v, mask, True, 0.25, {}), ref, atol=1e-5, rtol=1e-5)


def test_sdpa_runner_drops_a_mask_that_keeps_every_key(monkeypatch):
    n = int(CHECK_MIN_SCORES ** 0.5)
    q, k, v = (torch.randn(1, 1, n, 8) for _ in range(3))
    seen = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    keep = torch.ones(1, 1, 1, n, dtype=torch.bool)
    out = run_sdpa(q, k, v, keep, True, None, {})
    assert len(seen) == 1 and seen[-1]["attn_mask"] is None and seen[-1]["is_causal"]
    keep[..., 5] = False  # a hole: the dense mask, one call
    run_sdpa(q, k, v, keep, True, None, {})
    assert len(seen) == 2 and seen[-1]["attn_mask"] is not None and not seen[-1]["is_causal"]
    torch.testing.assert_close(out, attention_reference(q, k, v, None, True), atol=1e-5, rtol=1e-5)


SPAN_CASES = {  # per sequence [start, end) of kept keys, for Sk = 1100
    "right": [(0, 1100), (0, 700), (0, 1)],
    "left": [(0, 1100), (400, 1100), (1099, 1100)],
    "both": [(3, 1091), (500, 501), (0, 0)],
}


@pytest.mark.parametrize("sq", [1100, 1000, 1200])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", list(SPAN_CASES))
def test_exact_attention_by_spans_without_a_mask(kind, causal, sq, monkeypatch):
    """Contiguous key padding at prefill sizes: per-sequence SDPA calls with no mask equal the masked
    reference, padded query rows included (0 where no key is visible)."""
    torch.manual_seed(0)
    sk = 1100
    q, k, v = torch.randn(3, 4, sq, 16), torch.randn(3, 2, sk, 16), torch.randn(3, 2, sk, 16)
    j = torch.arange(sk)
    keep = torch.stack([(j >= s) & (j < e) for s, e in SPAN_CASES[kind]])[:, None, None, :]
    masks = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: masks.append(kw["attn_mask"]) or real(*a, **kw))
    out = run_sdpa(q, k, v, keep, causal, 0.3, {})
    assert masks and all(m is None for m in masks)
    torch.testing.assert_close(out, attention_reference(q, k, v, keep, causal, 0.3), atol=2e-5, rtol=2e-5)


def test_spec_kinds_of_key_padding_tensors():
    q, k, v = (torch.randn(2, 2, 5, 8) for _ in range(3))
    keep = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    assert spec_from_tensors(q, k, v, keep).mask_kind == "padded"
    spec = spec_from_tensors(q, k, v, keep, is_causal=True)
    assert spec.mask_kind == "causal-padded" and spec.is_causal and spec.short().endswith("-causal-padded")
    assert spec_from_tensors(q, k, v, keep.expand(2, 1, 5, 5)).mask_kind == "bool"
    assert spec_from_tensors(q, k, v, keep.float()).mask_kind == "additive"


def test_key_padding_in_its_simplest_form_for_the_kernels():
    from smartcompile.masks import KeyLengths

    n = int(CHECK_MIN_SCORES ** 0.5)
    q = k = torch.randn(3, 1, n, 8)
    keep = torch.ones(3, 1, 1, n, dtype=torch.bool)
    assert simplest(keep, q, k) is None
    keep[1, ..., n - 5:] = False  # right padding: lengths
    lengths = simplest(keep, q, k)
    assert isinstance(lengths, KeyLengths) and lengths.lengths.tolist() == [n, n - 5, n]
    keep[2, ..., 0] = False  # left padding in one sequence: the flags stay
    assert simplest(keep, q, k) is keep
    small = torch.randn(3, 1, 7, 8)
    assert simplest(torch.ones(3, 1, 1, 7, dtype=torch.bool), small, small) is not None  # decode sizes: no sync


def test_sliding_window_keeps_the_dense_mask():
    """Mistral's window is recognised (explain shows it) but no kernel takes it as structure yet: the op
    gets the dense mask, and the output still equals eager."""
    torch.manual_seed(0)
    T = transformers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = T.MistralModel(T.MistralConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
                                             attn_implementation="sdpa")).eval()
    ids = torch.randint(0, 100, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 7:] = 0
    plan, _, calls = run_like_eager(net, input_ids=ids, attention_mask=mask)
    assert plan.sites[0].mask == "sliding(3,0)-padded" and plan.sites[0].spec.mask_kind == "bool"
    assert tuple(calls[0].mask.shape[-2:]) == (9, 9) and not calls[0].is_causal


@pytest.mark.parametrize("fill", [torch.finfo(torch.float32).min, -1e4, float("-inf")])
def test_a_finite_fill_keeps_the_dense_mask_where_rows_can_be_empty(fill):
    """SDPA with an additive `where(causal & padding, 0, fill)` mask (older transformers code): a left-padded
    query row sees no key. With a finite fill eager's row is a softmax over every key, not the op's 0, so
    the dense mask stays; only -inf (an empty row: 0 in SDPA, as the op) takes the structured form."""
    def attend(q, k, v, am):
        b = torch.arange(am.shape[0])[:, None, None, None]
        i = torch.arange(am.shape[1])[None, None, :, None]
        j = torch.arange(am.shape[1])[None, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=torch.where((j <= i) & am[b, j], 0.0, fill))

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 8) for _ in range(3))
    am = torch.ones(2, 6, dtype=torch.bool)
    am[0, :2] = False
    run, plan, _, calls = compile_capturing(attend)
    got = run(q, k, v, am)
    torch._dynamo.reset()
    want = attend(q, k, v, am)
    if fill == float("-inf"):  # SDPA's empty rows are 0, as the op's
        assert plan.sites[0].spec.mask_kind == "causal-padded"
    else:
        assert plan.sites[0].spec.mask_kind == "additive" and calls[0].mask.shape[-2:] == (6, 6)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
