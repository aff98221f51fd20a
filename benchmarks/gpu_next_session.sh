#!/usr/bin/env bash
# The device-call stages of issue 13's sessions, one per device call. Session 11 ran bn64, anchors, tests-other,
# wan32k and direct (results/h200/session11/README.md); session 12 had no device time; session 13 measured the
# row sums by wgmma (wrong on the GPU), `direct` on SPLIT and the exact lazy rescale (both slower) and removed
# the two (results/h200/session13/README.md); session 14 found the row sums' fault (a ones tile written from
# registers), shipped them with TMA-loaded ones and ran `sum` (results/h200/session14/README.md); session 15 ran the
# GPU tests, wan32k and sparge-sum and shipped the row sums for Sparge too (results/h200/session15/README.md);
# session 16 ran long-rows, host, default-timing, ncu and the anchors (results/h200/session16/README.md); session 17
# ran host, pair, ship-pair, wan-kernels, anchors-d128 and sparge-pair and shipped PAIR_LAUNCH at D128 non-causal
# (results/h200/session17/README.md). Next: `pair` (the dense pair tests: the rounds took block lists after their
# run), then make SPARSE_PAIR_LAUNCH sparse_launch's (then tests-sparge and the sparge_gluon tests, wan32k for Sparge
# 50%), tests-sage / tests-other.
# Rerun the tests-* stages after any change to the shipped kernels, then wan32k and anchors for the numbers.
#   bash benchmarks/gpu_next_session.sh pair         rounds of two tiles: GPU tests, timing against the shipped (s17)
#   bash benchmarks/gpu_next_session.sh ship-pair    PAIR_LAUNCH shipped: its tests, 64k-key rows, Wan auto (s17)
#   bash benchmarks/gpu_next_session.sh wan-kernels  Wan auto with each policy's costliest GPU kernels (s17)
#   bash benchmarks/gpu_next_session.sh anchors-d128 the anchors at D128, then ncu on the shipped launch (s17)
#   bash benchmarks/gpu_next_session.sh sparge-pair  Sparge's block lists in pairs: GPU tests, timing (s17)
#   bash benchmarks/gpu_next_session.sh sum          the shipped default_launch's GPU tests (sage_gluon, sparge_gluon)
#   bash benchmarks/gpu_next_session.sh long-rows    `direct` on 16k-64k-key rows vs fp32; D64 causal timed (s16)
#   bash benchmarks/gpu_next_session.sh host         cached TMA encodings + default_launch: GPU tests, host us (s16)
#   bash benchmarks/gpu_next_session.sh default-timing  default_launch vs sage_triton, 4k/16k, causal (s16)
#   bash benchmarks/gpu_next_session.sh ncu          Nsight Compute on the shipped launches at 16k (session 16)
#   bash benchmarks/gpu_next_session.sh probe        small-N wgmma probe, then the sum_mma launches timed
#   bash benchmarks/gpu_next_session.sh sparge-sum   the row sums by wgmma on Sparge's block lists (session 15: shipped)
#   bash benchmarks/gpu_next_session.sh split-direct SPLIT + one-level accumulation (3 consumers at D64): tests, timing
#   bash benchmarks/gpu_next_session.sh bn64         64-key tiles (INTRA without spills at D128): GPU tests, then timing
#   bash benchmarks/gpu_next_session.sh direct       INTRA with one-level accumulation: GPU tests, then timing to 32k
#   bash benchmarks/gpu_next_session.sh anchors      cuDNN BF16/FP8, flash, ours in one run (bench_cudnn_fp8.py)
#   bash benchmarks/gpu_next_session.sh sparge-gluon Sparge on the Gluon kernel: GPU tests, then bench_sparge.py
#   bash benchmarks/gpu_next_session.sh scratch      kernels/scratch.py's GPU tests, then host us and Sparge at 4k with
#                                                    it off and on (session 10: passed, turned on)
#   bash benchmarks/gpu_next_session.sh tests-sage   test_gpu_sage.py and the shipped launches of test_gpu_sage_gluon.py
#   bash benchmarks/gpu_next_session.sh tests-gluon-launches   the other launches of test_gpu_sage_gluon.py
#   bash benchmarks/gpu_next_session.sh tests-other  every other GPU test file but test_gpu_sparge.py
#   bash benchmarks/gpu_next_session.sh tests-sparge test_gpu_sparge.py (the Triton Sparge kernel, 142 tests)
#   bash benchmarks/gpu_next_session.sh wan32k       the E2E targets at 32,760 tokens (auto, Sparge 50%), ~5 min
# Wheels to carry in .whl (the device has no network): pip download -d .whl --no-deps --only-binary=:all:
#   --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any
#   transformers==5.24.0 diffusers==0.42.1 jsonschema jsonschema-specifications referencing rpds-py attrs
#   importlib_metadata zipp nvidia-cudnn-frontend==1.16.0; and `pip download -d .whl --no-deps sageattention==1.0.6`
# pytest and the scripts must run inside this script: it sources gpu_setup.sh (PYTHONPATH, entry points), and a
# command after `bash script.sh` in the same device call does not see them.
set -o pipefail
source benchmarks/gpu_setup.sh .whl
with_scratch="import runpy, sys; from smartcompile.kernels import scratch; scratch.ENABLED = True; \
sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
case ${1:?stage: fold-q, wan-sparse-pair, ship-sparse-pair, sparge-pair-bench, sparge-pair, anchors-d128, wan-kernels, ship-pair, pair, sum, long-rows, host, default-timing, ncu, probe, sparge-sum, split-direct, bn64, direct, anchors, sparge-gluon, scratch, scratch-order, tests-sage, tests-gluon-launches, tests-other, tests-sparge or wan32k} in
  sum)  # session 14: the shipped default_launch (row sums by wgmma, TMA ones) and its alternatives, GPU tests
    timeout 330 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py -k "default or sum or lse or large or selects" \
        > $OUT/gpu_tests_sage_gluon.log 2>&1
    echo "sage_gluon tests rc=$? $(tail -1 $OUT/gpu_tests_sage_gluon.log)"; grep -h "^FAILED" $OUT/gpu_tests_sage_gluon.log | head -15
    timeout 90 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sparge_gluon.py > $OUT/gpu_tests_sparge_gluon.log 2>&1
    echo "sparge_gluon tests rc=$? $(tail -1 $OUT/gpu_tests_sparge_gluon.log)"; grep -h "^FAILED" $OUT/gpu_tests_sparge_gluon.log | head -10 ;;
  sparge-sum)  # the row sums by wgmma on Sparge's block lists (shipped in session 15): its GPU test, then timing
    timeout 150 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sparge_gluon.py -k "row_sums" \
        > $OUT/gpu_tests_sparge_sum.log 2>&1
    echo "tests: rc=$? $(tail -1 $OUT/gpu_tests_sparge_sum.log)"; grep -h "^FAILED" $OUT/gpu_tests_sparge_sum.log | head
    timeout 200 python3 benchmarks/bench_sparge.py --lens 4096,16384 --dims 128 --densities 0.5 --kinds structured \
        --impls triton,gluon128,gluon128-sum --out $OUT/sparge_sum > $OUT/bench_sparge_sum.log 2>&1
    echo "bench rc=$?"; grep "D[0-9]" $OUT/bench_sparge_sum.log ;;
  long-rows)  # (written in session 15, not run) `direct` against fp32 on rows of 16k-64k keys (DIRECT_MAX_KEYS), then
    # D64 causal (left to sage_triton: never measured) and D128 causal at 4k and 16k, the shipped launch against the
    # others and sage_triton
    timeout 250 python3 benchmarks/check_direct_long_rows.py --out $OUT > $OUT/check_direct_long_rows.log 2>&1
    echo "long rows rc=$?"; grep -h "^H\|passes up" $OUT/check_direct_long_rows.log | cut -c1-230
    timeout 290 python3 benchmarks/bench_gluon.py --dims 64 --lens 4096,16384 --batches 1x24 --causal-dims 64,128 \
        --causal-lens 4096,16384 --out $OUT --variants ws2-nopp-split-c3-s4,ws2-nopp-split-sum-c3-s4,ws2-nopp-split-direct-sum-c3-s4 \
        > $OUT/bench_gluon_causal.log 2>&1
    echo "bench rc=$?"; grep -h "cudnn \|^B1\|causal.*cos\|triton-kernel\|^    gluon" $OUT/bench_gluon_causal.log | head -70 ;;
  fold-q)  # session 18: Q quantized by the consumers (fold_q) and pairs with one barrier per round (lean_sync):
    # bit-identity tests, then timing against the shipped
    timeout 180 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py -k "fold_q or lean" \
        > $OUT/gpu_tests_fold_q.log 2>&1
    echo "fold_q/lean tests rc=$? $(tail -1 $OUT/gpu_tests_fold_q.log)"; grep -h -A3 "^FAILED\|Error" $OUT/gpu_tests_fold_q.log | head -20
    timeout 210 python3 benchmarks/bench_gluon.py --dims 128 --lens 4096,16384 --batches 1x24 --causal-dims "" \
        --out $OUT/d128 --variants default,ws2-pair-s2-foldq,ws2-pair-s2-lean,ws2-pair-s2-lean-foldq \
        > $OUT/bench_gluon_fold_d128.log 2>&1
    echo "bench D128 rc=$?"; sed -n '/^TFLOP/,$p' $OUT/bench_gluon_fold_d128.log | head -30
    timeout 130 python3 benchmarks/bench_gluon.py --dims 64 --lens 4096,16384 --batches 1x24 --causal-dims "" \
        --out $OUT/d64 --variants default,ws2-nopp-split-direct-sum-c3-s4-foldq > $OUT/bench_gluon_fold_d64.log 2>&1
    echo "bench D64 rc=$?"; sed -n '/^TFLOP/,$p' $OUT/bench_gluon_fold_d64.log | head -30 ;;
  wan-sparse-pair)  # session 18: Wan auto and Sparge 50% (128-row blocks: sparge_gluon, now in pairs), then 4k
    # Sparge timed twice per launch (call 1 saw the first launch timed at each D run ~2x slower), eager and as graphs
    timeout 420 python3 benchmarks/bench_wan.py --frames 21 --rounds 3 --repeats 3 \
        --policies "auto,sparge 50% self-attention 128-row blocks" --out $OUT > $OUT/bench_wan_32760.log 2>&1
    echo "wan rc=$?"; tail -5 $OUT/bench_wan_32760.log
    for g in ""; do
      timeout 90 python3 benchmarks/bench_sparge.py --lens 4096 --dims 128 --densities 0.5 --kinds structured $g \
          --impls gluon128-sum,gluon128-pair,gluon128-sum,gluon128-pair --out $OUT > $OUT/bench_sparge_4k$g.log 2>&1
      echo "bench $g rc=$?"; grep "D[0-9]" $OUT/bench_sparge_4k$g.log
    done ;;
  ship-sparse-pair)  # session 18: the dense pair tests (rounds took block lists after their s17 run), then
    # SPARSE_PAIR_LAUNCH as sparse_launch's: every sparge_gluon test, then its timing at D128 and D64
    timeout 230 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py -k "pair or default" \
        > $OUT/gpu_tests_pair.log 2>&1
    echo "pair/default tests rc=$? $(tail -1 $OUT/gpu_tests_pair.log)"; grep -h -A3 "^FAILED\|Error" $OUT/gpu_tests_pair.log | head -20
    timeout 150 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sparge_gluon.py > $OUT/gpu_tests_sparge_gluon.log 2>&1
    echo "sparge_gluon tests rc=$? $(tail -1 $OUT/gpu_tests_sparge_gluon.log)"; grep -h -A3 "^FAILED\|Error" $OUT/gpu_tests_sparge_gluon.log | head -20
    timeout 190 python3 benchmarks/bench_sparge.py --lens 4096,16384 --dims 128,64 --densities 0.5 --kinds structured \
        --impls gluon128-pair,gluon128-sum --out $OUT > $OUT/bench_sparge_pair.log 2>&1
    echo "bench rc=$?"; grep "D[0-9]" $OUT/bench_sparge_pair.log ;;
  sparge-pair)  # session 17: rounds of two kept blocks (SPARSE_PAIR_LAUNCH): GPU tests, then timing against sum_mma
    timeout 130 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sparge_gluon.py -k "rounds" \
        > $OUT/gpu_tests_sparge_pair.log 2>&1
    echo "tests rc=$? $(tail -1 $OUT/gpu_tests_sparge_pair.log)"; grep -h -A3 "^FAILED\|Error" $OUT/gpu_tests_sparge_pair.log | head -20
    timeout 200 python3 benchmarks/bench_sparge.py --lens 4096,16384 --dims 128,64 --densities 0.5 --kinds structured \
        --impls gluon128-sum,gluon128-pair --out $OUT > $OUT/bench_sparge_pair.log 2>&1
    echo "bench rc=$?"; grep "D[0-9]" $OUT/bench_sparge_pair.log ;;
  sparge-pair-bench)  # session 17: the timing half of sparge-pair alone
    timeout 200 python3 benchmarks/bench_sparge.py --lens 4096,16384 --dims 128 --densities 0.5 --kinds structured \
        --impls gluon128-sum,gluon128-pair --out $OUT > $OUT/bench_sparge_pair.log 2>&1
    echo "bench rc=$?"; grep "D[0-9]" $OUT/bench_sparge_pair.log; tail -3 $OUT/bench_sparge_pair.log ;;
  anchors-d128)  # session 17: the anchors at D128 with PAIR_LAUNCH shipped, then ncu on it (kernel alone, 16k)
    timeout 330 python3 benchmarks/bench_cudnn_fp8.py --dims 128 --lens 4096,16384 --batches 1x24,4x32 --out $OUT \
        > $OUT/bench_cudnn_fp8.log 2>&1
    echo "rc=$?"; grep -v "^{" $OUT/bench_cudnn_fp8.log | tail -30
    NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    timeout 120 $NCU --clock-control none -k regex:_sage_fwd_sm90 --launch-skip 1 --launch-count 1 \
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section SchedulerStats --section WarpStateStats \
        --section Occupancy python3 benchmarks/bench_gluon.py --profile --dims 128 --variants default \
        > $OUT/ncu_d128_16k.txt 2>&1
    echo "ncu rc=$?"; grep -h "Duration\|Compute (SM) Throughput\|Issue Slots Busy\|Eligible Warps\|No Eligible" $OUT/ncu_d128_16k.txt ;;
  wan-kernels)  # session 17: the row-sum test on PAIR_LAUNCH, then Wan auto with each policy's costliest kernels
    timeout 100 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py -k "row_sums_match" \
        > $OUT/gpu_tests_row_sums.log 2>&1
    echo "row-sum tests rc=$? $(tail -1 $OUT/gpu_tests_row_sums.log)"; grep -h -A3 "^FAILED\|Error" $OUT/gpu_tests_row_sums.log | head
    timeout 330 python3 benchmarks/bench_wan.py --frames 21 --rounds 3 --repeats 3 --policies auto --kernels \
        --out $OUT > $OUT/bench_wan_32760_kernels.log 2>&1; grep -v Warn $OUT/bench_wan_32760_kernels.log | tail -30 ;;
  ship-pair)  # session 17: PAIR_LAUNCH as default_launch at D128 non-causal: its tests, 64k-key rows, Wan auto
    timeout 170 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py -k "default or selects" \
        > $OUT/gpu_tests_default.log 2>&1
    echo "default tests rc=$? $(tail -1 $OUT/gpu_tests_default.log)"; grep -h -A3 "^FAILED\|Error" $OUT/gpu_tests_default.log | head -20
    timeout 100 python3 benchmarks/check_direct_long_rows.py --dims 128 --causal 0 --lens 65536 --out $OUT \
        > $OUT/check_direct_long_rows.log 2>&1
    echo "long rows rc=$?"; grep -h "^H" $OUT/check_direct_long_rows.log | cut -c1-330
    timeout 300 python3 benchmarks/bench_wan.py --frames 21 --rounds 4 --repeats 3 --policies auto --out $OUT \
        > $OUT/bench_wan_32760.log 2>&1; tail -5 $OUT/bench_wan_32760.log ;;
  pair)  # session 17: rounds of two 128-key tiles (`pair`): GPU tests, then timing against the shipped launch
    timeout 240 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py -k "pair" \
        > $OUT/gpu_tests_pair.log 2>&1
    echo "pair tests rc=$? $(tail -1 $OUT/gpu_tests_pair.log)"; grep -h -A3 "^FAILED\|Error" $OUT/gpu_tests_pair.log | head -20
    timeout 280 python3 benchmarks/bench_gluon.py --dims 128,64 --lens 4096,16384 --batches 1x24 --causal-dims 128 \
        --causal-lens 16384 --out $OUT --variants default,ws2-pair-s2,ws2-pair-s3 > $OUT/bench_gluon_pair.log 2>&1
    echo "bench rc=$?"; sed -n '/^TFLOP/,$p' $OUT/bench_gluon_pair.log | head -60 ;;
  host)  # session 16: cached TMA encodings (kernels/tma_launch.py) and the new default_launch: GPU tests, host us
    timeout 200 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_launch_cache.py tests/test_gpu_scratch.py \
        tests/test_gpu_sparge_gluon.py > $OUT/gpu_tests_launch.log 2>&1
    echo "launch/scratch/sparge_gluon tests rc=$? $(tail -1 $OUT/gpu_tests_launch.log)"; grep -h -A3 "^FAILED\|Error" $OUT/gpu_tests_launch.log | head -20
    timeout 150 python3 benchmarks/bench_host.py --out $OUT > $OUT/bench_host.log 2>&1
    echo "bench_host rc=$?"; grep " host " $OUT/bench_host.log
    timeout 200 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py -k "default or selects or long" \
        > $OUT/gpu_tests_default.log 2>&1
    echo "sage_gluon default tests rc=$? $(tail -1 $OUT/gpu_tests_default.log)"; grep -h -A3 "^FAILED\|Error" $OUT/gpu_tests_default.log | head -20 ;;
  default-timing)  # session 16: the shipped default_launch against sage_triton at 4k and 16k, causal too (selection)
    timeout 300 python3 benchmarks/bench_gluon.py --dims 64,128 --lens 4096,16384 --batches 1x24 --causal-dims 64,128 \
        --causal-lens 4096,16384 --out $OUT --variants default > $OUT/bench_gluon_default.log 2>&1
    echo "bench rc=$?"; sed -n '/^TFLOP/,$p' $OUT/bench_gluon_default.log | head -60 ;;
  ncu)  # session 16: Nsight Compute on the shipped launches (D128 16k `sum`, D64 16k `direct-sum`), kernel alone
    NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    [ -n "$NCU" ] || { echo "no ncu on this machine"; exit 4; }
    for d in 128 64; do
      timeout 240 $NCU --clock-control none -k regex:_sage_fwd_sm90 --launch-skip 1 --launch-count 1 \
          --section SpeedOfLight --section ComputeWorkloadAnalysis --section SchedulerStats \
          --section WarpStateStats --section InstructionStats --section Occupancy \
          --metrics sm__inst_executed_pipe_tensor_op_gmma.avg.pct_of_peak_sustained_active \
          python3 benchmarks/bench_gluon.py --profile --dims $d --variants default > $OUT/ncu_d${d}_16k.txt 2>&1
      echo "ncu D$d rc=$?"; grep -h "Duration\|Compute (SM) Throughput\|Issue Slots Busy\|Eligible Warps\|gmma\|Registers Per\|Achieved Occupancy\|No Eligible" $OUT/ncu_d${d}_16k.txt
    done ;;
  probe)  # session 14: small-N FP8 wgmmas alone (benchmarks/probe_small_n_wgmma.py), then the launches timed
    timeout 70 python3 benchmarks/probe_small_n_wgmma.py --quick > $OUT/probe_small_n.log 2>&1
    echo "probe rc=$?"; cut -c1-150 $OUT/probe_small_n.log
    timeout 250 python3 benchmarks/bench_gluon.py --dims 128,64 --lens 16384,4096 --batches 1x24 --out $OUT \
        --variants ws2-nopp-split-c3-s4,ws2-nopp-split-sum-c3-s4,ws2-nopp-split-direct-sum-c3-s4 > $OUT/bench_gluon_sum.log 2>&1
    echo "bench rc=$?"; grep -h "gluon-kernel\|^B1\|cudnn \|triton-kernel\|same inputs" $OUT/bench_gluon_sum.log | head -60 ;;
  bn64)  # 64-key tiles: INTRA without spills at D128 (compile-checked in session 10, never run on a GPU)
    timeout 300 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py -k "bn64" \
        > $OUT/gpu_tests_bn64.log 2>&1
    echo "tests: rc=$? $(tail -1 $OUT/gpu_tests_bn64.log)"; grep -h -B2 -A12 "^E " $OUT/gpu_tests_bn64.log | head -30
    timeout 280 python3 benchmarks/bench_gluon.py --dims 64,128 --lens 4096,16384 --batches 1x24 --out $OUT \
        --variants ws2-nopp-split-c3-s4,ws2-pp-split-s4,ws2-nopp-intra-s4,ws2-nopp-intra-bn64-s4,ws2-pp-intra-bn64-s4,ws2-nopp-split-bn64-s4,ws2-nopp-split-c3-bn64-s4,ws2-nopp-intra-bn64-s8,ws2-pp-intra-bn64-s8,ws2-nopp-intra-c3-bn64-s8 \
        > $OUT/bench_gluon_bn64.log 2>&1
    echo "bench rc=$?"; grep -h "gluon-kernel\|^B1\|cudnn \|triton-kernel" $OUT/bench_gluon_bn64.log | grep -v "cos " | head -60 ;;
  direct)  # session 11: INTRA with one-level accumulation (P V onto O in the FP8 wgmma), spill-free at D128
    timeout 170 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py -k "direct" \
        > $OUT/gpu_tests_direct.log 2>&1
    echo "tests: rc=$? $(tail -1 $OUT/gpu_tests_direct.log)"; grep -h "^FAILED\|^E  .*cos" $OUT/gpu_tests_direct.log | head -20
    timeout 230 python3 benchmarks/bench_gluon.py --dims 64,128 --lens 4096,16384,32768 --batches 1x24 --out $OUT \
        --variants ws2-nopp-split-c3-s4,ws2-nopp-intra-direct-s4,ws2-pp-intra-direct-s4 \
        > $OUT/bench_gluon_direct.log 2>&1
    echo "bench rc=$?"; grep -h "gluon-kernel\|^B1\|cudnn \|triton-kernel\|cos" $OUT/bench_gluon_direct.log | head -70 ;;
  split-direct)  # session 11: SPLIT with one-level accumulation (three consumers at D64, two at D128)
    timeout 110 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py -k "split-c3-direct or split-direct" \
        > $OUT/gpu_tests_split_direct.log 2>&1
    echo "tests: rc=$? $(tail -1 $OUT/gpu_tests_split_direct.log)"; grep -h "^FAILED\|^E  .*cos" $OUT/gpu_tests_split_direct.log | head -20
    timeout 130 python3 benchmarks/bench_gluon.py --dims 128,64 --lens 16384,4096 --batches 1x24 --out $OUT \
        --variants ws2-nopp-split-c3-s4,ws2-nopp-split-direct-c3-s4,ws2-nopp-split-direct-s4 \
        > $OUT/bench_gluon_split_direct.log 2>&1
    echo "bench rc=$?"; grep -h "gluon-kernel\|^B1\|cudnn \|triton-kernel\|same inputs" $OUT/bench_gluon_split_direct.log | head -60 ;;
  anchors)  # issue 13's anchors in one run, cuDNN FP8 SDPA included (needs nvidia-cudnn-frontend 1.16.0 in .whl)
    timeout 560 python3 benchmarks/bench_cudnn_fp8.py --dims 64,128 --lens 4096,16384 --batches 1x24,4x32 --out $OUT \
        > $OUT/bench_cudnn_fp8.log 2>&1
    echo "rc=$?"; grep -v "^{" $OUT/bench_cudnn_fp8.log | tail -45 ;;
  sparge-gluon)  # Sparge on the Gluon kernel: its tests, the dense Gluon kernel's quick ones, then the timing
    timeout 240 python3 -m pytest -q -p no:cacheprovider -rf -x tests/test_gpu_sparge_gluon.py \
        tests/test_gpu_sage_gluon.py -k "sparge or matches_triton or lse" > $OUT/gpu_tests_sparge_gluon.log 2>&1
    echo "tests: rc=$? $(tail -1 $OUT/gpu_tests_sparge_gluon.log)"; grep -h -B2 -A12 "^E " $OUT/gpu_tests_sparge_gluon.log | head -30
    timeout 200 python3 benchmarks/bench_sparge.py --lens 4096,16384 --dims 64,128 --densities 0.5 --kinds structured \
        --impls triton,triton128,gluon128 --out $OUT/sparge_gluon > $OUT/bench_sparge_gluon.log 2>&1
    echo "bench rc=$?"; grep "D[0-9]" $OUT/bench_sparge_gluon.log; tail -3 $OUT/bench_sparge_gluon.log ;;
  scratch-order)  # the same Sparge runs, scratch on first: is the 4k gain the scratch or the run order?
    for on in on off; do
      if [ $on = on ]; then run="python3 -c \"$with_scratch\""; else run=python3; fi
      eval timeout 90 $run benchmarks/bench_sparge.py --lens 4096 --dims 64,128 --densities 0.5 \
          --kinds structured --out $OUT/sparge2_$on > $OUT/bench_sparge2_$on.log 2>&1
      echo "scratch $on:"; grep "D[0-9]" $OUT/bench_sparge2_$on.log
    done ;;
  scratch)
    timeout 150 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_scratch.py > $OUT/gpu_tests_scratch.log 2>&1
    echo "scratch tests: rc=$? $(tail -1 $OUT/gpu_tests_scratch.log)"
    timeout 150 python3 benchmarks/bench_host.py --out $OUT > $OUT/bench_host.log 2>&1; grep "host " $OUT/bench_host.log
    for on in off on; do
      if [ $on = on ]; then run="python3 -c \"$with_scratch\""; else run=python3; fi
      eval timeout 90 $run benchmarks/bench_sparge.py --lens 4096,16384 --dims 64,128 --densities 0.5 \
          --kinds structured --out $OUT/sparge_$on > $OUT/bench_sparge_$on.log 2>&1
      echo "scratch $on:"; grep "D[0-9]" $OUT/bench_sparge_$on.log
    done ;;
  tests-sage)  # session 15: the two sage files together ran past 580 s (270 of 274 passed): now two stages
    timeout 580 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage.py \
        tests/test_gpu_sage_gluon.py -k "test_gpu_sage.py or default or sum or lse or large or selects" \
        > $OUT/gpu_tests_sage.log 2>&1
    echo "rc=$? $(tail -1 $OUT/gpu_tests_sage.log)"; grep -h -A3 "FAILED\|Error" $OUT/gpu_tests_sage.log | head -20 ;;
  tests-gluon-launches)  # the launches of test_gpu_sage_gluon.py that are not shipped
    timeout 580 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sage_gluon.py \
        -k "not (default or sum or lse or large or selects)" > $OUT/gpu_tests_gluon_launches.log 2>&1
    echo "rc=$? $(tail -1 $OUT/gpu_tests_gluon_launches.log)"; grep -h -A3 "FAILED\|Error" $OUT/gpu_tests_gluon_launches.log | head -20 ;;
  tests-other)  # session 15: ran past 380 s with test_gpu_sparge.py in it: that file is now tests-sparge
    timeout 580 python3 -m pytest -q -p no:cacheprovider -rf $(ls tests/test_gpu_*.py | grep -v "sage\|sparge.py") \
        > $OUT/gpu_tests_other.log 2>&1
    echo "rc=$? $(tail -1 $OUT/gpu_tests_other.log)"; grep -h -A3 "FAILED\|Error" $OUT/gpu_tests_other.log | head -20 ;;
  tests-sparge)
    timeout 580 python3 -m pytest -q -p no:cacheprovider -rf tests/test_gpu_sparge.py > $OUT/gpu_tests_sparge.log 2>&1
    echo "rc=$? $(tail -1 $OUT/gpu_tests_sparge.log)"; grep -h -A3 "FAILED\|Error" $OUT/gpu_tests_sparge.log | head -20 ;;
  wan32k)
    timeout 560 python3 benchmarks/bench_wan.py --frames 21 --rounds 6 \
        --policies "auto,sparge 50% self-attention,sparge 50% self-attention 128-row blocks" \
        --repeats 3 --out $OUT > $OUT/bench_wan_32760.log 2>&1; tail -8 $OUT/bench_wan_32760.log ;;
esac
