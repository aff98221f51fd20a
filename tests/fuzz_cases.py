"""A generator of attention formulations and near-misses, for eager-vs-compiled fuzzing.

Each case is drawn from one integer seed: a spelling of attention (SDPA in its argument forms;
hand-written with @ / matmul / bmm / baddbmm / einsum, every K transpose, scales on the scores,
on q, on q and k, symbolic or in place; additive, bool-added, masked_fill / where masks with
-inf / finfo.min / -1e9 / -1e4 fills, tril / triu causal, fully masked rows; GQA by repeat_kv,
repeat_interleave, broadcasting or enable_gqa), a dtype (fp32, fp64, fp16, bf16), 3-D or 4-D,
odd sizes, and near-misses the rewrite must leave alone or keep exact (probabilities returned,
in-place ops on inputs, broadcasting operands, a mask that widens the scores, softmax over
another dim). Some cases run with dynamic=True over several shapes (head dim and length change).

`check(case)` compiles the case with the smartattn backend under an exact policy and compares
with eager: outputs (NaN where eager has NaN), gradients, and every input after the call (side
effects). It returns a CaseResult; nothing here asserts, so the test and the script share it.
"""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from smartcompile.compiler.backend import compile_graph
from smartcompile.compiler.options import CompileOptions
from smartcompile.compiler.plan import Plan

EXACT_POLICY = {"version": 1, "default": "flash"}
TOLERANCE = {  # (atol, rtol) of compiled vs eager, per dtype: SDPA's math vs the model's own ops
    torch.float64: (1e-10, 1e-9),
    torch.float32: (5e-5, 2e-4),
    torch.float16: (2e-2, 2e-2),
    torch.bfloat16: (6e-2, 6e-2),
}


@dataclasses.dataclass
class Case:
    seed: int
    name: str  # readable id: every choice that was drawn
    fn: Callable
    inputs: list  # one tuple of call arguments per call (several under dynamic=True)
    dtype: torch.dtype
    dynamic: bool = False
    grad: bool = False
    must_rewrite: bool = False  # a plain formulation: the fuzz also checks that the pass fired


@dataclasses.dataclass
class CaseResult:
    case: Case
    ok: bool
    detail: str
    rewritten: int = 0
    sites: int = 0


