"""Issue 12: per-layer rules hold when one compiled graph serves several module instances
(diffusers' compile_repeated_blocks, a per-block compile() loop, graph breaks inside a block).
Which implementation each instance ran is read from the op's calls (the profiling interceptor)."""
import pytest
import torch

import smartcompile
from smartcompile.backends.intercept import intercepting

diffusers = pytest.importorskip("diffusers")

WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
           text_dim=32, freq_dim=32, ffn_dim=64, num_layers=3, rope_max_seq_len=32)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _wan():
    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(**WAN).eval()
    inputs = (torch.randn(1, 4, 2, 8, 8), torch.tensor([500]), torch.randn(1, 7, 32))
    return model, inputs


def _ran(model, inputs) -> dict:
    """{layer: backend} for every attention call of one forward."""
    calls = {}

    def record(call):
        calls[call.layer] = call.backend
        return None  # run the planned implementation

    with torch.no_grad(), intercepting(record):
        model(*inputs, return_dict=False)
    return calls


def _graph_count() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


POLICY_ONE = {"default": "flash", "layers": {"blocks.1.attn1": "sage"}}
POLICY_GLOB = {"default": "flash", "layers": {"blocks.*.attn1": "sage"}}
EXPECT_ONE = {f"blocks.{i}.attn{j}": "sage" if (i, j) == (1, 1) else "flash" for i in range(3) for j in (1, 2)}
EXPECT_GLOB = {f"blocks.{i}.attn{j}": "sage" if j == 1 else "flash" for i in range(3) for j in (1, 2)}


@pytest.mark.parametrize("policy, expect", [(POLICY_ONE, EXPECT_ONE), (POLICY_GLOB, EXPECT_GLOB)])
def test_compile_repeated_blocks_applies_each_blocks_rule(policy, expect):
    model, inputs = _wan()
    smartcompile.name_layers(model)
    before = _graph_count()
    model.compile_repeated_blocks(backend="smartattn", options={"policy": policy})
    assert _ran(model, inputs) == expect
    assert _graph_count() - before <= 2  # one graph for every block (a recompile at most), never one per block


def test_per_block_compile_loop_applies_each_blocks_rule():
    model, inputs = _wan()
    smartcompile.name_layers(model)
    for block in model.blocks:
        block.compile(backend="smartattn", options={"policy": POLICY_ONE})
    assert _ran(model, inputs) == EXPECT_ONE


def test_only_the_named_block_changes_numerics():
    model, inputs = _wan()
    with torch.no_grad():
        eager = model(*inputs, return_dict=False)[0]
    smartcompile.name_layers(model)
    model.compile_repeated_blocks(backend="smartattn", options={"policy": {"default": "flash"}})
    with torch.no_grad():
        exact = model(*inputs, return_dict=False)[0]
    torch._dynamo.reset()
    model.compile_repeated_blocks(backend="smartattn", options={"policy": POLICY_ONE})
    with torch.no_grad():
        one = model(*inputs, return_dict=False)[0]
    torch.testing.assert_close(exact, eager, atol=2e-5, rtol=1e-4)
    assert (one - eager).abs().max() > 1e-4  # Sage's quantized numerics on one block


def test_unnamed_model_keeps_relative_names_and_says_so(caplog):
    model, inputs = _wan()  # no name_layers: the graph knows only "attn1"
    model.compile_repeated_blocks(backend="smartattn", options={"policy": POLICY_ONE})
    with caplog.at_level("WARNING", logger="smartcompile"):
        ran = _ran(model, inputs)
    assert set(ran) == {"attn1", "attn2"} and set(ran.values()) == {"flash"}
    assert any("blocks.1.attn1" in r.getMessage() and "matches no attention layer" in r.getMessage()
               for r in caplog.records)


class _Attn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)

    def forward(self, x):
        q, k, v = self.qkv(x).view(1, -1, 3, 2, 8).permute(2, 0, 3, 1, 4)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, -1, 16)


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = _Attn()
        self.norm = torch.nn.LayerNorm(16)

    def forward(self, x):
        x = x + self.attn(self.norm(x))
        torch._dynamo.graph_break()  # e.g. a data-dependent branch inside the block
        return x * 1.5


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(_Block() for _ in range(3))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def test_graph_break_inside_blocks_whole_model_compile():
    torch.manual_seed(0)
    model, x = _Model().eval(), torch.randn(1, 10, 16)
    smartcompile.name_layers(model)
    compiled = torch.compile(model, backend="smartattn", options={"policy": {"default": "flash",
                                                                            "layers": {"blocks.2.attn": "sage"}}})
    calls = {}
    with torch.no_grad(), intercepting(lambda c: calls.__setitem__(c.layer, c.backend)):
        compiled(x)
    assert calls == {"blocks.0.attn": "flash", "blocks.1.attn": "flash", "blocks.2.attn": "sage"}


