#!/usr/bin/env bash
# One device call (carry .whl): the fused quantization and the Gluon exp2 variants, measured, then their tests.
#   bash benchmarks/gpu_quant_session.sh [bench-seconds] [test-seconds]
set -o pipefail
source benchmarks/gpu_setup.sh .whl
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
timeout ${1:-150} python3 benchmarks/bench_quantize.py > $OUT/bench_quantize.md 2> $OUT/bench_quantize.err
timeout ${1:-150} python3 benchmarks/bench_gluon.py --variants ws2-nopp-split-c3-s4,default-poly2,default-poly4,default-poly8 \
    --dims 64,128 --lens 4096,16384 --batches 1x24 --out $OUT > $OUT/bench_gluon.log 2>&1
timeout ${2:-250} python3 -m pytest -q -p no:cacheprovider -rf tests/test_sage_quantize.py tests/test_gpu_sage.py \
    tests/test_gpu_sage_gluon.py tests/test_gpu_sparge.py tests/test_sparge_padding.py > $OUT/gpu_tests.log 2>&1
echo "tests RC=$?"
cat $OUT/bench_quantize.md; tail -n 4 $OUT/bench_quantize.err
sed -n '/^TFLOP/,$p' $OUT/bench_gluon.log | grep -v "triton\b" | head -40
grep -E "poly|cos 0\.99[0-8]|NON-FINITE" $OUT/bench_gluon.log | head -12
tail -n 12 $OUT/gpu_tests.log
