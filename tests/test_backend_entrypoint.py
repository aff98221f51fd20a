"""torch.compile(m, backend="smartattn") without importing smartcompile; options; logging."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import smartcompile
from smartcompile import OptionsError, PolicyError

SCRIPT = textwrap.dedent("""
    import sys, torch
    import torch.nn.functional as F
    class M(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)
    q = torch.randn(1, 2, 16, 8)
    options = eval(sys.argv[1])  # the test passes a literal dict or None
    kw = {} if options is None else {"options": options}
    out = torch.compile(M(), backend="smartattn", **kw)(q, q, q)
    ref = F.scaled_dot_product_attention(q, q, q)
    assert F.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.999
    assert "smartcompile" in sys.modules  # loaded through the entry point, not by us
    print("OK")
""")


@pytest.mark.parametrize("options", ["None", "{'policy': {'version': 1, 'default': 'sage'}}"])
def test_backend_by_name_without_import(options):
    env = {**os.environ, "SMARTCOMPILE_LOG": "info"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, options], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK" in r.stdout
    assert "smartattn plan" in r.stderr  # SMARTCOMPILE_LOG=info prints the plan at compile time
    if "sage" in options:
        assert "sage_reference" in r.stderr


def test_importing_then_compiling_does_not_double_register():
    import torch._dynamo

    assert "smartattn" in torch._dynamo.list_backends(exclude_tags=())
    fn = torch.compile(lambda q: torch.nn.functional.scaled_dot_product_attention(q, q, q), backend="smartattn")
    fn(torch.randn(1, 1, 4, 8))


def test_unknown_option_is_clear():
    with pytest.raises(Exception) as info:
        torch.compile(lambda q: q + 1, backend="smartattn", options={"polcy": "x.json"})(torch.randn(2))
    text = str(info.value)
    assert "options['polcy']: unknown key" in text and "did you mean ['policy'" in text


def test_bad_mode_is_clear():
    with pytest.raises(OptionsError, match="mode: 'fastest' is not allowed; expected one of"):
        smartcompile.backend(mode="fastest")


def test_backend_validates_policy_at_construction(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"version": 1, "default": "warp"}))
    with pytest.raises(PolicyError, match="backend 'warp' is not allowed"):
        smartcompile.backend(policy=bad)


def test_inductor_options_pass_through_and_mode_in_options():
    fn = torch.compile(lambda q: torch.nn.functional.scaled_dot_product_attention(q, q, q) * 2, backend="smartattn",
                       options={"mode": "max-autotune-no-cudagraphs", "epilogue_fusion": False,
                                "policy": {"version": 1, "default": "flash"}})
    q = torch.randn(1, 1, 4, 8)
    torch.testing.assert_close(fn(q), torch.nn.functional.scaled_dot_product_attention(q, q, q) * 2)


def test_backend_object_repr_and_use():
    b = smartcompile.backend(policy={"version": 1, "default": "flash"})
    assert "smartcompile.backend" in repr(b)
    q = torch.randn(1, 2, 5, 8)
    out = torch.compile(lambda q: torch.nn.functional.scaled_dot_product_attention(q, q, q), backend=b)(q)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, q, q))