def test_explain_lists_the_choice_of_every_instance():
    torch.manual_seed(0)
    model = _Model().eval()
    plan = smartcompile.explain(model, torch.randn(1, 10, 16), policy={"default": "flash",
                                                                       "layers": {"blocks.1.attn": "sage"}})
    chosen = {i.layer: i.backend for i in plan.instances}
    assert chosen == {"blocks.0.attn": "flash", "blocks.1.attn": "sage", "blocks.2.attn": "flash"}
    assert "blocks.1.attn: sage/" in str(plan)
    assert not [n for n in plan.notes if "matches no attention layer" in n]


def test_per_instance_op_trains_with_exact_gradients():
    """The per-instance op's backward is exact attention's, as the literal op's: the anchor
    parameter gets no gradient from it, every other gradient matches eager."""
    model, inputs = _wan()
    smartcompile.name_layers(model)
    x = inputs[0].clone().requires_grad_()
    model(x, *inputs[1:], return_dict=False)[0].square().mean().backward()
    want = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    x.grad = None
    model.compile_repeated_blocks(backend="smartattn", options={"policy": {"default": "flash"}})
    model(x, *inputs[1:], return_dict=False)[0].square().mean().backward()
    got = [x.grad] + [p.grad for p in model.parameters()]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=3e-5, rtol=1e-3)


def _calls(fn):
    calls = {}
    with torch.no_grad(), intercepting(lambda c: calls.__setitem__(c.layer, c.backend)):
        fn()
    return calls


POLICY_B1 = {"default": "flash", "layers": {"blocks.1.attn": "sage"}}
EXPECT_B1 = {"blocks.0.attn": "flash", "blocks.1.attn": "sage", "blocks.2.attn": "flash"}


def test_a_parameter_tied_between_blocks_does_not_lose_their_rules():
    torch.manual_seed(0)
    model, x = _Model().eval(), torch.randn(1, 10, 16)
    model.blocks[2].attn.qkv.weight = model.blocks[1].attn.qkv.weight  # tied: names two layers
    smartcompile.name_layers(model)
    for block in model.blocks:
        block.compile(backend="smartattn", options={"policy": POLICY_B1})
    assert _calls(lambda: model(x)) == EXPECT_B1


def test_a_wrapper_named_after_its_model_keeps_the_rules_working():
    torch.manual_seed(0)
    model, x = _Model().eval(), torch.randn(1, 10, 16)
    wrapper = torch.nn.Module()
    wrapper.inner = model
    smartcompile.name_layers(model)
    smartcompile.name_layers(wrapper)  # the last named gives the names: inner.blocks.1.attn
    for block in model.blocks:
        block.compile(backend="smartattn", options={"policy": {"default": "flash",
                                                              "layers": {"inner.blocks.1.attn": "sage"}}})
    assert _calls(lambda: model(x)) == {f"inner.{k}": v for k, v in EXPECT_B1.items()}


def test_explain_on_a_submodule_leaves_a_compiled_model_alone():
    torch.manual_seed(0)
    model, x = _Model().eval(), torch.randn(1, 10, 16)
    smartcompile.name_layers(model)
    for block in model.blocks:
        block.compile(backend="smartattn", options={"policy": POLICY_B1})
    assert _calls(lambda: model(x)) == EXPECT_B1
    smartcompile.explain(model.blocks[1], x, policy=POLICY_B1)
    assert _calls(lambda: model(x)) == EXPECT_B1


def test_rules_name_the_users_paths_through_a_compiled_wrapper():
    """torch.compile(model) holds the model as `_orig_mod`: naming the wrapper (or a submodule replaced by its
    compiled wrapper) must still apply the rules of the user's own paths (an exact rule ran sage before)."""
    torch.manual_seed(0)
    model, x = _Model().eval(), torch.randn(1, 10, 16)
    compiled = torch.compile(model, backend="smartattn", options={"policy": POLICY_B1})
    smartcompile.name_layers(compiled)
    assert _calls(lambda: compiled(x)) == EXPECT_B1
    torch._dynamo.reset()
    model = _Model().eval()
    model.blocks[1] = torch.compile(model.blocks[1], backend="smartattn", options={"policy": POLICY_B1})
    smartcompile.name_layers(model)  # names blocks.1._orig_mod.attn...: the rule says blocks.1.attn
    assert _calls(lambda: model(x))["blocks.1.attn"] == "sage"


def test_explain_of_a_compiled_model_plans_what_it_runs():
    torch.manual_seed(0)
    model, x = _Model().eval(), torch.randn(1, 10, 16)
    compiled = torch.compile(model, backend="smartattn", options={"policy": POLICY_B1})
    plan = smartcompile.explain(compiled, x, policy=POLICY_B1)
    assert str(plan) == str(smartcompile.explain(model, x, policy=POLICY_B1))  # it named '_orig_mod.blocks.1'...
    assert "blocks.1.attn: sage/sage_reference (exact rule 'blocks.1.attn'" in str(plan)
