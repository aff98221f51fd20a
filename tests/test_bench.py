"""`smartcompile bench` on a CPU at tiny sizes: files, rows, ratios, quality, errors, --model."""
import dataclasses
import json

import pytest
import torch

from smartcompile.bench import grid
from smartcompile.bench.cases import _positive_ints, build_config, token_grid
from smartcompile.bench.measure import attention_flops
from smartcompile.bench.tables import speed_table
from smartcompile.cli import main

TINY = ["--device", "cpu", "--seq-lens", "256", "--head-dims", "32", "--heads", "1"]
VARIANTS = ["flash", "sage fp16", "sage fp8", "sparge 0.5", "sparge 0.75"]
TINY_MODEL = '''
import torch
import torch.nn.functional as F


class Tiny(torch.nn.Module):
    def __init__(self, dim=32, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


def factory():
    torch.manual_seed(0)
    return Tiny(), (torch.randn(1, 64, 32),)
'''


def test_cli_writes_json_markdown_and_png(tmp_path, capsys):
    assert main(["bench", *TINY, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((tmp_path / "bench.json").read_text())
    rows = data["rows"]
    assert [r["variant"] for r in rows] == VARIANTS and all(r["status"] == "ok" for r in rows)
    assert {"ms", "tflops", "vs_exact", "peak_mib", "density", "cosine", "rel_l1", "psnr"} <= set(rows[0])
    assert [r["implementation"] for r in rows] == ["sdpa", "sage_reference", "sage_reference",
                                                  "sparge_reference", "sparge_reference"]
    assert data["meta"]["device_type"] == "cpu" and data["config"]["seq_lens"] == [256]
    by = {r["variant"]: r for r in rows}
    assert by["flash"]["cosine"] > 0.99999 and by["flash"]["psnr"] > 80 and by["flash"]["vs_exact"] == 1.0
    assert 0.99 < by["sage fp16"]["cosine"] < 1 and 0 < by["sage fp8"]["rel_l1"] < 0.1
    assert by["sparge 0.5"]["density"] == 0.5 and by["sage fp8"]["density"] == 1.0  # 2 K blocks of 128: 1 kept
    assert all(r["peak_mib"] is None for r in rows)  # CUDA-only measurement
    md = (tmp_path / "bench.md").read_text()
    for part in ("## Speed", "## Peak memory", "## Quality", "CPU: reference numerics, times not meaningful",
                 "| D | N | variant | implementation | params | ms | TFLOP/s | vs flash/sdpa | note |",
                 "| 32 | 256 | sparge 0.5 | sparge_reference | pv fp8, sparsity 0.5 |", "n/a (CPU)"):
        assert part in md
    assert md in printed and "wrote" in printed
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratios_are_against_the_flash_row_of_the_same_shape():
    flash_times = iter([2.0, 8.0])  # the flash row of the first shape, then of the second
    fixed = {"sage fp16": 1.0, "sage fp8": 0.5, "sparge 0.5": 0.25, "sparge 0.75": 4.0}
    timer = lambda fn, label: next(flash_times) if label == "flash" else fixed[label]  # noqa: E731
    cfg = build_config(device="cpu", seq_lens="64,128", head_dims="16", heads=1)
    rows = grid.run_grid(cfg, timer=timer, progress=False)
    assert [(r["N"], r["variant"]) for r in rows] == [(n, v) for n in (64, 128) for v in VARIANTS]
    for r in rows:
        flash_ms = 2.0 if r["N"] == 64 else 8.0
        assert r["vs_exact"] == pytest.approx(flash_ms / r["ms"])
        assert r["tflops"] == pytest.approx(attention_flops(1, 1, r["N"], r["N"], 16, False) / r["ms"] / 1e9)
    assert "| 16 | 128 | sparge 0.5 | sparge_reference | pv fp8, sparsity 0.5 | 0.250 |" in speed_table(rows)
    assert "32.00x" in speed_table(rows)


def test_cannot_run_and_failing_kernels_are_rows_not_crashes(monkeypatch):
    real = grid.get_implementation

    def broken_sage(backend, name):
        impl = real(backend, name)
        if name != "sage_reference":
            return impl

        def run(*args):
            raise RuntimeError("kernel exploded")
        return dataclasses.replace(impl, run=run)

    monkeypatch.setattr(grid, "get_implementation", broken_sage)
    timer = lambda fn, label: 1.0  # noqa: E731
    cfg = build_config(device="cpu", seq_lens="64", head_dims="264", heads=1)  # over the references' 256
    rows = {r["variant"]: r for r in grid.run_grid(cfg, timer=timer, progress=False)}
    assert rows["flash"]["status"] == "ok"
    for name in ("sage fp16", "sage fp8", "sparge 0.5"):
        assert rows[name]["status"] == "cannot run here" and "head_dim 264" in rows[name]["reason"]
        assert rows[name]["ms"] is None and rows[name]["vs_exact"] is None
    assert "cannot run here: sage: head_dim 264" in speed_table(list(rows.values()))
    rows = grid.run_grid(dataclasses.replace(cfg, dtype=torch.float64), timer=timer, progress=False)
    assert all(r["status"] == "cannot run here" and "float64" in r["reason"] for r in rows)  # not even sdpa
    rows = {r["variant"]: r for r in grid.run_grid(dataclasses.replace(cfg, head_dims=(16,)), timer=timer,
                                                    progress=False)}
    assert rows["sage fp16"]["status"] == "failed" and "kernel exploded" in rows["sage fp16"]["reason"]
    assert rows["sparge 0.5"]["status"] == "ok"
    assert "failed: RuntimeError: kernel exploded" in speed_table(list(rows.values()))


@pytest.mark.parametrize("argv, message", [
    (["--seq-lens", "4k,abc"], "--seq-lens: 'abc' is not a positive integer"),
    (["--head-dims", "33"], "--head-dims: [33] must be even"),
    (["--heads", "0"], "--heads: '0' is not a positive integer (one number, e.g. 4)"),
    (["--batch", "-1"], "--batch: '-1' is not a positive integer (one number, e.g. 4)"),
    (["--head-dims", "64,2000"], "--head-dims: 2000 is larger than any backend takes (at most 1024)"),
    (["--batch", "1,2"], "--batch: '1,2' is not one positive integer"),
    (["--dtype", "int8"], "--dtype: 'int8' is not one of"),
    (["--device", "tpu"], "--device: 'tpu' is not one of ['cpu', 'cuda']"),
    (["--model", "tinyattn:factory", "--seq-lens", "128"], "--seq-lens: kernel-grid options"),
    (["--model", "nocolon"], "--model: 'nocolon' is not of the form pkg.module:factory"),
    (["--quiet"], "--quiet prints no tables"),
    (["--seq-lens", "\u00b2"], "--seq-lens: '\u00b2' is not a positive integer"),  # '²'.isdigit() is True
])
def test_bad_options_are_errors_with_exit_2(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smartcompile: error: ") and message in err


def test_out_that_is_a_file_is_an_error(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    assert main(["bench", *TINY, "--out", str(f)]) == 2
    assert "--out: " in capsys.readouterr().err


def test_model_end_to_end(tmp_path, monkeypatch, capsys):
    (tmp_path / "tinyattn.py").write_text(TINY_MODEL)
    monkeypatch.chdir(tmp_path)  # the CLI's factory loader imports from the current directory
    assert main(["bench", "--model", "tinyattn:factory", "--device", "cpu", "--out", "out", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "wrote out/bench.json"
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    rows = {r["policy"]: r for r in data["rows"]}
    assert list(rows) == ["torch.compile default", "smartattn flash", "smartattn sage", "smartattn sparge 0.5"]
    assert all(r["status"] == "ok" and r["ms"] > 0 for r in rows.values())
    assert rows["torch.compile default"]["vs_default"] == 1.0
    assert rows["smartattn flash"]["cosine"] > 0.99999 and rows["smartattn flash"]["runs"] == "flash/sdpa x1"
    assert rows["smartattn sage"]["runs"] == "sage/sage_reference x1" and 0.99 < rows["smartattn sage"]["cosine"] < 1
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "| smartattn sparge 0.5 | sparge/sparge_reference x1 |" in md
    assert (tmp_path / "out" / "bench.png").stat().st_size > 0


def test_parsing_helpers():
    assert _positive_ints("--seq-lens", "4k, 16K,4096") == (4096, 16384)
    for n in (64, 256, 512, 4096, 16384, 32768, 1000, 97):
        t, h, w = token_grid(n)
        assert t * h * w == n
    assert token_grid(32768) == (8, 64, 64)


def test_tflops_are_whole_numbers_on_a_gpu_and_three_digits_on_a_cpu():
    from smartcompile.bench.tables import speed_table

    row = dict(D=64, N=4096, variant="sage fp8", implementation="sage_triton", params="", ms=1.0, vs_exact=1.0,
               status="ok", reason="")
    assert "| 1437 |" in speed_table([dict(row, tflops=1436.6)])
    assert "| 0.0123 |" in speed_table([dict(row, tflops=0.012345)])


def test_inputs_that_cannot_be_made_are_rows_not_crashes(monkeypatch):
    """bench's promise: out of memory is a row with the error. Making the shape's inputs can run out too."""
    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 262144000000 bytes")

    monkeypatch.setattr(grid, "structured_qkv", no_memory)
    cfg = build_config(device="cpu", seq_lens="64", head_dims="16", heads=1)
    rows = grid.run_grid(cfg, timer=lambda fn, label: 1.0, progress=False)
    assert len(rows) == len(cfg.variants) and all(r["status"] == "failed" for r in rows)
    assert all(r["reason"].startswith("inputs: RuntimeError: DefaultCPUAllocator") for r in rows)
    assert "failed: inputs: RuntimeError" in speed_table(rows)
