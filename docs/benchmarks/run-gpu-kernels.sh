#!/usr/bin/env bash
# Issue 12 on a CUDA host with PyTorch installed (no .NET needed). Parts (any of, in this order):
#   test     `disttrain kernel-test` with a cold kernel cache (NVRTC compile time included), then its whole-model check on Transformer++
#   bench    `disttrain bench` of the 405M MUDDFormer (none, block, mudd), Transformer++ (none, mudd) and
#            DenseFormer (none) with train.kernels=fused; with REFERENCE=1 also MUDDFormer and Transformer++ with =reference
#   curves   the 125M MUDDFormer, 50 steps (global batch 8 x 2048): fused, reference, reference again, and the
#            rounding controls (fused again; reference with loss_chunk 640 and 1280); then 300 steps fused and reference
#   profile  docs/benchmarks/run-gpu-profile.sh: one 405M MUDDFormer step's kernels by kind (ncu)
#   kernels  docs/benchmarks/kernel-bench/run.sh: the memory-bound kernels alone, per variant of their constants (nvcc)
#   pytorch  tests/reference/bench.py --compile, 405M Transformer++ (torch.compile)
# Usage: docs/benchmarks/run-gpu-kernels.sh BUNDLE.tar.xz OUTDIR [PART...]   (run from the repository root: configs/ is read)
set -uo pipefail
bundle=$1 out=$2
shift 2
parts=${*:-test bench curves profile kernels pytorch}
mkdir -p "$out" /tmp/disttrain
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib:${LD_LIBRARY_PATH:-}
export NO_COLOR=1 NCCL_NVLS_ENABLE=0
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export DISTTRAIN_KERNEL_CACHE=/tmp/disttrain-kernels
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu-kernels.txt"
python3 -c 'import torch; print("torch", torch.__version__)' | tee -a "$out/gpu-kernels.txt"
date -u | tee -a "$out/gpu-kernels.txt"
tar -C /tmp/disttrain -xJf "$bundle"
bin=/tmp/disttrain/disttrain/disttrain
status=0
has() { [[ " $parts " == *" $1 "* ]]; }

if has test; then
  rm -rf "$DISTTRAIN_KERNEL_CACHE"   # a cold cache: the first use compiles every module
  ( time timeout 300 $bin kernel-test ) > "$out/kernel-test.txt" 2>&1
  status=$?
  grep -c PASS "$out/kernel-test.txt"; grep -v PASS "$out/kernel-test.txt" | tail -4
  # the whole-model check on Transformer++ too (its block boundaries run other fused paths than MUDDFormer's)
  timeout 300 $bin kernel-test --config configs/405m-transformerpp.yaml > "$out/kernel-test-transformerpp.txt" 2>&1 || status=1
  grep -c PASS "$out/kernel-test-transformerpp.txt"; grep FAIL "$out/kernel-test-transformerpp.txt" | tail -4
fi
if has bench; then
  runs="muddformer:none:fused muddformer:block:fused muddformer:mudd:fused transformerpp:none:fused transformerpp:mudd:fused denseformer:none:fused"
  [ "${REFERENCE:-0}" = 1 ] && runs="$runs muddformer:none:reference transformerpp:none:reference"
  for run in $runs; do
    IFS=: read -r arch policy kernels <<< "$run"
    timeout 150 $bin bench --config configs/405m-$arch.yaml --set train.device=cuda --set train.precision=bf16 --reader-tokens 0 \
      --steps 20 --set train.kernels=$kernels --set train.activation_checkpointing=$policy \
      --json "$out/405m-$arch-$policy-$kernels.json" > "$out/405m-$arch-$policy-$kernels.txt" 2>&1
    grep -h "tokens/s" "$out/405m-$arch-$policy-$kernels.txt"
  done
fi
if has curves; then
  runs=/tmp/runs-kernels
  rm -rf $runs
  base=(--config configs/125m-muddformer.yaml --set train.global_batch=8 --set train.micro_batch=8 --set train.seq_len=2048
        --set train.eval_interval=0 --set train.eval_batches=0 --set optim.warmup_steps=10 --set train.run_dir=$runs
        --set checkpoint.interval=0)   # loss curves only: eight 125M runs with checkpoints fill a 64 GB disk
  short=(--set train.steps=50 --set train.log_interval=5)
  train() { timeout 300 $bin train "${base[@]}" "$@" > /dev/null 2>&1; }
  train "${short[@]}" --set train.kernels=fused --set train.name=fused
  train "${short[@]}" --set train.kernels=reference --set train.name=reference
  train "${short[@]}" --set train.kernels=reference --set train.name=reference-again
  train "${short[@]}" --set train.kernels=fused --set train.name=fused-again
  train "${short[@]}" --set train.kernels=reference --set train.loss_chunk=640 --set train.name=reference-chunk640
  train "${short[@]}" --set train.kernels=reference --set train.loss_chunk=1280 --set train.name=reference-chunk1280
  train --set train.steps=300 --set train.log_interval=25 --set train.kernels=fused --set train.name=long-fused
  train --set train.steps=300 --set train.log_interval=25 --set train.kernels=reference --set train.name=long-reference
  python3 - $runs <<'PY' | tee "$out/125m-losses.txt"
import glob, json, sys
for name in ("fused", "reference", "reference-again", "fused-again", "reference-chunk640", "reference-chunk1280", "long-fused", "long-reference"):
    files = glob.glob(f"{sys.argv[1]}/{name}-*/metrics.jsonl")
    print(f"{name:20}", {r["step"]: round(r["loss"], 4) for r in map(json.loads, open(files[0])) if "loss" in r} if files else "missing")
PY
fi
if has profile; then
  docs/benchmarks/run-gpu-profile.sh /tmp/disttrain "$out" muddformer | head -14
  gzip -f "$out"/ncu-*.csv
fi
if has kernels; then
  docs/benchmarks/kernel-bench/run.sh "$out/kernel-bench.txt"; cat "$out/kernel-bench.txt"
fi
if has pytorch; then
  (cd tests/reference && timeout 300 python3 bench.py --size 405m --arch transformerpp --compile 2>&1 | tail -3) | tee "$out/pytorch-compile.txt"
fi
exit $status
