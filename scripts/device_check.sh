#!/usr/bin/env bash
# On the GPU machine: install carried wheels, run the GPU tests, then a benchmark.
#   bash scripts/device_check.sh [quick|full|bench|tests|profile] [bench_sage.py arguments]
#   profile: the profiling/auto GPU tests, then benchmarks/bench_profile.py (30-layer DiT)
set -o pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
# the torch_dynamo_backends entry point needs an installed package (editable: no copy)
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || echo "note: editable install failed; backend='smartattn' by name will not resolve"
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
mode=${1:-quick}
if [ "$mode" = "profile" ]; then
  python3 -m pytest -q -x -p no:cacheprovider tests/test_gpu_profile.py 2>&1 | tee "$OUT/gpu_profile_tests.log" | tail -25
  python3 benchmarks/bench_profile.py --out "$OUT" 2>&1 | tee "$OUT/bench_profile.log" | grep -v "it/s]" | tail -45
  exit 0
fi
if [ "$mode" = "tests" ]; then
  python3 -m pytest -q -p no:cacheprovider tests/test_gpu_*.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
  exit 0
fi
if [ "$mode" != "bench" ]; then
  python3 -m pytest -q -x -p no:cacheprovider tests/test_gpu_sage.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
shift || true
case "$mode" in
  quick) python3 benchmarks/bench_sage.py --quick --out "$OUT" 2>&1 | tee "$OUT/bench.log" ;;
  full|bench) python3 benchmarks/bench_sage.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" ;;
esac
