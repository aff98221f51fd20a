"""The GPU benchmark scripts still run (CPU smoke runs at tiny sizes; their numbers mean nothing here)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_llm_prefill_benchmark_runs_and_exact_equals_eager(tmp_path):
    pytest.importorskip("transformers")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_llm_prefill.py"), "--small", "--cases", "padded",
           "--policies", "torch.compile default,smartattn exact", "--repeats", "1", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "bench_llm_prefill.json").read_text())["cases"]["padded"]
    exact = rows["smartattn exact"]
    assert "error" not in exact and exact["cosine_vs_eager"] > 0.99999
    assert exact["sites"] == ["B2-Hq4-Hkv2-Sq64-Sk64-D16-fp32-causal-padded -> flash/sdpa"]


def test_mask_benchmark_runs_on_cpu(tmp_path):
    pytest.importorskip("triton")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_masks.py"), "--device", "cpu", "--n", "128", "--heads", "1",
           "--dim", "64", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "masks.json").read_text())["rows"]
    assert {r["case"] for r in rows} >= {"causal (is_causal)", "causal (dense)", "4 documents causal (dense)"}
    sage = [r for r in rows if r["impl"] == "sage_triton"]
    assert all(r["cosine"] > 0.99 for r in sage), sage


def test_host_op_count_runs_on_cpu():
    pytest.importorskip("triton")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "count_host_ops.py")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| sage_triton |")]
    assert rows and rows[0][1].strip() == "3", done.stdout  # Sage: three Triton launches per call


def test_wan_benchmark_runs_on_cpu_and_auto_keeps_the_graphs_sdpa(tmp_path):
    pytest.importorskip("diffusers")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_wan.py"), "--small", "--blocks", "1", "--repeats", "1",
           "--rounds", "2", "--policies", "auto,sage", "--kernels", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = tmp_path.glob("bench_wan_*_default.json")
    rows = {r["name"]: r for r in json.loads(result.read_text())["rows"]}
    # the default timed twice, interleaved with the others: the two rows' difference is the noise
    assert list(rows) == ["torch.compile default", "torch.compile default (again)", "auto", "sage"]
    assert all(lo <= r["ms"] <= hi for r in rows.values() for lo, hi in [r["round_spread_ms"]])
    assert all(r["kernels"] == {} for r in rows.values())  # --kernels: GPU only
    # on the CPU auto chooses exact SDPA everywhere: every site stays the graph's own call
    assert rows["auto"]["chosen"] == {}
    assert "sage/sage_reference" in rows["sage"]["chosen"].values()
    assert all(r["cosine_vs_eager"] > 0.999 for r in rows.values()), rows


def test_lazy_rescale_simulation_is_the_reference_at_tau_0_and_stays_in_fp8_range():
    """benchmarks/sim_lazy_rescale.py: at tau 0 it is sage_reference's arithmetic bit for bit (so what it reports
    for tau > 0 is the lazy rule's effect alone); with headroom P never passes FP8's 448 (asserted inside)."""
    import importlib.util

    import torch

    from smartcompile.kernels.config import SageConfig
    from smartcompile.kernels.sage_reference import sage_attention_reference

    spec = importlib.util.spec_from_file_location("sim_lazy_rescale", ROOT / "benchmarks" / "sim_lazy_rescale.py")
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    from smartcompile.synthetic import structured_qkv

    # local attention: row maxima settle, so at tau 0 some tiles skip (alpha forced to 1) and the output must
    # still be the reference's bit for bit
    gen = torch.Generator().manual_seed(0)
    q, k, v = structured_qkv(1, 2, 2, (4, 16, 16), 64, generator=gen)
    q = q[:, :, :128]
    out, skip = sim.lazy_sage(q, k, v, 0.0)
    ref = sage_attention_reference(q, k, v, None, False, None, SageConfig(pv_precision="fp8", block_q=64, block_k=128))
    assert torch.equal(out, ref) and 0.0 < skip < 1.0, skip
    lazy, skip8 = sim.lazy_sage(q, k, v, 8.0)
    assert skip8 >= skip and torch.isfinite(lazy).all()


def test_fp8_qk_simulation_is_the_reference_with_int8_and_differs_with_fp8():
    """benchmarks/sim_fp8_qk.py: its `int8` scheme is sage_reference's arithmetic bit for bit (so its FP8 columns
    measure the Q/K format alone), and e4m3 Q/K change the output."""
    import importlib.util

    import torch

    from smartcompile.kernels.config import SageConfig
    from smartcompile.kernels.sage_reference import sage_attention_reference

    spec = importlib.util.spec_from_file_location("sim_fp8_qk", ROOT / "benchmarks" / "sim_fp8_qk.py")
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    q, k, v = sim.inputs("random", 2, 300, 64, 0)
    ref = sage_attention_reference(q, k, v, None, False, None, SageConfig(pv_precision="fp8", block_q=64, block_k=128))
    assert torch.equal(sim.simulated_attention(q, k, v, "int8"), ref)
    fp8 = sim.simulated_attention(q, k, v, "fp8-block")
    assert torch.isfinite(fp8).all() and (fp8 - ref).abs().max().item() > 1e-3
    # the script end to end on tiny inputs: every scheme and input kind runs
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sim_fp8_qk.py"), "--kv-len", "1024",
                          "--q-len", "64", "--heads", "1", "--dims", "64"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert len([line for line in res.stdout.splitlines() if line.startswith(("random", "peaked", "biased", "struct"))]) == 5
