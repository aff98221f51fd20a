# Session 8, device call 4: the rest of the GPU tests, then Wan2.1 at 4,680 tokens timed interleaved.
# Run from the repository root on the device machine: bash benchmarks/results/h200/session8/call4.sh
source benchmarks/gpu_setup.sh .whl
timeout 200 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_regional.py tests/test_gpu_mask_blocks.py tests/test_gpu_profile.py > $OUT/gpu_tests_other.log 2>&1
echo "regional+mask_blocks+profile: rc=$? $(tail -1 $OUT/gpu_tests_other.log)"
grep -h -A3 "FAILED\|Error" $OUT/gpu_tests_other.log | head -20
timeout 230 python3 benchmarks/bench_wan.py --frames 3 --policies auto,flash,sage --out $OUT > $OUT/bench_wan_4680.log 2>&1
tail -12 $OUT/bench_wan_4680.log
