#!/usr/bin/env bash
# Issue 12 on a CUDA host with PyTorch installed (no .NET needed): the fused kernels' self-test, then
# a short `disttrain bench` of the 405M MUDDFormer and Transformer++ with train.kernels=fused and =reference,
# then the 125M MUDDFormer trained 50 steps with each (global batch 8, micro 8, seq 2048): both loss columns.
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
# training quality: the same 50 steps, same seed and data, fused against reference (losses every 5 steps)
c125=(--config configs/125m-muddformer.yaml --set train.steps=50 --set train.global_batch=8 --set train.micro_batch=8 --set train.seq_len=2048
      --set train.log_interval=5 --set train.eval_interval=0 --set train.eval_batches=0 --set optim.warmup_steps=10 --set train.run_dir=/tmp/runs-kernels)
rm -rf /tmp/runs-kernels
# a second reference run: the bf16 run-to-run noise the fused curve is judged against
for name in fused reference reference2; do
  timeout 300 $bin train "${c125[@]}" --set train.kernels=${name%2} --set train.name=125m-$name 2>&1 | tail -14 > "$out/125m-$name.txt"
done
python3 - /tmp/runs-kernels "$out/125m-losses.txt" <<'PY'
import glob, json, sys
runs, table = sys.argv[1], sys.argv[2]
def losses(name):
    files = glob.glob(f"{runs}/125m-{name}-*/metrics.jsonl")
    return {r["step"]: r["loss"] for r in map(json.loads, open(files[0]))} if files else {}
fused, ref, ref2 = losses("fused"), losses("reference"), losses("reference2")
fmt = lambda v: f"{v:9.4f}" if v is not None else f"{'-':>9}"
dif = lambda a, b: f"{a - b:+9.4f}" if a is not None and b is not None else f"{'-':>9}"
with open(table, "w") as f:
    print(f"{'step':>5} {'fused':>9} {'reference':>9} {'again':>9} {'f-r':>9} {'r2-r':>9}", file=f)
    for step in sorted(set(fused) | set(ref)):
        a, b, c = fused.get(step), ref.get(step), ref2.get(step)
        print(f"{step:>5} {fmt(a)} {fmt(b)} {fmt(c)} {dif(a, b)} {dif(c, b)}", file=f)
print(open(table).read())
PY
exit $status
