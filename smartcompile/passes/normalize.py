"""One canonical view of an FX node, whatever spelling produced it.

`canon(node)` maps call_function / call_method / operator spellings of the same operation
(e.g. `a @ b`, `torch.matmul`, `a.matmul`, `torch.bmm`) to one op name with its arguments
bound to parameter names, so the matchers are written once per operation.
"""
from __future__ import annotations

import builtins
import dataclasses
import operator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.fx import Node


@dataclasses.dataclass(frozen=True)
class Canon:
    op: str
    args: dict  # parameter name -> value (Node or literal)
    node: Node

    def get(self, name: str, default: Any = None) -> Any:
        return self.args.get(name, default)


# op name -> parameter names of the function form (input first)
_SIGNATURES = {
    "matmul": ("input", "other"),
    "baddbmm": ("input", "batch1", "batch2", "beta", "alpha"),
    "mul": ("input", "other"),
    "div": ("input", "other", "rounding_mode"),
    "add": ("input", "other", "alpha"),
    "softmax": ("input", "dim", "dtype"),
    "softmax_f": ("input", "dim", "_stacklevel", "dtype"),
    "transpose": ("input", "dim0", "dim1"),
    "dropout": ("input", "p", "training", "inplace"),
    "masked_fill": ("input", "mask", "value"),
    "where": ("condition", "input", "other"),
    "unsqueeze": ("input", "dim"),
    "repeat_interleave": ("input", "repeats", "dim", "output_size"),
    "tril": ("input", "diagonal"),
    "triu": ("input", "diagonal"),
    "eq": ("input", "other"),
    "logical_not": ("input",),
    "sdpa": ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"),
    "getitem": ("input", "index"),
}

_FUNCTIONS = {
    operator.matmul: "matmul", torch.matmul: "matmul", torch.bmm: "matmul", torch.Tensor.matmul: "matmul",
    torch.Tensor.bmm: "matmul", torch.baddbmm: "baddbmm", torch.Tensor.baddbmm: "baddbmm",
    operator.mul: "mul", torch.mul: "mul", torch.Tensor.mul: "mul", operator.imul: "mul",
    operator.truediv: "div", torch.div: "div", torch.true_divide: "div", torch.Tensor.div: "div", operator.itruediv: "div",
    operator.add: "add", torch.add: "add", torch.Tensor.add: "add", operator.iadd: "add",
    torch.softmax: "softmax", torch.Tensor.softmax: "softmax", F.softmax: "softmax_f",
    torch.transpose: "transpose", torch.swapaxes: "transpose", torch.swapdims: "transpose",
    F.dropout: "dropout", torch.dropout: "dropout",
    torch.masked_fill: "masked_fill", torch.where: "where", torch.unsqueeze: "unsqueeze",
    torch.repeat_interleave: "repeat_interleave", torch.tril: "tril", torch.triu: "triu",
    operator.eq: "eq", torch.eq: "eq", torch.logical_not: "logical_not", operator.invert: "logical_not",
    torch.bitwise_not: "logical_not", F.scaled_dot_product_attention: "sdpa",
    torch._C._nn.scaled_dot_product_attention: "sdpa", operator.getitem: "getitem",
}
try:  # torch.special.softmax exists on every supported torch, but is not a torch.* alias
    _FUNCTIONS[torch.special.softmax] = "softmax"
except AttributeError:  # pragma: no cover
    pass

_METHODS = {
    "matmul": "matmul", "__matmul__": "matmul", "bmm": "matmul", "baddbmm": "baddbmm",
    "mul": "mul", "__mul__": "mul", "mul_": "mul", "div": "div", "__truediv__": "div", "true_divide": "div", "div_": "div",
    "add": "add", "__add__": "add", "add_": "add", "softmax": "softmax", "transpose": "transpose",
    "swapaxes": "transpose", "swapdims": "transpose", "masked_fill": "masked_fill", "masked_fill_": "masked_fill",
    "unsqueeze": "unsqueeze", "repeat_interleave": "repeat_interleave", "tril": "tril", "triu": "triu",
    "eq": "eq", "logical_not": "logical_not", "bitwise_not": "logical_not", "__invert__": "logical_not",
}
# ops whose arguments are variadic or irregular: kept as positional lists
_VARIADIC_FUNCTIONS = {torch.permute: "permute", torch.einsum: "einsum", torch.reshape: "reshape"}
_VARIADIC_METHODS = {"permute": "permute", "expand": "expand", "reshape": "reshape", "view": "reshape"}
_CAST_METHODS = {"to", "float", "half", "bfloat16", "double", "type", "type_as", "contiguous", "bool"}


