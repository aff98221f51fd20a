"""Sparge with key padding. On the CPU: key flags (the compact (B|1, 1, 1, Sk) form the Triton path hands the
shared selection) select exactly the blocks of the same mask expanded to (B, H, Sq, Sk), and the reference
takes key padding as mask types. On a GPU (marked gpu): the kernel against the reference with the dense
mask. The kernel under the interpreter: tests/interpreted/sparge_kernel_checks.py."""
import pytest
import torch

from helpers import assert_close_to
from padding_cases import empty_rows, holes_keep, padding_mask
from smartcompile.kernels.config import SpargeConfig
from smartcompile.kernels.sparge_reference import predict_block_map, sparge_attention_reference
from smartcompile.masks import And, Causal, KeyPadding

SELECTIONS = {"topk1": dict(topk=1), "ratio0.75": dict(sparsity_ratio=0.75),
              "cdf0.3": dict(cdf_threshold=0.3, sink=True)}


def _flag_cases(sk: int, generator) -> dict:
    """(B, Sk) key flags: padding on each side, holes, sparse random keys (rows that see keys only in blocks
    a selection skips: the coverage fix), and a batch row with none."""
    sparse = torch.rand(4, sk, generator=generator) < torch.tensor([[0.02], [0.05], [0.1], [0.0]])
    return {**{kind: padding_mask(kind, sk)[1] for kind in ("right", "left", "both")}, "holes": holes_keep(sk),
            "sparse": sparse, "sparse_ties": sparse}


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("blocks", [(64, 32), (32, 128), (128, 64)], ids=lambda b: f"bq{b[0]}-bk{b[1]}")
@pytest.mark.parametrize("selection", SELECTIONS.values(), ids=SELECTIONS.keys())
@pytest.mark.parametrize("sq, sk", [(97, 300), (333, 131)])
def test_key_flags_select_as_the_dense_mask(sq, sk, selection, blocks, causal, seed):
    g = torch.Generator().manual_seed(seed)
    config = SpargeConfig(block_q=blocks[0], block_k=blocks[1], sim_threshold=-1.0, **selection)
    for name, flags in _flag_cases(sk, g).items():
        b = flags.shape[0]
        q, k = torch.randn(b, 4, sq, 16, generator=g), torch.randn(b, 2, sk, 16, generator=g)
        if name == "sparse_ties":  # identical blocks: every score ties
            q, k = torch.ones_like(q), torch.ones_like(k)
        compact = predict_block_map(q, k, flags[:, None, None, :], causal, None, config)
        dense = predict_block_map(q, k, flags[:, None, None, :].expand(b, 4, sq, sk), causal, None, config)
        assert torch.equal(compact, dense), f"{name}: {(compact != dense).sum().item()} blocks differ (seed {seed})"
        assert not compact[(~flags).all(dim=-1)].any(), f"{name}: a batch row with no key kept a block"


def test_reference_takes_key_padding_as_mask_types(seed):
    q, k, v = (torch.randn(3, 2, 90, 32) for _ in range(3))
    config = SpargeConfig(block_q=32, block_k=32, sim_threshold=-1.0, topk=2)
    for kind in ("lengths", "both"):
        mask, keep = padding_mask(kind, 90)
        flags = sparge_attention_reference(q, k, v, keep[:, None, None, :], True, None, config, return_block_map=True)
        for m, causal in ((mask, True), (And((Causal(), mask)), False)):
            got = sparge_attention_reference(q, k, v, m, causal, None, config, return_block_map=True)
            assert all(torch.equal(a, b) for a, b in zip(got, flags)), f"{kind} {type(m).__name__} (seed {seed})"


# ---- the kernel on a GPU ------------------------------------------------------------------------------
GPU_RUNS = [  # padding kind, causal, pv precision, selection (small enough for the fixed launch: no autotuning)
    ("lengths", True, "fp8", dict(sparsity_ratio=0.5)),
    ("left", True, "fp8", dict(topk=8, pv_threshold=8.0)),
    ("holes", False, "fp8", dict(cdf_threshold=0.9)),
    ("flags_both", False, "fp16", dict(sparsity_ratio=0.75, sink=True)),
]