def _rand(g: torch.Generator, shape, dtype, scale=1.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def make_case(seed: int) -> Case:
    rng = random.Random(seed)
    pick = rng.choice
    dtype = pick([torch.float32] * 5 + [torch.float64, torch.float16, torch.bfloat16])
    family = pick(["sdpa"] * 3 + ["manual"] * 6 + ["near_miss"] * 2)
    dynamic = rng.random() < 0.12
    b, hkv = rng.randint(1, 3), rng.randint(1, 3)
    groups = pick([1, 1, 2, 3])
    hq = hkv * groups
    d = pick([4, 8, 12, 16, 24, 32])
    sq, sk = rng.randint(1, 23), rng.randint(1, 29)
    magnitude = pick([1.0, 1.0, 1.0, 30.0])  # large scores: softmax saturates
    grad = dtype in (torch.float32, torch.float64) and rng.random() < 0.3 and not dynamic
    builder = {"sdpa": _sdpa_case, "manual": _manual_case, "near_miss": _near_miss_case}[family]
    fn, label, extra_shapes, must = builder(rng, hq, hkv, groups)
    shapes = [(b, hq, hkv, sq, sk, d)]
    if dynamic:  # later calls change lengths and, sometimes, the head dim
        for _ in range(2):
            shapes.append((b, hq, hkv, rng.randint(1, 23), rng.randint(1, 29), pick([d, d, 8, 16])))
    inputs = []
    for i, (b_, hq_, hkv_, sq_, sk_, d_) in enumerate(shapes):
        g = torch.Generator().manual_seed(seed * 7 + i)
        q = _rand(g, (b_, hq_, sq_, d_), dtype, magnitude ** 0.5)
        k = _rand(g, (b_, hkv_, sk_, d_), dtype, magnitude ** 0.5)
        v = _rand(g, (b_, hkv_, sk_, d_), dtype)
        extra = extra_shapes(g, b_, hq_, hkv_, sq_, sk_, d_, dtype)
        if grad:
            for t in (q, k, v):
                t.requires_grad_(True)
        inputs.append((q, k, v, extra))
    name = f"s{seed}-{family}-{label}-B{b}-Hq{hq}-Hkv{hkv}-Sq{sq}-Sk{sk}-D{d}-{str(dtype)[6:]}"
    name += ("-dyn" if dynamic else "") + ("-grad" if grad else "") + (f"-x{magnitude:g}" if magnitude != 1 else "")
    return Case(seed, name, fn, inputs, dtype, dynamic=dynamic, grad=grad, must_rewrite=must and not dynamic and dtype != torch.float64)


# ---- masks shared by the builders -----------------------------------------------------------
def _mask_maker(kind: str, full_rows: bool, shape_form: str):
    """extra(g, b, hq, hkv, sq, sk, d, dtype) -> dict with 'keep' (bool) and 'bias' (float)."""
    def extra(g, b, hq, hkv, sq, sk, d, dtype):
        shape = {"b1": (b, 1, sq, sk), "2d": (sq, sk), "h": (1, hq, sq, sk), "full": (b, hq, sq, sk)}[shape_form]
        keep = torch.rand(*shape, generator=g) > 0.35
        keep[..., 0] = True
        if full_rows and sq > 1:
            keep[..., sq // 2, :] = False
        bias = _rand(g, shape, dtype if kind != "bias32" else torch.float32)
        if full_rows and sq > 1 and kind.startswith("bias_inf"):
            bias[..., sq // 2, :] = float("-inf")
        return {"keep": keep, "bias": bias}
    return extra


def _sdpa_case(rng: random.Random, hq: int, hkv: int, groups: int):
    form = rng.choice(["plain", "positional", "bool_mask", "float_mask", "causal", "scale", "gqa"])
    full_rows = rng.random() < 0.3
    shape_form = rng.choice(["b1", "2d", "h", "full"])
    scale = rng.choice([None, 0.1, 0.5, 1.7])

    def fn(q, k, v, extra):
        gqa = q.shape[1] != k.shape[1]
        if form == "positional":
            return F.scaled_dot_product_attention(q, k, v, None, 0.0, False, scale=scale, enable_gqa=gqa)
        if form == "bool_mask":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=extra["keep"], scale=scale, enable_gqa=gqa)
        if form == "float_mask":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=extra["bias"], scale=scale, enable_gqa=gqa)
        if form == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)

    return fn, f"sdpa_{form}-{shape_form}{'-fullrows' if full_rows else ''}", _mask_maker("bias", full_rows, shape_form), True


