#!/usr/bin/env bash
# The localist λ sweep (issue 11, item 4): for λ in 0, 0.2, ..., 1.0, train the 2-layer model with
# the bias and the off-target penalty at that λ, then measure entropy, fidelity, perplexity and
# next-token accuracy on held-out paragraphs at the same λ. Usage: benches/localist/sweep.sh [FIREBRAND] [DIR]
set -euo pipefail
FB=${1:-${CARGO_TARGET_DIR:-target}/release/firebrand}
DIR=${2:-/tmp/localist}
HERE=$(cd "$(dirname "$0")" && pwd)
python3 "$HERE/corpus.py" "$DIR"
$FB data import "$DIR/train.jsonl" --kind chat --out "$DIR/train.lance" --overwrite
$FB data import "$DIR/test.jsonl" --kind chat --out "$DIR/test.lance" --overwrite
$FB tokenizer train "$DIR/train.lance" --vocab-size 2048 --out "$DIR/tok.json"
for s in train test; do
  $FB data tokenize "$DIR/$s.lance" --tokenizer "$DIR/tok.json" --template plain --mask all \
      --max-len 256 --pack --out "$DIR/$s.tokens.lance" --overwrite
done
for l in 0.0 0.2 0.4 0.6 0.8 1.0; do
  rm -rf "$DIR/runs/l$l"
  $FB train "$HERE/sft-2layer.toml" data.tokens="$DIR/train.tokens.lance" data.tokenizer="$DIR/tok.json" \
      localist.lambda=$l output.dir="$DIR/runs" output.run=l$l > "$DIR/train-l$l.log"
  echo "== λ = $l"
  $FB eval attention "$DIR/runs/l$l" "$DIR/test.tokens.lance" --rows 1000 --json > "$DIR/eval-l$l.json"
  $FB eval attention "$DIR/runs/l$l" "$DIR/test.tokens.lance" --rows 1000
done
