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
import math
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional, Union

import jsonschema

from ..backends.params import show_value
from ..backends.registry import BACKENDS
from ..errors import PolicyError
from .regex_limits import describe_limits, regex_problem
from .schema import POLICY_VERSION, STEP_RULES_VERSION, SUPPORTED_VERSIONS, policy_schema, rule_backends
from .step_rules import parse_by_step

TOP_LEVEL_KEYS = ("$schema", "version", "default", "layers", "metadata")
MAX_NESTING = 64  # levels of objects/arrays; a profiled policy uses about 6
MAX_POLICY_BYTES = 64 * 2**20  # a profiled policy of a large model is well under 1 MiB
MAX_METADATA_INT = 2**63  # metadata integers must survive other JSON readers (int64)
_JSON_SCALARS = (str, int, float, bool, type(None))


@dataclasses.dataclass(frozen=True)
class Rule:
    backend: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    # version 2: ((first step, last step or None for open, Rule), ...); `backend`/`params` are
    # then the step-less form, used outside any step and for steps no range covers
    by_step: tuple = ()

    def at_step(self, step: Optional[int]) -> "Rule":
        """The rule for denoising step `step` (None: outside any step)."""
        if step is not None:
            for first, last, rule in self.by_step:
                if first <= step and (last is None or step <= last):
                    return rule
        return self

    def to_json(self) -> Union[str, dict]:
        if self.by_step:
            ranges = {(f"{a}" if a == b else f"{a}-{'' if b is None else b}"): r.to_json() for a, b, r in self.by_step}
            return {"by_step": ranges, "otherwise": dataclasses.replace(self, by_step=()).to_json()}
        return self.backend if not self.params else {"backend": self.backend, **self.params}


def _path(base: str, key: Any, bracket: bool = False) -> str:
    """JSON path of `base[key]`: base.key for identifiers unless `bracket`, else base["key"]."""
    if not isinstance(key, str):
        return f"{base}[{show_value(key)}]"
    return f"{base}.{key}" if key.isidentifier() and not bracket else f"{base}[{json.dumps(key, ensure_ascii=False)}]"


def _selection_problem(backend: str, params: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """(param, problem) when explicit nulls leave an exclusive group (e.g. Sparge's block
    selection) with no member set: such a rule would load and then fail at run time."""
    specs = BACKENDS[backend].params
    for group in BACKENDS[backend].exclusive_params:
        if any(params.get(g) is not None for g in group):
            continue
        nulled = [g for g in group if g in params]
        defaults = {g: specs[g].default for g in group if specs[g].default is not None}
        if nulled and all(g in nulled for g in defaults):
            shown = ", ".join(f"{g} {v}" for g, v in defaults.items())
            return nulled[0], (f"null is not allowed here: with {nulled} null, none of {list(group)} is set; "
                               f"give one of them a value, or leave {nulled[0]} out (default: {shown})")
    return None


def parse_rule(value: Any, where: str) -> Rule:
    """One rule (a backend name, an object with "backend" and its parameters, or a per-step
    "by_step" object); errors name `where`."""
    if isinstance(value, dict) and "by_step" in value:
        otherwise, ranges = parse_by_step(value, where, parse_rule, _path)
        return dataclasses.replace(parse_rule(otherwise, _path(where, "otherwise")), by_step=ranges)
    names = rule_backends()
    if isinstance(value, str):
        if value not in names:
            raise PolicyError(f"{where}: backend {show_value(value)} is not allowed; expected one of {list(names)}")
        return Rule(value)
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: {show_value(value)} has type {type(value).__name__}; expected a backend name "
                          "or an object with \"backend\"")
    if "backend" not in value:
        raise PolicyError(f"{where}: missing \"backend\"; expected one of {list(names)}")
    backend = value["backend"]
    if not isinstance(backend, str) or backend not in names:
        raise PolicyError(f"{where}.backend: {show_value(backend)} is not allowed; expected one of {list(names)}")
    params = {k: v for k, v in value.items() if k != "backend"}
    if backend in ("off", "auto") and params:
        raise PolicyError(f"{where}: backend {backend!r} takes no parameters; got {sorted(map(str, params))}")
    if backend in BACKENDS:
        for name, problem in BACKENDS[backend].params_problems(params):
            raise PolicyError(f"{_path(where, name)}: {problem}")
        selection = _selection_problem(backend, params)
        if selection is not None:
            raise PolicyError(f"{_path(where, selection[0])}: {selection[1]}")
    return Rule(backend, MappingProxyType(dict(params)))


