"""Issue 15, what a newcomer meets first: per-metric budgets, a short `why` in explain, one warning
per unmatched rule, readable profile times, the NumPy warning, an early matplotlib check, plots,
packaging files, and a CPU fingerprint that does not depend on triton."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import smartcompile
from smartcompile.backends import select
from smartcompile.backends.hardware import fingerprint_differences, hardware_fingerprint
from smartcompile.backends.steps import Step
from smartcompile.errors import SmartCompileError
from smartcompile.profiling.metric import BUILTIN_METRICS, default_budget
from smartcompile.profiling.report import ProfileReport, require_matplotlib, short_label
from smartcompile.profiling.units import format_ms
from smartcompile.spec import AttentionSpec

from profile_models import SensitiveNet

ROOT = Path(__file__).resolve().parents[1]


class Attn(torch.nn.Module):
    def forward(self, q):
        return F.scaled_dot_product_attention(q, q, q)


class OneAttention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Attn()  # the layer is named 'attn'

    def forward(self, q):
        return self.attn(q)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTCOMPILE_CACHE_DIR", str(tmp_path / "cache"))


# ---- 1. each metric has its own default budget and range -----------------------------------
def test_each_metric_has_its_own_default_budget():
    assert default_budget("cosine") == 0.995 and default_budget("rel_l1") == 0.05 and default_budget("psnr") == 30.0
    for name, m in BUILTIN_METRICS.items():
        lo, hi = m.budget_range
        assert lo <= m.default_budget <= hi, name


@pytest.mark.parametrize("metric, budget", [("rel_l1", 0.995), ("psnr", 0.995), ("cosine", 30.0), ("rel_l1", -0.1)])
def test_a_budget_of_another_metric_is_refused_before_any_run(metric, budget):
    model = SensitiveNet()
    with pytest.raises(SmartCompileError, match=f"budget: .* for metric '{metric}'"):
        smartcompile.profile(model, [((torch.randn(1, 32, 64),), {})], metric=metric, budget=budget, progress=False)


def test_rel_l1_without_budget_uses_its_own_default():
    torch.manual_seed(0)
    model = SensitiveNet().eval()
    policy = smartcompile.profile(model, [((torch.randn(1, 64, 64),), {})], metric="rel_l1", progress=False, cache=False)
    summary = policy.metadata["profile"]
    assert summary["budget"] == 0.05 and summary["achieved"] <= 0.05 and summary["meets_budget"]
    assert "budget rel_l1 <= 0.05" in ProfileReport.from_policy(policy).table()


def test_callable_metric_needs_a_budget():
    with pytest.raises(SmartCompileError, match="callable metric has no default budget"):
        smartcompile.profile(SensitiveNet(), [((torch.randn(1, 32, 64),), {})], metric=lambda r, o: 1.0,
                             progress=False)


# ---- 2. explain: one short reason per row, steps as records, width <= 200 -------------------
def _cpu_spec(**over) -> AttentionSpec:
    base = dict(batch=1, q_heads=2, kv_heads=2, q_len=16, kv_len=16, head_dim=64, v_head_dim=64,
                dtype=torch.float32, device="cpu")
    return AttentionSpec(**(base | over))


def test_auto_on_cpu_is_one_short_reason_without_fell_back():
    plan = smartcompile.explain(OneAttention(), torch.randn(1, 2, 16, 64))
    site = plan.sites[0]
    assert site.reason == ("policy default: auto -> flash/sdpa (sparge, sage: needs cuda, not cpu): the graph's own "
                           "SDPA call, kept"), site.reason
    assert not site.rewritten  # stock torch.compile's own SDPA: auto cannot lose to it
    assert all(isinstance(s, Step) for s in site.steps) and site.steps[-1].outcome == "chosen"
    assert {s.outcome for s in site.steps[:-1]} <= {"unsupported", "not_auto"}
    data = json.loads(json.dumps(plan.to_dict()))["sites"][0]["steps"]
    assert data[-1] == {"backend": "flash", "implementation": "sdpa", "outcome": "chosen", "reasons": []}


def test_explicit_request_that_falls_back_names_the_closest_reason():
    sel = select(_cpu_spec(head_dim=512, v_head_dim=512), "sage", {})
    reason = sel.reason("exact rule 'attn'", "sage")
    assert reason.startswith("exact rule 'attn': sage fell back to flash/sdpa (sage: head_dim 512"), reason
    assert sel.steps[-1] == "-> flash/sdpa"  # the text form stays


def test_measured_auto_reason_is_its_timing_verdict(monkeypatch):
    from smartcompile.backends import auto_timing

    def fake(spec, candidates, cache=None, timer=None):
        return candidates[-1], {c.label: 1.0 for c in candidates}, "exact flash is fastest"

    monkeypatch.setattr(auto_timing, "measured_choice", fake)
    sel = select(_cpu_spec(device="cuda", dtype=torch.bfloat16), "auto", {}, "measure")
    assert sel.reason("policy default", "auto") == "policy default: auto -> flash/sdpa (exact flash is fastest)"
    assert [r.outcome for r in sel.records][-2:] == ["measured", "chosen"]


def test_table_lines_stay_within_200_characters_and_verbose_keeps_every_step():
    policy = {"version": 1, "default": "auto", "layers": {"x" * 300: "flash"}}  # a long note
    plan = smartcompile.explain(OneAttention(), torch.randn(1, 2, 16, 64), policy=policy)
    short, verbose = plan.table(), plan.table(verbose=True)
    assert max(len(line) for line in short.splitlines()) <= 200, short
    assert max(len(line) for line in verbose.splitlines()) <= 200, verbose
    assert str(plan) == short and "sage/sage_triton: needs cuda, not cpu" not in short
    for step in plan.sites[0].steps:
        assert str(step).split(";")[0] in verbose


# ---- 3. a rule that matches no layer: one warning -----------------------------------------
def test_unmatched_rule_is_one_logger_warning_under_torch_compile(caplog):
    policy = smartcompile.Policy.from_dict({"version": 1, "default": "flash", "layers": {"atn": "sage"}},
                                           source="<typo test>")
    model = torch.compile(OneAttention(), backend=smartcompile.backend(policy=policy))
    with caplog.at_level(logging.WARNING, logger="smartcompile"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(torch.randn(1, 2, 16, 64))
        model(torch.randn(1, 2, 24, 64))  # a recompile does not repeat it
    records = [r for r in caplog.records if "'atn' matches no attention layer" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.WARNING, caplog.records
    assert "closest names: attn" in records[0].getMessage()
    assert not [w for w in caught if "matches no attention layer" in str(w.message)]


def test_unmatched_rule_is_one_note_in_explain(caplog):
    policy = {"version": 1, "default": "flash", "layers": {"atn": "sage"}}
    with caplog.at_level(logging.WARNING, logger="smartcompile"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = smartcompile.explain(OneAttention(), torch.randn(1, 2, 16, 64), policy=policy)
    assert [n for n in plan.notes if "'atn' matches no attention layer" in n] == [
        "policy rule 'atn' matches no attention layer; closest layer names: attn"]
    assert not [r for r in caplog.records if "matches no attention layer" in r.getMessage()]
    assert not [w for w in caught if "matches no attention layer" in str(w.message)]
    assert str(plan).count("matches no attention layer") == 1


# ---- 4. profile times are readable and say when they are estimates ---------------------------
@pytest.mark.parametrize("ms, text", [(9.216e-05, "92.2 ns"), (0.0413, "41.3 µs"), (12.53, "12.5 ms"),
                                      (3200.0, "3.20 s"), (0.0, "0"), (None, "-")])
def test_format_ms(ms, text):
    assert format_ms(ms) == text


def _summary(timing: str) -> dict:
    forced = "sparge[sim_threshold=-1.0,sparsity_ratio=0.75]"
    fp8 = "sage[pv_precision=fp8]"
    return {
        "model": "Net", "metric": "cosine", "higher_is_better": True, "budget": 0.995, "budget_cost": 0.005,
        "achieved": 0.998, "meets_budget": True, "timing": timing,
        "verification": [{"allowed_cost": 0.005, "switched": 3, "value": 0.998, "meets_budget": True}],
        "times": "cuda events on this GPU" if timing == "measured" else "estimates",
        "speedup": None, "candidates": [fp8, forced], "wall_s": 1.0, "cache": {"reused_measurements": 0},
        "layers": {
            f"blocks.{i}": {"spec": "s", "calls": 2, "chosen": forced if i else fp8, "time_exact_ms": 9.216e-05,
                            "saved_ms": 4e-05, "candidates": {
                                fp8: {"cosine": 0.9999, "time_ms": 8.2e-05, "e2e_value": 0.9999, "e2e_cost": 1e-4},
                                forced: {"cosine": 0.999, "time_ms": 7e-05, "e2e_value": 0.999, "e2e_cost": 1e-3}}}
            for i in range(3)},
    }


def test_report_table_has_units_labels_estimates_and_plot_names():
    table = ProfileReport(_summary("estimated")).table()
    assert "92.2 ns" in table and "e-05" not in table
    assert "exact/call (est.)" in table and "FLOP estimates" in table
    assert "sparge 75% forced" in table and "sage fp8" in table and "sparge[" not in table
    measured = ProfileReport(_summary("measured")).table()
    assert "(est.)" not in measured


# ---- 9. a missing matplotlib is found before the profile runs ----------------------------
def test_require_matplotlib_raises_a_short_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SmartCompileError, match=r"pip install 'smartcompile\[plot\]'"):
        require_matplotlib()


# ---- 10. plots: every candidate its own style, legend outside the axes, axis of the metric ----
def test_plot_styles_legend_and_axis(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from smartcompile.profiling.plot import candidate_styles, sensitivity_axis

    labels = [c.label for c in smartcompile.profiling.default_candidates()]
    styles = candidate_styles(labels)
    assert len(set(styles.values())) == len(labels)
    assert len({c for c, _ in styles.values()}) == len(labels) and len({m for _, m in styles.values()}) == len(labels)
    assert "cosine" in sensitivity_axis("cosine").label and "PSNR" in sensitivity_axis("psnr").label
    assert sensitivity_axis("cosine").y(0.995) == pytest.approx(0.005)
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    png = ProfileReport(_summary("estimated")).plot(tmp_path / "r.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    fig = figures[0]
    fig.canvas.draw()
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert "sparge 75% forced" in texts and "sage fp8" in texts and any("budget: cosine >= 0.995" in t for t in texts)
    right = max(ax.get_window_extent().x1 for ax in fig.axes)
    assert legend.get_window_extent().x0 >= right  # never over the budget line
    assert "cosine" in fig.axes[0].get_ylabel()
    plt.close(fig)


# ---- 6, 11. packaging ---------------------------------------------------------------------
def test_numpy_is_a_dependency_so_torch_does_not_warn():
    # torch warns "Failed to initialize NumPy" at every import when numpy is absent
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith("numpy") for d in deps), deps


def test_package_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")
    assert (ROOT / "smartcompile" / "py.typed").exists()
    for pattern in project["tool"]["setuptools"]["package-data"]["smartcompile"]:
        assert list((ROOT / "smartcompile").glob(pattern)), f"package data {pattern!r} matches no file"
    assert smartcompile.__version__ in smartcompile._version.version_line()


def test_python_dash_m_smartcompile():
    done = subprocess.run([sys.executable, "-m", "smartcompile", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "usage: smartcompile" in done.stdout, done.stderr
    assert "Failed to initialize NumPy" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_demo_on_cuda_without_cuda_is_a_short_error(capsys):
    from smartcompile.cli import main

    assert main(["demo", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smartcompile: error: demo: device 'cuda' is not available") and "Traceback" not in err


def test_demo_out_an_existing_file_is_named_before_sampling(tmp_path, capsys):
    from smartcompile.cli import main

    existing = tmp_path / "P.json"
    existing.write_text("{}")
    assert main(["demo", "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"smartcompile: error: --out: {str(existing)!r} exists and is not a folder") and \
        "Errno" not in err
    assert existing.read_text() == "{}"


# ---- 13. a CPU's fingerprint does not depend on GPU kernel libraries --------------------------
def test_cpu_fingerprint_leaves_gpu_libraries_out():
    fp = hardware_fingerprint("cpu")
    assert fp["libraries"] == {}
    with_triton = fp | {"libraries": {"triton": "3.9.0"}}  # a CPU policy written before this fix
    assert fingerprint_differences(with_triton, fp) == []
    gpu = fp | {"device_type": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}
    assert any(d.startswith("device_name") for d in fingerprint_differences(gpu, fp))


def test_short_labels_are_shared_by_table_and_plot():
    assert short_label("sparge[sim_threshold=-1.0,sparsity_ratio=0.75]") == "sparge 75% forced"
    assert short_label("flash") == "flash (exact)"


def test_cli_version_budget_default_and_early_matplotlib(monkeypatch, capsys):
    from smartcompile.cli import build_parser, main
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and smartcompile.__version__ in capsys.readouterr().out
    assert build_parser().parse_args(["profile", "--model", "m:f", "-o", "p.json"]).budget is None
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["profile", "--model", "no_such_mod:factory", "-o", "p.json", "--report", "r.png"]) == 2
    assert "needs matplotlib" in capsys.readouterr().err


def test_smartcompile_compile_checks_options_before_compiling(tmp_path):
    with pytest.raises(smartcompile.PolicyError, match="missing.json"):
        smartcompile.compile(torch.nn.Linear(2, 2), policy=str(tmp_path / "missing.json"))
    with pytest.raises(smartcompile.OptionsError, match="mode"):
        smartcompile.compile(torch.nn.Linear(2, 2), mode="fastest")
    model = torch.nn.Linear(4, 4)
    compiled = smartcompile.compile(model, policy={"default": "flash"})
    x = torch.randn(2, 4)
    torch.testing.assert_close(compiled(x), model(x))


def test_options_that_are_not_a_dict_get_a_short_error():
    from smartcompile.compiler.options import CompileOptions
    with pytest.raises(smartcompile.OptionsError, match=r"options: expected a dict such as \{'policy': 'policy.json'\}, got str"):
        CompileOptions.parse("policy.json")


def test_table_keeps_long_layer_names_whole_and_verbose_gives_the_full_reason():
    """A layer name is what a policy rule types: two UNet sites differing only in their last characters (attn1,
    attn2) were both cut to the same 48 characters. Whole where the line has room, else the tail; verbose adds
    a cut reason in full."""
    from smartcompile.compiler.plan import Plan, PlannedSite

    stem = "down_blocks.0.attentions.0.transformer_blocks.0."
    long_reason = "policy default -> flash/sdpa: " + "x" * 300
    plan = Plan(graphs=1, sites=[PlannedSite(stem + a, "sdpa", None, "flash", "sdpa", {}, long_reason, True)
                                 for a in ("attn1", "attn2")])
    rows = plan.table().splitlines()[2:4]
    assert rows[0].startswith(stem + "attn1") and rows[1].startswith(stem + "attn2")
    assert max(len(line) for line in plan.table().splitlines()) <= 200
    assert f"why: {long_reason}"[:150] in plan.table(verbose=True).replace("\n      ", " ")
    huge = Plan(graphs=1, sites=[PlannedSite("m." * 120 + a, "sdpa", None, "flash", "sdpa", {}, "r", True)
                                 for a in ("attn1", "attn2")])
    rows = huge.table().splitlines()[2:4]
    assert max(len(line) for line in huge.table().splitlines()) <= 200
    assert rows[0].split()[0].endswith("attn1") and rows[1].split()[0].endswith("attn2")
    assert "layer: " + "m." * 120 + "attn1" in huge.table(verbose=True).replace("\n      ", "")
