# session 9, call 1 (prepared in session 8 as benchmarks/gpu_next_quant_stats.sh): the stats launch variants, Sparge at 4k/16k, launch paths
# against the shipped quantize launch, then Sage/Sparge end to end at 4k with the winner set by hand.
source benchmarks/gpu_setup.sh .whl
timeout 150 python3 benchmarks/bench_quant_warps.py --configs 4:1024:1,4:1024:1:1,4:1024:1:0:8,4:1024:1:1:8,4:1024:1:0:4:16 \
    --out $OUT > $OUT/quant_stats.log 2>&1; cat $OUT/quant_stats.log
# Sparge and Sage at step 5's shapes (--lens 4096 gives 3703 tokens, 16384 gives 16200)
timeout 90 python3 benchmarks/bench_sparge.py --lens 4096,16384 --dims 64,128 --densities 1.0,0.5 --kinds structured \
    --out $OUT > $OUT/bench_sparge.log 2>&1; grep "D[0-9]" $OUT/bench_sparge.log
# host cost of a launch: JITFunction.run against the compiled launcher called directly (same bits checked)
timeout 60 python3 benchmarks/bench_launch_paths.py --out $OUT > $OUT/launch_paths.log 2>&1; cat $OUT/launch_paths.log | tail -4
