"""Policy: versioned JSON of per-layer rules. Loading is data only (no pickle, no eval).

    {"version": 1,
     "default": {"backend": "auto"},
     "layers": {"blocks.0.attn": {"backend": "flash"},
                "blocks.*.cross_attn": "flash",
                "re:blocks\\\\.(1[0-9])\\\\.attn": {"backend": "sparge", "sparsity_ratio": 0.5},
                "blocks.5.attn": "off"},
     "metadata": {...}}

A rule is a backend name ("flash", "sage", "sparge", "auto", "off") or an object with
"backend" and that backend's parameters. Keys: exact layer path, glob (* ? [..]), or "re:"
regex (full match).
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Union

import jsonschema

from ..backends.registry import BACKENDS
from ..errors import PolicyError
from .schema import RULE_BACKENDS, policy_schema

POLICY_VERSION = 1
SUPPORTED_VERSIONS = (1,)
TOP_LEVEL_KEYS = ("version", "default", "layers", "metadata")


@dataclasses.dataclass(frozen=True)
class Rule:
    backend: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> Union[str, dict]:
        return self.backend if not self.params else {"backend": self.backend, **self.params}


def _path(base: str, key: str) -> str:
    return f'{base}["{key}"]' if not key.isidentifier() else f"{base}.{key}"


def parse_rule(value: Any, where: str) -> Rule:
    """One rule (a backend name, or an object with "backend" and its parameters); errors name `where`."""
    if isinstance(value, str):
        if value not in RULE_BACKENDS:
            raise PolicyError(f"{where}: backend {value!r} is not allowed; expected one of {list(RULE_BACKENDS)}")
        return Rule(value)
    if not isinstance(value, dict):
        raise PolicyError(
            f"{where}: {value!r} has type {type(value).__name__}; expected a backend name or an object with \"backend\""
        )
    if "backend" not in value:
        raise PolicyError(f"{where}: missing \"backend\"; expected one of {list(RULE_BACKENDS)}")
    backend = value["backend"]
    if backend not in RULE_BACKENDS:
        raise PolicyError(f"{where}.backend: {backend!r} is not allowed; expected one of {list(RULE_BACKENDS)}")
    params = {k: v for k, v in value.items() if k != "backend"}
    if backend in ("off", "auto") and params:
        raise PolicyError(f"{where}: backend {backend!r} takes no parameters; got {sorted(params)}")
    if backend in BACKENDS:
        for name, problem in BACKENDS[backend].params_problems(params):
            raise PolicyError(f"{_path(where, name)}: {problem}")
    return Rule(backend, MappingProxyType(dict(params)))


@dataclasses.dataclass(frozen=True)
class Policy:
    default: Rule = Rule("auto")
    layers: Mapping[str, Rule] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    version: int = POLICY_VERSION
    source: str = "<dict>"  # where it was loaded from, for messages

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "Policy":
        where = "policy"
        if not isinstance(data, dict):
            raise PolicyError(f"{source}: {where}: expected a JSON object, got {type(data).__name__}")
        try:
            unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
            if unknown:
                raise PolicyError(f"{where}: unknown key(s) {unknown}; allowed: {list(TOP_LEVEL_KEYS)}")
            version = data.get("version", POLICY_VERSION)
            if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
                raise PolicyError(f"{where}.version: {version!r} is not supported; supported: {list(SUPPORTED_VERSIONS)}")
            default = parse_rule(data.get("default", "auto"), f"{where}.default")
            layers_raw = data.get("layers", {})
            if not isinstance(layers_raw, dict):
                raise PolicyError(f"{where}.layers: expected an object of layer rules, got {type(layers_raw).__name__}")
            layers = {}
            for key, value in layers_raw.items():
                path = f'{where}.layers["{key}"]'
                if not key:
                    raise PolicyError(f"{path}: empty layer pattern")
                if key.startswith("re:"):
                    try:
                        re.compile(key[3:])
                    except re.error as exc:
                        raise PolicyError(f"{path}: invalid regular expression {key[3:]!r}: {exc}") from None
                layers[key] = parse_rule(value, path)
            metadata = data.get("metadata", {})
            if not isinstance(metadata, dict):
                raise PolicyError(f"{where}.metadata: expected an object, got {type(metadata).__name__}")
            # The shipped schema must agree; anything it still rejects is reported with its path.
            errors = sorted(jsonschema.Draft202012Validator(policy_schema()).iter_errors(data), key=lambda e: list(e.path))
            if errors:
                e = errors[0]
                loc = where + "".join(f"[{p!r}]" for p in e.path)
                raise PolicyError(f"{loc}: {e.message}")
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None
        return cls(default, MappingProxyType(layers), MappingProxyType(dict(metadata)), version, source)

    @classmethod
    def loads(cls, text: str, source: str = "<string>") -> "Policy":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Policy":
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise PolicyError(f"policy: cannot read {str(p)!r}: {exc.strerror}") from None
        return cls.loads(text, str(p))

    @classmethod
    def coerce(cls, value: Any) -> "Policy":
        """None (auto everywhere), a path, a dict or a Policy."""
        if value is None:
            return cls()
        if isinstance(value, Policy):
            return value
        if isinstance(value, (str, Path)):
            return cls.load(value)
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise PolicyError(f"policy: {type(value).__name__} is not allowed; expected a path, a dict or a Policy")

    @classmethod
    def uniform(cls, backend: str, params: Mapping[str, Any] = MappingProxyType({})) -> "Policy":
        return cls.from_dict({"version": POLICY_VERSION, "default": {"backend": backend, **params}})

    # ---- output -------------------------------------------------------------------
    def to_dict(self) -> dict:
        d: dict = {"version": self.version, "default": self.default.to_json()}
        d["layers"] = {k: r.to_json() for k, r in self.layers.items()}
        if self.metadata:
            d["metadata"] = dict(self.metadata)
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(self.dumps())
