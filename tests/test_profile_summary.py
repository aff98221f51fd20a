"""ProfileSummary: the typed, versioned metadata["profile"] record: a real profile round-trips,
summaries written before the format field still load, and a corrupt one is a PolicyError that
names the field (the CLI prints it, no traceback)."""
from __future__ import annotations

import json
import math

import pytest

import smartcompile
from smartcompile.cli import main
from smartcompile.errors import PolicyError
from smartcompile.policies import Policy
from smartcompile.profiling.candidates import ProfileCandidate
from smartcompile.profiling.report import ProfileReport, candidate_name
from smartcompile.profiling.summary import PROFILE_FORMAT, ProfileSummary, VerificationRun

from helpers import profile_summary
from profile_models import sensitive_net

FP8 = "sage[pv_precision=fp8]"


def test_a_real_profile_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTCOMPILE_CACHE_DIR", str(tmp_path / "cache"))
    model, calibration = sensitive_net()
    out = tmp_path / "policy.json"
    policy = smartcompile.profile(model, calibration[:1], budget=0.9995, out=out, progress=False, cache=False)
    raw = policy.metadata["profile"]
    assert raw["format"] == PROFILE_FORMAT == "smartcompile.profile/1"
    summary = ProfileSummary.from_dict(raw)
    assert summary.to_dict() == raw
    assert ProfileSummary.from_dict(summary.to_dict()) == summary
    loaded = ProfileReport.from_policy(Policy.load(out)).summary
    assert loaded == summary and loaded.estimated  # CPU: times are estimates
    # the record carries structured data: typed runs, and each candidate's backend and parameters
    assert isinstance(summary.verification[-1], VerificationRun) and summary.verification[-1].meets_budget
    assert summary.candidate_rules[FP8] == ProfileCandidate("sage", {"pv_precision": "fp8"})
    assert list(summary.candidate_rules) == list(summary.candidates)
    assert all(e.chosen in summary.candidates or e.chosen == "flash" for e in summary.layers.values())


def test_a_summary_without_format_loads_as_format_1():
    # as written before "format", "candidate_rules", "timing", "budget_cost" and "graph_notes"
    old = profile_summary(times="estimates from H100 measurements")
    for key in ("format", "candidate_rules", "timing", "budget_cost"):
        del old[key]
    summary = ProfileSummary.from_dict(old)
    assert summary.format == PROFILE_FORMAT and summary.estimated
    assert summary.candidate_rules == {} and summary.budget_cost is None and summary.graph_notes is None
    assert summary.to_dict() == old | {"format": PROFILE_FORMAT}
    assert candidate_name(summary, FP8) == "sage fp8"  # named from its label
    table = ProfileReport.from_policy(Policy.from_dict({"metadata": {"profile": old}})).table()
    assert "sage fp8" in table and "budget cosine >= 0.995" in table


def test_the_shipped_policy_written_before_the_format_field_loads():
    from smartcompile.demo.trained import PROFILED_POLICY

    raw = json.loads(PROFILED_POLICY.read_text())["metadata"]["profile"]
    assert "format" not in raw and "candidate_rules" not in raw
    summary = ProfileReport.from_policy(Policy.load(PROFILED_POLICY)).summary
    assert summary.to_dict() == raw | {"format": PROFILE_FORMAT}
    assert summary.speedup is not None and not summary.estimated


def test_numbers_json_cannot_hold_read_back_as_floats():
    d = profile_summary()
    d["layers"]["blocks.0"]["candidates"][FP8].update(e2e_value="-inf", cosine=None)
    entry = ProfileSummary.from_dict(d).layers["blocks.0"].candidates[FP8]
    assert entry.e2e_value == -math.inf and math.isnan(entry.cosine)
    assert ProfileSummary.from_dict(d).to_dict() == d


def test_a_candidate_of_a_backend_not_registered_here_keeps_its_label():
    label = "warp[speed=9]"
    rules = profile_summary()["candidate_rules"] | {label: {"backend": "warp", "speed": 9}}
    summary = ProfileSummary.from_dict(profile_summary(candidates=[FP8, label], candidate_rules=rules))
    assert candidate_name(summary, label) == label and candidate_name(summary, FP8) == "sage fp8"


def _layer(**changes) -> dict:
    d = profile_summary()
    d["layers"]["blocks.0"].update(changes)
    return d


@pytest.mark.parametrize("profile, message", [
    ([1, 2], "policy.metadata.profile: [1, 2] has type list; expected an object"),
    ({k: v for k, v in profile_summary().items() if k != "metric"}, "policy.metadata.profile.metric: missing"),
    (profile_summary(format="smartcompile.profile/9"),
     "policy.metadata.profile.format: 'smartcompile.profile/9' is not supported; supported: ['smartcompile.profile/1']"),
    (profile_summary(budget="tight"), "policy.metadata.profile.budget: 'tight' has type str; expected a number"),
    (profile_summary(meets_budget=1), "policy.metadata.profile.meets_budget: 1 has type int; expected true or false"),
    (profile_summary(timing="guessed"), "policy.metadata.profile.timing: 'guessed' is not allowed"),
    (profile_summary(verification={}), "policy.metadata.profile.verification: {} has type dict; expected an array"),
    (profile_summary(verification=[{"allowed_cost": 0.1, "switched": 1, "value": 0.9}]),
     "policy.metadata.profile.verification[0].meets_budget: missing"),
    (profile_summary(verification=[{"allowed_cost": 0.1, "switched": 1.5, "value": 0.9, "meets_budget": True}]),
     "policy.metadata.profile.verification[0].switched: 1.5 has type float; expected an integer"),
    (profile_summary(candidates=[FP8, 3]), "policy.metadata.profile.candidates[1]: 3 has type int; expected a string"),
    (profile_summary(cache={"path": None}), "policy.metadata.profile.cache.reused_measurements: missing"),
    (profile_summary(speedup={"speedup_vs_torch_compile": 2.0}), "policy.metadata.profile.speedup.torch_compile_ms"),
    (profile_summary(layers=[]), "policy.metadata.profile.layers: [] has type list; expected an object"),
    (_layer(calls="two"), 'policy.metadata.profile.layers["blocks.0"].calls: \'two\' has type str; expected an integer'),
    (_layer(candidates={FP8: {"e2e_value": [], "e2e_cost": 0.1}}),
     'policy.metadata.profile.layers["blocks.0"].candidates["sage[pv_precision=fp8]"].e2e_value: [] has type list'),
    (profile_summary(candidate_rules={FP8: {"backend": "sage", "pv_precision": "fp7"}}),
     'policy.metadata.profile.candidate_rules["sage[pv_precision=fp8]"].pv_precision'),
    (profile_summary(candidate_rules={FP8: {"backend": "sage", "pv_precision": "fp16"}}),
     "the rule's label is 'sage[pv_precision=fp16]', not 'sage[pv_precision=fp8]'"),
])
def test_corrupt_profile_metadata_names_the_field(tmp_path, capsys, profile, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"metadata": {"profile": profile}}))
    policy = Policy.load(path)  # metadata is free-form for compiling; the report checks it
    with pytest.raises(PolicyError) as err:
        ProfileReport.from_policy(policy)
    assert str(err.value).startswith(f"{path}: policy.metadata.profile") and message in str(err.value)
    assert main(["report", str(path)]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith("smartcompile: error: ") and message in printed and "Traceback" not in printed
