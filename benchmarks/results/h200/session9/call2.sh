# session 9, call 2: the launch cache on the GPU (tests, launch paths, host us per piece), then the Sage tests
source benchmarks/gpu_setup.sh .whl
timeout 100 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_launch_cache.py > $OUT/gpu_tests_launch_cache.log 2>&1; tail -3 $OUT/gpu_tests_launch_cache.log
timeout 60 python3 benchmarks/bench_launch_paths.py --out $OUT > $OUT/launch_paths.log 2>&1; tail -2 $OUT/launch_paths.log
timeout 120 python3 benchmarks/bench_host.py --out $OUT > $OUT/bench_host.log 2>&1; grep "host " $OUT/bench_host.log
timeout 330 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage.py tests/test_gpu_sage_gluon.py > $OUT/gpu_tests_sage.log 2>&1; tail -4 $OUT/gpu_tests_sage.log
