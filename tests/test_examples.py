"""examples/ stay true: they run, the per-step example applies its policy per block and step,
and README's explain table is what examples/policies/demo_explain.json gives on the demo model."""
import importlib.util
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diffusers_example_applies_the_per_step_policy():
    pytest.importorskip("diffusers")
    chosen = _load("diffusers_regional_steps").main(steps=3)
    # blocks.0.attn1: flash always; blocks.1.attn1: flash at steps 0-1, sparge from 2 (reference on CPU);
    # attn2 (cross-attention): the default, auto, which is exact on a CPU
    assert chosen[("blocks.0.attn1", 2)].startswith("flash/")
    assert chosen[("blocks.1.attn1", 0)].startswith("flash/") and chosen[("blocks.1.attn1", 1)].startswith("flash/")
    assert chosen[("blocks.1.attn1", 2)].startswith("sparge/")
    assert chosen[("blocks.1.attn2", 2)].startswith("flash/")


def test_llm_example_matches_eager():
    pytest.importorskip("transformers")
    assert _load("hf_llm_prefill").main(tokens=16) < 1e-4


def test_readme_explain_table_comes_from_the_example_policy(capsys):
    from smartcompile.cli import main

    assert main(["explain", "--model", "smartcompile.demo.dit:factory", "--policy",
                 str(ROOT / "examples/policies/demo_explain.json")]) == 0
    printed = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("layer                pattern"):]
    rows = [line for line in table.split("```")[0].splitlines() if line.startswith("blocks.")]
    assert rows
    squash = lambda s: re.sub(r"\s+", " ", s).strip()
    printed_rows = {squash(line) for line in printed.splitlines()}
    for row in rows:
        assert squash(row) in printed_rows, row
