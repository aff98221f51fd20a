# Prepared for the next session's first device call: the stats launch's variants (8 warps, prefetch), measured
# against the shipped quantize launch, then Sage/Sparge end to end at 4k with the winner set by hand.
source benchmarks/gpu_setup.sh .whl
timeout 150 python3 benchmarks/bench_quant_warps.py --configs 4:1024:1,4:1024:1:1,4:1024:1:0:8,4:1024:1:1:8 \
    --out $OUT > $OUT/quant_stats.log 2>&1; cat $OUT/quant_stats.log