def _gpu_mask(kind: str, sk: int):
    """(mask as the kernel takes it, (B, Sk) keep flags on CUDA)."""
    if kind == "holes":
        keep = holes_keep(sk)
        return KeyPadding(keep.long().cuda()), keep.cuda()  # transformers' int64 attention_mask
    mask, keep = padding_mask(kind.removeprefix("flags_"), sk)
    if kind.startswith("flags"):  # the compiled graph's form
        return keep.cuda()[:, None, None, :], keep.cuda()
    return mask, keep.cuda()


@pytest.mark.gpu
@pytest.mark.parametrize("kind, causal, pv, sel", GPU_RUNS, ids=[f"{r[0]}-{'causal' if r[1] else 'full'}-{r[2]}"
                                                                 for r in GPU_RUNS])
def test_sparse_kernel_key_padding_on_gpu(kind, causal, pv, sel, seed):
    from smartcompile.kernels.sparge_triton import sparge_attention_triton

    hq, hkv, sq, sk, d = 8, 2, 2049, 4001, 128
    mask, keep = _gpu_mask(kind, sk)
    b = keep.shape[0]
    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16)
               for h, s in ((hq, sq), (hkv, sk), (hkv, sk)))
    config = SpargeConfig(pv_precision=pv, sim_threshold=-1.0, **sel)
    out, lse, bm = sparge_attention_triton(q, k, v, mask, causal, None, config, return_lse=True, return_block_map=True)
    dense = keep[:, None, None, :].expand(b, hq, sq, sk)
    ref, lse_ref, bm_ref = sparge_attention_reference(q, k, v, dense, causal, None, config, return_lse=True,
                                                      return_block_map=True)
    what = f"{kind} causal={causal} {pv} {sel} seed {seed}"
    assert torch.equal(bm, bm_ref), f"{(bm != bm_ref).sum().item()} blocks differ: {what}"
    assert bm.float().mean() < 0.9, what
    empty = empty_rows(keep.cpu(), sq, causal).expand(-1, hq, -1).cuda()
    assert torch.isfinite(out).all() and (out[empty] == 0).all(), what
    assert torch.isneginf(lse[empty]).all() and torch.isfinite(lse[~empty]).all(), what
    assert_close_to(out[~empty].float(), ref[~empty].float(), 0.9995, 0.03, what)
    torch.testing.assert_close(lse[~empty], lse_ref[~empty], atol=2e-2, rtol=1e-3, msg=lambda m: f"{what}: {m}")


@pytest.mark.gpu
def test_backend_runs_padded_flags_on_gpu(seed):
    """The op's form (bool (B, 1, 1, Sk) flags + is_causal) through the backend's runner: right padding
    becomes KeyLengths there (key_padding.simplest), output as the reference's with the flags."""
    from smartcompile.backends.sparge import SPARGE_PARAMS, run_sparge_triton, sparge_config

    params = {name: spec.default for name, spec in SPARGE_PARAMS.items()} | {
        "cdf_threshold": None, "sparsity_ratio": 0.5, "pv_precision": "fp8", "sim_threshold": -1.0}
    _, keep = padding_mask("right", 4001)
    flags = keep.cuda()[:, None, None, :]
    q, k, v = (torch.randn(3, 8 if i == 0 else 2, 2049 if i == 0 else 4001, 128, device="cuda", dtype=torch.bfloat16)
               for i in range(3))
    out = run_sparge_triton(q, k, v, flags, True, 128 ** -0.5, params)
    ref = sparge_attention_reference(q, k, v, flags, True, 128 ** -0.5, sparge_config(params))
    empty = empty_rows(keep, 2049, True).expand(-1, 8, -1).cuda()
    assert (out[empty] == 0).all()
    assert_close_to(out[~empty].float(), ref[~empty].float(), 0.9995, 0.03, f"seed {seed}")
