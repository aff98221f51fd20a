"""Hardware-aware "auto": time each capable implementation once per attention spec on this GPU,
cached on disk by hardware fingerprint and versions, and never pick one slower than exact flash.

Times come from CUDA events on random inputs of the spec's shape (kernel times do not depend on
the values for dense kernels). Sparse kernels are not timed here: their error depends on the
layer's inputs, so only a profiled policy (smartcompile.profile) chooses them.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional

import torch

from .._cache import cache_dir, digest, write_json_atomic
from .._logging import logger
from .._version import __version__
from ..spec import AttentionSpec
from .hardware import hardware_fingerprint

TIE_TOLERANCE = 0.03  # within 3% of the fastest counts as a tie: the seed priority decides
PRIORITY = ("sparge", "sage", "flash")


@dataclasses.dataclass(frozen=True)
class Candidate:
    backend: str
    implementation: str
    params: dict
    run: Callable

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.implementation}"


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
    return q, k, v, mask


def cuda_time_ms(fn: Callable[[], object], warmup: int = 3, budget_ms: float = 50.0, max_samples: int = 25,
                 calls_per_sample: int = 4) -> float:
    """Median milliseconds per call of `fn()` on the current CUDA stream, after warm-up (which also
    absorbs Triton autotuning). Each sample times a few back-to-back calls, as a model runs them:
    launches queue behind running kernels, so host launch cost counts only where it is not hidden."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    total = 0.0
    while len(times) < max_samples and (total < budget_ms or len(times) < 5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls_per_sample):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls_per_sample)
        total += times[-1] * calls_per_sample
    times.sort()
    return times[len(times) // 2]


def time_candidate(c: Candidate, spec: AttentionSpec) -> float:
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), torch.no_grad():
        q, k, v, mask = random_inputs(spec)
        return cuda_time_ms(lambda: c.run(q, k, v, mask, spec.is_causal, spec.effective_scale, c.params))


class TimingCache:
    """{spec key: {"backend/implementation": ms}} in one JSON file per hardware fingerprint."""

    def __init__(self, path: Optional[Path] = None, fingerprint: Optional[dict] = None) -> None:
        # our kernels change between versions: their times do not carry over
        self.fingerprint = fingerprint if fingerprint is not None else {**hardware_fingerprint("cuda"),
                                                                         "smartcompile": __version__}
        self.path = path or cache_dir() / f"auto_timing-{digest(self.fingerprint)}.json"
        self._entries: Optional[dict] = None

    def _load(self) -> dict:
        if self._entries is None:
            self._entries = {}
            if self.path.exists():
                try:
                    data = json.loads(self.path.read_text())
                    if data.get("fingerprint") == self.fingerprint:
                        self._entries = dict(data.get("entries", {}))
                except (OSError, ValueError) as exc:
                    logger.warning("ignoring unreadable timing cache %s: %s", self.path, exc)
        return self._entries

    def get(self, key: str) -> dict:
        return dict(self._load().get(key, {}))

    def put(self, key: str, times: dict) -> None:
        entries = self._load()
        entries[key] = {**entries.get(key, {}), **times}
        try:
            write_json_atomic(self.path, {"fingerprint": self.fingerprint, "entries": entries})
        except OSError as exc:  # a read-only home must not stop compilation
            logger.warning("cannot write timing cache %s: %s", self.path, exc)


def spec_key(spec: AttentionSpec) -> str:
    return spec.short()


def choose(times: dict, priority: tuple = PRIORITY, tie: float = TIE_TOLERANCE) -> tuple[str, str]:
    """Pick from {label: ms}: never slower than the fastest exact (flash/*) one; among those within
    `tie` of the fastest, the seed priority decides. Returns (label, why)."""
    flash = {l: t for l, t in times.items() if l.startswith("flash/")}
    if not flash:
        raise ValueError("choose: no flash implementation timed")
    baseline_label = min(flash, key=flash.get)
    baseline = flash[baseline_label]
    allowed = {l: t for l, t in times.items() if t <= baseline}
    fastest = min(allowed.values())
    tied = [l for l, t in allowed.items() if t <= fastest * (1 + tie)]
    rank = lambda l: (priority.index(l.split("/")[0]) if l.split("/")[0] in priority else len(priority), allowed[l])
    pick = min(tied, key=rank)
    if pick == baseline_label:
        why = "exact flash is fastest" if len(allowed) == 1 else f"ties with faster ones go to {' > '.join(priority)}"
    else:
        why = f"{baseline / allowed[pick]:.2f}x the fastest exact ({baseline_label})"
    return pick, why


def measured_choice(spec: AttentionSpec, candidates: list, cache: Optional[TimingCache] = None,
                    timer: Callable[[Candidate, AttentionSpec], float] = time_candidate) -> tuple[Candidate, dict, str]:
    """Time (or look up) every candidate for `spec`; return (choice, {label: ms}, why)."""
    cache = cache or TimingCache()
    key = spec_key(spec)
    times = cache.get(key)
    missing = [c for c in candidates if c.label not in times]
    fresh = {}
    for c in missing:
        try:
            fresh[c.label] = timer(c, spec)
        except (RuntimeError, ValueError) as exc:  # a kernel that fails here is simply not chosen
            logger.warning("auto: timing %s on %s failed, not a candidate: %s", c.label, key, exc)
            fresh[c.label] = float("inf")
    if fresh:
        cache.put(key, fresh)
        times.update(fresh)
    times = {c.label: times[c.label] for c in candidates}
    label, why = choose({l: t for l, t in times.items() if t != float("inf")})
    choice = next(c for c in candidates if c.label == label)
    return choice, times, why
