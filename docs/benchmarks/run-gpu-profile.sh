#!/usr/bin/env bash
# Where one training step's GPU time goes, kernel by kernel: Nsight Compute (ncu, gpu__time_duration
# only, clocks and caches left alone) over `disttrain train` of the 405M model for 2 steps (global
# batch = micro-batch 8 × 2048, bf16, fused kernels), then the kernels between the first and the
# second AdamW update (exactly one whole step: forward, backward, optimizer) summed by kind.
# Usage: docs/benchmarks/run-gpu-profile.sh BUNDLE_DIR OUTDIR [ARCH] [--set ...]
#   BUNDLE_DIR: the unpacked bundle (holds disttrain/disttrain); ARCH: muddformer (default) or transformerpp
set -uo pipefail
bundle=$1 out=$2 arch=${3:-muddformer}
shift 3 2>/dev/null || shift $#
mkdir -p "$out"
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib:${LD_LIBRARY_PATH:-}
export NO_COLOR=1 NCCL_NVLS_ENABLE=0
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
rm -rf /tmp/runs-profile
timeout 500 "$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --print-units base \
  --log-file "$out/ncu-$arch.csv" \
  "$bundle/disttrain/disttrain" train --config configs/405m-$arch.yaml --set train.steps=2 --set train.global_batch=8 \
  --set train.log_interval=1 --set train.eval_interval=0 --set train.eval_batches=0 --set train.kernels=fused \
  --set train.run_dir=/tmp/runs-profile --set checkpoint.interval=0 "$@" > "$out/ncu-$arch-train.txt" 2>&1
echo "ncu exit $?" >> "$out/ncu-$arch-train.txt"
python3 - "$out/ncu-$arch.csv" "$out/profile-$arch.txt" <<'PY'
import csv, re, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, rows = rows[0], rows[1:]
name_at, value_at = head.index("Kernel Name"), head.index("Metric Value")
kernels = [(r[name_at], float(r[value_at].replace(",", "")) / 1e6) for r in rows]   # ns (with thousands separators) -> ms
ends = [i for i, (n, _) in enumerate(kernels) if n.startswith("adamw_update")]
if len(ends) < 2: sys.exit(f"found {len(ends)} AdamW updates in {len(kernels)} kernels: not a whole step")
step = kernels[ends[0] + 1: ends[1] + 1]
def kind(n):
    ours = re.match(r"(rmsnorm|swiglu|qkrotary|mix|cross_entropy|adamw)", n)
    if ours: return "fused: " + ours.group(1)
    if re.search(r"nvjet|gemm|cutlass|sm90_xmma|cublas", n, re.I): return "GEMM (cuBLAS)"
    if re.search(r"flash|fmha|attention", n, re.I): return "attention (SDPA)"
    f = re.search(r"(\w+Functor\w*|copy\w*|fill\w*|gelu\w*|softmax\w*|reduce\w*|cat\w*|embedding\w*|index\w*|sum\w*|mul\w*|add\w*)", n, re.I)
    return "torch: " + (f.group(1) if f else n[:60])
by = collections.defaultdict(lambda: [0, 0.0])
for n, ms in step:
    by[kind(n)][0] += 1; by[kind(n)][1] += ms
total = sum(ms for _, ms in step)
with open(sys.argv[2], "w") as o:
    print(f"one step: {len(step)} kernels, {total:.1f} ms of GPU time", file=o)
    print(f"{'kind':<60} {'kernels':>8} {'ms':>8} {'share':>6}", file=o)
    for k, (c, ms) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f"{k[:60]:<60} {c:>8} {ms:>8.2f} {100 * ms / total:>5.1f}%", file=o)
    print("\nthe 30 longest kernel names by total time:", file=o)
    names = collections.defaultdict(lambda: [0, 0.0])
    for n, ms in step: names[n[:110]][0] += 1; names[n[:110]][1] += ms
    for n, (c, ms) in sorted(names.items(), key=lambda kv: -kv[1][1])[:30]:
        print(f"{ms:8.2f} ms {c:5}x  {n}", file=o)
print(open(sys.argv[2]).read())
PY
