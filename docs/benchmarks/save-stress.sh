#!/usr/bin/env bash
# Issue 13, item 1: many short training runs that save every few steps, counting the runs that die.
# Before the fix 7 of 91 such runs ended in "Unknown scalar type" / "INTERNAL ASSERT FAILED at Scalar.h"
# right after a background save began.
#   docs/benchmarks/save-stress.sh [RUNS] [PARALLEL] [--set key=value ...]     (after `make build`)
# Prints one line per failed run (exit code, last error line) and a summary; logs stay in $OUT (default /tmp/save-stress).
set -uo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-300}; parallel=${2:-2}; shift $(( $# < 2 ? $# : 2 ))
out=${OUT:-/tmp/save-stress}; rm -rf "$out"; mkdir -p "$out"
bin=${DISTTRAIN:-dotnet src/DistTrain.Cli/bin/Release/net10.0/disttrain.dll}
# libtorch's CPU threads spin when their cores are taken: give each run its share (2 runs on 2 cores, each with
# every core: 300 tokens/s instead of 20,000)
export OMP_NUM_THREADS=$(( $(nproc) / parallel > 0 ? $(nproc) / parallel : 1 ))
one() {
  local i=$1; shift
  timeout 600 $bin train --config configs/tiny-muddformer.yaml --set train.steps=60 --set train.micro_batch=8 --set train.seq_len=64 \
    --set train.log_interval=10 --set train.eval_interval=0 --set train.eval_batches=0 --set checkpoint.interval=3 --set checkpoint.keep=2 \
    --set train.run_dir="$out/runs" --set train.name="r$i" --set checkpoint.dir="$out/ck-$i" "$@" > "$out/run-$i.log" 2>&1
  local code=$?
  rm -rf "$out/ck-$i" "$out"/runs/r$i-*
  if [ $code -ne 0 ]; then echo "run $i: exit $code: $(grep -m1 -iE 'scalar|assert|error|exception' "$out/run-$i.log")"; else rm -f "$out/run-$i.log"; fi
}
export -f one; export out bin
start=$(date +%s)
seq 1 "$runs" | xargs -P "$parallel" -I{} bash -c 'one {} "$@"' _ "$@" | tee "$out/failures.txt"
failed=$(wc -l < "$out/failures.txt")
echo "$runs runs (60 steps, a save every 3 steps: 20 saves each; $parallel at a time, $OMP_NUM_THREADS threads each), $failed failed, $(( $(date +%s) - start )) s, $(date -u +%F)"
