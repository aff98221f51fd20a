#!/usr/bin/env bash
# One device call for the LLM prefill benchmark (issue 11): carry .whl_llm (jsonschema + deps, safetensors,
# importlib_metadata, packaging, transformers + its deps for cp312). Optional: TESTS='tests/...' runs those
# first (170 s cap); CASES / POLICIES pass through to benchmarks/bench_llm_prefill.py.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_llm/*.whl > /tmp/pip.log 2>&1 || { tail -5 /tmp/pip.log; exit 3; }
mkdir -p /tmp/site/smartcompile-0.dist-info
printf 'Metadata-Version: 2.1\nName: smartcompile\nVersion: 0\n' > /tmp/site/smartcompile-0.dist-info/METADATA
printf '[console_scripts]\nsmartcompile = smartcompile.cli:main\n\n[torch_dynamo_backends]\nsmartattn = smartcompile.compiler.backend:smartattn\n' > /tmp/site/smartcompile-0.dist-info/entry_points.txt
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
[ -n "$TESTS" ] && { timeout 170 python3 -m pytest -q -p no:cacheprovider -rf $TESTS > $OUT/gpu_tests.log 2>&1; echo TESTS_RC=$?; tail -4 $OUT/gpu_tests.log; }
timeout 370 python3 benchmarks/bench_llm_prefill.py --cases ${CASES:-ones,padded} --policies "${POLICIES:-torch.compile default,smartattn exact,smartattn auto}" --repeats 5 --out $OUT 2>&1 | grep -v "^DEBUG\|^INFO" > $OUT/llm.log; echo LLM_RC=$?; tail -12 $OUT/llm.log