def _manual_case(rng: random.Random, hq: int, hkv: int, groups: int):
    pick = rng.choice
    matmul = pick(["op", "torch", "einsum", "bmm3d", "baddbmm"])
    transpose = pick(["transpose", "transpose_pos", "mT", "permute", "pre_t"])
    scale_form = pick(["mul", "div", "q_pre", "qk_root", "none", "symbolic", "q_inplace", "q_imul"])
    mask = pick(["none", "none", "add", "iadd", "bool_add", "masked_fill_inf", "masked_fill_min", "masked_fill_1e9",
                 "where_keep", "where_drop_1e4", "tril", "triu", "tril_and_bias"])
    full_rows = pick([False, False, True])
    shape_form = pick(["b1", "2d", "h", "full"])
    softmax = pick(["method", "torch", "F", "F_dtype"])
    cast = pick([False, False, True])
    gqa = pick(["repeat_interleave", "expand"]) if groups > 1 else pick(["none", "none", "broadcast"])
    if gqa == "broadcast" and hkv != 1:
        gqa = "none"
    if matmul in ("bmm3d", "baddbmm") and gqa == "broadcast":
        gqa = "none"
    c = pick([0.125, 0.3, 1.0, 0.05])

    def fn(q, k, v, extra):
        keep, bias = extra["keep"], extra["bias"]
        n = q.shape[1] // k.shape[1]
        if gqa == "repeat_interleave":
            k, v = k.repeat_interleave(n, dim=1), v.repeat_interleave(n, dim=1)
        elif gqa == "expand":
            bb, h, s, dd = k.shape
            k = k[:, :, None, :, :].expand(bb, h, n, s, dd).reshape(bb, h * n, s, dd)
            v = v[:, :, None, :, :].expand(bb, h, n, s, dd).reshape(bb, h * n, s, dd)
        if scale_form == "q_pre":
            q = q * c
        elif scale_form == "qk_root":
            q, k = q * math.sqrt(c), k * math.sqrt(c)
        elif scale_form == "q_inplace":
            q = q.clone().mul_(c)
        elif scale_form == "q_imul":
            q = q.clone()
            q *= c
        three_d = matmul in ("bmm3d", "baddbmm")
        if three_d:
            bb, h, s, dd = q.shape
            q3, k3, v3 = (t.reshape(bb * h, t.shape[2], t.shape[3]) for t in (q, k, v))
            kt = k3.transpose(1, 2) if transpose != "mT" else k3.mT
            if matmul == "bmm3d":
                scores = torch.bmm(q3, kt)
            else:
                b3 = (bias.expand(bb, h, s, k.shape[2]) if bias.dim() == 4 else bias.expand(bb, h, s, k.shape[2]))
                scores = torch.baddbmm(b3.reshape(bb * h, s, k.shape[2]).to(q.dtype), q3, kt, beta=0.5, alpha=1.0)
        else:
            if transpose == "transpose":
                kt = k.transpose(-2, -1)
            elif transpose == "transpose_pos":
                kt = k.transpose(3, 2)
            elif transpose == "mT":
                kt = k.mT
            elif transpose == "permute":
                kt = k.permute(0, 1, 3, 2)
            else:
                kt = k.transpose(-2, -1).contiguous()
            if matmul == "op":
                scores = q @ kt
            elif matmul == "torch":
                scores = torch.matmul(q, kt)
            else:
                scores = torch.einsum("bhqd,bhdk->bhqk", q, kt)
        if scale_form == "mul":
            scores = scores * c
        elif scale_form == "div":
            scores = scores / (1.0 / c)
        elif scale_form == "symbolic":
            scores = scores * q.shape[-1] ** -0.5
        if three_d and mask == "none":  # (B*H, S, D) attention from end to end
            p = scores.softmax(-1) if softmax != "F_dtype" else F.softmax(scores, -1, dtype=torch.float32)
            return (p.to(v.dtype) @ v3).reshape(q.shape[0], q.shape[1], q.shape[2], v.shape[3])
        if three_d:  # masked on a 4-D view of the scores: the reshape hides the site (left alone)
            scores = scores.reshape(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        scores = _apply_mask(scores, mask, keep, bias)
        if cast:
            scores = scores.float()
        if softmax == "method":
            p = scores.softmax(dim=-1)
        elif softmax == "torch":
            p = torch.softmax(scores, -1)
        elif softmax == "F":
            p = F.softmax(scores, dim=scores.dim() - 1)
        else:
            p = F.softmax(scores, dim=-1, dtype=torch.float32)
        p = p.to(v.dtype)
        return p @ v

    label = f"{matmul}-{transpose}-{scale_form}-{mask}-{shape_form}-{softmax}{'-cast' if cast else ''}-{gqa}"
    label += "-fullrows" if full_rows else ""
    kind = "bias_inf" if mask == "add" and full_rows else "bias"
    simple = mask in ("none", "add", "masked_fill_inf", "where_keep", "tril") and scale_form not in ("symbolic",) \
        and (matmul not in ("baddbmm", "bmm3d") or mask == "none") and not full_rows and not cast
    return fn, label, _mask_maker(kind, full_rows, shape_form), simple


def _apply_mask(scores, mask: str, keep, bias):
    sq, sk = scores.shape[-2], scores.shape[-1]
    if mask == "add":
        return scores + bias
    if mask == "iadd":
        scores += bias
        return scores
    if mask == "bool_add":
        return scores + keep
    if mask == "masked_fill_inf":
        return scores.masked_fill(~keep, float("-inf"))
    if mask == "masked_fill_min":
        return scores.masked_fill(keep == 0, torch.finfo(scores.dtype).min)
    if mask == "masked_fill_1e9":
        return scores.masked_fill(~keep, -1e9) if scores.dtype not in (torch.float16,) else scores.masked_fill(~keep, -1e4)
    if mask == "where_keep":
        return torch.where(keep, scores, float("-inf"))
    if mask == "where_drop_1e4":
        return torch.where(~keep, -1e4, scores)
    if mask in ("tril", "tril_and_bias"):
        c = torch.tril(torch.ones(sq, sk, device=scores.device))
        scores = scores.masked_fill(c == 0, float("-inf"))
        return scores + bias if mask == "tril_and_bias" else scores
    if mask == "triu":
        future = torch.triu(torch.ones(sq, sk, device=scores.device), diagonal=1).bool()
        return scores.masked_fill(future, float("-inf"))
    return scores


def _near_miss_case(rng: random.Random, hq: int, hkv: int, groups: int):
    kind = rng.choice(["probs_returned", "scores_reused", "softmax_dim2", "q_batch_broadcast", "q_rank3",
                       "mask_widens", "k_inplace_inside", "negative_scale", "v_transposed", "dropout_eval",
                       "inplace_input_scale", "scores_inplace_unused", "nonconst_scale"])

    def extra(g, b, hq_, hkv_, sq, sk, d, dtype):
        keep = torch.rand(b, 1, sq, sk, generator=g) > 0.3
        keep[..., 0] = True
        return {"keep": keep, "bias": _rand(g, (b + 1, hq_, sq, sk), dtype), "w": _rand(g, (sk, sk), dtype)}

    def fn(q, k, v, extra):
        n = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(n, dim=1), v.repeat_interleave(n, dim=1)
        s = q @ k.transpose(-2, -1)
        if kind == "probs_returned":
            p = s.softmax(-1)
            return p @ v, p
        if kind == "scores_reused":
            p = s.softmax(-1)
            return p @ v + s.sum(-1, keepdim=True)
        if kind == "softmax_dim2":
            return s.softmax(-2) @ v if s.shape[-1] == s.shape[-2] else s.softmax(-1) @ v
        if kind == "q_batch_broadcast":
            return (q[:1] @ k.transpose(-2, -1)).softmax(-1) @ v
        if kind == "q_rank3":
            return (q[0] @ k.transpose(-2, -1)).softmax(-1) @ v
        if kind == "mask_widens":
            return (s[:1] + extra["bias"]).softmax(-1) @ v[:1]
        if kind == "k_inplace_inside":
            k2 = k.clone()
            s2 = q @ k2.transpose(-2, -1)
            k2.mul_(2.0)
            return s2.softmax(-1) @ v + k2.sum()
        if kind == "negative_scale":
            return (s * -0.5).softmax(-1) @ v
        if kind == "v_transposed":
            return s.softmax(-1) @ extra["w"][: s.shape[-1], : s.shape[-1]]
        if kind == "dropout_eval":
            return F.dropout(s.softmax(-1), p=0.3, training=False) @ v
        if kind == "inplace_input_scale":
            q.mul_(0.5) if not q.requires_grad else None
            return (q @ k.transpose(-2, -1)).softmax(-1) @ v
        if kind == "scores_inplace_unused":
            s.masked_fill_(~extra["keep"], float("-inf"))
            return s.softmax(-1) @ v
        if kind == "nonconst_scale":
            return (s * v.abs().mean()).softmax(-1) @ v
        raise AssertionError(kind)

    return fn, kind, extra, False


# ---- running a case ------------------------------------------------------------------------
def _clone(x):
    if isinstance(x, torch.Tensor):
        c = x.detach().clone()
        c.requires_grad_(x.requires_grad)
        return c
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_clone(v) for v in x)
    return x


