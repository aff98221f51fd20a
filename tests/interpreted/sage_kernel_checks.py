"""The Triton Sage kernel under TRITON_INTERPRET=1 on small odd shapes (CPU CI).

Run by tests/test_triton_interpreter.py in a fresh process with TRITON_INTERPRET=1 (Triton
reads it when it is imported). The interpreter has no FP8, so this covers the INT8 Q K^T +
FP16 P V path; the FP8 path is covered by the GPU tests.
"""
import os

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_triton_interpreter.py"

from helpers import assert_close_to, spec_id  # noqa: E402
from smartcompile.backends.sage import SAGE_ACCURACY  # noqa: E402
from smartcompile.kernels.config import SageConfig  # noqa: E402
from smartcompile.kernels.exact_reference import attention_reference  # noqa: E402
from smartcompile.kernels.sage_reference import sage_attention_reference  # noqa: E402
from smartcompile.kernels.sage_triton import sage_attention_triton  # noqa: E402

SHAPES = [  # B, Hq, Hkv, Sq, Sk, D, causal
    (1, 2, 2, 97, 130, 64, False),
    (1, 4, 2, 130, 77, 96, True),
    (2, 2, 1, 65, 200, 128, False),
    (1, 2, 2, 129, 129, 64, True),
]


@pytest.mark.parametrize("shape", SHAPES, ids=[spec_id(*s[:6], torch.float16, "causal" if s[6] else "") for s in SHAPES])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_interpreted_kernel_matches_reference(shape, layout, seed):
    b, hq, hkv, sq, sk, d, causal = shape

    def make(h, s):
        x = torch.randn(b, s, h, d, dtype=torch.float16) if layout == "NHD" else torch.randn(b, h, s, d, dtype=torch.float16)
        return x.transpose(1, 2) if layout == "NHD" else x

    q, k, v = make(hq, sq), make(hkv, sk), make(hkv, sk)
    k = k + 4.0  # a per-channel bias that smoothing must remove
    k_before = k.clone()
    args = (q, k, v, None, causal, None, SageConfig(pv_precision="fp16"))
    out, lse = sage_attention_triton(*args, return_lse=True)
    assert torch.equal(k, k_before), "caller's k was modified"
    ref, lse_ref = sage_attention_reference(*args, return_lse=True)
    assert_close_to(out.float(), ref.float(), 0.99999, 1e-3, f"vs reference, seed {seed}")
    torch.testing.assert_close(lse, lse_ref, atol=1e-3, rtol=1e-4)
    exact = attention_reference(q.float(), k.float(), v.float(), None, causal)
    bounds = SAGE_ACCURACY["fp16"]
    assert_close_to(out.float(), exact, bounds.min_cosine, bounds.max_rel_l1, f"vs fp32, seed {seed}")


def test_interpreted_kernel_rejects_unsupported_head_dim():
    q = torch.randn(1, 1, 16, 80, dtype=torch.float16)
    with pytest.raises(ValueError, match="head_dim 80 not in"):
        sage_attention_triton(q, q, q, None, False, None, SageConfig())


def test_interpreted_kernel_rejects_a_mask():
    q = torch.randn(1, 1, 16, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="sage_attention_triton: mask must be None"):
        sage_attention_triton(q, q, q, torch.ones(16, 16, dtype=torch.bool), False, None, SageConfig())
