#!/usr/bin/env bash
# Prepared for the next session's device calls (issue 13). Run as one command per call, e.g.
#   bash benchmarks/gpu_next_session.sh wan32k     (the E2E targets at 32,760 tokens with the launch cache, ~5 min)
#   bash benchmarks/gpu_next_session.sh tests      (every GPU test file, ~9 min: give it its own call)
# pytest and the scripts must run inside this script: it sources gpu_setup.sh (PYTHONPATH, entry points);
# a command after `bash script.sh` in the same device call does not see them.
set -o pipefail
source benchmarks/gpu_setup.sh .whl
case ${1:?stage: wan32k or tests} in
  wan32k)
    timeout 560 python3 benchmarks/bench_wan.py --frames 21 --policies "auto,sparge 50% self-attention" --rounds 6 --repeats 3 \
        --out $OUT > $OUT/bench_wan_32760.log 2>&1; tail -8 $OUT/bench_wan_32760.log ;;
  tests)
    timeout 580 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_*.py > $OUT/gpu_tests.log 2>&1
    echo "rc=$? $(tail -1 $OUT/gpu_tests.log)"; grep -h -A3 "FAILED\|Error" $OUT/gpu_tests.log | head -20 ;;
esac
