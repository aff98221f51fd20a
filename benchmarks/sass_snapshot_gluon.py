"""SASS of 52 launches of the Gluon kernel (sm_90a, compiled without a GPU), one file per launch plus a hash line
each, to check that a refactor of kernels/sage_gluon*.py changes no instruction (issue 13). Run with Triton 3.6:

    TRITON_CACHE_DIR=/tmp/a PYTHONPATH=$PWD python benchmarks/sass_snapshot_gluon.py /tmp/before > before.txt
    (edit) ... > after.txt; diff before.txt after.txt

Session 17 split sage_gluon.py into three files with all 52 identical.
"""
import hashlib
import os
import re
import sys
from types import SimpleNamespace
import torch

sys.path.insert(0, os.path.dirname(__file__))
import compile_stats_gluon as cs  # noqa: E402
from bench_gluon import VARIANTS  # noqa: E402  (it also puts the repository on the path)

from smartcompile.kernels import sage_gluon as sg  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    names = ["ws2-nopp-split-c3-s4", "ws2-pp-s4", "ws2-nopp-intra-s4", "ws2-nopp-split-early-s4", "ws2-nopp-intra-bn64-s4",
             "ws2-nopp-intra-direct-s4", "ws2-nopp-split-direct-c3-s4", "ws2-nopp-split-sum-c3-s4",
             "ws2-nopp-split-direct-sum-c3-s4", "ws2-pair-s2"]
    cases = []
    for name in names:
        for d in (64, 128):
            for causal in (False, True):
                cases.append((name, d, causal, VARIANTS[name], False, False))
    for d in (64, 128):
        for causal in (False, True):
            cases.append(("lse", d, causal, dict(sg.DEFAULT_LAUNCH), True, False))
            cases.append(("sparse-sum", d, causal, dict(sum_mma=True), False, True))
            cases.append(("sparse-pair", d, causal, dict(pair=True, direct=True, sum_mma=True, stages=2), False, True))
    for name, d, causal, launch, lse, sparse in cases:
        calls = []
        class R:
            def __getitem__(self, g): return lambda *a, **k: calls.append((a, k))
        real = sg._sage_fwd_sm90_ws2; sg._sage_fwd_sm90_ws2 = R()
        try:
            x = cs.fake_quantized(d)
            kw = {}
            if sparse:
                x.block_q = 128; nq, nk = -(-1000 // 128), -(-1500 // 128)
                x.q8 = torch.empty(4, nq * 128, d, dtype=torch.int8); x.q_scale = torch.empty(4 * nq)
                kw["blocks"] = SimpleNamespace(lut=torch.empty(4, nq, nk, dtype=torch.int32),
                                               count=torch.empty(4 * nq, dtype=torch.int32),
                                               count_full=torch.empty(4 * nq, dtype=torch.int32))
            sg.attend_gluon(x, causal, torch.bfloat16, return_lse=lse, **kw, **launch)
        finally:
            sg._sage_fwd_sm90_ws2 = real
        (a, k), = calls
        kern = cs.compile_sm90a(real, a, k)
        sass = cs._sass_text(kern.asm["cubin"])
        body = "\n".join(l for l in sass.splitlines() if re.match(r"^\s+/\*[0-9a-f]{4,}\*/", l))
        tag = f"{name}-d{d}-c{int(causal)}"
        open(os.path.join(out, tag + ".sass"), "w").write(body)
        print(tag, hashlib.sha1(body.encode()).hexdigest()[:12], len(body.splitlines()), flush=True)


if __name__ == "__main__":
    main()
