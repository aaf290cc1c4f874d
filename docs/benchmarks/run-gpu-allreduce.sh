#!/usr/bin/env bash
# Issue 7: the all-reduce inside a 2-GPU run (405M MUDDFormer) from the traced steps' spans, with 64 MB buckets
# and with one bucket, next to PyTorch's NCCL all-reduce of the same sizes.  Usage: run-gpu-allreduce.sh BUNDLE OUT
set -uo pipefail
bundle=$1 out=$2
mkdir -p "$out" /tmp/disttrain
export LD_LIBRARY_PATH=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))'):${LD_LIBRARY_PATH:-}
export NO_COLOR=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True NCCL_NVLS_ENABLE=0 DISTTRAIN_JOB_TOKEN=gpu-$$
tar -C /tmp/disttrain -xJf "$bundle"
bin=/tmp/disttrain/disttrain/disttrain
spans() {  # the all_reduce spans' durations (ms) of rank 0 in a console-exported launch log
  python3 - "$1" <<'PY'
import re, sys
name = None; out = []
for line in open(sys.argv[1]):
    if not line.startswith("[rank 0] "): continue
    m = re.search(r"Activity.DisplayName:\s+(\S+)", line)
    if m: name = m.group(1)
    m = re.search(r"Activity.Duration:\s+(\d+):(\d+):([\d.]+)", line)
    if m and name == "all_reduce": out.append(round((int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))) * 1e3, 2))
print("all_reduce ms (rank 0, traced steps):", out)
PY
}
for mb in 64 1024; do
  OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none timeout 200 $bin launch --manifest cluster/one-node-2gpu.yaml \
    --config configs/405m-muddformer.yaml --set train.steps=20 --set train.micro_batch=8 --set train.log_interval=10 --set train.eval_interval=0 \
    --set train.eval_batches=0 --set data.shards=2 --set train.run_dir=/tmp/runs --set telemetry.trace_every=5 --set train.bucket_mb=$mb \
    > "$out/spans-$mb.txt" 2>&1
  echo "bucket_mb=$mb: $(spans "$out/spans-$mb.txt")"; grep "\[rank 0\] step" "$out/spans-$mb.txt"
done | tee "$out/allreduce.txt"
