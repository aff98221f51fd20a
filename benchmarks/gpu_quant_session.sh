#!/usr/bin/env bash
# One device call (carry .whl): staged against fused quantization, measured, then the quantized kernels' tests.
#   bash benchmarks/gpu_quant_session.sh [bench-seconds] [test-seconds]
set -o pipefail
source benchmarks/gpu_setup.sh .whl
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
timeout ${1:-150} python3 benchmarks/bench_quantize.py > $OUT/bench_quantize.md 2> $OUT/bench_quantize.err
timeout ${2:-250} python3 -m pytest -q -p no:cacheprovider -rf tests/test_sage_quantize.py tests/test_gpu_sage.py \
    tests/test_gpu_sage_gluon.py tests/test_gpu_sparge.py tests/test_sparge_padding.py > $OUT/gpu_tests.log 2>&1
echo "tests RC=$?"
cat $OUT/bench_quantize.md; tail -n 4 $OUT/bench_quantize.err
tail -n 12 $OUT/gpu_tests.log
