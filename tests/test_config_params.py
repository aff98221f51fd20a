"""The sage/sparge policy parameters are built from the kernel configs' field rules (kernels/config.py):
the policy check and the config check accept the same values, except where the policy narrows or
widens a field on purpose."""
import dataclasses

import pytest

from smartcompile.backends.params import INT_PARAM_MAX
from smartcompile.backends.sage import CONFIG_FIELD, SAGE_PARAMS, config_fields
from smartcompile.backends.sparge import SPARGE, SPARGE_PARAMS
from smartcompile.kernels.config import SELECTIONS, SageConfig, SpargeConfig, field_rule

VALUES = [None, True, False, "fp8", "fp16", "auto", "fp32", -2, -1, -1.0, -0.5, 0, 0.0, 0.5, 0.98, 1, 1.0, 1.5, 2,
          64, 128, 96, INT_PARAM_MAX]


@pytest.mark.parametrize("name", sorted(SPARGE_PARAMS))
def test_policy_and_config_accept_the_same_values(name):
    kind, nullable, _, rule = field_rule(SpargeConfig, CONFIG_FIELD.get(name, name))
    for value in VALUES:
        config_ok = (nullable and value is None) or rule.accepts(kind, value)
        expected = {"pv_precision": config_ok or value == "auto",  # resolved per device before the config
                    "block_size": config_ok and value in (64, 128)}.get(name, config_ok)
        assert (SPARGE_PARAMS[name].problem(value) is None) == expected, (name, value)


def test_every_config_field_but_block_k_is_a_policy_parameter():
    defaults = {name: spec.default for name, spec in SPARGE_PARAMS.items()}
    sage, sparge = ({f.name for f in dataclasses.fields(c)} for c in (SageConfig, SpargeConfig))
    assert set(config_fields(SpargeConfig, defaults)) == sparge - {"block_k"}
    assert set(config_fields(SageConfig, defaults)) == sage - {"block_k"}
    assert set(SPARGE_PARAMS) - set(SAGE_PARAMS) == sparge - sage


def test_sparge_exclusive_group_is_the_configs_selections():
    assert set(SPARGE.exclusive_params[0]) == set(SELECTIONS)


def test_docs_come_from_the_fields():
    for name in SPARGE_PARAMS:
        assert SPARGE_PARAMS[name].doc.startswith(field_rule(SpargeConfig, CONFIG_FIELD.get(name, name))[3].doc)
