"""GPU (CUDA) tests of hardware-aware auto and of profiling with real timings."""
import dataclasses
import math

import pytest
import torch

import smartcompile
from smartcompile.demo.dit import DiTConfig, build_demo

pytestmark = pytest.mark.gpu


def test_measured_auto_is_never_slower_than_flash(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTCOMPILE_CACHE_DIR", str(tmp_path))
    from smartcompile.backends import select
    from smartcompile.spec import AttentionSpec

    for n, d in ((1024, 64), (16384, 128)):
        spec = AttentionSpec(1, 24, 24, n, n, d, d, torch.bfloat16, "cuda")
        sel = select(spec, "auto")
        times = dict(sel.timings)
        assert times and any(s.startswith("measured on this GPU") for s in sel.steps), sel.steps
        best_flash = min(t for label, t in times.items() if label.startswith("flash/"))
        assert times[f"{sel.backend}/{sel.implementation}"] <= best_flash, (n, d, times)
        assert sel.backend != "sparge"
    files = list(tmp_path.glob("auto_timing-*.json"))
    assert len(files) == 1 and "B1-Hq24-Hkv24-Sq16384" in files[0].read_text()


def test_explain_shows_the_measured_times(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTCOMPILE_CACHE_DIR", str(tmp_path))
    cfg = DiTConfig(frames=4, height=64, width=64, dim=512, heads=8, depth=1)  # 4096 tokens, D 64
    model, inputs = build_demo(cfg, device="cuda", dtype=torch.bfloat16)
    plan = smartcompile.explain(model, *inputs)  # policy None: auto everywhere
    # a measured choice of exact SDPA for a plain SDPA call keeps the graph's own call (graph_sdpa_kept), with
    # the times that decided it
    decided = [s for s in plan.sites if s.rewritten or s.graph_sdpa_kept]
    assert decided and all(s.timings for s in decided), str(plan)
    # the times are a step of each choice: explain --verbose lists them under the site's row
    assert plan.table(verbose=True).count("measured on this GPU: ") == len(decided), plan.table(verbose=True)


def test_profile_on_gpu_uses_cuda_event_times_and_meets_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTCOMPILE_CACHE_DIR", str(tmp_path))
    cfg = DiTConfig(frames=8, height=64, width=64, dim=512, heads=8, depth=2)  # 8192 tokens, D 64
    model, (latents, t, text) = build_demo(cfg, device="cuda", dtype=torch.bfloat16)
    calibration = [((latents, torch.full_like(t, s), text), {}) for s in (900.0, 300.0)]
    policy = smartcompile.profile(model, calibration, budget=0.995, out=tmp_path / "p.json", progress=False)
    s = policy.metadata["profile"]
    assert s["times"].startswith("cuda events") and s["meets_budget"] and s["achieved"] >= 0.995
    assert policy.metadata["hardware"]["compute_capability"] == "%d.%d" % torch.cuda.get_device_capability()
    speed = s["speedup"]
    assert math.isfinite(speed["speedup_vs_torch_compile"]) and speed["value_compiled"] >= 0.99
    impls = {c.get("implementation") for e in s["layers"].values() for c in e["candidates"].values()}
    assert {"sage_triton", "sparge_triton"} <= impls, impls
    for layer, e in s["layers"].items():
        assert e["time_exact_ms"] > 0
        if e["chosen"] != "flash":
            assert e["candidates"][e["chosen"]]["time_ms"] < e["time_exact_ms"], (layer, e)
