"""Hardware-aware "auto": time each capable implementation once per attention spec on this GPU,
cached on disk by hardware fingerprint and versions, and never pick one slower than exact flash.

Times come from CUDA events on random inputs of the spec's shape (kernel times do not depend on
the values for dense kernels). Sparse kernels are not timed here: their error depends on the
layer's inputs, so only a profiled policy (smartcompile.profile) chooses them.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Optional

import torch

from .._cache import CACHE_FORMAT, cache_dir, digest, parse_json, read_cache_bytes, warn_once, write_json_atomic
from .._logging import logger
from .._version import __version__
from ..spec import AttentionSpec
from ..timing import cuda_time_ms
from .base import Backend
from .hardware import hardware_fingerprint
from .registry import get_backend, priority_order

TIE_TOLERANCE = 0.03  # within 3% of the fastest counts as a tie: the seed priority decides


@dataclasses.dataclass(frozen=True)
class Candidate:
    backend: str
    implementation: str
    params: dict
    run: Callable

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.implementation}"

    @property
    def family(self) -> Backend:
        return get_backend(self.backend)


def random_inputs(spec: AttentionSpec, seed: int = 0):
    g = torch.Generator(device=spec.device).manual_seed(seed)
    mk = lambda h, s, d: torch.randn(spec.batch, h, s, d, device=spec.device, dtype=spec.dtype, generator=g)
    q, k, v = mk(spec.q_heads, spec.q_len, spec.head_dim), mk(spec.kv_heads, spec.kv_len, spec.head_dim), mk(
        spec.kv_heads, spec.kv_len, spec.v_head_dim)
    mask = None
    if spec.mask_kind == "bool":
        mask = torch.ones(1, 1, spec.q_len, spec.kv_len, device=spec.device, dtype=torch.bool)
    elif spec.mask_kind == "additive":
        mask = torch.zeros(1, 1, spec.q_len, spec.kv_len, device=spec.device, dtype=spec.dtype)
    elif spec.mask_kind in ("padded", "causal-padded"):  # every key kept: the kernels' full-span cost
        mask = torch.ones(spec.batch, 1, 1, spec.kv_len, device=spec.device, dtype=torch.bool)
    return q, k, v, mask


def time_candidate(c: Candidate, spec: AttentionSpec) -> float:
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), torch.no_grad():
        q, k, v, mask = random_inputs(spec)
        return cuda_time_ms(lambda: c.run(q, k, v, mask, spec.is_causal, spec.effective_scale, c.params))


def valid_time(ms: object) -> bool:
    """A usable measurement: a finite, positive number of milliseconds."""
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        return False
    try:
        return 0 < float(ms) < math.inf  # False for NaN
    except OverflowError:  # an integer beyond float range (a JSON literal of 400 digits)
        return False


class TimingCache:
    """{spec key: {"backend/implementation": ms}} in one JSON file per hardware fingerprint:
    {"format": CACHE_FORMAT, "fingerprint": {...}, "entries": {...}}. A file of another format or
    fingerprint is ignored; an unreadable file or invalid entry is dropped with one warning and
    timed again. Only valid times are ever written (a failed timing is not a verdict)."""

    def __init__(self, path: Optional[Path] = None, fingerprint: Optional[dict] = None) -> None:
        # our kernels change between versions: their times do not carry over
        self.fingerprint = fingerprint if fingerprint is not None else {**hardware_fingerprint("cuda"),
                                                                         "smartcompile": __version__}
        self.path = path or cache_dir() / f"auto_timing-{digest(self.fingerprint)}.json"
        self._entries: Optional[dict] = None

    def _load(self) -> dict:
        if self._entries is None:
            self._entries, problem = self._read()
            if problem is not None:
                warn_once(self.path, f"timing cache {self.path}: {problem}; timing again")
        return self._entries

    def _read(self) -> tuple[dict, Optional[str]]:
        """(valid entries, what was dropped or None)."""
        raw, problem = read_cache_bytes(self.path)
        if raw is None:
            return {}, (f"ignored ({problem})" if problem else None)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return {}, f"ignored (not UTF-8 at byte {exc.start})"
        data, problem = parse_json(text)
        if problem is not None:
            return {}, f"ignored ({problem})"
        if not isinstance(data, dict):
            return {}, f"ignored (a JSON {type(data).__name__}, not an object)"
        if data.get("format") != CACHE_FORMAT or data.get("fingerprint") != self.fingerprint:
            return {}, None  # another format or hardware: not ours to judge, timed again quietly
        return _valid_entries(data.get("entries"))

    def get(self, key: str) -> dict:
        return dict(self._load().get(key, {}))

    def put(self, key: str, times: dict) -> None:
        entries = self._load()
        entries[key] = {**entries.get(key, {}), **{label: ms for label, ms in times.items() if valid_time(ms)}}
        try:
            write_json_atomic(self.path, {"format": CACHE_FORMAT, "fingerprint": self.fingerprint, "entries": entries})
        except (OSError, TypeError, ValueError) as exc:  # a read-only home must not stop compilation
            logger.warning("cannot write timing cache %s: %s", self.path, exc)


def _valid_entries(entries: object) -> tuple[dict, Optional[str]]:
    """{spec key: {label: ms}} keeping only valid times, and a note of what was dropped."""
    if not isinstance(entries, dict):
        return {}, f"ignored (entries is a {type(entries).__name__}, not an object)"
    out, dropped = {}, []
    for key, times in entries.items():
        if not isinstance(times, dict):
            dropped.append(f"{key}: {type(times).__name__}")
            continue
        good = {label: float(ms) for label, ms in times.items() if isinstance(label, str) and valid_time(ms)}
        dropped += [f"{key} {label}: {ms!r}" for label, ms in times.items() if label not in good]
        if good:
            out[key] = good
        elif not times:  # put() never writes an empty entry
            dropped.append(f"{key}: no times")
    return out, (f"dropped {len(dropped)} invalid time(s) (first: {dropped[0]})" if dropped else None)


def spec_key(spec: AttentionSpec) -> str:
    return spec.short()


def fastest_candidate(timed: list, tie: float = TIE_TOLERANCE) -> tuple[Candidate, str]:
    """Pick from [(Candidate, ms)]: never slower than the fastest exact one; among those within
    `tie` of the fastest, the seed priority decides. Returns (candidate, why)."""
    exact = [(c, t) for c, t in timed if c.family.exact]
    if not exact:
        raise ValueError("fastest_candidate: no exact implementation timed")
    baseline, baseline_ms = min(exact, key=lambda ct: ct[1])
    allowed = [(c, t) for c, t in timed if t <= baseline_ms]
    fastest = min(t for _, t in allowed)
    tied = [(c, t) for c, t in allowed if t <= fastest * (1 + tie)]
    pick, pick_ms = min(tied, key=lambda ct: (-ct[0].family.auto_priority, ct[1]))
    if pick is baseline:
        order = " > ".join(b.name for b in priority_order())
        why = f"exact {pick.backend} is fastest" if len(allowed) == 1 else f"ties with faster ones go to {order}"
    else:
        why = f"{baseline_ms / pick_ms:.2f}x the fastest exact ({baseline.label})"
    return pick, why


def measured_choice(spec: AttentionSpec, candidates: list, cache: Optional[TimingCache] = None,
                    timer: Callable[[Candidate, AttentionSpec], float] = time_candidate) -> tuple[Candidate, dict, str]:
    """Time (or look up) every candidate for `spec`; return (choice, {label: ms}, why).
    A candidate whose timing fails shows as inf and is not chosen, nor cached: it is timed again
    next time. If no exact candidate could be timed, the first exact one is chosen unmeasured."""
    cache = cache or TimingCache()
    key = spec_key(spec)
    times = cache.get(key)
    fresh = {}
    for c in candidates:
        if c.label not in times:
            fresh[c.label] = _time_or_inf(timer, c, spec, key)
    if any(valid_time(ms) for ms in fresh.values()):
        cache.put(key, fresh)
    times = {c.label: times.get(c.label, fresh.get(c.label)) for c in candidates}
    timed = [(c, times[c.label]) for c in candidates if valid_time(times[c.label])]
    exact = [c for c in candidates if c.family.exact]
    if exact and not any(c.family.exact for c, _ in timed):
        return exact[0], times, f"no exact implementation could be timed; exact {exact[0].backend}, unmeasured"
    choice, why = fastest_candidate(timed)
    return choice, times, why


def _time_or_inf(timer: Callable[[Candidate, AttentionSpec], float], c: Candidate, spec: AttentionSpec,
                 key: str) -> float:
    try:
        ms = timer(c, spec)
    except Exception as exc:  # noqa: BLE001 -- any kernel failure (Triton, CUDA, OOM) only removes a candidate
        logger.warning("auto: timing %s on %s failed, not a candidate: %s: %s", c.label, key, type(exc).__name__, exc)
        return float("inf")
    if not valid_time(ms):
        logger.warning("auto: timing %s on %s gave %r, not a candidate", c.label, key, ms)
        return float("inf")
    return float(ms)
