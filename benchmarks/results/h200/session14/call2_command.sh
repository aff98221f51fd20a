source benchmarks/gpu_setup.sh .whl
timeout 150 python3 - <<'PY' 2>&1 | tee $OUT/check_sum.log
import torch
from smartcompile.kernels.config import SageConfig
from smartcompile.kernels.sage_gluon import attend_gluon
from smartcompile.kernels.sage_triton import attend, quantize
from smartcompile.metrics import error_stats
cfg = SageConfig(pv_precision="fp8")
for d in (128, 64):
  for causal in (False, True):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1537, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    t = attend(quantize(q, k, v, None, cfg), causal, q.dtype).float()
    xg = quantize(q, k, v, None, cfg, v_wgmma_order=True)
    for name, l in [("sum0", dict(sum_mma=True)), ("sum1", dict(sum_mma=True, ones=1)), ("sum2", dict(sum_mma=True, ones=2)),
                    ("dsum1", dict(sum_mma=True, ones=1, direct=True)), ("kv1sum1", dict(sum_mma=True, ones=1, kv1=True))]:
      try:
        g = attend_gluon(xg, causal, q.dtype, **l).float()
        e = error_stats(g, t); r = (g.norm() / t.norm()).item()
        print(f"D{d} causal={causal} {name:8s} cos {e.cosine:.6f} relL1 {e.rel_l1:.4f} norm ratio {r:.4f}", flush=True)
      except Exception as exc:
        print(f"D{d} causal={causal} {name} ERROR {type(exc).__name__}: {str(exc)[:200]}", flush=True)
PY
timeout 300 python3 benchmarks/bench_gluon.py --dims 128,64 --lens 16384,4096 --batches 1x24 --out $OUT \
  --variants ws2-nopp-split-c3-s4,ws2-nopp-split-sum-tma-c3-s4,ws2-nopp-split-sum-own-c3-s4,ws2-nopp-split-direct-sum-tma-c3-s4 \
  > $OUT/bench_gluon_ones.log 2>&1
echo "bench rc=$?"; grep -h "gluon-kernel\|^B1\|cudnn \|triton-kernel\|same inputs" $OUT/bench_gluon_ones.log | grep -v "c3-s4 vs" | head -40
grep -h "same inputs" $OUT/bench_gluon_ones.log | head -25
