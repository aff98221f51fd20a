"""Hardware-aware auto: the choice rule, the on-disk cache, and the selection's explanation
(the GPU timing itself runs in tests/test_gpu_auto.py)."""
from __future__ import annotations

import pytest
import torch

from smartcompile.backends import auto_timing, registry
from smartcompile.backends.auto_timing import Candidate, TimingCache, fastest_candidate, measured_choice
from smartcompile.compiler.options import CompileOptions
from smartcompile.errors import OptionsError, UnknownNameError
from smartcompile.spec import AttentionSpec

SPEC = AttentionSpec(1, 8, 8, 4096, 4096, 128, 128, torch.bfloat16, "cuda")


@pytest.mark.parametrize("times, expected", [
    ({"flash/sdpa": 1.0, "sage/sage_triton": 0.8}, "sage/sage_triton"),  # faster
    ({"flash/sdpa": 1.0, "sage/sage_triton": 1.2}, "flash/sdpa"),  # never slower than flash
    ({"flash/sdpa": 1.0, "sage/sage_triton": 0.99}, "sage/sage_triton"),  # tie, priority Sage > Flash
    ({"flash/sdpa": 0.98, "sage/sage_triton": 1.0}, "flash/sdpa"),  # tie but slower than flash: no
    ({"flash/sdpa": 1.0, "flash/flash_attn3": 0.7, "sage/sage_triton": 0.8}, "flash/flash_attn3"),  # fastest exact
])
def test_choose_rule(times, expected):
    assert fastest_candidate(_timed(times))[0].label == expected


def test_choose_needs_an_exact_time():
    with pytest.raises(ValueError, match="no exact"):
        fastest_candidate(_timed({"sage/sage_triton": 1.0}))


def _timed(times: dict) -> list:
    return [(Candidate(*label.split("/"), {}, None), ms) for label, ms in times.items()]


def _candidates():
    return [Candidate("flash", "sdpa", {}, None), Candidate("sage", "sage_triton", {"pv_precision": "fp8"}, None)]


def test_measured_choice_times_once_then_reads_the_cache(tmp_path):
    calls = []

    def fake_timer(c, spec):
        calls.append(c.label)
        return {"flash/sdpa": 2.0, "sage/sage_triton": 1.5}[c.label]

    fp = {"device_name": "Fake GPU", "torch": torch.__version__}
    cache = TimingCache(tmp_path / "t.json", fingerprint=fp)
    choice, times, why = measured_choice(SPEC, _candidates(), cache, timer=fake_timer)
    assert choice.label == "sage/sage_triton" and times == {"flash/sdpa": 2.0, "sage/sage_triton": 1.5}
    assert "1.33x" in why and len(calls) == 2
    again = TimingCache(tmp_path / "t.json", fingerprint=fp)  # a new process: from disk
    assert measured_choice(SPEC, _candidates(), again, timer=fake_timer)[0].label == "sage/sage_triton"
    assert len(calls) == 2
    other = TimingCache(tmp_path / "t.json", fingerprint={**fp, "device_name": "Other GPU"})
    measured_choice(SPEC, _candidates(), other, timer=fake_timer)
    assert len(calls) == 4  # other hardware: measured again


def test_a_failing_kernel_is_not_chosen(tmp_path):
    def timer(c, spec):
        if c.backend == "sage":
            raise RuntimeError("out of resources")
        return 1.0

    cache = TimingCache(tmp_path / "t.json", fingerprint={"x": 1})
    choice, times, _ = measured_choice(SPEC, _candidates(), cache, timer=timer)
    assert choice.label == "flash/sdpa" and times["sage/sage_triton"] == float("inf")


def test_select_auto_on_cuda_shows_measured_times(monkeypatch):
    def fake(spec, candidates, cache=None, timer=None):
        times = {c.label: 1.0 + i for i, c in enumerate(reversed(candidates))}
        return candidates[-1], times, "test"

    monkeypatch.setattr(auto_timing, "measured_choice", fake)
    # on this CPU machine no CUDA implementation is capable except SDPA, so it is the only candidate
    sel = registry.select(SPEC, "auto", {}, "measure")
    assert sel.timings and any(s.startswith("measured on this GPU:") for s in sel.steps), sel.steps
    assert any(s.startswith("sparge: not timed by auto") for s in sel.steps)
    static = registry.select(SPEC, "auto", {}, "static")
    assert not static.timings


def test_auto_option_is_validated():
    assert CompileOptions.parse({"auto": "static"}).auto == "static"
    assert CompileOptions.parse(None).auto == "measure"
    with pytest.raises(OptionsError, match="auto: 'fast' is not allowed"):
        CompileOptions.parse({"auto": "fast"})
    with pytest.raises(UnknownNameError, match="auto_mode"):
        registry.select(SPEC, "auto", {}, "fast")
