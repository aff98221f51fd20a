"""The CLI commands and the demo (on a tiny configuration)."""
import json
import subprocess
import sys

from smartcompile.cli import env_report, main
import pytest

from smartcompile.demo.video_demo import run_video_demo
from smartcompile.errors import SmartCompileError


def test_env_lists_every_implementation():
    text = env_report()
    for impl in ("flash_attn", "sdpa", "sage_reference", "sparge_reference"):
        assert impl in text
    assert "torch" in text


def test_explain_cli_json(capsys):
    assert main(["explain", "--model", "smartcompile.demo.dit:factory", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    layers = [s["layer"] for s in data["sites"]]
    assert layers[:2] == ["blocks.0.attn", "blocks.0.cross_attn"] and len(layers) == 8


def test_explain_cli_with_policy_file(tmp_path, capsys):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"version": 1, "default": "flash", "layers": {"blocks.*.cross_attn": "sage"}}))
    assert main(["explain", "--model", "smartcompile.demo.dit:factory", "--policy", str(p)]) == 0
    out = capsys.readouterr().out
    assert "sage_reference" in out and "8 of 8 attention sites rewritten" in out


def test_cli_reports_policy_errors(tmp_path, capsys):
    p = tmp_path / "p.json"
    p.write_text('{"version": 3}')
    assert main(["explain", "--model", "smartcompile.demo.dit:factory", "--policy", str(p)]) == 2
    assert "policy.version: 3 is not supported" in capsys.readouterr().err


def test_cli_bad_model_spec(capsys):
    assert main(["explain", "--model", "nocolon"]) == 2
    assert "smartcompile: error: --model: 'nocolon' is not of the form pkg.module:factory" in capsys.readouterr().err


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "smartcompile.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout and "explain" in r.stdout and "env" in r.stdout


def test_demo_on_the_trained_model_writes_frames_gif_and_summary(tmp_path):
    lines = []
    rows = run_video_demo(device="cpu", out=tmp_path, steps=1, frames=1, policies=["flash (exact)", "sparge 50%"],
                          show=lines.append)
    assert [r.policy for r in rows] == ["torch.compile default", "flash (exact)", "sparge 50%"]
    by = {r.policy: r for r in rows}
    assert by["flash (exact)"].psnr_db > 80 and by["flash (exact)"].ssim > 0.9999  # float32: exact is exact
    sparse = by["sparge 50%"]  # half the K blocks skipped on learned (local) attention: visibly worse
    assert 5 < sparse.psnr_db < 60 and sparse.ssim < by["flash (exact)"].ssim
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["policy"] for r in summary["rows"]] == [r.policy for r in rows]
    assert summary["tokens"] == 1024 and summary["steps"] == 1 and summary["rows"][0]["speedup_vs_torch_compile"] == 1.0
    assert (tmp_path / "frames.png").stat().st_size > 1000
    from PIL import Image

    with Image.open(tmp_path / "video.gif") as gif:
        assert gif.n_frames == 1 and gif.width > 4 * 64  # exact + 3 rows side by side
    assert any(line.lstrip().startswith("policy ") and "PSNR dB" in line for line in lines)


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "steps must be an integer from 1 to 1000, got 0"),
    (dict(frames=-2), "frames must be an integer from 1 to 64, got -2"),
    (dict(frames=100_000), "frames must be an integer from 1 to 64, got 100000"),  # was killed for memory
    (dict(repeats=101), "repeats must be an integer from 1 to 100, got 101"),
    (dict(policies=["sage", "fast"]), "unknown policies ['fast']"),
])
def test_demo_bad_arguments_are_named(kwargs, message):
    with pytest.raises(SmartCompileError, match=None) as info:
        run_video_demo(device="cpu", show=lambda s: None, **kwargs)
    assert message in str(info.value)