"""The custom ops that rewritten graphs call: torch.ops.smartattn.attention (+ its backward).

Registered on first use (`register_ops()`), never at import. Layer, backend, implementation
and params are literal arguments, so the compiled graph calls the chosen implementation
directly. The backward is exact attention's (recomputed with SDPA), also for quantized or
sparse forwards: training sees exact gradients of the approximated forward's inputs.
"""
from __future__ import annotations

import functools
import json
from types import MappingProxyType
from typing import Callable, Mapping, Optional

import torch

from ..kernels.exact_reference import attention_reference_backward
from ..kernels.output_layout import as_token_major, token_major_like_shape
from .denoising_step import current_step
from .intercept import AttentionCall, current_interceptor
from .registry import get_implementation

_REGISTERED = False

# Bumped whenever what the ops promise changes (their fake outputs' strides, their schemas): Inductor's FX
# graph and AOTAutograd caches key on the graph, not on a custom op's fake, so a graph compiled against an
# older promise would be reused and fail its stride asserts. The compiler adds this to the cache key tag.
OP_CONTRACT = "smartattn-ops-3 (torch.library.Library ops, token-major outputs)"

# (site id, anchor parameters, denoising step) -> (backend, implementation, params, layer): the
# choice for the module instance that is running. Installed by the compiler, which owns policies.
Dispatcher = Callable[[int, list, Optional[int]], tuple]
_DISPATCHER: Optional[Dispatcher] = None


def set_dispatcher(fn: Dispatcher) -> None:
    global _DISPATCHER
    _DISPATCHER = fn


@functools.lru_cache(maxsize=1024)
def _decode_params(params: str) -> Mapping:
    # cached, so every call shares it: read-only (values are JSON scalars, immutable themselves)
    return MappingProxyType(json.loads(params))


def encode_params(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def attention_forward(q, k, v, mask, is_causal, scale, backend, implementation, params, layer) -> torch.Tensor:
    interceptor = current_interceptor()
    if interceptor is not None:  # profiling: capture this call or run a candidate instead
        out = interceptor(AttentionCall(layer, q, k, v, mask, is_causal, scale, backend, implementation,
                                        dict(_decode_params(params))))
        if out is not None:
            return as_token_major(out.to(q.dtype))
    impl = get_implementation(backend, implementation)
    out = impl.run(q, k, v, mask, is_causal, scale, _decode_params(params))
    # the layout the fake below promises, and the one SDPA and our kernels write: usually no copy
    return as_token_major(out)


def attention_by_layer_forward(q, k, v, mask, is_causal, scale, anchors, site) -> torch.Tensor:
    if _DISPATCHER is None:
        raise RuntimeError("smartattn::attention_by_layer called before the smartattn backend set its dispatcher")
    backend, implementation, params, layer = _DISPATCHER(site, anchors, current_step())
    return attention_forward(q, k, v, mask, is_causal, scale, backend, implementation, params, layer)


def attention_backward(grad, q, k, v, mask, is_causal, scale, mask_needs_grad):
    # Autograd does not run inside a custom op's kernel, so the gradient is the explicit formula.
    dq, dk, dv, dmask = attention_reference_backward(grad, q, k, v, mask, is_causal, scale, mask_needs_grad)
    if dmask is None:
        dmask = q.new_empty(0)
    return dq.contiguous(), dk.contiguous(), dv.contiguous(), dmask.contiguous()


# Schemas of the ops. They are defined on a torch.library.Library with our own Autograd kernel, not with
# torch.library.custom_op, whose Python wrappers cost more per call; the cost is paid at every attention call
# of a compiled graph. Measured on the 2-core CI machine's CPU, one thread, tiny SDPA inputs: the op's overhead
# over calling attention_forward directly dropped from ~60 to ~26 us.
_SCHEMAS = {
    "attention": "attention(Tensor q, Tensor k, Tensor v, Tensor? mask, bool is_causal, float scale, str backend, "
                 "str implementation, str params, str layer) -> Tensor",
    "attention_backward": "attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor? mask, "
                          "bool is_causal, float scale, bool mask_needs_grad) -> (Tensor, Tensor, Tensor, Tensor)",
    # The choice is made per call (module instance, denoising step), so a CUDA graph must not freeze it:
    # Inductor keeps this op outside captured graphs (the cudagraph_unsafe tag).
    "attention_by_layer": "attention_by_layer(Tensor q, Tensor k, Tensor v, Tensor? mask, bool is_causal, "
                          "float scale, Tensor[] anchors, int site) -> Tensor",
}
_LIBRARY = None  # the torch.library.Library that owns the ops (kept alive: dropping it would undefine them)


class _AttentionGrad(torch.autograd.Function):
    """Exact attention's gradient for either forward op: the op's first six arguments are (q, k, v, mask,
    is_causal, scale); the rest (the choice, or the anchors and site) get no gradient."""

    @staticmethod
    def forward(ctx, op, q, k, v, mask, is_causal, scale, *rest):
        ctx.save_for_backward(q, k, v, mask)
        ctx.is_causal, ctx.scale, ctx.n_rest = is_causal, scale, len(rest)
        ctx.mask_is_float = mask is not None and mask.is_floating_point()
        return op(q, k, v, mask, is_causal, scale, *rest)  # grad mode is off here: the op's own kernel runs

    @staticmethod
    def backward(ctx, grad):
        q, k, v, mask = ctx.saved_tensors
        mask_needs_grad = bool(ctx.mask_is_float and ctx.needs_input_grad[4])
        dq, dk, dv, dmask = torch.ops.smartattn.attention_backward(
            grad, q, k, v, mask, ctx.is_causal, ctx.scale, mask_needs_grad
        )
        return (None, dq, dk, dv, dmask if mask_needs_grad else None, None, None) + (None,) * ctx.n_rest


def _autograd_kernel(op):
    """The ops' Autograd kernel: _AttentionGrad when a gradient can flow, else straight to the op's kernel."""

    def kernel(q, k, v, mask, is_causal, scale, *rest):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, mask)):
            return _AttentionGrad.apply(op, q, k, v, mask, is_causal, scale, *rest)
        with torch._C._AutoDispatchBelowAutograd():
            return op(q, k, v, mask, is_causal, scale, *rest)

    return kernel