def _bind(names: tuple, args: tuple, kwargs: dict) -> dict:
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


def canon(node: Node) -> Optional[Canon]:
    """The canonical form of `node`, or None for anything the matchers do not know."""
    if node.op == "call_function":
        target = node.target
        if target is builtins.getattr and len(node.args) == 2 and node.args[1] == "mT":
            return Canon("transpose", {"input": node.args[0], "dim0": -2, "dim1": -1}, node)
        if target in _VARIADIC_FUNCTIONS:
            return _variadic(_VARIADIC_FUNCTIONS[target], node, node.args, node.kwargs)
        name = _FUNCTIONS.get(target)
        if name is None:
            name = _einsum_alias(target)
            if name is None:
                return None
            return _variadic(name, node, node.args, node.kwargs)
        return _make(name, node, node.args, node.kwargs)
    if node.op == "call_method":
        method = node.target
        if method in _CAST_METHODS:
            return Canon("cast", {"input": node.args[0]}, node)
        if method in _VARIADIC_METHODS:
            return _variadic(_VARIADIC_METHODS[method], node, node.args, node.kwargs)
        name = _METHODS.get(method)
        if name is None:
            return None
        return _make(name, node, node.args, node.kwargs)
    return None


def _einsum_alias(target) -> Optional[str]:
    fn = getattr(torch.functional, "einsum", None)
    return "einsum" if target is fn else None


def _make(name: str, node: Node, args: tuple, kwargs: dict) -> Canon:
    sig = _SIGNATURES[name]
    bound = _bind(sig, args, dict(kwargs))
    if name == "softmax_f":
        name = "softmax"
    if name in ("dropout",):
        bound.setdefault("p", 0.5)
        bound.setdefault("training", True)
        if "train" in bound:
            bound["training"] = bound.pop("train")
    if name == "add":
        bound.setdefault("alpha", 1)
    if name == "baddbmm":
        bound.setdefault("beta", 1)
        bound.setdefault("alpha", 1)
    if name in ("tril", "triu"):
        bound.setdefault("diagonal", 0)
    return Canon(name, bound, node)


def _variadic(name: str, node: Node, args: tuple, kwargs: dict) -> Canon:
    if name == "einsum":
        equation, *operands = args
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = list(operands[0])
        return Canon("einsum", {"equation": equation, "operands": list(operands)}, node)
    inp, *rest = args
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        rest = list(rest[0])
    for key in ("dims", "shape", "size"):
        if key in kwargs:
            rest = list(kwargs[key])
    return Canon(name, {"input": inp, "sizes": list(rest)}, node)


# ---- helpers over fake-tensor metadata ---------------------------------------------------
def meta_value(node: Any):
    """The fake tensor (or other example value) recorded by Dynamo, or None."""
    if not isinstance(node, Node):
        return None
    return node.meta.get("example_value", node.meta.get("val"))


def meta_tensor(node: Any) -> Optional[torch.Tensor]:
    v = meta_value(node)
    return v if isinstance(v, torch.Tensor) else None


def ndim(node: Any) -> Optional[int]:
    t = meta_tensor(node)
    return None if t is None else t.dim()


def norm_dim(dim: Any, rank: Optional[int]) -> Optional[int]:
    if not isinstance(dim, int) or isinstance(dim, bool) or rank is None:
        return None
    return dim + rank if dim < 0 else dim


_INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv, operator.ipow,
                      operator.imatmul, operator.iand, operator.ior, operator.ixor, operator.imod,
                      operator.ilshift, operator.irshift}


def _trailing_underscore(name: str) -> bool:
    return name.endswith("_") and not name.endswith("__")


def is_inplace(node: Node) -> bool:
    """Whether `node` writes into one of its inputs (x.mul_(...), x *= y, out=..., inplace=True).
    Such a node is a side effect: the matchers never fold it away or treat it as a pure value."""
    if node.op not in ("call_function", "call_method"):
        return False
    if "out" in node.kwargs or node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_method":
        return _trailing_underscore(str(node.target))
    if node.target in _INPLACE_OPERATORS:
        return True
    if node.target in (F.dropout, torch.dropout) and (len(node.args) > 3 and node.args[3] is True):
        return True
    return _trailing_underscore(getattr(node.target, "__name__", ""))


def is_cast(c: Optional[Canon]) -> bool:
    """Shape-preserving dtype/layout conversion (to, float, type_as, contiguous, ...)."""
    if c is None or c.op != "cast":
        return False
    a, b = meta_tensor(c.get("input")), meta_tensor(c.node)
    return a is not None and b is not None and tuple(a.shape) == tuple(b.shape) and a.device == b.device