def _container_children(value: Any, path: str) -> list[tuple[Any, str]]:
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise PolicyError(f"{_path(path, key)}: key {show_value(key)} has type {type(key).__name__}; "
                                  "keys must be strings")
        return [(v, _path(path, k)) for k, v in value.items()]
    return [(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _check_json_data(data: Any, where: str, numbers: bool) -> None:
    """Raise PolicyError at the first part of `data` JSON cannot carry faithfully: nesting deeper
    than MAX_NESTING, a non-string key, a non-JSON type; with `numbers`, also NaN/inf and integers
    past MAX_METADATA_INT. Iterative, so depth itself cannot overflow the stack here."""
    stack = [(data, where, 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth >= MAX_NESTING:
                raise PolicyError(f"{path}: nested more than {MAX_NESTING} levels deep; at most {MAX_NESTING} "
                                  "levels of objects and arrays are allowed")
            stack.extend((v, p, depth + 1) for v, p in reversed(_container_children(value, path)))
        elif not isinstance(value, _JSON_SCALARS):
            raise PolicyError(f"{path}: {type(value).__name__} is not JSON data; expected an object, array, "
                              "string, number, boolean or null")
        elif numbers and isinstance(value, float) and not math.isfinite(value):
            raise PolicyError(f"{path}: {value!r} is not allowed; numbers must be finite")
        elif numbers and isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_METADATA_INT:
            raise PolicyError(f"{path}: {show_value(value)} is out of range; integers must be within ±2**63")


def _parse_layers(layers_raw: Any, where: str) -> dict:
    if not isinstance(layers_raw, dict):
        raise PolicyError(f"{where}: expected an object of layer rules, got {type(layers_raw).__name__}")
    layers = {}
    for key, value in layers_raw.items():
        path = _path(where, key, bracket=True)  # layer paths contain dots: always quoted
        if not key:
            raise PolicyError(f"{path}: empty layer pattern; expected a layer path, a glob or \"re:\" + a regex")
        if key.startswith("re:"):
            _check_regex(key[3:], path)
        layers[key] = parse_rule(value, path)
    return layers


def _check_regex(pattern: str, path: str) -> None:
    problem = regex_problem(pattern)  # first: the length limit also keeps re.compile's recursion shallow
    if problem is not None:
        raise PolicyError(f"{path}: regular expression {show_value(pattern)} is not allowed: {problem}. "
                          f"Allowed: {describe_limits()} (Python's re has no timeout)")
    try:
        re.compile(pattern)
    except (re.error, OverflowError) as exc:  # OverflowError: a repeat count such as {4294967296}
        raise PolicyError(f"{path}: invalid regular expression {show_value(pattern)}: {exc}") from None


def _parse_version(version: Any, where: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_VERSIONS:
        raise PolicyError(f"{where}: {show_value(version)} is not supported; supported: {list(SUPPORTED_VERSIONS)}")
    return version


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")  # tolerate the BOM some editors write
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{source}: policy: not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                          "is invalid; policy files must be UTF-8 encoded JSON") from None


def _read_policy_bytes(p: Path) -> bytes:
    """The file's bytes; reads at most one byte past the limit, so that neither a huge file nor
    a device such as /dev/zero (whose size reads as 0) is read without end."""
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"policy: cannot read {str(p)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a NUL character in the path
        raise PolicyError(f"policy: cannot read {str(p)!r}: {exc}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy: {str(p)!r} is larger than {MAX_POLICY_BYTES} bytes; at most that is allowed")
    return raw


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _without_duplicate_keys(pairs: list) -> dict:
    """json.loads' object hook: a policy file naming one layer (or "default") twice is ambiguous, not last-wins."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


@dataclasses.dataclass(frozen=True)
class Policy:
    default: Rule = Rule("auto")
    layers: Mapping[str, Rule] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    version: int = POLICY_VERSION
    source: str = "<dict>"  # where it was loaded from, for messages
    schema_ref: Optional[str] = None  # the file's "$schema" (for editors): kept on round trip, else ignored

    @property
    def has_step_rules(self) -> bool:
        """Whether a rule depends on the denoising step (then choices are made per call)."""
        return any(r.by_step for r in [self.default, *self.layers.values()])

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "Policy":
        where = "policy"
        if not isinstance(data, dict):
            raise PolicyError(f"{source}: {where}: expected a JSON object, got {type(data).__name__}")
        try:
            _check_json_data(data, where, numbers=False)
            unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
            if unknown:
                raise PolicyError(f"{where}: unknown key(s) {unknown}; allowed: {list(TOP_LEVEL_KEYS)}")
            schema_ref = data.get("$schema")
            if schema_ref is not None and not isinstance(schema_ref, str):
                raise PolicyError(f'{where}["$schema"]: {show_value(schema_ref)} has type {type(schema_ref).__name__}; '
                                  "expected a string (a schema location for editors)")
            version = _parse_version(data.get("version", POLICY_VERSION), f"{where}.version")
            default = parse_rule(data.get("default", "auto"), f"{where}.default")
            layers = _parse_layers(data.get("layers", {}), f"{where}.layers")
            stepped = [w for w, r in [(f"{where}.default", default)] + [(_path(f"{where}.layers", k, True), r)
                                                                           for k, r in layers.items()] if r.by_step]
            if stepped and version < STEP_RULES_VERSION:
                raise PolicyError(f"{stepped[0]}.by_step: per-step rules need \"version\": {STEP_RULES_VERSION} "
                                  f"(the file says {version})")
            metadata = data.get("metadata", {})
            if not isinstance(metadata, dict):
                raise PolicyError(f"{where}.metadata: expected an object, got {type(metadata).__name__}")
            _check_json_data(metadata, f"{where}.metadata", numbers=True)
            # The shipped schema must agree; anything it still rejects is reported with its path.
            errors = sorted(jsonschema.Draft202012Validator(policy_schema()).iter_errors(data), key=lambda e: list(e.path))
            if errors:
                e = errors[0]
                loc = where
                for part in e.path:
                    loc = _path(loc, part)
                raise PolicyError(f"{loc}: {e.message}")
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None
        return cls(default, MappingProxyType(layers), MappingProxyType(dict(metadata)), version, source, schema_ref)

    @classmethod
    def loads(cls, text: Union[str, bytes], source: str = "<string>") -> "Policy":
        if isinstance(text, (bytes, bytearray)):
            text = _decode(bytes(text), source)
        if not isinstance(text, str):
            raise PolicyError(f"{source}: policy: {type(text).__name__} is not allowed; expected JSON text (str or bytes)")
        try:
            data = json.loads(text, object_pairs_hook=_without_duplicate_keys)
        except _DuplicateKey as exc:
            raise PolicyError(f"{source}: the key {exc.key!r} appears twice in one object; JSON readers keep "
                              "only one of them (which one differs between tools): keep one rule per key") from None
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise PolicyError(f"{source}: policy: nested too deeply to parse; at most {MAX_NESTING} levels of "
                              "objects and arrays are allowed") from None
        except ValueError as exc:  # e.g. an integer literal past Python's 4300-digit limit
            raise PolicyError(f"{source}: invalid JSON: {exc}") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Policy":
        p = Path(path)
        return cls.loads(_read_policy_bytes(p), str(p))

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
        d: dict = {"$schema": self.schema_ref} if self.schema_ref is not None else {}
        d.update({"version": self.version, "default": self.default.to_json()})
        d["layers"] = {k: r.to_json() for k, r in self.layers.items()}
        if self.metadata:
            d["metadata"] = dict(self.metadata)
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")
