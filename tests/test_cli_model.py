"""Issue 9, the CLI: `--model pkg.module:factory` finds modules in the current directory, and bad
input (a spec, the factory's code, --candidates JSON, a path) prints `smartcompile: error: ...`
and exits with status 2, never a traceback."""
import json
import logging
import sys
import textwrap

import pytest

from smartcompile.cli import main

from helpers import profile_summary

MODULE = "cwd_model_for_cli_test"
FACTORY = """
import torch

class Tiny(torch.nn.Module):
    def forward(self, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

def factory():
    q = torch.randn(1, 2, 16, 8)
    return Tiny(), (q, q, q)

def broken():
    raise RuntimeError("no weights here")

def not_a_tuple():
    return Tiny()

def bare_tensor():
    return Tiny(), torch.randn(3, 2, 16, 8)

class Projected(torch.nn.Module):
    def forward(self, q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v) @ torch.ones(9, 4)

def wrong_shape():  # the model's own failure: (..., 8) @ (9, 4)
    q = torch.randn(1, 2, 16, 8)
    return Projected(), (q, q, q)
"""


@pytest.fixture
def model_in_cwd(tmp_path, monkeypatch):
    """A factory module in a fresh current directory that is not yet on sys.path."""
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield tmp_path
    sys.modules.pop(MODULE, None)


def test_cli_model_from_the_current_directory(model_in_cwd, capsys):
    assert main(["explain", "--model", f"{MODULE}:factory", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sites"]


@pytest.mark.parametrize("argv, message", [
    (["explain", "--model", "nocolon"], "--model: 'nocolon' is not of the form pkg.module:factory"),
    (["explain", "--model", f"{MODULE}:broken"], f"--model: {MODULE}:broken raised RuntimeError: no weights here"),
    (["explain", "--model", f"{MODULE}:absent"], "has no callable 'absent'"),
    (["explain", "--model", f"{MODULE}:not_a_tuple"], "must return (model, args), (model, args, kwargs)"),
    (["explain", "--model", "no_such_module_xyz:factory"], "--model: cannot import 'no_such_module_xyz': ModuleNotFoundError"),
    (["explain", "--model", ":factory"], "--model: cannot import ''"),
    (["profile", "--model", f"{MODULE}:factory", "-o", "p.json", "--candidates", "[sage"], "--candidates: invalid JSON"),
    (["profile", "--model", f"{MODULE}:factory", "-o", "p.json", "--candidates", "[" * 100_000],
     "--candidates: invalid JSON"),
    (["report", "missing.json"], "cannot read 'missing.json'"),
    (["explain", "--model", f"{MODULE}:bare_tensor"], "args must be a tuple or list, got Tensor"),
    (["explain", "--model", f"{MODULE}:wrong_shape"], "the model fails on its own inputs without smartcompile"),
    (["profile", "--model", f"{MODULE}:wrong_shape", "-o", "p.json", "-q"], "fails on its own inputs"),
    (["bench", "--model", f"{MODULE}:wrong_shape", "--quiet", "--out", "b"], "fails on its own inputs"),
    # the paths written at the end are checked before the run
    (["profile", "--model", f"{MODULE}:factory", "-o", "no/such/folder/p.json"], "the folder 'no/such/folder' does not"),
    (["profile", "--model", f"{MODULE}:factory", "-o", "."], "-o/--output: '.' is a folder"),
    (["profile", "--model", f"{MODULE}:factory", "-o", "p.json", "--report", "r.txt"], "allowed: "),
    (["report", "missing.json", "--plot", "plot"], "--plot: 'plot': the format comes from the file's suffix (none)"),
])
def test_cli_bad_input_exits_2_without_traceback(model_in_cwd, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("smartcompile: error: ") and message in err and "Traceback" not in err


def test_cli_unwritable_path_exits_2(model_in_cwd, capsys, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "r.png")

    policy = model_in_cwd / "p.json"
    policy.write_text(json.dumps({"metadata": {"profile": profile_summary()}}))
    monkeypatch.setattr("smartcompile.profiling.report.ProfileReport.table", lambda self: "")
    monkeypatch.setattr("smartcompile.profiling.report.ProfileReport.plot", denied)
    assert main(["report", str(policy), "--plot", "r.png"]) == 2
    assert "smartcompile: error: [Errno 13] Permission denied: 'r.png'" in capsys.readouterr().err


def test_explain_and_profile_take_device_dtype_quiet_and_several_calibration_items(tmp_path, monkeypatch, capsys):
    """Issue 15 (14): --device/--dtype/--quiet, and a factory may give several calibration items."""
    (tmp_path / "multi_items.py").write_text(
        "import torch, torch.nn.functional as F\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, q, k, v):\n"
        "        return F.scaled_dot_product_attention(q, k, v)\n"
        "def factory():\n"
        "    torch.manual_seed(0)\n"
        "    items = [((torch.randn(1, 2, 64, 16), torch.randn(1, 2, 64, 16), torch.randn(1, 2, 64, 16)), {})\n"
        "             for _ in range(2)]\n"
        "    return M(), items\n")
    monkeypatch.chdir(tmp_path)
    assert main(["explain", "--model", "multi_items:factory", "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert "bf16" in capsys.readouterr().out
    out = tmp_path / "p.json"
    assert main(["profile", "--model", "multi_items:factory", "-o", str(out), "--quiet", "--no-cache",
                 "--candidates", '[{"backend": "sage", "pv_precision": "fp8"}]']) == 0
    assert json.loads(out.read_text())["metadata"]["profile"]["calibration_items"] == 2
    with pytest.raises(SystemExit) as err:  # argparse: not a choice
        main(["explain", "--model", "multi_items:factory", "--dtype", "float64"])
    assert err.value.code == 2


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def torch_fake_tensor_log(monkeypatch):
    """What reaches the handlers of torch's fake-tensor logger (torch binds its own stderr handler at import)."""
    import torch._dynamo  # noqa: F401 (torch sets the logger up)

    logger, collect = logging.getLogger("torch._subclasses.fake_tensor"), _Collect()
    monkeypatch.setattr(logger, "handlers", [collect])
    return collect.messages


def test_a_model_failing_on_its_own_inputs_prints_no_torch_traceback(model_in_cwd, capsys, torch_fake_tensor_log):
    """torch's fake-tensor logger printed a 20-line traceback (its own stderr handler) before our one-line error;
    it is held while the model is traced and dropped when the model's own inputs are at fault."""
    assert main(["explain", "--model", f"{MODULE}:wrong_shape"]) == 2
    assert "fails on its own inputs" in capsys.readouterr().err
    assert torch_fake_tensor_log == []


def test_held_torch_logs_are_printed_when_the_failure_is_ours(model_in_cwd, monkeypatch, torch_fake_tensor_log):
    def failing_explain(*args, **kwargs):
        logging.getLogger("torch._subclasses.fake_tensor").error("held line from torch")
        raise RuntimeError("our own bug")

    monkeypatch.setattr("smartcompile.api.explain", failing_explain)
    with pytest.raises(RuntimeError, match="our own bug"):
        main(["explain", "--model", f"{MODULE}:factory"])
    assert torch_fake_tensor_log == ["held line from torch"]
