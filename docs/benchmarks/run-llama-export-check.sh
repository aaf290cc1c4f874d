#!/usr/bin/env bash
# Issue 14 item 4 on the GPU host, where python3 has torch and transformers (no network needed; runs on the CPU):
# do `disttrain export --format llama` folders load in transformers with the log-probabilities of `disttrain score`?
#   llama       a tiny Transformer++ (model.rotary_precision=fp32), 30 steps on the CPU -> export --format llama --dtype fp32
#               -> AutoModelForCausalLM.from_pretrained(DIR, dtype float32) vs disttrain score: PASS at max |delta log-prob| <= 1e-4
#   qwen3       the same with model.use_qk_norm=true (exported as Qwen3ForCausalLM): PASS at <= 1e-4
#   bf16-tables the default rotary tables (bf16, as the official MUDDFormer code): the difference is reported, not gated
#   llama-bf16w the llama checkpoint exported with --dtype bf16: transformers (fp32 compute) vs import + score: <= 1e-4
#   round trip  import --format llama of the llama export -> score: identical to the original checkpoint's (tolerance 0);
#               transformers' save_pretrained of it (one file, and sharded with an index) -> import -> score vs
#               transformers: <= 1e-4; train --init-from the import: a run starts from it
# Usage: docs/benchmarks/run-llama-export-check.sh BUNDLE.tar.xz|BUNDLE_DIR OUTDIR   (from the repository root: configs/ and
# tests/reference/check_llama_export.py are read). The bundle (make bundle) must be built from a tree with export --format llama.
# Prints one PASS/FAIL line per check (also in OUTDIR/summary.txt); exits 1 when any check fails.
# For a dry run of this script where transformers is missing: PYTHON=/usr/bin/python3 LOCAL_FALLBACK=1 DISTTRAIN="dotnet
# src/DistTrain.Cli/bin/Release/net10.0/disttrain.dll" docs/benchmarks/run-llama-export-check.sh - OUT (the checks then use
# check_llama_export.py's local Llama forward and say so; the save_pretrained steps fail: that run proves nothing about transformers).
set -uo pipefail
bundle=$1 out=$2
mkdir -p "$out" && out=$(cd "$out" && pwd)
repo=$(pwd)
py=${PYTHON:-python3}
require=--require-transformers; [ "${LOCAL_FALLBACK:-0}" = 1 ] && require=
check="$py $repo/tests/reference/check_llama_export.py"
[ -f configs/tiny-transformerpp.yaml ] && [ -f tests/reference/check_llama_export.py ] || { echo "FAIL: run from the repository root"; exit 2; }
if [ -z "${DISTTRAIN:-}" ]; then   # the bundle has no libtorch: the wheel's (a DISTTRAIN build brings its own)
  torch_lib=$($py -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || { echo "FAIL: python3 cannot import torch"; exit 2; }
  export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export NO_COLOR=1
if [ -n "${DISTTRAIN:-}" ]; then
  bin=$DISTTRAIN
elif [ -d "$bundle" ]; then
  bin=$bundle/disttrain; [ -x "$bundle/disttrain/disttrain" ] && bin=$bundle/disttrain/disttrain
else
  rm -rf /tmp/disttrain-llama && mkdir -p /tmp/disttrain-llama && tar -C /tmp/disttrain-llama -xJf "$bundle" || { echo "FAIL: cannot unpack $bundle"; exit 2; }
  bin=/tmp/disttrain-llama/disttrain/disttrain
fi
{ date -u; $py -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'; } 2>&1 | tee "$out/versions.txt"
work=$out/work
rm -rf "$work" && mkdir -p "$work"
: > "$out/summary.txt"
status=0
result() {   # name, exit code, log: the log's last PASS/FAIL line goes to the summary
  local line
  line=$(grep -E '(PASS|FAIL)' "$3" | tail -1)
  [ -n "$line" ] || line="FAIL: $1 printed no verdict (exit $2; see $3)"
  [ "$2" -eq 0 ] || status=1
  echo "$line" | tee -a "$out/summary.txt"
}
step() {   # name, command...: a disttrain step that must succeed
  local name=$1; shift
  "$@" > "$work/$name.log" 2>&1
  local code=$?
  if [ $code -ne 0 ]; then
    echo "FAIL: $name (exit $code): $(tail -1 "$work/$name.log")" | tee -a "$out/summary.txt"; status=1; return 1
  fi
}

# what to score: three byte-token lines (README text, a KJV-like sentence, a fixed pseudo-random sequence)
$py - "$work/tokens.jsonl" <<'PY'
import json, random, sys
random.seed(0)
text = open("README.md", "rb").read()
lines = [list(text[:200]), list(b"In the beginning God created the heaven and the earth. And the earth was without form, and void."),
         [random.randrange(256) for _ in range(150)]]
with open(sys.argv[1], "w") as f:
    for tokens in lines:
        f.write(json.dumps({"tokens": tokens}) + "\n")
PY

train=(train --config configs/tiny-transformerpp.yaml --set train.device=cpu --set train.steps=30 --set train.micro_batch=8
       --set train.seq_len=128 --set train.log_interval=10 --set train.eval_interval=0 --set train.eval_batches=0)
declare -A sets=([llama]="--set model.rotary_precision=fp32" [qwen3]="--set model.use_qk_norm=true --set model.rotary_precision=fp32" [bf16-tables]="")
for v in llama qwen3 bf16-tables; do
  ckpt=$work/ckpt-$v/step-00000030
  # shellcheck disable=SC2086
  step train-$v $bin "${train[@]}" ${sets[$v]} --set train.run_dir=$work/runs-$v --set checkpoint.dir=$work/ckpt-$v || continue
  step export-$v $bin export --checkpoint $ckpt --format llama --dtype fp32 --out $work/export-$v || continue
  step score-$v $bin score --checkpoint $ckpt --input $work/tokens.jsonl --out $work/scores-$v.jsonl || continue
  tol=1e-4; [ $v = bf16-tables ] && tol=1   # reported, not gated: transformers computes fp32 tables
  $check --model $work/export-$v --scores $work/scores-$v.jsonl --tol $tol $require --label "export vs score: $v$([ $v = bf16-tables ] && echo ', informational, not gated')" > $work/check-$v.log 2>&1
  result $v $? $work/check-$v.log
done
grep -h -m1 'reference:' $work/check-llama.log 2>/dev/null | tee -a "$out/summary.txt"

llama=$work/ckpt-llama/step-00000030
if [ -d $work/export-llama ]; then
  # bf16 weights: transformers computes in fp32 with the bf16-rounded weights; so does the imported checkpoint
  if step export-bf16w $bin export --checkpoint $llama --format llama --dtype bf16 --out $work/export-bf16w &&
     step import-bf16w $bin import --format llama $work/export-bf16w --out $work/imported-bf16w &&
     step score-bf16w $bin score --checkpoint $work/imported-bf16w --input $work/tokens.jsonl --out $work/scores-bf16w.jsonl; then
    $check --model $work/export-bf16w --scores $work/scores-bf16w.jsonl $require --label "bf16-weight export vs import + score" > $work/check-bf16w.log 2>&1
    result bf16w $? $work/check-bf16w.log
  fi
  # import of our own export: the same checkpoint, bit for bit in its log-probs
  if step import-llama $bin import --format llama $work/export-llama --out $work/imported-llama --tokenizer byte &&
     step score-imported $bin score --checkpoint $work/imported-llama --input $work/tokens.jsonl --out $work/scores-imported.jsonl; then
    $check --scores $work/scores-llama.jsonl --ours $work/scores-imported.jsonl --tol 0 --label "export -> import -> score vs original" > $work/check-roundtrip.log 2>&1
    result roundtrip $? $work/check-roundtrip.log
  fi
  # what transformers itself writes: one file, and shards with an index
  $py - $work/export-llama $work/hf-saved $work/hf-sharded > $work/save-pretrained.log 2>&1 <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM
try:
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
except TypeError:
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
model.save_pretrained(sys.argv[2])
model.save_pretrained(sys.argv[3], max_shard_size="200KB")
print("saved", sys.argv[2], sys.argv[3])
PY
  for saved in hf-saved hf-sharded; do
    ls $work/$saved >> $work/save-pretrained.log 2>&1
    if step import-$saved $bin import --format llama $work/$saved --out $work/imported-$saved &&
       step score-$saved $bin score --checkpoint $work/imported-$saved --input $work/tokens.jsonl --out $work/scores-$saved.jsonl; then
      $check --model $work/$saved --scores $work/scores-$saved.jsonl $require --label "save_pretrained ($saved) vs import + score" > $work/check-$saved.log 2>&1
      result $saved $? $work/check-$saved.log
    fi
  done
  # a run starts from the import
  if step init-from $bin "${train[@]}" --set train.steps=2 --set train.log_interval=1 --set model.rotary_precision=fp32 --init-from $work/imported-llama \
       --set train.run_dir=$work/runs-init --set checkpoint.dir=$work/ckpt-init; then
    echo "PASS: train --init-from the import ran 2 steps ($(grep -m1 -E '^step +1 ' $work/init-from.log | tr -s ' '))" | tee -a "$out/summary.txt"
  fi
fi
cp $work/*.log "$out/" 2>/dev/null
echo "summary: $out/summary.txt"
exit $status
