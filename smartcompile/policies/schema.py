"""The policy JSON Schema, generated from the backends' parameter data (one source of truth).

`policy.schema.json` beside this file is the shipped copy for editors and other tools; a test
keeps it equal to `policy_schema()`.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..backends.registry import BACKENDS
from .regex_limits import MAX_REGEX_LENGTH
from .step_rules import STEP_RANGE_PATTERN

SCHEMA_PATH = Path(__file__).with_name("policy.schema.json")
RULE_BACKENDS = tuple(BACKENDS) + ("auto", "off")
SCHEMA_ID = "urn:smartcompile:policy-schema:1"  # identifies this schema; not a download location
_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _param_schema(p) -> dict:
    s: dict = {"description": p.doc}
    types = [_JSON_TYPES[p.kind]] + (["null"] if p.nullable else [])
    s["type"] = types[0] if len(types) == 1 else types
    if p.choices is not None:
        s["enum"] = list(p.choices) + ([None] if p.nullable else [])
    if p.minimum is not None:
        s["minimum"] = p.minimum
    if p.upper is not None:
        s["exclusiveMaximum" if p.exclusive_maximum else "maximum"] = p.upper
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
    step_rule = {
        "oneOf": [{"type": "string", "enum": list(RULE_BACKENDS)}]
        + [_rule_object_schema(b) for b in RULE_BACKENDS if b != "off"]
    }
    by_step = {  # version 2 (step_rules.py); overlaps and A <= B are checked in Python
        "type": "object",
        "properties": {
            "by_step": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": STEP_RANGE_PATTERN},
                        "additionalProperties": {"$ref": "#/$defs/step_rule"},
                        "description": "denoising step ranges (\"0-1\", \"2-\", \"5\") to rules"},
            "otherwise": {"$ref": "#/$defs/step_rule", "description": "outside any step; default \"flash\""},
        },
        "required": ["by_step"],
        "additionalProperties": False,
    }
    rule = {"oneOf": [{"$ref": "#/$defs/step_rule"}, by_step]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "smartcompile attention policy",
        "type": "object",
        "properties": {
            "$schema": {"type": "string", "description": "for editors (where to find this schema); ignored"},
            "version": {"enum": [1, 2], "description": "format version; defaults to 1 when absent; 2 for by_step rules"},
            "default": {"$ref": "#/$defs/rule"},
            "layers": {
                "type": "object",
                # "re:" rules: the length limit of regex_limits (the others are not expressible here)
                "propertyNames": {"minLength": 1, "if": {"pattern": "^re:"},
                                  "then": {"maxLength": len("re:") + MAX_REGEX_LENGTH}},
                "additionalProperties": {"$ref": "#/$defs/rule"},
            },
            "metadata": {"type": "object", "description": "free-form: budget, measurements, hardware fingerprint"},
        },
        "additionalProperties": False,
        "$defs": {"rule": rule, "step_rule": step_rule},
    }


def write_schema() -> None:
    SCHEMA_PATH.write_text(json.dumps(policy_schema(), indent=2) + "\n")
