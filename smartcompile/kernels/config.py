"""The settings of the Sage and Sparge numerics, one frozen object each, shared by the pure-torch
references and the Triton kernels (the backends build them once from a policy rule's params).

Each field carries its rule (a `FieldRule` in its metadata): what it accepts beyond its annotated type,
and what it means. The configs check their fields against these rules, and backends/params.py builds
the policy parameters from the same rules, so a range or a choice is written once, here."""
from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Optional

from .constants import KV_BLOCK, PV_PRECISIONS


@dataclasses.dataclass(frozen=True)
class FieldRule:
    """What a field accepts besides its annotated type (None where that is Optional), and its meaning."""
    doc: str
    choices: Optional[tuple] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_maximum: bool = False
    allowed: Optional[str] = None  # the errors' words for what is allowed, where plainer than the derived ones

    def accepts(self, kind: type, value: Any) -> bool:
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float) if kind is float else kind):
            return False  # a bool is no int here, and an int is a float
        if self.choices is not None and value not in self.choices:
            return False
        if self.minimum is not None and not value >= self.minimum:  # `not >=`: NaN is outside every range
            return False
        return self.maximum is None or (value < self.maximum if self.exclusive_maximum else value <= self.maximum)

    def describe(self, kind: type, nullable: bool) -> str:
        if self.allowed is not None:
            text = self.allowed
        elif self.choices is not None:
            text = f"one of {self.choices}"
        elif kind is bool:
            text = "a bool"
        else:
            text = "an int" if kind is int else "a number"
            if self.minimum is not None and self.maximum is not None:
                text += f" in [{self.minimum:g}, {self.maximum:g}{')' if self.exclusive_maximum else ']'}"
            elif self.minimum is not None:
                text += f" >= {self.minimum:g}"
        return f"None or {text}" if nullable else text


def _field(default, doc: str, **rule):
    return dataclasses.field(default=default, metadata={"rule": FieldRule(doc, **rule)})


@functools.lru_cache(maxsize=None)
def field_rule(cls: type, name: str) -> tuple[type, bool, Any, FieldRule]:
    """(type, whether None is allowed, default, rule) of the config field `name`."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    kind = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(kind) if a is not type(None)]  # Optional[X] -> X
    return (args[0] if args else kind), bool(args), field.default, field.metadata["rule"]


def _check_fields(config) -> None:
    cls = type(config)
    for f in dataclasses.fields(cls):
        kind, nullable, _, rule = field_rule(cls, f.name)
        value = getattr(config, f.name)
        if not ((nullable and value is None) or rule.accepts(kind, value)):
            raise ValueError(f"{cls.__name__}.{f.name}: got {value!r}; allowed: {rule.describe(kind, nullable)}")


@dataclasses.dataclass(frozen=True)
class SageConfig:
    """INT8 Q/K per block (Q per `block_q` tokens, K per `block_k`), K smoothed when `smooth`,
    P and V in `pv_precision`, FP32 accumulation."""
    pv_precision: str = _field("fp8", "precision of P and V in the P.V product", choices=PV_PRECISIONS)
    smooth: bool = _field(True, "subtract K's mean over tokens before quantizing (exact)")
    block_q: int = _field(64, "query tokens per quantization (and sparsity) block", minimum=1,
                          allowed="a positive int")
    block_k: int = _field(KV_BLOCK, "key tokens per quantization (and sparsity) block", minimum=1,
                          allowed="a positive int")

    def __post_init__(self):
        _check_fields(self)


SELECTIONS = ("cdf_threshold", "topk", "sparsity_ratio")  # how Sparge picks K blocks: exactly one


@dataclasses.dataclass(frozen=True)
class SpargeConfig(SageConfig):
    """Sage numerics over the K blocks a predictor keeps per query block (sparge_reference's docstring
    has the rules). Exactly one of cdf_threshold / topk / sparsity_ratio selects."""
    sim_threshold: float = _field(0.6, "blocks whose tokens' mean cosine is below this are never skipped",
                                  minimum=-1.0, maximum=1.0)
    cdf_threshold: Optional[float] = _field(None, "keep K blocks until their predicted attention mass reaches this",
                                            minimum=0.0, maximum=1.0)
    topk: Optional[int] = _field(None, "K blocks kept per query block", minimum=1)
    sparsity_ratio: Optional[float] = _field(None, "fraction of (valid) K blocks skipped per query block",
                                             minimum=0.0, maximum=1.0, exclusive_maximum=True)
    pv_threshold: Optional[float] = _field(
        None, "skip P.V of a block whose row maxima trail the running max by more (log2 units)", minimum=0.0)
    sink: bool = _field(False, "always keep the first K block (attention sink)")

    def __post_init__(self):
        super().__post_init__()
        chosen = [n for n in SELECTIONS if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(f"{type(self).__name__}: give exactly one of {', '.join(SELECTIONS)} "
                             f"(got {chosen or 'none'})")
