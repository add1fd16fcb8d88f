#!/usr/bin/env bash
# How far bf16 mixed precision moves a loss curve, on this CPU: 50 steps of recipes/sft-tiny.toml
# on burn in f32 (the plain path), on burn in f32 with the gradient summed in another order (how
# far f32 rounding alone moves the curve), and on the fast path's engine over its CPU reference
# kernels (train.kernels = "reference") in f32 and in bf16, which rounds where the GPU kernels
# store bf16 (`firebrand bench kernels` checks the GPU against this emulation). Two datasets: the
# quickstart's chat rows (22 training rows, read 18 times in 50 steps: memorised) and Python source
# from the standard library (benches/gpu/code_corpus.py, 256-token packed rows, each read once).
# Usage: bash benches/curves/cpu.sh [WORK_DIR]   (needs `cargo build --release`; ~15 minutes)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/env.sh"
FB=${FB:-$CARGO_TARGET_DIR/release/firebrand}
work=${1:-/tmp/fb-curves}
mkdir -p "$work" && cd "$work"
$FB quickstart --dir quickstart --train-steps 1 > quickstart.log 2>&1 || { tail -20 quickstart.log; exit 1; }
python3 "$root/benches/gpu/code_corpus.py" code.jsonl --chars 600 --total 1600000
$FB data import code.jsonl --out code.lance --overwrite | tail -1
$FB data tokenize code.lance --tokenizer quickstart/tokenizer.json --max-len 256 --pack \
    --out code-256.lance --overwrite | head -1
run() {  # run name, overrides...
  local name=$1; shift
  $FB train "$root/recipes/sft-tiny.toml" data.tokenizer=quickstart/tokenizer.json train.max_steps=50 \
      train.eval_every=0 train.checkpoint_every=0 output.dir=runs output.run=$name "$@" > $name.log 2>&1 \
    || { tail -5 $name.log; exit 1; }
}
for pair in quickstart:quickstart/tokens.lance code:code-256.lance; do
  name=${pair%%:*} data=${pair#*:}
  run $name-plain data.tokens=$data train.kernels=burn
  run $name-reordered data.tokens=$data train.kernels=burn train.micro_batch_size=2 train.grad_accum_steps=4
  run $name-reference-f32 data.tokens=$data train.kernels=reference train.dtype=f32
  run $name-reference-bf16 data.tokens=$data train.kernels=reference train.dtype=bf16
  python3 "$root/benches/gpu/compare_curves.py" runs/$name-{plain,reordered,reference-f32,reference-bf16}/metrics.jsonl
done
