# session 9, call 5: host us per piece with the final launch-cache key (D128 4k), Wan 4,680 tokens with rotated rounds
source benchmarks/gpu_setup.sh .whl
timeout 90 python3 benchmarks/bench_host.py --shapes 1x24x4096x128 --out $OUT > $OUT/bench_host.log 2>&1; grep "host " $OUT/bench_host.log
timeout 150 python3 benchmarks/bench_wan.py --frames 3 --policies auto,sage --rounds 8 --repeats 5 --out $OUT > $OUT/bench_wan_4680.log 2>&1
tail -6 $OUT/bench_wan_4680.log
