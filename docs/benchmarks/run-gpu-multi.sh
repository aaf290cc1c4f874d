#!/usr/bin/env bash
# Issue 7: data parallelism over the GPUs of one host with `disttrain launch` and cluster/one-node-2gpu.yaml.
# Usage: docs/benchmarks/run-gpu-multi.sh BUNDLE.tar.xz OUTDIR
#   correctness: the 125M MUDDFormer on 2 GPUs against 1 GPU with the same global batch (16 x 2048) and schedule, 50 steps;
#   checkpoint:  the 2-GPU run saves at steps 20, 40 and 50; a 1-GPU run resumes from its step 40 to 50 (against the 2-GPU run's steps 45, 50);
#   scaling:     the 405M MUDDFormer, micro-batch 8 per GPU, tokens/s on 1 and 2 GPUs; all-reduce times from the traced steps' spans;
#   allreduce:   PyTorch's NCCL all-reduce on the same GPUs (tests/reference/allreduce.py) for the same message sizes;
#   failure:     SIGKILL of rank 1 in a running 2-GPU job; how long until `launch` exits, and what it says.
set -uo pipefail
bundle=$1 out=$2
mkdir -p "$out" /tmp/disttrain
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib:${LD_LIBRARY_PATH:-}
export NO_COLOR=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True NCCL_NVLS_ENABLE=0 DISTTRAIN_JOB_TOKEN=gpu-$$
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nvidia-smi topo -m; date -u; } | tee "$out/gpu-multi.txt"
tar -C /tmp/disttrain -xJf "$bundle"
bin=/tmp/disttrain/disttrain/disttrain
m=cluster/one-node-2gpu.yaml
c125=(--config configs/125m-muddformer.yaml --set train.global_batch=16 --set data.shards=2 --set train.log_interval=5 --set train.eval_interval=0
      --set train.eval_batches=0 --set optim.warmup_steps=10 --set train.run_dir=/tmp/runs)

# correctness + checkpoint
timeout 200 $bin train "${c125[@]}" --set train.steps=50 --set train.micro_batch=8 --set train.name=one-gpu 2>&1 | tail -12 | tee "$out/125m-1gpu.txt"
timeout 200 $bin launch --manifest $m "${c125[@]}" --set train.steps=50 --set train.micro_batch=8 --set train.name=two-gpu \
  --set checkpoint.interval=20 --set checkpoint.dir=/tmp/ck2 2>&1 | tail -20 | tee "$out/125m-2gpu.txt"
timeout 150 $bin train "${c125[@]}" --set train.steps=50 --set train.micro_batch=8 --set train.name=resumed --set checkpoint.dir=/tmp/ck2 \
  --resume /tmp/ck2/step-00000040 2>&1 | tail -8 | tee "$out/125m-resume-1gpu.txt"
for r in one-gpu two-gpu resumed; do echo "== $r"; cat /tmp/runs/$r-*/metrics.jsonl; done | tee "$out/125m-metrics.txt"

# scaling + all-reduce inside the run (console spans of rank 0: trace every 5th step, synchronised)
c405=(--config configs/405m-muddformer.yaml --set train.steps=30 --set train.micro_batch=8 --set train.log_interval=10 --set train.eval_interval=0
      --set train.eval_batches=0 --set data.shards=2 --set train.run_dir=/tmp/runs --set telemetry.trace_every=5)
timeout 150 $bin train "${c405[@]}" --set train.name=s1 2>&1 | tail -5 | tee "$out/405m-1gpu.txt"
OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none timeout 200 $bin launch --manifest $m "${c405[@]}" --set train.name=s2 \
  > "$out/405m-2gpu-full.txt" 2>&1
grep -v "^\[rank 1\]" "$out/405m-2gpu-full.txt" | grep -E "step +[0-9]+ +loss|finished|failed" | tee "$out/405m-2gpu.txt"
for r in s1 s2; do echo "== $r"; cat /tmp/runs/$r-*/metrics.jsonl; done | tee "$out/405m-metrics.txt"
# the same run with the whole gradient in one bucket: is the all-reduce time per call or per byte?
OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none timeout 200 $bin launch --manifest $m "${c405[@]}" --set train.name=s2b \
  --set train.steps=15 --set train.bucket_mb=1024 > "$out/405m-2gpu-onebucket-full.txt" 2>&1
timeout 120 torchrun --nproc_per_node=2 tests/reference/allreduce.py 67108864 810000000 2>&1 | grep "torch all_reduce" | tee "$out/torch-allreduce.txt"

# failure: SIGKILL rank 1 after it has trained a few steps
timeout 120 $bin launch --manifest $m "${c125[@]}" --set train.steps=100000 --set train.micro_batch=8 --set train.name=killed > "$out/kill.txt" 2>&1 &
launch=$!
for i in $(seq 1 90); do grep -q "step *10 " "$out/kill.txt" && break; sleep 1; done
victim=$(pgrep -f "worker .*--local-slot 1" | head -1)
start=$(date +%s.%N); kill -9 "$victim"; wait $launch; code=$?; end=$(date +%s.%N)
echo "killed rank 1 (pid $victim); launch exited with $code after $(python3 -c "print(f'{$end-$start:.1f}')") s" | tee -a "$out/kill.txt"
nvidia-smi --query-compute-apps=pid,used_memory --format=csv | tee -a "$out/kill.txt"
grep -v "^\[rank 0\] step\|^\[rank 1\] step" "$out/kill.txt" | tail -15
mkdir -p "$out/spans" && mv "$out"/*-full.txt "$out/spans/"
