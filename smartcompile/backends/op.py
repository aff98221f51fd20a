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
OP_CONTRACT = "smartattn-ops-2 (token-major outputs)"

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


def register_ops() -> None:
    """Define torch.ops.smartattn.* once per process."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True

    @torch.library.custom_op("smartattn::attention", mutates_args=())
    def attention(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], is_causal: bool,
        scale: float, backend: str, implementation: str, params: str, layer: str,
    ) -> torch.Tensor:
        return attention_forward(q, k, v, mask, is_causal, scale, backend, implementation, params, layer)

    @attention.register_fake
    def _(q, k, v, mask, is_causal, scale, backend, implementation, params, layer):
        return token_major_like_shape(q, v.shape[3])

    @torch.library.custom_op("smartattn::attention_backward", mutates_args=())
    def backward_op(
        grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
        is_causal: bool, scale: float, mask_needs_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return attention_backward(grad, q, k, v, mask, is_causal, scale, mask_needs_grad)

    @backward_op.register_fake
    def _(grad, q, k, v, mask, is_causal, scale, mask_needs_grad):
        dmask = mask.new_empty(mask.shape) if mask_needs_grad else q.new_empty(0)
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), dmask

    def setup_context(ctx, inputs, output):
        q, k, v, mask, is_causal, scale = inputs[:6]
        ctx.save_for_backward(q, k, v, mask)
        ctx.is_causal, ctx.scale = is_causal, scale
        ctx.mask_is_float = mask is not None and mask.is_floating_point()
        # gradients of the non-tensor inputs: None each, as a list for a list input (the anchors)
        ctx.no_grads = tuple([None] * len(x) if isinstance(x, (list, tuple)) else None for x in inputs[4:])

    def backward(ctx, grad):
        q, k, v, mask = ctx.saved_tensors
        mask_needs_grad = bool(ctx.mask_is_float and ctx.needs_input_grad[3])
        dq, dk, dv, dmask = torch.ops.smartattn.attention_backward(
            grad, q, k, v, mask, ctx.is_causal, ctx.scale, mask_needs_grad
        )
        return (dq, dk, dv, (dmask if mask_needs_grad else None)) + ctx.no_grads

    attention.register_autograd(backward, setup_context=setup_context)

    # The choice is made per call (module instance, denoising step), so a CUDA graph must not
    # freeze it: Inductor keeps this op outside captured graphs.
    @torch.library.custom_op("smartattn::attention_by_layer", mutates_args=(), tags=(torch.Tag.cudagraph_unsafe,))
    def attention_by_layer(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], is_causal: bool,
        scale: float, anchors: list[torch.Tensor], site: int,
    ) -> torch.Tensor:
        return attention_by_layer_forward(q, k, v, mask, is_causal, scale, anchors, site)

    @attention_by_layer.register_fake
    def _(q, k, v, mask, is_causal, scale, anchors, site):
        return token_major_like_shape(q, v.shape[3])

    attention_by_layer.register_autograd(backward, setup_context=setup_context)
