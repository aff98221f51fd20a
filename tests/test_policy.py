"""Policy format: resolution order, round trip, validation errors that name path/value/allowed."""
import json

import pytest

from smartcompile import Policy, PolicyError
from smartcompile.policies import resolve, unmatched_rules
from smartcompile.policies.schema import SCHEMA_PATH, policy_schema

EXAMPLE = {
    "version": 1,
    "default": {"backend": "auto"},
    "layers": {
        "blocks.0.attn": {"backend": "flash"},
        "blocks.*.cross_attn": {"backend": "flash"},
        "re:blocks\\.(1[0-9]|[2-9])\\.attn": {"backend": "sparge", "sparsity_ratio": 0.5},
        "blocks.5.attn": "off",
        "blocks.[0-1].attn": "sage",
    },
}


@pytest.mark.parametrize(
    "layer, backend, how",
    [
        ("blocks.0.attn", "flash", "exact"),  # exact beats the glob "blocks.[0-1].attn"
        ("blocks.1.attn", "sage", "glob"),  # glob beats nothing else
        ("blocks.7.cross_attn", "flash", "glob"),
        ("blocks.12.attn", "sparge", "regex"),
        ("blocks.5.attn", "off", "exact"),  # exact beats the regex that also matches
        ("head", "auto", "default"),
        ("blocks.0.attn#1", "flash", "exact"),  # second attention of a module matches its base name
    ],
)
def test_resolution_order(layer, backend, how):
    d = resolve(layer, Policy.from_dict(EXAMPLE))
    assert d.backend == backend
    assert (how == "default" and d.rule is None) or d.reason.startswith(how)


def test_regex_first_in_file_order():
    p = Policy.from_dict({"version": 1, "layers": {"re:a\\..*": "sage", "re:a\\.b": "flash"}})
    assert resolve("a.b", p).backend == "sage"


def test_round_trip(tmp_path):
    p = Policy.from_dict({**EXAMPLE, "metadata": {"budget": {"cosine": 0.995}}})
    path = tmp_path / "p.json"
    p.save(path)
    q = Policy.load(path)
    assert q.to_dict() == p.to_dict()
    assert json.loads(path.read_text())["layers"]["blocks.5.attn"] == "off"


def test_params_are_kept():
    p = Policy.from_dict(EXAMPLE)
    d = resolve("blocks.13.attn", p)
    assert d.params == {"sparsity_ratio": 0.5}


BAD = [
    ('{"version": 1,,}', "invalid JSON at line 1"),
    ({"version": 3}, "policy.version: 3 is not supported; supported: [1, 2]"),
    ({"version": 1, "default": "fast"}, "policy.default: backend 'fast' is not allowed; expected one of"),
    ({"version": 1, "layers": {"a": {"backend": "warp"}}}, 'policy.layers["a"].backend: \'warp\' is not allowed'),
    ({"version": 1, "layers": {"a": {"backend": "sage", "sparsity_ratio": 0.5}}},
     'policy.layers["a"].sparsity_ratio: unknown parameter for backend \'sage\'; allowed:'),
    ({"version": 1, "layers": {"a": {"backend": "sparge", "sparsity": 0.5}}}, "unknown parameter for backend 'sparge'"),
    ({"version": 1, "layers": {"a": {"backend": "sparge", "sparsity_ratio": "half"}}},
     'sparsity_ratio: \'half\' has type str; expected float'),
    ({"version": 1, "layers": {"a": {"backend": "sparge", "sparsity_ratio": 1.0}}}, "1.0 is out of range; expected float >= 0.0 < 1.0"),
    ({"version": 1, "layers": {"a": {"backend": "sage", "pv_precision": "int4"}}}, "pv_precision: 'int4' is not allowed; expected one of"),
    ({"version": 1, "layers": {"a": {"backend": "sparge", "topk": 2, "cdf_threshold": 0.9}}}, "give at most one of"),
    ({"version": 1, "layers": {"re:blocks.(": "flash"}}, "invalid regular expression"),
    ({"version": 1, "layers": {"a": {"sparsity_ratio": 0.5}}}, 'missing "backend"'),
    ({"version": 1, "layers": {"a": 3}}, "has type int; expected a backend name"),
    ({"version": 1, "layers": {"a": {"backend": "off", "topk": 1}}}, "backend 'off' takes no parameters"),
    ({"version": 1, "layer": {}}, "unknown key(s) ['layer']"),
    ({"version": 1, "layers": []}, "policy.layers: expected an object"),
    ([1, 2], "expected a JSON object"),
]


@pytest.mark.parametrize("data, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_policies_are_clear(data, message):
    with pytest.raises(PolicyError) as info:
        Policy.loads(data) if isinstance(data, str) else Policy.from_dict(data)
    assert message in str(info.value)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "nope.json")


def test_shipped_schema_is_current():
    assert json.loads(SCHEMA_PATH.read_text()) == policy_schema()


def test_schema_validates_the_example_and_rejects_bad_params():
    import jsonschema

    v = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    assert not list(v.iter_errors(EXAMPLE))
    assert list(v.iter_errors({"version": 1, "default": {"backend": "sage", "sparsity_ratio": 0.3}}))


def test_unmatched_rules_suggest_close_names():
    p = Policy.from_dict({"version": 1, "layers": {"blocks.1.atn": "flash", "blocks.*.attn": "sage"}})
    found = unmatched_rules(p, ["blocks.0.attn", "blocks.1.attn"])
    assert found == [("blocks.1.atn", ["blocks.1.attn", "blocks.0.attn"])]


def test_coerce():
    assert Policy.coerce(None).default.backend == "auto"
    with pytest.raises(PolicyError, match="expected a path, a dict or a Policy"):
        Policy.coerce(3)
