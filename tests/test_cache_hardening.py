"""Issue 9, caches: a bad cache line or file is skipped with one warning and measured again; a
failed measurement is never cached as a verdict; other formats are ignored. One regression test
per defect; every cache lives under tmp_path (SMARTCOMPILE_CACHE_DIR)."""
import importlib
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from smartcompile import _cache
from smartcompile._cache import CACHE_FORMAT, MAX_CACHE_LINE_BYTES, read_cache_bytes
from smartcompile.backends.auto_timing import Candidate, TimingCache, measured_choice, spec_key
from smartcompile.profiling.candidates import ProfileCandidate
from smartcompile.profiling.store import MeasurementStore
from smartcompile.spec import AttentionSpec

# the module, not the profile() function that smartcompile.profiling exports under the same name
profile_mod = importlib.import_module("smartcompile.profiling.profile")
SPEC = AttentionSpec(1, 8, 8, 4096, 4096, 128, 128, torch.bfloat16, "cuda")
KEY = spec_key(SPEC)
FP = {"device_name": "Fake GPU", "torch": torch.__version__}


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTCOMPILE_CACHE_DIR", str(tmp_path / "cache"))


def _warnings(caplog) -> list:
    return [r for r in caplog.records if r.name == "smartcompile" and r.levelno == logging.WARNING]


# ---- auto-timing cache ----------------------------------------------------------------------
def _candidates():
    return [Candidate("flash", "sdpa", {}, None), Candidate("sage", "sage_triton", {"pv_precision": "fp8"}, None)]


class Timer:
    def __init__(self, times=None, fail=()):
        self.times = times or {"flash/sdpa": 2.0, "sage/sage_triton": 1.5}
        self.fail = set(fail)
        self.calls = []

    def __call__(self, c, spec):
        self.calls.append(c.label)
        if c.label in self.fail:
            raise RuntimeError("out of resources")
        return self.times[c.label]


def _timing_file(tmp_path, content):
    path = tmp_path / "t.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def _good(entries):
    return {"format": CACHE_FORMAT, "fingerprint": FP, "entries": entries}


BAD_TIMING_FILES = {
    "binary": b"\x80\xff\xfe garbage \x00",
    "truncated": b'{"format": 1, "fingerprint": {"device_name": "Fake',
    "list": [1, 2, 3],
    "entries_list": _good([]),
    "times_list": _good({KEY: ["flash/sdpa", 1.0]}),
    "empty_times": _good({KEY: {}}),
    "string_time": _good({KEY: {"flash/sdpa": "fast", "sage/sage_triton": 1.5}}),
    "inf_time": b'{"format": 1, "fingerprint": %s, "entries": {"%s": {"flash/sdpa": Infinity, "sage/sage_triton": 1.5}}}'
                % (json.dumps(FP).encode(), KEY.encode()),
    "nan_time": b'{"format": 1, "fingerprint": %s, "entries": {"%s": {"flash/sdpa": NaN}}}'
                % (json.dumps(FP).encode(), KEY.encode()),
    "negative_time": _good({KEY: {"flash/sdpa": -1.0, "sage/sage_triton": 0.0}}),
    "huge_int_time": _good({KEY: {"flash/sdpa": 10**400}}),  # beyond float range: OverflowError
    "deep": b'{"format": 1, "entries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
}


@pytest.mark.parametrize("name", sorted(BAD_TIMING_FILES))
def test_bad_timing_cache_is_skipped_with_one_warning_and_retimed(tmp_path, caplog, name):
    path = _timing_file(tmp_path, BAD_TIMING_FILES[name])
    timer = Timer()
    with caplog.at_level(logging.WARNING, logger="smartcompile"):
        choice, times, _ = measured_choice(SPEC, _candidates(), TimingCache(path, FP), timer=timer)
        # a second cache object on the same file (one per compiled site) does not warn again
        measured_choice(SPEC, _candidates(), TimingCache(path, FP), timer=timer)
    assert choice.label == "sage/sage_triton" and times == {"flash/sdpa": 2.0, "sage/sage_triton": 1.5}
    assert "flash/sdpa" in timer.calls  # the bad flash time was measured again, not trusted
    warned = _warnings(caplog)
    assert len(warned) == 1 and str(path) in warned[0].getMessage()
    # the file is rewritten valid: a new process reads it without warnings or timing
    caplog.clear()
    again = Timer()
    measured_choice(SPEC, _candidates(), TimingCache(path, FP), timer=again)
    assert again.calls == [] and not _warnings(caplog)
    assert json.loads(path.read_text())["format"] == CACHE_FORMAT


