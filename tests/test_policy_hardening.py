"""Issue 9, policies: every bad input is a PolicyError that names the JSON path, the value and
what is allowed; nothing that loads can fail or hang later (one regression test per defect)."""
import json
import re
import time
from pathlib import Path

import pytest
import torch

from smartcompile import Policy, PolicyError
from smartcompile.backends.params import INT_PARAM_MAX
from smartcompile.backends.registry import BACKENDS
from smartcompile.policies import resolve
from smartcompile.policies import policy as policy_mod
from smartcompile.policies.policy import MAX_NESTING
from smartcompile.policies.regex_limits import regex_problem
from smartcompile.policies.schema import SCHEMA_ID, SCHEMA_PATH, policy_schema
from smartcompile.spec import AttentionSpec


def _error(data) -> str:
    with pytest.raises(PolicyError) as info:
        Policy.loads(data) if isinstance(data, (str, bytes)) else Policy.from_dict(data)
    return str(info.value)


def _sparge(**params) -> dict:
    return {"version": 1, "layers": {"blocks.0.attn": {"backend": "sparge", **params}}}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_sparsity_ratio_is_rejected(literal):
    text = '{"layers": {"blocks.0.attn": {"backend": "sparge", "sparsity_ratio": %s}}}' % literal
    msg = _error(text)
    assert 'policy.layers["blocks.0.attn"].sparsity_ratio:' in msg
    assert "is not a finite number; expected float >= 0.0 < 1.0" in msg


def test_nan_from_python_is_rejected_too():
    msg = _error(_sparge(cdf_threshold=float("nan")))
    assert 'policy.layers["blocks.0.attn"].cdf_threshold: nan is not a finite number; expected float' in msg


def test_non_finite_metadata_is_rejected():
    msg = _error('{"metadata": {"profile": {"speedup": [1.5, NaN]}}}')
    assert "policy.metadata.profile.speedup[1]: nan is not allowed; numbers must be finite" in msg


def test_all_null_selection_is_rejected():
    msg = _error(_sparge(cdf_threshold=None))
    assert 'policy.layers["blocks.0.attn"].cdf_threshold: null is not allowed here' in msg
    assert "['sparsity_ratio', 'topk', 'cdf_threshold']" in msg
    msg = _error(_sparge(sparsity_ratio=None, topk=None, cdf_threshold=None))
    assert ".sparsity_ratio: null is not allowed here" in msg


def test_a_null_that_leaves_the_default_selection_still_loads_and_resolves():
    policy = Policy.from_dict(_sparge(topk=None))
    params = resolve("blocks.0.attn", policy).params
    spec = AttentionSpec(1, 2, 2, 256, 256, 64, 64, torch.float32, "cpu")
    full = BACKENDS["sparge"].resolve_params(params, spec)
    assert full["cdf_threshold"] == 0.98 and full["topk"] is None


def test_huge_topk_is_rejected():
    msg = _error(_sparge(topk=10**30))
    assert f'policy.layers["blocks.0.attn"].topk: {10**30} is out of range; expected int >= 1 <= {INT_PARAM_MAX}' in msg
    assert Policy.from_dict(_sparge(topk=INT_PARAM_MAX))  # the bound itself is allowed
    assert "an integer of" in _error(_sparge(topk=10**5000))  # too long for repr(): still a clear error


def test_huge_integer_inside_a_rule_is_a_policy_error():
    msg = _error({"layers": {"blocks.0.attn": [10**5000]}})  # repr() of the list raises ValueError
    assert 'policy.layers["blocks.0.attn"]: <a list holding an integer too long to show> has type list' in msg


def test_huge_integer_literal_is_a_policy_error():
    assert "invalid JSON" in _error('{"layers": {"a": {"backend": "sparge", "topk": 1%s}}}' % ("0" * 5000))


def test_integer_layer_key_is_rejected():
    msg = _error({"version": 1, "layers": {3: "flash"}})
    assert "policy.layers[3]: key 3 has type int; keys must be strings" in msg