def _tensors(x) -> list:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    return []


def _compare(got, want, dtype, what: str, exact=None) -> Optional[str]:
    """Within the dtype's tolerance of eager; for half types also within twice eager's own error
    against `exact` (the model run in fp64), as FlashAttention's tests bound theirs."""
    got, want = _tensors(got), _tensors(want)
    exact = _tensors(exact) if exact is not None else [None] * len(want)
    if len(got) != len(want):
        return f"{what}: {len(got)} tensors, eager {len(want)}"
    atol, rtol = TOLERANCE[dtype]
    for i, (a, e, x) in enumerate(zip(got, want, exact)):
        if a.shape != e.shape or a.dtype != e.dtype:
            return f"{what}[{i}]: {tuple(a.shape)} {a.dtype} vs eager {tuple(e.shape)} {e.dtype}"
        if x is not None and x.shape == e.shape and not torch.equal(a.isnan(), e.isnan()) \
                and torch.equal(a.isnan(), x.isnan()) and not (x.isnan() & ~e.isnan()).any():
            # eager has NaN where the fp64 model has none and compiled agrees with the fp64 model: eager's own
            # artifact (CPU bf16 GEMMs pack rows in pairs, so a fully masked row's NaN leaks into its neighbour's
            # output); compare those places with the fp64 values
            e = torch.where(e.isnan() & ~x.isnan(), x.to(e.dtype), e)
        if not torch.equal(a.isnan(), e.isnan()):
            return f"{what}[{i}]: NaN at {int((a.isnan() != e.isnan()).sum())} places where eager differs"
        a0, e0 = a.detach().nan_to_num(0.0).double(), e.detach().nan_to_num(0.0).double()
        bound = atol + rtol * e0.abs().max().item()
        if x is not None and x.shape == e.shape:
            bound += 2 * (e0 - x.detach().nan_to_num(0.0).double()).abs().max().item()
        diff = (a0 - e0).abs().max().item() if a0.numel() else 0.0
        if diff > bound:
            return f"{what}[{i}]: max diff {diff:.3g} > {bound:.3g}"
    return None