def test_failed_flash_timing_is_not_cached(tmp_path):
    path = tmp_path / "t.json"
    failing = Timer(fail={"flash/sdpa"})
    choice, times, why = measured_choice(SPEC, _candidates(), TimingCache(path, FP), timer=failing)
    assert choice.label == "flash/sdpa" and "unmeasured" in why  # exact, never a compile failure
    assert times["flash/sdpa"] == math.inf
    assert "flash/sdpa" not in json.loads(path.read_text())["entries"][KEY]
    working = Timer()
    choice, times, _ = measured_choice(SPEC, _candidates(), TimingCache(path, FP), timer=working)
    assert working.calls == ["flash/sdpa"] and choice.label == "sage/sage_triton" and times["flash/sdpa"] == 2.0


def test_non_finite_timer_result_is_not_cached(tmp_path):
    path = tmp_path / "t.json"
    timer = Timer(times={"flash/sdpa": 2.0, "sage/sage_triton": math.inf})
    choice, times, _ = measured_choice(SPEC, _candidates(), TimingCache(path, FP), timer=timer)
    assert choice.label == "flash/sdpa" and times["sage/sage_triton"] == math.inf
    assert json.loads(path.read_text())["entries"][KEY] == {"flash/sdpa": 2.0}


def test_any_timing_exception_only_removes_the_candidate(tmp_path):
    def timer(c, spec):
        if c.backend == "sage":
            raise AssertionError("triton compile failed")
        return 1.0

    choice, times, _ = measured_choice(SPEC, _candidates(), TimingCache(tmp_path / "t.json", FP), timer=timer)
    assert choice.label == "flash/sdpa" and times["sage/sage_triton"] == math.inf


@pytest.mark.parametrize("content", [{"fingerprint": FP, "entries": {KEY: {"flash/sdpa": 9.0}}},  # no format: old
                                     {"format": 99, "fingerprint": FP, "entries": {KEY: {"flash/sdpa": 9.0}}}])
def test_timing_cache_of_another_format_is_ignored(tmp_path, caplog, content):
    path = _timing_file(tmp_path, content)
    timer = Timer()
    with caplog.at_level(logging.WARNING, logger="smartcompile"):
        _, times, _ = measured_choice(SPEC, _candidates(), TimingCache(path, FP), timer=timer)
    assert times["flash/sdpa"] == 2.0 and sorted(timer.calls) == ["flash/sdpa", "sage/sage_triton"]
    assert not _warnings(caplog)


def test_timing_cache_keeps_the_valid_entries_next_to_a_bad_one(tmp_path):
    path = _timing_file(tmp_path, _good({KEY: {"flash/sdpa": 2.0, "sage/sage_triton": "x"}}))
    timer = Timer()
    measured_choice(SPEC, _candidates(), TimingCache(path, FP), timer=timer)
    assert timer.calls == ["sage/sage_triton"]


# ---- profile measurement store ----------------------------------------------------------------
LAYER = "blocks.0.attn"


def _exact(ms=1.0):
    return {"stage": "exact", "layer": LAYER, "label": "flash", "implementation": "sdpa", "time_ms": ms}


def _line(rec, fmt=CACHE_FORMAT):
    return json.dumps({"format": fmt, **rec}) + "\n"


def _store_path(tmp_path):
    return tmp_path / "cache" / "profile" / "k.jsonl"


def _write_store(tmp_path, content: bytes):
    path = _store_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _run_local_stage(monkeypatch, store):
    """profile's local stage with the measurements faked: returns what was measured (not reused)."""
    measured = []

    def exact_time_ms(rec):
        measured.append("flash")
        return _exact(2.0)

    def measure_local(rec, cand):
        measured.append(cand.label)
        return {"stage": "local", "layer": rec.layer, "label": cand.label, "backend": "sage", "runnable": False,
                "why": "cannot run here: test"}

    monkeypatch.setattr(profile_mod, "exact_time_ms", exact_time_ms)
    monkeypatch.setattr(profile_mod, "measure_local", measure_local)
    # the layer is faked too: a reused record is taken as what this hardware runs (test_profile.py checks that
    # a record naming something else is measured again)
    monkeypatch.setattr(profile_mod, "cached_record_problem", lambda rec, cand, cached: None)
    out = profile_mod._stage_local([SimpleNamespace(layer=LAYER)], [ProfileCandidate("sage", {})], store, False)
    return measured, out


