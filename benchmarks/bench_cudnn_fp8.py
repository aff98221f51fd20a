"""Issue 13's anchors in one run (GPU): cuDNN BF16 SDPA, flash SDPA, cuDNN FP8 SDPA (nvidia-cudnn-frontend), our
sage_triton / sage_gluon end to end, and sageattention 1.0.6 where it is installed.

cuDNN FP8 takes per-tensor scaled e4m3 Q/K/V and, on Hopper, writes an e4m3 output. Two timings: the graph alone on
pre-cast inputs (its kernel), and with the work a bf16 caller adds (three scaled casts in, one out), the scales
precomputed as delayed-scaling training frameworks keep them: the fair comparison with our numbers, which include
the quantization. P is scaled by 448 into e4m3 (scale_s), O by 448 / max|V|. Accuracy: cosine and relative L1 of
each output against fp32 attention on a slice of the queries (smartcompile.bench.quality.sliced_error).

    python benchmarks/bench_cudnn_fp8.py --out $OUT [--dims 64,128] [--lens 4096,16384] [--batches 1x24,4x32]

Needs nvidia-cudnn-frontend (1.16 was built against here: `pip download nvidia-cudnn-frontend==1.16.0`, no
dependencies) and the cuDNN that torch ships. Rows it cannot build say why and the others still run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from smartcompile.bench.measure import attention_flops, do_bench_ms  # noqa: E402
from smartcompile.bench.quality import sliced_error  # noqa: E402
from smartcompile.kernels.config import SageConfig  # noqa: E402

FP8_MAX = 448.0


class CudnnFp8Attention:
    """One cuDNN FP8 SDPA graph for (B, H, S, D) inputs (BHSD contiguous), built once, executed per call."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool):
        import cudnn

        self.cudnn = cudnn
        b, h, s, d = q.shape
        dev = q.device
        amax = [t.abs().amax().float().clamp_min(1e-6) for t in (q, k, v)]
        self.scale_in = [FP8_MAX / a for a in amax]  # x * scale -> e4m3
        self.scale_o = (FP8_MAX / amax[2]).reshape(1, 1, 1, 1)
        one = torch.ones(1, 1, 1, 1, dtype=torch.float32, device=dev)
        self.scalars = {"descale_q": (1 / self.scale_in[0]).reshape(1, 1, 1, 1),
                        "descale_k": (1 / self.scale_in[1]).reshape(1, 1, 1, 1),
                        "descale_v": (1 / self.scale_in[2]).reshape(1, 1, 1, 1),
                        "descale_s": one / FP8_MAX, "scale_s": one * FP8_MAX, "scale_o": self.scale_o}
        self.q8, self.k8, self.v8 = self.cast(q, k, v)
        self.o8 = torch.empty(b, h, s, d, dtype=torch.float8_e4m3fn, device=dev)
        self.amax_s = torch.empty(1, 1, 1, 1, dtype=torch.float32, device=dev)
        self.amax_o = torch.empty_like(self.amax_s)
        self.handle = cudnn.create_handle()
        cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream(dev).cuda_stream)
        e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
        g = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32, handle=self.handle)
        stride = list(self.q8.stride())
        self.t = {n: g.tensor(name=n, dim=[b, h, s, d], stride=stride, data_type=e4m3) for n in ("q", "k", "v")}
        self.t.update({n: g.tensor(name=n, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=fp32)
                       for n in self.scalars})
        o, _, amax_s, amax_o = g.sdpa_fp8(
            q=self.t["q"], k=self.t["k"], v=self.t["v"], descale_q=self.t["descale_q"],
            descale_k=self.t["descale_k"], descale_v=self.t["descale_v"], descale_s=self.t["descale_s"],
            scale_s=self.t["scale_s"], scale_o=self.t["scale_o"], is_inference=True, attn_scale=d ** -0.5,
            use_causal_mask=causal, name="sdpa_fp8")
        o.set_output(True).set_dim([b, h, s, d]).set_stride(list(self.o8.stride())).set_data_type(e4m3)
        for t in (amax_s, amax_o):
            t.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32)
        g.validate()
        g.build_operation_graph()
        g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        g.check_support()
        g.build_plans()
        self.graph = g
        self.workspace = torch.empty(g.get_workspace_size(), dtype=torch.uint8, device=dev)
        self.pack = {self.t["q"]: self.q8, self.t["k"]: self.k8, self.t["v"]: self.v8, o: self.o8,
                     amax_s: self.amax_s, amax_o: self.amax_o, **{self.t[n]: x for n, x in self.scalars.items()}}

    def cast(self, q, k, v):
        return tuple((x * s).to(torch.float8_e4m3fn) for x, s in zip((q, k, v), self.scale_in))

    def kernel(self):
        self.graph.execute(self.pack, self.workspace, handle=self.handle)
        return self.o8

    def end_to_end(self, q, k, v):
        """The casts a bf16 caller adds, the graph, the output back to bf16."""
        for bound, cast in zip((self.q8, self.k8, self.v8), self.cast(q, k, v)):
            bound.copy_(cast)  # into the buffers the graph was bound to
        return (self.kernel().float() / self.scale_o).to(q.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="folder for bench_cudnn_fp8.json")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--lens", default="4096,16384")
    ap.add_argument("--batches", default="1x24", help="BxH pairs")
    ap.add_argument("--causal", default="16384", help="lengths also timed causal")
    ap.add_argument("--causal-dims", default="128", help="head dims of the causal shapes")
    args = ap.parse_args()
    shapes = [(b, h, d, n, False) for b, h in (tuple(map(int, x.split("x"))) for x in args.batches.split(","))
              for d in map(int, args.dims.split(",")) for n in map(int, args.lens.split(","))]
    shapes += [(b, h, d, n, True) for b, h in (tuple(map(int, x.split("x"))) for x in args.batches.split(","))
               for d in map(int, args.causal_dims.split(",")) for n in map(int, args.causal.split(",")) if n]
    from smartcompile.kernels.sage_gluon import GLUON_CONFIG, gluon_unavailable_reason, sage_attention_gluon
    from smartcompile.kernels.sage_triton import sage_attention_triton
    try:
        from sageattention import sageattn
    except (ImportError, AttributeError, RuntimeError) as exc:  # absent, or built for another Triton: say so
        print(f"sageattention not timed: {type(exc).__name__}: {exc}")
        sageattn = None
    rows = []
    for b, h, d, n, causal in shapes:
        torch.manual_seed(0)
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = attention_flops(b, h, n, n, d, causal)
        runs = {"cudnn bf16": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                "flash bf16": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)}  # backend: below
        runs["sage_triton e2e"] = lambda: sage_attention_triton(q, k, v, None, causal, None, SageConfig())
        if gluon_unavailable_reason() is None:
            runs["sage_gluon e2e"] = lambda: sage_attention_gluon(q, k, v, None, causal, None, GLUON_CONFIG)
        if sageattn is not None:
            runs["sageattention 1.0.6"] = lambda: sageattn(q, k, v, tensor_layout="HND", is_causal=causal)
        notes = {}
        try:
            fp8 = CudnnFp8Attention(q, k, v, causal)
            runs["cudnn fp8 kernel"] = fp8.kernel
            runs["cudnn fp8 + casts"] = lambda: fp8.end_to_end(q, k, v)
        except Exception as exc:  # an anchor that cannot build here is reported, the rest still runs
            notes["cudnn fp8"] = f"{type(exc).__name__}: {exc}"
        for name, fn in runs.items():
            backend = {"cudnn bf16": SDPBackend.CUDNN_ATTENTION, "flash bf16": SDPBackend.FLASH_ATTENTION}.get(name)
            try:
                if backend is not None:
                    with sdpa_kernel(backend):
                        ms, out = do_bench_ms(fn), fn()
                else:
                    ms, out = do_bench_ms(fn), fn()
            except Exception as exc:
                notes[name] = f"{type(exc).__name__}: {exc}"
                continue
            if name == "cudnn fp8 kernel":
                out = (out.float() / fp8.scale_o).to(q.dtype)
            err = sliced_error(out, q, k, v, causal)
            rows.append(dict(B=b, H=h, D=d, N=n, causal=causal, impl=name, ms=ms, tflops=flops / ms / 1e9,
                             cosine=err.cosine, rel_l1=err.rel_l1))
        base = next((r["ms"] for r in rows[::-1] if r["impl"] == "cudnn bf16" and (r["B"], r["H"], r["D"], r["N"],
                                                                                     r["causal"]) == (b, h, d, n, causal)),
                    None)
        print(f"B{b} H{h} D{d} N{n}{' causal' if causal else ''}")
        for r in rows:
            if (r["B"], r["H"], r["D"], r["N"], r["causal"]) == (b, h, d, n, causal):
                r["vs_cudnn_bf16"] = base / r["ms"] if base else None
                ratio = f"{r['vs_cudnn_bf16']:.2f}x" if base else "-"
                print(f"    {r['impl']:<22} {r['ms']:8.3f} ms {r['tflops']:6.0f} TF ({ratio} cuDNN bf16)  "
                      f"cos {r['cosine']:.5f} relL1 {r['rel_l1']:.4f}", flush=True)
        for name, why in notes.items():
            print(f"    {name:<22} not run: {why}")
            rows.append(dict(B=b, H=h, D=d, N=n, causal=causal, impl=name, not_run=why))
        del q, k, v
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version())
    try:
        import cudnn
        meta["cudnn_frontend"] = getattr(cudnn, "__version__", "?")
        meta["cudnn_backend"] = cudnn.backend_version()
    except Exception as exc:
        meta["cudnn_frontend"] = f"unavailable: {exc}"
    print(json.dumps(meta))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_cudnn_fp8.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
