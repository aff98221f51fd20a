"""Choices per module instance and per denoising step, made when the op runs.

A graph that serves several module instances (regional compilation, `compile_repeated_blocks`,
a per-block `compile()` loop, a graph break inside a block) cannot carry one literal choice. Its
sites call `smartattn::attention_by_layer` with a parameter of the frame's module (the anchor,
see passes/anchor.py); here the anchor's full name in a model named by `name_layers(model)`
gives the running instance's path, the policy gives its rule (for the current step), and the
choice is cached per (site, instance, step): a dict lookup per call after the first.
"""
from __future__ import annotations

import dataclasses
import threading
import weakref
from typing import Optional

import torch

from .._logging import logger
from ..backends.op import encode_params, set_dispatcher
from ..backends.registry import Selection, exact_baseline, select
from ..errors import UnsupportedError
from ..policies import Policy
from ..policies.resolve import Decision, resolve
from ..spec import AttentionSpec


@dataclasses.dataclass(frozen=True)
class Choice:
    backend: str
    implementation: str
    params: str  # encoded, as the op takes it
    layer: str  # full path of the instance (relative when the instance is not named)

    def as_op_args(self) -> tuple:
        return self.backend, self.implementation, self.params, self.layer


@dataclasses.dataclass(frozen=True)
class InstanceChoice:
    """One (layer instance, step) as it ran: what explain shows per instance."""
    layer: str
    step: Optional[int]
    backend: str
    implementation: str
    reason: str


@dataclasses.dataclass(frozen=True)
class DispatchSite:
    layer: str  # relative to the compiled frame
    anchor_paths: tuple  # the anchor parameters' paths relative to the frame, in the op's order
    spec: AttentionSpec
    policy: Policy
    auto_mode: str
    fallback: Choice  # the compile-time choice (step-less rule): used when the per-call one cannot run


MAX_CACHED_CHOICES = 1 << 16  # (site, instance, step) choices kept; far beyond one model's
MAX_INSTANCE_RECORDS = 1 << 14  # explain's per-instance records kept per process
_LOCK = threading.Lock()
_SITES: list = []  # DispatchSite by id
_CACHE: dict = {}  # (site id, ids of the anchors, step) -> (weakrefs to the anchors, Choice)
_ROOTS: list = []  # weakrefs to named models
_NAMES: dict = {}  # parameter data_ptr -> full name in a named model (None: shared, ambiguous)
_NAMES_STALE = True
INSTANCES: dict = {}  # (site id, layer, step) -> InstanceChoice, in first-run order


def name_layers(model: torch.nn.Module) -> torch.nn.Module:
    """Name `model`'s module instances for smartattn: a graph compiled from one of its submodules
    (regional compilation, graph breaks) then applies each instance's own rule, found by its full
    path as in `model.named_modules()`. Call it before the first run; returns `model`."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"smartcompile.name_layers: model must be a torch.nn.Module, got {type(model).__name__}")
    global _NAMES_STALE
    with _LOCK:
        if not any(r() is model for r in _ROOTS):
            _ROOTS.append(weakref.ref(model))
        _NAMES_STALE = True
        _CACHE.clear()
    return model


def forget_layers(model: torch.nn.Module) -> None:
    """Undo name_layers(model) (explain names a model only while it runs)."""
    global _NAMES_STALE
    with _LOCK:
        _ROOTS[:] = [r for r in _ROOTS if r() is not None and r() is not model]
        _NAMES_STALE = True
        _CACHE.clear()


def is_named(model: torch.nn.Module) -> bool:
    return any(m is model for m in named_models())


def named_models() -> list:
    return [m for m in (r() for r in _ROOTS) if m is not None]


# torch.compile(module) wraps it in an OptimizedModule that holds it as `_orig_mod`: a path through the wrapper is
# the wrapped module's own path to the user (and to their rules)
_COMPILE_WRAPPER = "_orig_mod"


def user_path(name: str) -> str:
    """A module path with torch.compile's wrapper segments (`_orig_mod`) removed."""
    if _COMPILE_WRAPPER not in name:
        return name
    return ".".join(part for part in name.split(".") if part != _COMPILE_WRAPPER)


def user_named_modules(model: torch.nn.Module) -> dict:
    """model.named_modules() by user_path (a wrapper and the module it wraps: the wrapped one)."""
    out: dict = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch._dynamo.eval_frame.OptimizedModule):
            out[user_path(name)] = mod
    return out


def _names_in(model: torch.nn.Module) -> dict:
    """Parameter storage -> full name in one model; a parameter tied between two modules names
    neither (None): a rule must not be applied to a guessed layer."""
    names: dict = {}
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False)):
        name = user_path(name)
        ptr = tensor.data_ptr()
        if ptr != 0:  # 0: a tensor subclass without storage of its own
            names[ptr] = name if ptr not in names or names[ptr] == name else None
    return names