def test_non_string_keys_anywhere_are_rejected():
    assert "policy.metadata.a[(1, 2)]: key (1, 2) has type tuple" in _error({"metadata": {"a": {(1, 2): 3}}})
    assert "policy.default[3]: key 3 has type int" in _error({"default": {"backend": "sage", 3: 1}})


def test_non_utf8_file_is_rejected(tmp_path):
    path = tmp_path / "p.json"
    path.write_bytes(b'{"version": 1, "default": "fl\xffash"}')
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    assert str(path) in str(info.value) and "not UTF-8 text: byte 0xff at offset 29" in str(info.value)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_file_is_rejected_without_reading_it_all(monkeypatch):
    monkeypatch.setattr(policy_mod, "MAX_POLICY_BYTES", 1024)  # /dev/zero's size reads as 0
    with pytest.raises(PolicyError, match="'/dev/zero' is larger than 1024 bytes"):
        Policy.load("/dev/zero")


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "p.json"
    path.write_bytes(b'\xef\xbb\xbf{"version": 1, "default": "flash"}')
    assert Policy.load(path).default.backend == "flash"


def test_deep_nesting_is_rejected():
    deep = '{"metadata": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001
    assert "nested too deeply to parse; at most 64 levels" in _error(deep)
    just_over = '{"metadata": ' + '{"a": ' * MAX_NESTING + "1" + "}" * (MAX_NESTING + 1)
    assert f"nested more than {MAX_NESTING} levels deep" in _error(just_over)
    at_limit = '{"metadata": ' + '{"a": ' * (MAX_NESTING - 2) + "1" + "}" * (MAX_NESTING - 1)
    assert Policy.loads(at_limit).metadata


def test_catastrophic_regex_is_rejected_fast():
    t0 = time.perf_counter()
    msg = _error({"version": 1, "layers": {"re:(a+)+$": "flash"}})
    assert time.perf_counter() - t0 < 1.0
    assert 'policy.layers["re:(a+)+$"]: regular expression \'(a+)+$\' is not allowed' in msg
    assert "contains a quantifier or '|' and is itself repeated by '+'" in msg and "Allowed: at most 256" in msg


@pytest.mark.parametrize("pattern, problem", [
    ("(a*)*", "repeated by '*'"),
    ("(a|aa)+", "repeated by '+'"),
    ("(?:x?){2,}", "repeated by '{2,}'"),
    ("((ab)+c)+", "repeated by '+'"),
    ("a" * 257, "257 characters long; at most 256"),
    ("a?" * 4, "4 quantifiers; at most 3"),
    (".*(a|b|c).*.*b", "3 quantifier(s) and 2 '|'; at most 4 of them together"),
])
def test_regex_limits(pattern, problem):
    assert problem in (regex_problem(pattern) or "")


@pytest.mark.parametrize("pattern", [
    r"blocks\.(1[0-9]|[2-9])\.attn", r"a\..*", r"(ab)+", r"[ab(+)]+", r"(\.\d+)?", r"\(a+\)+",
    r"down_blocks\.\d+\.attentions\.\d+\.transformer_blocks\.\d+\.attn1", r"(?P<n>\d+)\.attn",
])
def test_ordinary_regexes_are_allowed(pattern):
    assert regex_problem(pattern) is None
    assert Policy.from_dict({"layers": {"re:" + pattern: "flash"}}).layers


@pytest.mark.parametrize("worst", [r"(.*)(.*)(.*)\1\2\3(a|b)x", r".*.*.*(a|a)b"])
def test_allowed_regex_worst_case_stays_fast(worst):
    """The most backtracking the limits allow: about 0.06 s on a 200-character name here (README:
    under 0.1 s); one more quantifier is refused, as it takes seconds."""
    assert regex_problem(worst) is None and regex_problem(".*" + worst) is not None
    t0 = time.perf_counter()
    re.fullmatch(worst, "a" * 200)
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("pattern", ["a{4294967296}", "(" * 60_000 + ")" * 60_000])
def test_regex_that_breaks_re_compile_is_a_policy_error(pattern):
    """re.compile raises OverflowError / RecursionError here, not re.error."""
    assert 'policy.layers["re:' in _error({"layers": {"re:" + pattern: "flash"}})


