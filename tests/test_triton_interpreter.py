"""Triton kernels under the interpreter (CPU), each file in tests/interpreted/ in a fresh process:
TRITON_INTERPRET must be set before Triton is first imported, which Inductor does in this one."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
CHECKS = sorted((HERE / "interpreted").glob("*_checks.py"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: the GPU tests run the compiled kernels")
@pytest.mark.parametrize("path", CHECKS, ids=[p.stem for p in CHECKS])
def test_interpreted_kernels(path):
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(HERE),
                        "--confcutdir", str(HERE), str(path)], cwd=HERE, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout
