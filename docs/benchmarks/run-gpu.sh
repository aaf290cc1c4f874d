#!/usr/bin/env bash
# GPU smoke test and throughput benchmark on a CUDA host with PyTorch installed (no .NET needed).
# Usage: docs/benchmarks/run-gpu.sh BUNDLE.tar.xz OUTDIR
# Unpacks the self-contained bundle, points it at PyTorch's libtorch, then:
#   1. the tiny MUDDFormer in fp32 on cuda (its losses are comparable with the CPU test's recorded ones)
#   2. training throughput of the 405M configs (bf16, micro-batch 8 x 2048) for each architecture
set -euo pipefail
bundle=$1 out=$2
mkdir -p "$out" /tmp/disttrain
tar -C /tmp/disttrain -xJf "$bundle"
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib:${LD_LIBRARY_PATH:-}
export NO_COLOR=1
bin=/tmp/disttrain/disttrain/disttrain
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__)' | tee -a "$out/gpu.txt"

# NCCL at world size 1, then a one-GPU job through the coordinator and the nccl communicator
$bin comm-test nccl --device 0 2>&1 | tee "$out/nccl.txt"
DISTTRAIN_JOB_TOKEN=gpu-check $bin launch --manifest cluster/one-gpu.yaml --config configs/tiny-muddformer.yaml \
  --set train.precision=bf16 --set train.steps=40 --set train.log_interval=10 --set train.run_dir=/tmp/runs 2>&1 | tee "$out/launch-one-gpu.txt"

$bin train --config configs/tiny-muddformer.yaml --set train.device=cuda --set train.steps=5 \
  --set train.micro_batch=8 --set train.seq_len=64 --set train.log_interval=1 --set train.eval_interval=0 \
  --set train.eval_batches=2 --set optim.warmup_steps=2 --set train.run_dir=/tmp/runs 2>&1 | tee "$out/tiny-cuda.txt"
$bin train --config configs/tiny-muddformer.yaml --set train.device=cuda --set train.precision=bf16 --set train.steps=5 \
  --set train.micro_batch=8 --set train.seq_len=64 --set train.log_interval=1 --set train.eval_interval=0 \
  --set train.eval_batches=2 --set optim.warmup_steps=2 --set train.run_dir=/tmp/runs 2>&1 | tee "$out/tiny-cuda-bf16.txt"

# peak device memory as nvidia-smi sees it (TorchSharp has no memory-statistics API): sampled every 200 ms
for arch in transformerpp denseformer muddformer; do
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > /tmp/mem-$arch.txt &
  sampler=$!
  $bin bench --config configs/405m-$arch.yaml --set train.device=cuda --set train.precision=bf16 \
    --steps ${BENCH_STEPS:-10} --warmup 3 --reader-tokens 0 2>&1 | tee "$out/405m-$arch.txt" || true
  kill $sampler
  echo "peak device memory (nvidia-smi): $(sort -n /tmp/mem-$arch.txt | tail -1) MiB" | tee -a "$out/405m-$arch.txt"
done
