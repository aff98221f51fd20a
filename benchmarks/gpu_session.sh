#!/usr/bin/env bash
# One device call: install the carried wheels, register the package (entry points without pip -e), run a stage.
#   bash benchmarks/gpu_session.sh tests-sage      # test_gpu_sage*.py
#   bash benchmarks/gpu_session.sh tests-other     # every other gpu-marked test file
#   bash benchmarks/gpu_session.sh tests-masks     # masks and quantization on the GPU (~3 min): dense-mask tiles,
#                                                  # Sparge, Sage, key padding, fused quantization
#   bash benchmarks/gpu_session.sh gluon           # issue 13 (~6 min): host cost per piece, the Gluon tests,
#                                                  # bench_gluon on B1 H24 D64/D128 4k/16k
#   bash benchmarks/gpu_session.sh bench           # smartcompile bench --out (issue 15's tables)
#   bash benchmarks/gpu_session.sh demo            # smartcompile demo --profile --out
# Carry `.whl` (wheels downloaded here for cp312 manylinux: jsonschema + its deps, diffusers, importlib_metadata,
# safetensors, matplotlib + its deps). At most 8 files come back from $OUT: each stage writes at most 6.
set -o pipefail
stage=${1:?stage: tests-sage, tests-other, tests-masks, gluon, bench or demo}
source benchmarks/gpu_setup.sh .whl
case $stage in
  tests-sage)
    python3 -m pytest -q -p no:cacheprovider tests/test_gpu_sage.py tests/test_gpu_sage_gluon.py > $OUT/gpu_tests_sage.log 2>&1
    tail -3 $OUT/gpu_tests_sage.log ;;
  tests-other)
    files=$(ls tests/test_gpu_*.py | grep -v sage)
    python3 -m pytest -q -p no:cacheprovider $files > $OUT/gpu_tests_other.log 2>&1
    tail -3 $OUT/gpu_tests_other.log ;;
  tests-masks)
    python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_mask_blocks.py tests/test_gpu_sparge.py \
        tests/test_gpu_sage.py tests/test_sparge_padding.py tests/test_sage_quantize.py > $OUT/gpu_tests_masks.log 2>&1
    tail -3 $OUT/gpu_tests_masks.log ;;
  gluon)
    python3 benchmarks/bench_host.py --out $OUT/host > $OUT/bench_host.log 2>&1; grep "host " $OUT/bench_host.log
    python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py > $OUT/gpu_tests_gluon.log 2>&1
    tail -3 $OUT/gpu_tests_gluon.log
    python3 benchmarks/bench_gluon.py --variants ws2-nopp-split-c3-s4 --dims 64,128 --lens 4096,16384 \
        --batches 1x24 --out $OUT/gluon > $OUT/bench_gluon.log 2>&1
    grep -A30 "TFLOP/s" $OUT/bench_gluon.log ;;
  bench)
    python3 -m smartcompile.cli bench --out /tmp/bench 2>&1 | tr '\r' '\n' | grep -v "it/s]\|s/it]" > $OUT/bench.log
    cp /tmp/bench/bench.json /tmp/bench/bench.md /tmp/bench/bench.png $OUT/ 2>/dev/null; tail -30 $OUT/bench.md ;;
  demo)
    python3 -m smartcompile.cli demo --device cuda --profile --out /tmp/demo 2>&1 | tr '\r' '\n' \
        | grep -v "it/s]\|s/it]" > $OUT/demo.log
    cp /tmp/demo/summary.json /tmp/demo/frames.png /tmp/demo/profiled_policy.json $OUT/ 2>/dev/null
    grep -A10 "^policy " $OUT/demo.log ;;
  *) echo "unknown stage $stage"; exit 2 ;;
esac