def test_schema_key_is_accepted_and_kept(tmp_path):
    data = {"$schema": "./policy.schema.json", "version": 1, "default": "flash"}
    policy = Policy.from_dict(data)
    assert policy.default.backend == "flash" and policy.to_dict()["$schema"] == "./policy.schema.json"
    path = tmp_path / "p.json"
    policy.save(path)
    assert Policy.load(path).to_dict() == policy.to_dict()
    assert 'policy["$schema"]: 3 has type int; expected a string' in _error({"$schema": 3})


def test_shipped_schema_has_an_id_and_is_current():
    shipped = json.loads(SCHEMA_PATH.read_text())
    assert shipped["$id"] == SCHEMA_ID and shipped == policy_schema()
    assert shipped["properties"]["$schema"]["type"] == "string"


@pytest.mark.parametrize("data, message", [
    ('"flash"', "policy: expected a JSON object, got str"),
    ({"layers": "flash"}, "policy.layers: expected an object of layer rules, got str"),
    ({"layers": {"a": ["flash"]}}, 'policy.layers["a"]: [\'flash\'] has type list; expected a backend name'),
    ({"default": {"backend": ["x"]}}, "policy.default.backend: ['x'] is not allowed; expected one of"),
    ({"default": 3.5}, "policy.default: 3.5 has type float; expected a backend name"),
    ({"metadata": []}, "policy.metadata: expected an object, got list"),
    ({"metadata": {"a": {1, 2}}}, "policy.metadata.a: set is not JSON data"),
    ({"version": 1.0}, "policy.version: 1.0 is not supported; supported: ["),
    ({"version": True}, "policy.version: True is not supported"),
    ({"layers": {"a": {"backend": "sparge", "block_size": 64.0}}}, "block_size: 64.0 has type float; expected one of"),
    ({"layers": {"": "flash"}}, 'policy.layers[""]: empty layer pattern'),
])
def test_bad_types_at_every_level_are_policy_errors(data, message):
    assert message in _error(data)


def test_loads_rejects_non_text():
    with pytest.raises(PolicyError, match="policy: int is not allowed; expected JSON text"):
        Policy.loads(3)


@pytest.mark.parametrize("make_path", [lambda d: d / "missing.json", lambda d: d])
def test_load_of_a_missing_file_or_a_directory_names_the_path(tmp_path, make_path):
    path = make_path(tmp_path)
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    assert f"cannot read {str(path)!r}" in str(info.value)


@pytest.mark.parametrize("text, key", [('{"layers": {"blocks.0": "flash", "blocks.0": "sage"}}', "blocks.0"),
                                       ('{"default": "flash", "default": "sage"}', "default")])
def test_a_key_given_twice_is_an_error_not_last_wins(text, key):
    assert f"the key {key!r} appears twice in one object" in _error(text)


def test_off_is_a_backend_in_the_object_form_too():
    policy = Policy.from_dict({"version": 2, "default": {"backend": "off"},
                               "layers": {"a": {"by_step": {"0": {"backend": "off"}}, "otherwise": {"backend": "off"}}}})
    assert policy.to_dict()["default"] == "off" and policy.to_dict()["layers"]["a"]["otherwise"] == "off"
    assert "backend 'off' takes no parameters" in _error({"default": {"backend": "off", "block_size": 64}})


def test_step_ranges_take_ascii_digits_only():
    # Python's \d and int() take any Unicode digit; JSON Schema's regexes (the shipped schema) do not
    assert "step range '٣-٥' is not allowed" in _error({"version": 2, "default": {"by_step": {"٣-٥": "sage"}}})
