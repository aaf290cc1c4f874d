#!/usr/bin/env bash
# Builds docs/benchmarks/kernel-bench/bench.cu once per variant of the kernels' tuning constants
# (nvcc, on the GPU host) and runs each: microseconds and TB/s of every kernel on the 405M shapes.
# Usage: docs/benchmarks/kernel-bench/run.sh [OUTFILE]        (the first line is today's constants)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/dev/stdout}
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
variants=(
  "-DRMS_BWD_BLOCKS_PER_SM=4"
  "-DRMS_BWD_BLOCKS_PER_SM=8"
  "-DMAXC=16 -DRMS_BWD_BLOCKS_PER_SM=8 -DMIX_UNROLL=4"
  "-DMAXC=32 -DRMS_BOUNDS=256 -DRMS_BWD_BLOCKS_PER_SM=16 -DMIX_UNROLL=8"
)
for i in "${!variants[@]}"; do
  v=${variants[$i]}
  echo "== variant $i: $v" >> "$out"
  if "$nvcc" -O3 -arch=sm_90 -std=c++17 $v -o "$tmp/bench$i" "$here/bench.cu" > "$tmp/nvcc$i.txt" 2>&1; then
    "$tmp/bench$i" >> "$out" 2>&1
  else
    tail -5 "$tmp/nvcc$i.txt" >> "$out"
  fi
done
