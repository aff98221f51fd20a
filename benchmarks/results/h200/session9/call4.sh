# session 9, call 4: the profile tests (call 3 ran out of time in their last test), then Wan at 4,680 tokens
source benchmarks/gpu_setup.sh .whl
timeout 170 python3 -m pytest -q -p no:cacheprovider -rf --durations=3 tests/test_gpu_profile.py > $OUT/gpu_tests_profile.log 2>&1
echo "profile: rc=$? $(tail -1 $OUT/gpu_tests_profile.log)"; grep -h -A3 "FAILED\|Error\|slowest" $OUT/gpu_tests_profile.log | head -12
timeout 210 python3 benchmarks/bench_wan.py --frames 3 --policies auto,sage --rounds 4 --repeats 5 --out $OUT > $OUT/bench_wan_4680.log 2>&1
tail -10 $OUT/bench_wan_4680.log