def _call(fn, args, grad: bool):
    out = fn(*args)
    grads = None
    if grad:
        outs = _tensors(out)
        loss = sum((o.double() * (j + 1)).nan_to_num(0.0).sum() for j, o in enumerate(outs))
        leaves = [t for t in _tensors(args) if t.requires_grad]
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        grads = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, leaves)]
    return out, grads


def check(case: Case, inductor: bool = False) -> CaseResult:
    """Eager vs compiled under the exact policy: outputs, gradients and inputs after the call."""
    torch._dynamo.reset()
    opts = CompileOptions.parse(None, None, EXACT_POLICY)
    plan = Plan()
    compiled = torch.compile(case.fn, dynamic=case.dynamic or None,
                             backend=lambda gm, ex: compile_graph(gm, ex, opts, sink=plan.extend, run_inductor=inductor))
    for i, args in enumerate(case.inputs):
        eager_args, comp_args = _clone(args), _clone(args)
        try:
            want, want_grads = _call(case.fn, eager_args, case.grad)
        except RuntimeError as exc:  # the model itself is invalid for these inputs: nothing to compare
            return CaseResult(case, True, f"eager raised {type(exc).__name__}; skipped")
        # the model in fp64: compiled may differ from eager by twice eager's own error (ill-conditioned
        # cases: large magnitudes through softmax's backward), as FlashAttention's tests bound theirs
        exact, exact_grads = None, None
        if case.dtype in (torch.float16, torch.bfloat16, torch.float32):
            exact, exact_grads = _call(case.fn, _to_double(args), case.grad)
        try:
            got, got_grads = _call(compiled, comp_args, case.grad)
        except Exception as exc:  # noqa: BLE001 - any failure of the compiled model is the finding
            return CaseResult(case, False, f"call {i}: compiled raised {type(exc).__name__}: {str(exc)[:300]}")
        for problem in (_compare(got, want, case.dtype, f"call {i} output", exact),
                        _compare(got_grads, want_grads, case.dtype, f"call {i} grads", exact_grads),
                        _compare_inputs(comp_args, eager_args)):
            if problem:
                return CaseResult(case, False, problem + f"\nplan:\n{plan}", sites=len(plan.sites))
    rewritten = sum(s.rewritten for s in plan.sites)
    if case.must_rewrite and rewritten == 0:
        return CaseResult(case, False, f"a plain formulation was not rewritten:\n{plan}", 0, len(plan.sites))
    return CaseResult(case, True, "", rewritten, len(plan.sites))


def _to_double(x):
    if isinstance(x, torch.Tensor):
        return x.detach().double().requires_grad_(x.requires_grad) if x.is_floating_point() else x.clone()
    if isinstance(x, dict):
        return {k: _to_double(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_to_double(v) for v in x)
    return x


def _compare_inputs(got, want) -> Optional[str]:
    for i, (a, e) in enumerate(zip(_tensors(got), _tensors(want))):
        if not torch.equal(a.detach(), e.detach()):
            return f"input {i} after the call differs from eager's (a side effect was lost or added)"
    return None
