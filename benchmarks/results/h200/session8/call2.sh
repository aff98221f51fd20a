# Session 8, device call 2: the sliced quantize launch under several configurations, then the GPU tests
# that cover it and the token-major outputs.
# Run from the repository root on the device machine: bash benchmarks/results/h200/session8/call2.sh
source benchmarks/gpu_setup.sh .whl
timeout 150 python3 benchmarks/bench_quant_warps.py --out $OUT > $OUT/quant_configs.log 2>&1; tail -13 $OUT/quant_configs.log
for t in sage_gluon sparge sage; do
  timeout 130 python3 -m pytest -q -x -p no:cacheprovider tests/test_gpu_$t.py > $OUT/gpu_tests_$t.log 2>&1
  echo "test_gpu_$t: rc=$? $(tail -1 $OUT/gpu_tests_$t.log)"
done
grep -h -B5 "Error\|FAILED" $OUT/gpu_tests_*.log | head -40
