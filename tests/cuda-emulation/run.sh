#!/usr/bin/env bash
# The CUDA kernel sources (RMSNorm, AdamW, MUDD mixing) run on the CPU (one thread per CUDA thread) against plain loops in double:
# indexing, reductions, bf16 rounding and the AdamW guard, without a GPU or NVRTC. Needs g++ (C++20); ~3.5 min.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
g++ -std=c++20 -O1 -pthread -Wall -Wno-unknown-pragmas "$here/check.cpp" -o "$out/check"
"$out/check"
