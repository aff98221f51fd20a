"""The policy JSON Schema, generated from the backends' parameter data (one source of truth).

`policy.schema.json` beside this file is the shipped copy for editors and other tools; a test
keeps it equal to `policy_schema()` (after changing a
backend's parameters: `python -c "from smartcompile.policies.schema import write_schema; write_schema()"`).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..backends.registry import BACKENDS, RESERVED_NAMES
from .regex_limits import MAX_REGEX_LENGTH
from .step_rules import STEP_RANGE_PATTERN

SCHEMA_PATH = Path(__file__).with_name("policy.schema.json")
SCHEMA_ID = "urn:smartcompile:policy-schema:1"  # identifies this schema; not a download location
POLICY_VERSION = 1  # what a policy without per-step rules is written as
STEP_RULES_VERSION = 2  # per-step rules ("by_step")
SUPPORTED_VERSIONS = (POLICY_VERSION, STEP_RULES_VERSION)
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


def rule_backends() -> tuple[str, ...]:
    """What a rule may name: every registered backend, "auto" and "off"."""
    return tuple(BACKENDS) + RESERVED_NAMES


def _rule_object_schema(backend: str) -> dict:
    params = BACKENDS[backend].params if backend in BACKENDS else {}
    return {
        "type": "object",
        "properties": {"backend": {"const": backend}, **{n: _param_schema(p) for n, p in params.items()}},
        "required": ["backend"],
        "additionalProperties": False,
    }


def policy_schema() -> dict:
    names = rule_backends()
    step_rule = {
        "oneOf": [{"type": "string", "enum": list(names)}] + [_rule_object_schema(b) for b in names]
    }
    by_step = {  # STEP_RULES_VERSION (step_rules.py); overlaps and A <= B are checked in Python
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
            "version": {"enum": list(SUPPORTED_VERSIONS),
                        "description": f"format version; defaults to {POLICY_VERSION} when absent; "
                                       f"{STEP_RULES_VERSION} for by_step rules"},
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
