#!/usr/bin/env bash
# Rebuilds this folder's byte-tokenized King James Bible (train/, val/, dataset.json) from Debian's bible-kjv.
# One document per chapter: the chapter's verse lines exactly as `bible -f` prints them ("Ge1:1 In the beginning ..."),
# each ending in "\n".
#
#   configs/corpus/kjv/make-corpus.sh [OUT_DIR]      (default: this folder; run from the repository root)
#   DISTTRAIN="path/to/disttrain" configs/corpus/kjv/make-corpus.sh
#
# Needs: bible (apt-get install bible-kjv), awk, and the disttrain CLI (default: dotnet run --project src/DistTrain.Cli --).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-$here}
disttrain=${DISTTRAIN:-dotnet run --project src/DistTrain.Cli --}
command -v bible >/dev/null || { echo "make-corpus: 'bible' not found; install it with: sudo apt-get install bible-kjv" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 31102 verse lines, Gen 1:1 to Rev 22:21
bible -f "Gen1:1-Rev22:21" > "$work/kjv.txt"

# verse lines -> one JSON object per chapter: {"chapter":"Ge1","text":"Ge1:1 ...\nGe1:2 ...\n"}
# (the chapter key is the reference before ':', e.g. "Ge1", "1Sm17", "SSol8"; 1189 chapters)
awk '
  function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, "\\t", s); gsub(/\r/, "", s); return s }
  function flush() { if (key != "") printf "{\"chapter\":\"%s\",\"text\":\"%s\"}\n", key, text }
  {
    ref = $1; sub(/:[0-9]+$/, "", ref)
    if (ref != key) { flush(); key = ref; text = "" }
    text = text esc($0) "\\n"
  }
  END { flush() }
' "$work/kjv.txt" > "$work/kjv-chapters.jsonl"

$disttrain prepare --input "$work/kjv-chapters.jsonl" --tokenizer byte --val-fraction 0.02 --out "$work/prepared"

# prepare writes only into a new folder; swap the previous shards for the new ones
mkdir -p "$out"
rm -rf "$out/train" "$out/val" "$out/dataset.json"
mv "$work/prepared/train" "$work/prepared/val" "$work/prepared/dataset.json" "$out/"
echo "make-corpus: $(wc -l < "$work/kjv-chapters.jsonl") chapters -> $out"
