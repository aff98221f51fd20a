# Session 8, device call 1: fused-selection GPU tests, quantize warps, SDPA inside our op, Wan at 4,680 tokens.
# Run from the repository root on the device machine: bash benchmarks/results/h200/session8/call1.sh
source benchmarks/gpu_setup.sh .whl
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/device.txt
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_sparge.py > $OUT/gpu_tests_sparge.log 2>&1; tail -3 $OUT/gpu_tests_sparge.log
timeout 100 python3 benchmarks/bench_quant_warps.py --out $OUT > $OUT/quant_warps.log 2>&1; tail -8 $OUT/quant_warps.log
timeout 120 python3 benchmarks/bench_sdpa_in_op.py --out $OUT > $OUT/sdpa_in_op.log 2>&1; grep -v "^      " $OUT/sdpa_in_op.log | tail -8
timeout 300 python3 benchmarks/bench_wan.py --frames 3 --policies auto,flash --kernels --out $OUT > $OUT/bench_wan_4680.log 2>&1; tail -40 $OUT/bench_wan_4680.log
cat $OUT/sdpa_in_op.log | tail -40