BAD_STORE_LINES = {
    "binary": b"\x80\xff\xfe\x00garbage\n",
    "truncated": b'{"format": 1, "stage": "exact", "lay\n',
    "not_an_object": b"[1, 2]\n",
    "wrong_types": _line({**_exact(), "layer": 3}).encode(),
    "missing_time": _line({k: v for k, v in _exact().items() if k != "time_ms"}).encode(),
    "empty_times": _line({**{k: v for k, v in _exact().items() if k != "time_ms"}, "times": []}).encode(),
    "inf_time": _line({**_exact(), "time_ms": "inf"}).encode(),
    "nan_time": b'{"format": 1, "stage": "exact", "layer": "blocks.0.attn", "label": "flash", '
                b'"implementation": "sdpa", "time_ms": NaN}\n',
    "unknown_stage": _line({**_exact(), "stage": "later"}).encode(),
    "huge_int_time": _line({**_exact(), "time_ms": 10**400}).encode(),
    "too_long": b'{"format": 1, "pad": "' + b"x" * MAX_CACHE_LINE_BYTES + b'"}\n',
    "deep": b"[" * 100_000 + b"]" * 100_000 + b"\n",
}


@pytest.mark.parametrize("name", sorted(BAD_STORE_LINES))
def test_bad_profile_cache_line_is_skipped_with_one_warning_and_remeasured(tmp_path, monkeypatch, caplog, name):
    sens = {"stage": "sensitivity", "layer": LAYER, "label": "sage", "value": 0.999}
    path = _write_store(tmp_path, BAD_STORE_LINES[name] + _line(sens).encode() + BAD_STORE_LINES[name])
    with caplog.at_level(logging.WARNING, logger="smartcompile"):
        store = MeasurementStore("k")
    warned = _warnings(caplog)
    assert len(warned) == 1 and str(path) in warned[0].getMessage() and "skipped 2" in warned[0].getMessage()
    assert store.get("sensitivity", LAYER, "sage")["value"] == 0.999  # the good line survives
    measured, out = _run_local_stage(monkeypatch, store)
    assert measured == ["flash", "sage"] and out[(LAYER, "flash")]["time_ms"] == 2.0  # measured again
    # the file now holds only valid lines: the next run reuses everything, with no warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="smartcompile"):
        again = MeasurementStore("k")
    assert not _warnings(caplog)
    assert _run_local_stage(monkeypatch, again)[0] == []


def test_profile_cache_line_of_another_format_is_ignored(tmp_path, monkeypatch, caplog):
    _write_store(tmp_path, (_line(_exact(), fmt=0) + json.dumps(_exact()) + "\n").encode())
    with caplog.at_level(logging.WARNING, logger="smartcompile"):
        store = MeasurementStore("k")
    assert not _warnings(caplog) and store.get("exact", LAYER, "flash") is None
    assert _run_local_stage(monkeypatch, store)[0] == ["flash", "sage"]


def test_failed_profile_measurement_is_not_cached(tmp_path):
    store = MeasurementStore("k")
    store.put(_exact(math.inf))  # used by this run ...
    assert store.get("exact", LAYER, "flash")["time_ms"] == math.inf
    assert not _store_path(tmp_path).exists() or "flash" not in _store_path(tmp_path).read_text()
    assert MeasurementStore("k").get("exact", LAYER, "flash") is None  # ... and measured again by the next


def test_profile_cache_round_trips_non_finite_errors(tmp_path):
    rec = {"stage": "local", "layer": LAYER, "label": "sage", "backend": "sage", "runnable": True,
           "implementation": "sage_reference", "params": {}, "time_ms": 1.0, "cosine": -math.inf,
           "rel_l1": math.inf, "rmse": math.nan, "finite": False, "density": None}
    MeasurementStore("k").put(rec)  # a real verdict (non-finite output): kept
    back = MeasurementStore("k").get("local", LAYER, "sage")
    assert back["cosine"] == -math.inf and back["rel_l1"] == math.inf and back["rmse"] is None
    assert json.loads(_store_path(tmp_path).read_text())["format"] == CACHE_FORMAT


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_cache_file_is_not_read_to_the_end(monkeypatch):
    monkeypatch.setattr(_cache, "MAX_CACHE_FILE_BYTES", 1024)  # /dev/zero's size reads as 0
    assert read_cache_bytes(Path("/dev/zero")) == (None, "over the 1024-byte limit")