def _refresh_names() -> None:
    """Over every named model; when two named models hold the same module (a wrapper named after
    its inner model), the one named last gives the names."""
    global _NAMES_STALE
    names: dict = {}
    for model in named_models():
        names.update(_names_in(model))
    _NAMES.clear()
    _NAMES.update(names)
    _NAMES_STALE = False


def frame_path(anchor: Optional[torch.Tensor], anchor_path: str) -> Optional[str]:
    """The running frame module's full path ("" for a named model itself), or None if unknown."""
    if anchor is None or not anchor_path:
        return None
    with _LOCK:
        if _NAMES_STALE or anchor.data_ptr() not in _NAMES:
            _refresh_names()  # parameters moved (model.to) or a model named since
        full = _NAMES.get(anchor.data_ptr())
    if full is None or not (full == anchor_path or full.endswith("." + anchor_path)):
        return None
    return full[: len(full) - len(anchor_path)].rstrip(".")


def sibling_layers(frame: str, layer: str) -> tuple:
    """Full names of `layer` in every instance of the frame module's class in the named models:
    the instances one compiled graph may serve (for explain and unmatched-rule checks)."""
    out = []
    for model in named_models():
        modules = user_named_modules(model)
        if frame not in modules:
            continue
        cls = type(modules[frame])
        out += [full_layer(name, layer) for name, mod in modules.items() if type(mod) is cls]
    return tuple(dict.fromkeys(out))


def full_layer(frame: str, layer: str) -> str:
    """`frame` + the layer's path inside it; attention in the frame's own forward is the frame."""
    if layer.startswith("attention.") or layer == "<root>":
        return frame or layer
    return f"{frame}.{layer}" if frame else layer


def choose_implementation(decision: Decision, spec: AttentionSpec, auto_mode: str) -> tuple[Choice, str, Selection]:
    """(choice, one-line reason, the selection's records) for a policy decision. "off" runs exact
    attention: in a graph rewritten for other instances or steps, that is what eager computes."""
    backend, params = (decision.backend, dict(decision.params)) if decision.backend != "off" else (exact_baseline(), {})
    sel = select(spec, backend, params, auto_mode)
    reason = sel.reason(decision.reason, decision.backend)
    return Choice(sel.backend, sel.implementation, encode_params(sel.params), ""), reason, sel


def register_site(site: DispatchSite) -> int:
    set_dispatcher(dispatch)
    with _LOCK:
        _SITES.append(site)
        return len(_SITES) - 1


def dispatch(site_id: int, anchors: list, step: Optional[int]) -> tuple:
    """The op's choice for this call; cached, so a dict lookup after the first call. The graph
    hands the op the Parameter objects themselves: the cache is keyed by their ids (all of them: a
    parameter tied between blocks is one object in two instances) and checks, through weak
    references, that they are still the same objects (an id can be reused after it is freed)."""
    key = (site_id, tuple(map(id, anchors)), step)
    hit = _CACHE.get(key)
    if hit is None or any(ref() is not a for ref, a in zip(hit[0], anchors)):
        hit = (tuple(weakref.ref(a) for a in anchors), _decide(site_id, anchors, step))
        if len(_CACHE) >= MAX_CACHED_CHOICES:  # entries of freed models: start over rather than grow
            _CACHE.clear()
        _CACHE[key] = hit
    return hit[1].as_op_args()


def _decide(site_id: int, anchors: list, step: Optional[int]) -> Choice:
    site = _SITES[site_id]
    # the first anchor a named model names uniquely (a parameter tied between blocks names two)
    frame = next((f for f in (frame_path(a, p) for a, p in zip(anchors, site.anchor_paths)) if f is not None), None)
    layer = site.layer if frame is None else full_layer(frame, site.layer)
    decision = resolve(layer, site.policy, step)
    try:
        choice, reason, _ = choose_implementation(decision, site.spec, site.auto_mode)
    except UnsupportedError as exc:  # compile time checked the step-less rule only
        choice, reason = site.fallback, f"{decision.reason}: {decision.backend} cannot run ({exc}); compile-time choice"
    if frame is None and site.anchor_paths and named_models():
        reason += " [instance not in a model named by smartcompile.name_layers: relative name]"
    choice = dataclasses.replace(choice, layer=layer)
    if (site_id, layer, step) not in INSTANCES and len(INSTANCES) < MAX_INSTANCE_RECORDS:
        INSTANCES[(site_id, layer, step)] = InstanceChoice(layer, step, choice.backend, choice.implementation, reason)
        logger.info("smartattn: %s%s -> %s/%s (%s)", layer, "" if step is None else f" step {step}",
                    choice.backend, choice.implementation, reason)
    return choice
