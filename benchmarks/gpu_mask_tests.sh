#!/usr/bin/env bash
# One device call: the mask and Sparge-padding tests (carry .whl; see gpu_llm_session.sh).
set -o pipefail
source benchmarks/gpu_setup.sh .whl
timeout 200 python3 -m pytest -q -p no:cacheprovider -rf tests/test_sparge_padding.py tests/test_gpu_sparge.py tests/test_key_padding_forms.py tests/test_mask_forms.py > $OUT/gpu_tests_sparge_padding.log 2>&1; echo RC=$?; tail -6 $OUT/gpu_tests_sparge_padding.log
