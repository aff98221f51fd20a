# Session 8, device call 3: the GPU tests not run yet on this session's code, then Sage and Sparge end to end
# with the sliced quantize launch (same scripts and arguments as session 7's).
# Run from the repository root on the device machine: bash benchmarks/results/h200/session8/call3.sh
source benchmarks/gpu_setup.sh .whl
timeout 280 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py > $OUT/gpu_tests_sage_gluon.log 2>&1
echo "test_gpu_sage_gluon: rc=$? $(tail -1 $OUT/gpu_tests_sage_gluon.log)"
timeout 120 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_regional.py tests/test_gpu_mask_blocks.py tests/test_gpu_profile.py > $OUT/gpu_tests_other.log 2>&1
echo "regional+mask_blocks+profile: rc=$? $(tail -1 $OUT/gpu_tests_other.log)"
timeout 60 python3 benchmarks/bench_sparge.py --lens 3703,16200 --dims 64,128 --densities 1.0,0.5 --kinds structured --out $OUT > $OUT/bench_sparge.log 2>&1
timeout 80 python3 benchmarks/bench_gluon.py --variants ws2-nopp-split-c3-s4 --dims 64,128 --lens 4096,16384 --batches 1x24 --out $OUT/gluon > $OUT/bench_gluon.log 2>&1
grep -h -A3 "FAILED\|Error" $OUT/gpu_tests_*.log | head -30
cat $OUT/bench_sparge.log | grep "D[0-9]"; grep "best gluon" $OUT/bench_gluon.log
