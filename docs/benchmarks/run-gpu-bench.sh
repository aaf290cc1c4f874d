#!/usr/bin/env bash
# Issue 4/5 GPU benchmarks on a CUDA host with PyTorch installed (no .NET needed).
# Usage: docs/benchmarks/run-gpu-bench.sh BUNDLE.tar.xz OUTDIR disttrain|fit|reference|telemetry|loss
#   disttrain: `disttrain bench` at 405M (seq 2048, bf16, micro-batch 8) for every architecture and
#              activation-checkpointing policy, 200 steps of MUDDFormer/mudd (memory growth) and
#              405M checkpoint saves.
#   fit:       the largest micro-batch of the 1.4B MUDDFormer at seq 2048 with each policy.
#   reference: tests/reference/bench.py (PyTorch eager and torch.compile) on the same shapes.
set -uo pipefail
bundle=$1 out=$2 part=$3
mkdir -p "$out" /tmp/disttrain
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$torch_lib:${LD_LIBRARY_PATH:-}
export NO_COLOR=1
# the same allocator setting for DistTrain's libtorch and PyTorch: less fragmentation in the reserve
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu-$part.txt"
python3 -c 'import torch; print("torch", torch.__version__)' | tee -a "$out/gpu-$part.txt"
date -u | tee -a "$out/gpu-$part.txt"

if [ "$part" = disttrain ]; then
  tar -C /tmp/disttrain -xJf "$bundle"
  bin=/tmp/disttrain/disttrain/disttrain
  bench() {  # name, config, extra args...
    local name=$1 cfg=$2; shift 2
    timeout 150 $bin bench --config configs/$cfg.yaml --set train.device=cuda --set train.precision=bf16 --reader-tokens 0 \
      --json "$out/$name.json" "$@" 2>&1 | tee "$out/$name.txt"
  }
  for arch in transformerpp denseformer muddformer; do
    for ac in none block; do bench 405m-$arch-$ac 405m-$arch --steps 10 --set train.activation_checkpointing=$ac; done
  done
  bench 405m-muddformer-mudd 405m-muddformer --steps 200 --set train.activation_checkpointing=mudd
  bench 405m-muddformer-mudd-every2 405m-muddformer --steps 10 --set train.activation_checkpointing=mudd --set train.activation_checkpointing_every=2
fi
if [ "$part" = fit ]; then
  tar -C /tmp/disttrain -xJf "$bundle"
  bin=/tmp/disttrain/disttrain/disttrain
  for ac in none block mudd; do
    timeout 170 $bin bench --config configs/1.4b-muddformer.yaml --set train.device=cuda --set train.precision=bf16 --reader-tokens 0 \
      --json "$out/1.4b-muddformer-fit-$ac.json" --steps 1 --warmup 1 --profile-steps 0 --set train.micro_batch=1 \
      --set train.activation_checkpointing=$ac --fit-micro-batches 2 4 6 8 10 12 16 20 24 32 2>&1 | tee "$out/1.4b-muddformer-fit-$ac.txt"
  done
fi
if [ "$part" = fit ]; then
  # checkpoint saves of the 405M MUDDFormer: stall per save (waiting for the previous one + the
  # device-to-host copy) and background write speed; a save every 25 steps (about 11 s)
  timeout 150 $bin train --config configs/405m-muddformer.yaml --set train.steps=75 --set train.log_interval=5 --set train.eval_interval=0 \
    --set train.eval_batches=0 --set checkpoint.interval=25 --set checkpoint.keep=1 --set checkpoint.dir=/tmp/ckpt405 \
    --set train.run_dir=/tmp/runs 2>&1 | tee "$out/405m-save.txt"
  df -h /tmp | tee -a "$out/405m-save.txt"
fi
if [ "$part" = reference ]; then
  # what is not activations: the logits and the loss (16K tokens x 50K vocabulary) and one block, measured
  tar -C /tmp/disttrain -xJf "$bundle"
  timeout 120 /tmp/disttrain/disttrain/disttrain bench --config configs/405m-transformerpp.yaml --set train.device=cuda --set train.precision=bf16 \
    --reader-tokens 0 --steps 3 --set model.n_layer=1 --set train.activation_checkpointing=block --json "$out/405m-1layer.json" 2>&1 | tee "$out/405m-1layer.txt"
  cd tests/reference
  for arch in transformerpp muddformer; do
    for mode in "" "--ac block" "--compile"; do
      timeout 240 python3 bench.py --size 405m --arch $arch $mode 2>&1 | tail -3 | tee -a "$out/reference.txt"
    done
  done
  timeout 120 python3 bench.py --size 405m --arch denseformer 2>&1 | tail -3 | tee -a "$out/reference.txt"
fi
if [ "$part" = telemetry ]; then
  # issue 6: telemetry's cost at the default sampling (a traced step every 10), exported over OTLP/HTTP to a local sink:
  # the tiny model on this host's CPU, then the 405M MUDDFormer on the GPU (traced steps synchronise the device)
  tar -C /tmp/disttrain -xJf "$bundle"
  export DISTTRAIN=/tmp/disttrain/disttrain/disttrain
  timeout 280 docs/benchmarks/telemetry-overhead.sh configs/tiny-muddformer.yaml 200 5 2>&1 | tee "$out/telemetry-tiny-cpu.txt"
  timeout 280 docs/benchmarks/telemetry-overhead.sh configs/405m-muddformer.yaml 30 3 --set train.device=cuda --set train.precision=bf16 \
    2>&1 | tee "$out/telemetry-405m-gpu.txt"
fi
if [ "$part" = loss ]; then
  # the chunked fused output projection + loss (train.loss_chunk, default): activation memory of the policies again,
  # and the 1-layer model for what is not activations
  tar -C /tmp/disttrain -xJf "$bundle"
  bin=/tmp/disttrain/disttrain/disttrain
  bench() {  # name, config, extra args...
    local name=$1 cfg=$2; shift 2
    timeout 110 $bin bench --config configs/$cfg.yaml --set train.device=cuda --set train.precision=bf16 --reader-tokens 0 \
      --json "$out/$name.json" "$@" 2>&1 | tee "$out/$name.txt"
  }
  bench 405m-1layer-chunked 405m-transformerpp --steps 3 --set model.n_layer=1 --set train.activation_checkpointing=block
  bench 405m-transformerpp-block-chunked 405m-transformerpp --steps 10 --set train.activation_checkpointing=block
  bench 405m-muddformer-block-chunked 405m-muddformer --steps 10 --set train.activation_checkpointing=block
  bench 405m-muddformer-mudd-chunked 405m-muddformer --steps 10 --set train.activation_checkpointing=mudd
  bench 405m-muddformer-none-chunked 405m-muddformer --steps 10 --set train.activation_checkpointing=none
  bench 405m-transformerpp-none-chunked 405m-transformerpp --steps 10 --set train.activation_checkpointing=none
fi
