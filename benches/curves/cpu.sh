#!/usr/bin/env bash
# How far bf16 mixed precision moves a loss curve, on this CPU: 50 steps of recipes/sft-tiny.toml
# on burn in f32 (the plain path), on burn in f32 with the gradient summed in another order (how
# far f32 rounding alone moves the curve), and on the fast path's engine over its CPU reference
# kernels (train.kernels = "reference") in f32 and in bf16, which rounds where the GPU kernels
# store bf16 (`firebrand bench kernels` checks the GPU against this emulation). Beside them, the
# peer on the same problem (when $PYTHON imports torch and transformers): the run replayed in
# PyTorch (benches/curves/torch_replay.py: same initial weights, rows, loss, clipping, AdamW and
# learning rates) in f32 and under torch.autocast(bfloat16), so firebrand's bf16 deviation can be
# read against PyTorch's own. Every run starts from one Hugging Face folder (a 1-step run,
# exported), so both frameworks load the same weights. Two datasets: the quickstart's chat rows
# (22 training rows, read 18 times in 50 steps: memorised) and Python source from the standard
# library (benches/gpu/code_corpus.py, 256-token packed rows, each read once).
# INIT=scratch starts every run from transformers' random initialisation instead (the same config).
# Usage: PYTHON=~/.cache/torchenv/bin/python [INIT=scratch] bash benches/curves/cpu.sh [WORK_DIR]
#   (needs `cargo build --release`; ~15 minutes; pip install torch transformers for the peer)
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
    --out code-256.lance --overwrite | sed -n 1p
# The initial weights every run loads: one step on the code rows, exported; and the recipe with
# model.init in place of the shape keys.
rm -rf runs/init init-hf
$FB train "$root/recipes/sft-tiny.toml" data.tokenizer=quickstart/tokenizer.json data.tokens=code-256.lance \
    train.max_steps=1 train.eval_every=0 train.checkpoint_every=0 output.dir=runs output.run=init > init.log 2>&1 \
  || { tail -5 init.log; exit 1; }
$FB export runs/init --out init-hf | tail -1
PYTHON=${PYTHON:-python3}
peer=$($PYTHON -c 'import torch, transformers' 2>/dev/null && echo yes || echo no)
if [ "${INIT:-step1}" = scratch ]; then  # transformers' random initialisation instead (needs the peer)
  [ $peer = yes ] || { echo "INIT=scratch needs $PYTHON to import torch and transformers"; exit 1; }
  rm -rf init-hf-scratch && $PYTHON "$root/benches/curves/torch_replay.py" --fresh-init init-hf init-hf-scratch
  rm -rf init-hf && mv init-hf-scratch init-hf
  echo "initial weights: transformers' random initialisation (seed 0)"
fi
awk '/^\[model\]/ { print; print "init = \"init-hf\""; skip = 1; next } /^\[/ { skip = 0 } !skip' \
    "$root/recipes/sft-tiny.toml" > sft-tiny-init.toml
[ $peer = yes ] || echo "($PYTHON does not import torch and transformers: the PyTorch replays are left out)"
run() {  # run name, overrides...
  local name=$1; shift
  rm -rf runs/$name
  $FB train sft-tiny-init.toml data.tokenizer=quickstart/tokenizer.json train.max_steps=50 \
      train.eval_every=0 train.checkpoint_every=0 output.dir=runs output.run=$name "$@" > $name.log 2>&1 \
    || { tail -5 $name.log; exit 1; }
}
for pair in quickstart:quickstart/tokens.lance code:code-256.lance; do
  name=${pair%%:*} data=${pair#*:}
  run $name-plain data.tokens=$data train.kernels=burn
  run $name-reordered data.tokens=$data train.kernels=burn train.micro_batch_size=2 train.grad_accum_steps=4
  run $name-reference-f32 data.tokens=$data train.kernels=reference train.dtype=f32
  run $name-reference-bf16 data.tokens=$data train.kernels=reference train.dtype=bf16
  curves=(runs/$name-{plain,reordered,reference-f32,reference-bf16}/metrics.jsonl)
  if [ $peer = yes ]; then
    $FB train sft-tiny-init.toml data.tokenizer=quickstart/tokenizer.json train.max_steps=50 data.tokens=$data \
        output.dir=runs output.run=$name-plain --dry-run --rows $name-rows.jsonl | tail -1
    $FB data export $data --out $name-tokens.jsonl | tail -1
    for mode in f32 bf16; do
      mkdir -p runs/$name-torch-$mode
      $PYTHON "$root/benches/curves/torch_replay.py" --run runs/$name-plain --tokens $name-tokens.jsonl \
          --rows $name-rows.jsonl --out runs/$name-torch-$mode/metrics.jsonl $([ $mode = bf16 ] && echo --autocast) \
          2> $name-torch-$mode.log || { tail -5 $name-torch-$mode.log; exit 1; }
    done
    curves+=(runs/$name-torch-{f32,bf16}/metrics.jsonl)
  fi
  python3 "$root/benches/gpu/compare_curves.py" "${curves[@]}"
  if [ $peer = yes ]; then
    python3 "$root/benches/gpu/compare_curves.py" runs/$name-torch-{f32,bf16}/metrics.jsonl | grep -v tokens/s
  fi
done
