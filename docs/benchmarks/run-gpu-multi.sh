#!/usr/bin/env bash
# Issues 7 and 16: data parallelism over the GPUs of one host with `disttrain launch` and cluster/one-node-{N}gpu.yaml.
# Usage: docs/benchmarks/run-gpu-multi.sh BUNDLE.tar.xz OUTDIR GPUS PART...
#   correctness: the 125M MUDDFormer on N GPUs against 1 GPU with the same global batch (8N x 2048) and schedule, 50 steps;
#                the N-GPU run saves at steps 20, 40 and 50; a 1-GPU run resumes from its step 40 to 50;
#   scaling:     the 405M MUDDFormer, micro-batch 8 per GPU, tokens/s on 1, 2, ..., N GPUs (powers of two) with
#                activation checkpointing none and mudd; all-reduce times from the N-GPU run's traced steps' spans;
#   allreduce:   PyTorch's NCCL all-reduce on the same GPUs (tests/reference/allreduce.py) for the same message sizes;
#   kill:        SIGKILL of rank 1 in a running N-GPU job; how long until `launch` exits, and what it says.
#   elastic:     issue 15: the 125M MUDDFormer for 150 steps (a loss every step, a checkpoint every 20) with elastic.max_restarts=2,
#                twice uninterrupted and once with rank 1 SIGKILLed at step 60 (launch replaces it): the time from the kill to
#                the first step of the new generation, the loss curves against each other, the ledger's windows across generations.
#   snapshots:   the same with in-memory snapshots every 10 steps (elastic.snapshot_interval; checkpoints every 50), rank 1 killed
#                at step 65, against one uninterrupted run: the stall per snapshot too.
set -uo pipefail
bundle=$1 out=$2 gpus=$3; shift 3
mkdir -p "$out" /tmp/disttrain
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib:${LD_LIBRARY_PATH:-}
export NO_COLOR=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True NCCL_NVLS_ENABLE=0 DISTTRAIN_JOB_TOKEN=gpu-$$
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nvidia-smi topo -m; date -u; } > "$out/gpu-multi.txt"
[ -x /tmp/disttrain/disttrain/disttrain ] || tar -C /tmp/disttrain -xJf "$bundle"
bin=/tmp/disttrain/disttrain/disttrain
m=cluster/one-node-${gpus}gpu.yaml
c125=(--config configs/125m-muddformer.yaml --set train.global_batch=$((8 * gpus)) --set data.shards=$gpus --set train.log_interval=5
      --set train.eval_interval=0 --set train.eval_batches=0 --set optim.warmup_steps=10 --set train.run_dir=/tmp/runs --set train.micro_batch=8)

for part in "$@"; do case $part in
correctness)
  timeout 240 $bin train "${c125[@]}" --set train.steps=50 --set train.name=one-gpu 2>&1 | tail -12 > "$out/125m-1gpu.txt"
  timeout 240 $bin launch --manifest $m "${c125[@]}" --set train.steps=50 --set train.name=n-gpu \
    --set checkpoint.interval=20 --set checkpoint.dir=/tmp/ckn 2>&1 | tail -20 > "$out/125m-${gpus}gpu.txt"
  timeout 200 $bin train "${c125[@]}" --set train.steps=50 --set train.name=resumed --set checkpoint.dir=/tmp/ckn \
    --resume /tmp/ckn/step-00000040 2>&1 | tail -8 > "$out/125m-resume-1gpu.txt"
  for r in one-gpu n-gpu resumed; do echo "== $r"; cat /tmp/runs/$r-*/metrics.jsonl; done > "$out/125m-metrics.txt" ;;
scaling)
  c405=(--config configs/405m-muddformer.yaml --set train.steps=30 --set train.micro_batch=8 --set train.log_interval=10 --set train.eval_interval=0
        --set train.eval_batches=0 --set data.shards=$gpus --set train.run_dir=/tmp/runs --set telemetry.trace_every=5)
  for ac in none mudd; do
    timeout 200 $bin train "${c405[@]}" --set train.activation_checkpointing=$ac --set train.name=s1-$ac 2>&1 | tail -4 > "$out/405m-1gpu-$ac.txt"
    for n in 2 4 8; do
      [ $n -le $gpus ] || continue
      OTEL_TRACES_EXPORTER=console OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none timeout 240 $bin launch --manifest cluster/one-node-${n}gpu.yaml \
        "${c405[@]}" --set train.activation_checkpointing=$ac --set train.name=s$n-$ac > "$out/405m-${n}gpu-$ac-full.txt" 2>&1
      grep -v "^\[rank [1-9]\]" "$out/405m-${n}gpu-$ac-full.txt" | grep -E "step +[0-9]+ +loss|finished|failed" > "$out/405m-${n}gpu-$ac.txt"
    done
  done
  for r in /tmp/runs/s*; do echo "== $r"; cat $r/metrics.jsonl; done > "$out/405m-metrics.txt" ;;
