"""A new kernel family is one module: a test-only backend, registered through the public path,
is chosen by policy rules, timed and picked by auto, explained, profiled and estimated, without
any other module naming it. Unregistered afterwards, so other tests never see it."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import smartcompile
from smartcompile.backends import auto_timing, register, select, unregister
from smartcompile.backends.auto_timing import Candidate, TimingCache, measured_choice
from smartcompile.backends.base import Accuracy, Backend, Implementation
from smartcompile.backends.capabilities import Capabilities
from smartcompile.backends.flash import run_sdpa
from smartcompile.backends.params import ParamSpec
from smartcompile.errors import PolicyError
from smartcompile.policies import Policy
from smartcompile.profiling import default_candidates
from smartcompile.profiling.candidates import ProfileCandidate, parse_candidates
from smartcompile.profiling.cost_model import estimated_ms
from smartcompile.profiling.report import ProfileReport, short_label
from smartcompile.spec import AttentionSpec
from profile_models import sensitive_net


# ---- the whole family: what a new backends/<family>.py would hold --------------------------
def run_low_precision(q, k, v, mask, is_causal: bool, scale: float, params) -> torch.Tensor:
    dtype = getattr(torch, params["dtype"])
    return run_sdpa(q.to(dtype), k.to(dtype), v.to(dtype), mask, is_causal, scale, {}).to(q.dtype)


TOY = Backend(
    name="toy_lowp",
    description="SDPA computed in bf16 or fp16 (test only)",
    params={"dtype": ParamSpec("dtype", str, "bfloat16", "compute dtype", choices=("float16", "bfloat16"))},
    implementations=(Implementation("sdpa_lowp", Capabilities(), run_low_precision, "torch SDPA in low precision"),),
    accuracy=Accuracy(min_cosine=0.999, max_rel_l1=0.02),
    auto_priority=1,  # above flash: auto picks it where it can run and is not slower
    ladder=({"dtype": "float16"}, {"dtype": "bfloat16"}),
    ladder_params=("dtype",),
    estimate_ms=lambda exact_ms, params, density: exact_ms / 2,
    describe_params=lambda params: params["dtype"],
    plot_color="#2CA02C",
)
NAME = TOY.name


@pytest.fixture(autouse=True)
def toy_registered():
    register(TOY)
    try:
        yield
    finally:
        unregister(NAME)


class OneAttention(nn.Module):
    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x)


def test_name_is_checked_and_unregistering_leaves_the_others():
    with pytest.raises(ValueError, match="taken"):
        register(TOY)
    with pytest.raises(ValueError, match="taken"):
        register(Backend("auto", "", {}, (), TOY.accuracy))


def test_a_policy_rule_selects_it_and_validates_its_params():
    policy = {"version": 1, "default": "flash", "layers": {"attention.*": {"backend": NAME, "dtype": "float16"}}}
    x = torch.randn(1, 2, 16, 64)
    plan = smartcompile.explain(OneAttention(), x, policy=policy)
    site = plan.sites[0]
    assert (site.backend, site.implementation, site.params) == (NAME, "sdpa_lowp", {"dtype": "float16"}), plan
    compiled = torch.compile(OneAttention(), backend=smartcompile.backend(policy=policy))
    torch.testing.assert_close(compiled(x), F.scaled_dot_product_attention(x, x, x), atol=1e-2, rtol=1e-2)
    with pytest.raises(PolicyError, match="one of \\['float16', 'bfloat16'\\]"):
        Policy.from_dict({"default": {"backend": NAME, "dtype": "int8"}})


def test_auto_picks_it_statically_and_times_it_on_a_gpu(monkeypatch, tmp_path):
    plan = smartcompile.explain(OneAttention(), torch.randn(1, 2, 16, 64))
    assert plan.sites[0].reason.startswith(f"policy default: auto -> {NAME}/sdpa_lowp"), plan

    spec = AttentionSpec(1, 8, 8, 4096, 4096, 128, 128, torch.bfloat16, "cuda")
    offered = []

    def fake(spec, candidates, cache=None, timer=None):
        offered.extend(c.label for c in candidates)
        return candidates[-1], {c.label: 1.0 for c in candidates}, "test"

    monkeypatch.setattr(auto_timing, "measured_choice", fake)
    select(spec, "auto", {}, "measure")
    assert f"{NAME}/sdpa_lowp" in offered and "flash/sdpa" in offered
    monkeypatch.undo()
    cands = [Candidate("flash", "sdpa", {}, None), Candidate(NAME, "sdpa_lowp", {"dtype": "bfloat16"}, None)]
    timer = lambda c, spec: {"flash/sdpa": 2.0, f"{NAME}/sdpa_lowp": 1.0}[c.label]
    choice, _, why = measured_choice(spec, cands, TimingCache(tmp_path / "t.json", {"x": 1}), timer=timer)
    assert choice.backend == NAME and why == "2.00x the fastest exact (flash/sdpa)"


def test_profiler_candidates_cost_model_and_report_name_it():
    ladder = [c for c in default_candidates() if c.backend == NAME]
    assert [c.params for c in ladder] == [{"dtype": "float16"}, {"dtype": "bfloat16"}]
    assert len({c.family for c in ladder}) == 1  # one ladder: they differ in aggressiveness only
    assert parse_candidates([{"backend": NAME, "dtype": "float16"}])[0] == ladder[0]
    spec = AttentionSpec(1, 8, 8, 4096, 4096, 128, 128, torch.bfloat16, "cpu")
    assert estimated_ms(spec, NAME, {"dtype": "float16"}) == pytest.approx(estimated_ms(spec, "flash", {}) / 2)
    assert short_label(ProfileCandidate(NAME, {"dtype": "float16"}).label) == f"{NAME} float16"


def test_a_cpu_profile_measures_and_chooses_it():
    model, calibration = sensitive_net()
    policy = smartcompile.profile(model, calibration[:1], budget=0.99, candidates=[NAME], progress=False, cache=False)
    summary = policy.metadata["profile"]
    assert summary["candidates"] == [NAME]
    entry = next(iter(summary["layers"].values()))["candidates"][NAME]
    assert entry["implementation"] == "sdpa_lowp" and entry["cosine"] > 0.999
    assert any(r.backend == NAME for r in policy.layers.values()), policy.to_dict()["layers"]
    assert f"{NAME} (" not in ProfileReport.from_policy(policy).table()  # named as a candidate, not exact