def _attention_fake(q, k, v, mask, is_causal, scale, *rest):
    return token_major_like_shape(q, v.shape[3])


def _backward_fake(grad, q, k, v, mask, is_causal, scale, mask_needs_grad):
    dmask = mask.new_empty(mask.shape) if mask_needs_grad else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), dmask


def register_ops() -> None:
    """Define torch.ops.smartattn.* once per process."""
    global _REGISTERED, _LIBRARY
    if _REGISTERED:
        return
    _REGISTERED = True
    lib = torch.library.Library("smartattn", "DEF")
    # pt2_compliant_tag: as custom_op marked them (torch._dynamo.config.only_allow_pt2_compliant_ops accepts them)
    lib.define(_SCHEMAS["attention"], tags=(torch.Tag.pt2_compliant_tag,))
    lib.define(_SCHEMAS["attention_backward"], tags=(torch.Tag.pt2_compliant_tag,))
    lib.define(_SCHEMAS["attention_by_layer"], tags=(torch.Tag.cudagraph_unsafe, torch.Tag.pt2_compliant_tag))
    # one Python kernel for every device; no mutation, no aliasing (outputs are fresh tensors)
    lib.impl("attention", attention_forward, "CompositeExplicitAutograd")
    lib.impl("attention_by_layer", attention_by_layer_forward, "CompositeExplicitAutograd")
    lib.impl("attention_backward", attention_backward, "CompositeExplicitAutograd")
    lib.impl("attention", _autograd_kernel(torch.ops.smartattn.attention.default), "Autograd")
    lib.impl("attention_by_layer", _autograd_kernel(torch.ops.smartattn.attention_by_layer.default), "Autograd")
    torch.library.register_fake("smartattn::attention", _attention_fake, lib=lib)
    torch.library.register_fake("smartattn::attention_by_layer", _attention_fake, lib=lib)
    torch.library.register_fake("smartattn::attention_backward", _backward_fake, lib=lib)
    _LIBRARY = lib
