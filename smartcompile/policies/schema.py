"""The policy JSON Schema, generated from the backends' parameter data (one source of truth).

`policy.schema.json` beside this file is the shipped copy for editors and other tools; a test
keeps it equal to `policy_schema()`.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..backends.registry import BACKENDS

SCHEMA_PATH = Path(__file__).with_name("policy.schema.json")
RULE_BACKENDS = tuple(BACKENDS) + ("auto", "off")
_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _param_schema(p) -> dict:
    s: dict = {"description": p.doc}
    types = [_JSON_TYPES[p.kind]] + (["null"] if p.nullable else [])
    s["type"] = types[0] if len(types) == 1 else types
    if p.choices is not None:
        s["enum"] = list(p.choices) + ([None] if p.nullable else [])
    if p.minimum is not None:
        s["minimum"] = p.minimum
    if p.maximum is not None:
        s["exclusiveMaximum" if p.exclusive_maximum else "maximum"] = p.maximum
    return s


def _rule_object_schema(backend: str) -> dict:
    params = BACKENDS[backend].params if backend in BACKENDS else {}
    return {
        "type": "object",
        "properties": {"backend": {"const": backend}, **{n: _param_schema(p) for n, p in params.items()}},
        "required": ["backend"],
        "additionalProperties": False,
    }


def policy_schema() -> dict:
    rule = {
        "oneOf": [{"type": "string", "enum": list(RULE_BACKENDS)}]
        + [_rule_object_schema(b) for b in RULE_BACKENDS if b != "off"]
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "smartcompile attention policy",
        "type": "object",
        "properties": {
            "version": {"const": 1, "description": "format version; defaults to 1 when absent"},
            "default": {"$ref": "#/$defs/rule"},
            "layers": {"type": "object", "additionalProperties": {"$ref": "#/$defs/rule"}},
            "metadata": {"type": "object", "description": "free-form: budget, measurements, hardware fingerprint"},
        },
        "additionalProperties": False,
        "$defs": {"rule": rule},
    }


def write_schema() -> None:
    SCHEMA_PATH.write_text(json.dumps(policy_schema(), indent=2) + "\n")
