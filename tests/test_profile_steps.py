"""Issue 12: the profiler per (layer, denoising-step range). A model whose first step is
deliberately sensitive (diffuse attention, where dropping blocks loses mass) and whose later
steps are not (each query attends within its own block) gets a "by_step" schedule."""
import pytest
import torch
import torch.nn.functional as F

import smartcompile
from smartcompile.errors import PolicyError, SmartCompileError

S, D, BLOCK = 512, 32, 64


class Attn(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = Attn()

    def forward(self, q, k, v):
        return self.attn(q, k, v)


def _inputs(step: int, g: torch.Generator):
    v = torch.randn(1, 2, S, D, generator=g)
    if step == 0:  # diffuse: near-uniform weights over every key block
        q, k = 0.05 * torch.randn(1, 2, S, D, generator=g), 0.05 * torch.randn(1, 2, S, D, generator=g)
        return q, k, v
    block = torch.arange(S) // BLOCK  # local: each query attends to the keys of its own block
    onehot = F.one_hot(block, D).float() * 6.0
    q = onehot.expand(1, 2, S, D) + 0.01 * torch.randn(1, 2, S, D, generator=g)
    return q, onehot.expand(1, 2, S, D).clone(), v


def _calibration(model):
    g = torch.Generator().manual_seed(0)
    outs = []
    for i in range(4):
        with smartcompile.step(i):
            outs.append(model(*_inputs(i, g)))
    return torch.cat(outs)


FORCED = [{"backend": "sparge", "sparsity_ratio": 0.75, "sim_threshold": -1.0}]


def test_sensitive_first_step_gets_a_by_step_schedule():
    policy = smartcompile.profile(Model().eval(), _calibration, budget=0.99, candidates=FORCED, progress=False,
                                  cache=False, step_ranges=["0", "1-"])
    rule = policy.to_dict()["layers"]["attn"]
    assert policy.version == 2 and "by_step" in rule, policy.dumps()
    assert rule["by_step"]["0"] == "flash"
    assert rule["by_step"]["1-"]["backend"] == "sparge"
    units = policy.metadata["profile"]["layers"]
    assert set(units) == {"attn@0", "attn@1-"} and units["attn@1-"]["calls"] == 3
    assert policy.metadata["profile"]["meets_budget"]


def test_the_schedule_runs_per_step_from_the_written_policy():
    policy = smartcompile.profile(Model().eval(), _calibration, budget=0.99, candidates=FORCED, progress=False,
                                  cache=False, step_ranges=["0", "1-"])
    compiled = torch.compile(Model().eval(), backend="smartattn", options={"policy": policy})
    exact = _calibration(Model().eval())
    with torch.no_grad():
        got = _calibration(compiled)
    cos = F.cosine_similarity(got.flatten(), exact.flatten(), dim=0)
    assert cos >= 0.99
    torch.testing.assert_close(got[:1], exact[:1], atol=2e-5, rtol=1e-4)  # step 0 ran exact


def test_without_step_ranges_the_profile_is_per_layer():
    policy = smartcompile.profile(Model().eval(), _calibration, budget=0.99, candidates=FORCED, progress=False,
                                  cache=False)
    assert policy.version == 1 and set(policy.metadata["profile"]["layers"]) == {"attn"}


def test_step_ranges_are_checked_before_running():
    with pytest.raises(PolicyError, match=r"step_ranges\[1\]: '1-3' overlaps '0-1'"):
        smartcompile.profile(Model(), _calibration, budget=0.99, step_ranges=["0-1", "1-3"], progress=False)


def test_calls_outside_any_step_are_an_error_with_step_ranges():
    calib = lambda m: m(*_inputs(1, torch.Generator().manual_seed(0)))
    with pytest.raises(SmartCompileError, match="outside any step"):
        smartcompile.profile(Model(), calib, budget=0.99, candidates=FORCED, step_ranges=["0-"], progress=False,
                             cache=False)


def test_a_schedule_that_is_lossy_everywhere_still_keeps_unmeasured_steps_exact():
    from smartcompile.profiling.candidates import parse_candidates
    from smartcompile.profiling.choose import Option
    from smartcompile.profiling.profile import _policy_dict

    class Rec:
        def __init__(self, layer):
            self.layer = layer

    cands = parse_candidates([{"backend": "sage", "pv_precision": "fp8"}])
    sage = Option("x", cands[0].label, 1.0, 0.0)
    layers = [Rec("a@0-1"), Rec("a@2-17"), Rec("b@0-1"), Rec("b@2-17")]
    chosen = {"a@0-1": sage, "a@2-17": sage, "b@0-1": None, "b@2-17": None}
    rules = _policy_dict(layers, cands, chosen)["layers"]
    assert rules["a"]["otherwise"] == "flash" and set(rules["a"]["by_step"]) == {"0-1", "2-17"}
    assert rules["b"] == "flash"
