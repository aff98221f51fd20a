# session 9, call 3: the launch cache with the cheaper key (tests, launch paths), the other GPU tests with it,
# then Sparge and the Gluon kernel end to end at 4k / 16k
source benchmarks/gpu_setup.sh .whl
timeout 100 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_launch_cache.py > $OUT/gpu_tests_launch_cache.log 2>&1; echo "launch_cache: $(tail -1 $OUT/gpu_tests_launch_cache.log)"
timeout 60 python3 benchmarks/bench_launch_paths.py --out $OUT > $OUT/launch_paths.log 2>&1; tail -2 $OUT/launch_paths.log
timeout 260 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sparge.py tests/test_gpu_regional.py tests/test_gpu_mask_blocks.py tests/test_gpu_profile.py > $OUT/gpu_tests_other.log 2>&1
echo "sparge+regional+mask_blocks+profile: rc=$? $(tail -1 $OUT/gpu_tests_other.log)"
grep -h -A3 "FAILED\|Error" $OUT/gpu_tests_*.log | head -20
timeout 70 python3 benchmarks/bench_sparge.py --lens 4096,16384 --dims 64,128 --densities 1.0,0.5 --kinds structured --out $OUT > $OUT/bench_sparge.log 2>&1; grep "D[0-9]" $OUT/bench_sparge.log
timeout 90 python3 benchmarks/bench_gluon.py --variants ws2-nopp-split-c3-s4 --dims 64,128 --lens 4096,16384 --batches 1x24 --out $OUT/gluon > $OUT/bench_gluon.log 2>&1; grep "best gluon\|triton" $OUT/bench_gluon.log | tail -12
