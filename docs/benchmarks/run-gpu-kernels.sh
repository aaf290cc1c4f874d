#!/usr/bin/env bash
# Issue 12 on a CUDA host with PyTorch installed (no .NET needed): the fused kernels' self-test, then
# a short `disttrain bench` of the 405M MUDDFormer and Transformer++ with train.kernels=fused and =reference.
# Usage: docs/benchmarks/run-gpu-kernels.sh BUNDLE.tar.xz OUTDIR     (run from the repository root: configs/ is read)
set -uo pipefail
bundle=$1 out=$2
mkdir -p "$out" /tmp/disttrain
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib:${LD_LIBRARY_PATH:-}
export NO_COLOR=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
# a fresh kernel cache: the first run compiles (its time shows in kernel-test), the benches load the CUBINs
export DISTTRAIN_KERNEL_CACHE=/tmp/disttrain-kernels
rm -rf "$DISTTRAIN_KERNEL_CACHE"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu-kernels.txt"
python3 -c 'import torch; print("torch", torch.__version__)' | tee -a "$out/gpu-kernels.txt"
date -u | tee -a "$out/gpu-kernels.txt"

tar -C /tmp/disttrain -xJf "$bundle"
bin=/tmp/disttrain/disttrain/disttrain
( time timeout 300 $bin kernel-test ) 2>&1 | tee "$out/kernel-test.txt"
status=${PIPESTATUS[0]}
ls -l "$DISTTRAIN_KERNEL_CACHE" | tee -a "$out/kernel-test.txt"

for arch in muddformer transformerpp; do
  for kernels in fused reference; do
    timeout 150 $bin bench --config configs/405m-$arch.yaml --set train.device=cuda --set train.precision=bf16 --reader-tokens 0 \
      --steps 10 --set train.kernels=$kernels --json "$out/405m-$arch-$kernels.json" 2>&1 | tee "$out/405m-$arch-$kernels.txt"
  done
done
exit $status
