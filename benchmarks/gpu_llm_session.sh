#!/usr/bin/env bash
# One device call for the LLM prefill benchmark (issue 11): carry .whl (jsonschema + deps, safetensors,
# importlib_metadata, transformers 5.24, diffusers; the device has the rest). Optional: TESTS='tests/...' runs those
# first (170 s cap); CASES / POLICIES pass through to benchmarks/bench_llm_prefill.py.
set -o pipefail
source benchmarks/gpu_setup.sh .whl
[ -n "$TESTS" ] && { timeout 170 python3 -m pytest -q -p no:cacheprovider -rf $TESTS > $OUT/gpu_tests.log 2>&1; echo TESTS_RC=$?; tail -4 $OUT/gpu_tests.log; }
timeout 370 python3 benchmarks/bench_llm_prefill.py --cases ${CASES:-ones,padded} --policies "${POLICIES:-torch.compile default,smartattn exact,smartattn auto}" --repeats 5 --out $OUT 2>&1 | grep -v "^DEBUG\|^INFO" > $OUT/llm.log; echo LLM_RC=$?; tail -12 $OUT/llm.log