allreduce)
  timeout 120 torchrun --nproc_per_node=$gpus tests/reference/allreduce.py 67108864 810000000 2>&1 | grep "torch all_reduce" > "$out/torch-allreduce.txt" ;;
kill)
  timeout 150 $bin launch --manifest $m "${c125[@]}" --set train.steps=100000 --set train.name=killed > "$out/kill.txt" 2>&1 &
  launch=$!
  for i in $(seq 1 120); do grep -q "step *10 " "$out/kill.txt" && break; sleep 1; done
  victim=$(pgrep -f "worker .*--local-slot 1" | head -1)
  start=$(date +%s.%N); kill -9 "$victim"; wait $launch; code=$?; end=$(date +%s.%N)
  echo "killed rank 1 (pid $victim); launch exited with $code after $(python3 -c "print(f'{$end-$start:.1f}')") s" >> "$out/kill.txt"
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv >> "$out/kill.txt" ;;
elastic|snapshots)
  # snapshots: the same job with in-memory snapshots every 10 steps (disk every 50), rank 1 killed at step 65, one uninterrupted run
  [ $part = elastic ] && { extra=(--set checkpoint.interval=20); plain=(plain plain2); at=60; } \
                      || { extra=(--set checkpoint.interval=50 --set elastic.snapshot_interval=10); plain=(snap-plain); at=65; }
  ce=("${c125[@]}" --set train.log_interval=1 --set train.steps=150 --set train.ledger=true "${extra[@]}"
      --set elastic.max_restarts=2 --set elastic.replace_wait_s=60 --set train.run_dir=/tmp/runs-$part)
  stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
  for name in "${plain[@]}"; do timeout 240 $bin launch --manifest $m "${ce[@]}" --set train.name=$name 2>&1 | stamp > "$out/$part-$name.txt"; done
  ( timeout 300 $bin launch --manifest $m "${ce[@]}" --set train.name=faulted 2>&1 | stamp > "$out/$part-faulted.txt" ) &
  for i in $(seq 1 1200); do grep -q "\] step *$at *loss" "$out/$part-faulted.txt" 2>/dev/null && break; sleep 0.1; done
  victim=$(pgrep -f "worker .*--local-slot 1" | head -1)
  killed=$(date +%s.%N); kill -9 "$victim"; wait
  python3 - "$out" "$killed" "$part" "${plain[@]}" <<'PY' | tee "$out/$part.txt"
import glob, json, re, sys, collections, statistics
out, killed, part, plain = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
lines = [l.split(' ', 1) for l in open(f"{out}/{part}-faulted.txt")]
start = next(i for i, (_, l) in enumerate(lines) if 'generation 1 starts' in l)
first = next(float(t) for t, l in lines[start:] if re.search(r'\] step +\d+ +loss', l))
print(f"kill to the first step of generation 1: {first - killed:.1f} s;", lines[start][1].strip())
print(*[l.strip() for _, l in lines if 'recovered: generation 1' in l or 'restored the in-memory' in l], sep="\n")
stalls = [float(m.group(1)) for _, l in lines for m in [re.search(r'snapshot of step \d+ in memory: .* training waited ([\d.]+) s', l)] if m]
if stalls: print(f"snapshot stall (rank 0, {len(stalls)} snapshots): min {min(stalls):.3f} / median {statistics.median(stalls):.3f} / max {max(stalls):.3f} s;",
               next(l.strip() for _, l in lines if 'snapshot of step' in l))
def losses(name):
    return {r["step"]: r["loss"] for r in map(json.loads, open(glob.glob(f"/tmp/runs-{part}/{name}-*/metrics.jsonl")[0]))}
runs = {n: losses(n) for n in plain + ["faulted"]}
names = list(runs)
for i, x in enumerate(names):
    for y in names[i + 1:]:
        d = {s: abs(runs[x][s] - runs[y][s]) for s in runs[x]}
        print(f"{x} vs {y}: max |diff| {max(d.values()):.4f}; mean of steps 141-150 {sum(runs[x][s] for s in range(141, 151)) / 10:.4f} vs {sum(runs[y][s] for s in range(141, 151)) / 10:.4f}")
rows, newest = [], collections.defaultdict(int)
for f in glob.glob(glob.glob(f"/tmp/runs-{part}/faulted-*")[0] + "/ledger-rank*.jsonl"):
    for l in open(f):
        d = json.loads(l); rows.append((d["step"], d["generation"], [tuple(w) for w in d["windows"]])); newest[d["step"]] = max(newest[d["step"]], d["generation"])
kept = [w for s, g, ws in rows if g == newest[s] for w in ws]
print(f"ledger: {len(rows)} lines, {len(newest)} steps, {len(kept)} windows kept, {len(set(kept))} distinct")
PY
  ;;
esac; done
mkdir -p "$out/spans" && mv "$out"/*-full.txt "$out/spans/" 2>/dev/null
tail -n 3 "$out"/*.txt | head -c 11000
