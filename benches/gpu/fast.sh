#!/usr/bin/env bash
# Issue 8 on one GPU: the fast path's kernel checks (every kernel against the CPU
# reference, the whole step against burn's autodiff) and kernel timings beside burn; its training
# step on the reference configuration beside PyTorch (eager, bf16 weights, torch.compile) on the
# same card; and 50 steps of recipes/sft-125m.toml on the fast path against the plain path (burn,
# f32), step by step, on the quickstart's chat rows (which the run memorises) and on Python source
# (read once), with PyTorch's own f32 and autocast curves on the same problem beside them
# (benches/curves/torch_replay.py). STAGES and CURVE_DATA pick parts: all of it may not fit one
# 600 s call; STAGES="kernels sft torch" then STAGES=curves fits two. TORCH_MODES="compile" runs
# only that PyTorch variant. Run from the repo root on the
# device machine, the release binary carried in .gpu/ (benches/gpu/lib.sh). Logs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. benches/gpu/lib.sh
fb_kernel_start
STAGES=${STAGES:-kernels sft torch curves}
if has kernels; then
  echo "== kernels"
  timeout 240 $FB bench kernels --device cuda 2>&1 | tee "$OUT/kernels.txt"
fi
if has sft; then
  echo "== fast SFT step, reference configuration"
  timeout 150 $FB bench sft --device cuda --steps 30 --profile 2>&1 | tee "$OUT/sft.txt"
fi
if has torch; then
  echo "== PyTorch"
  PYTHONUNBUFFERED=1 timeout 300 python3 benches/gpu/torch_llama_sft.py ${TORCH_MODES:-} 2>&1 | tee "$OUT/torch.txt"
fi
has curves || exit 0
fb_data
# Python source from the machine's standard library (benches/gpu/code_corpus.py): 1.4k packed rows,
# so 50 steps of 16 rows read each row once, several documents per row.
python3 benches/gpu/code_corpus.py /tmp/code.jsonl --chars 600 --total 1600000
$FB data import /tmp/code.jsonl --out quickstart/code.lance --overwrite | tail -1
$FB data tokenize quickstart/code.lance --tokenizer quickstart/tokenizer.json --max-len 1024 --pack \
    --out quickstart/code-1024.lance --overwrite | tail -1
train() {  # recipe, run name, overrides... ($CURVE_OVERRIDES, e.g. "train.lr=1e-4", before them, for every run)
  local recipe=$1 run=$2; shift 2
  rm -rf checkpoints/$run  # a warm machine keeps the last call's runs
  timeout 150 $FB train $recipe train.max_steps=50 output.run=$run ${CURVE_OVERRIDES:-} "$@" 2>&1 \
      | grep -E "kernels:|step +(1|2|50) |trained|rror" | tee -a "$OUT/curves.txt"
  cp checkpoints/$run/metrics.jsonl "$OUT/$run.jsonl" 2>/dev/null
}
curves() {  # data name, tokens dataset
  local name=$1 tokens=$2
  echo "== loss curves on $name ($tokens): 50 steps of recipes/sft-125m.toml, fast (bf16) and burn (f32) reordered, against burn (f32)" \
    | tee -a "$OUT/curves.txt"
  # Every run starts from one Hugging Face folder (one burn step, exported), so PyTorch can start
  # from the same weights; the recipe names it as model.init in place of the shape keys.
  train recipes/sft-125m.toml $name-init data.tokens=$tokens train.kernels=burn train.dtype=f32 train.max_steps=1
  rm -rf /tmp/$name-init-hf && $FB export checkpoints/$name-init --out /tmp/$name-init-hf | tail -1
  local recipe=/tmp/sft-125m-$name.toml
  awk -v init=/tmp/$name-init-hf '/^\[model\]/ { print; print "init = \"" init "\""; skip = 1; next } /^\[/ { skip = 0 } !skip' \
      recipes/sft-125m.toml > $recipe
  train $recipe $name-plain data.tokens=$tokens train.kernels=burn train.dtype=f32
  train $recipe $name-fast data.tokens=$tokens train.kernels=fast train.dtype=bf16
  # The plain path again with the same gradient summed in another order (two micro-batches of 8):
  # how far f32 rounding alone moves this run's curve.
  train $recipe $name-plain-reordered data.tokens=$tokens train.kernels=burn train.dtype=f32 \
      train.micro_batch_size=8 train.grad_accum_steps=2
  # The peer on the same problem: the plain run replayed in PyTorch (same weights, rows, loss,
  # clipping, AdamW, learning rates), in f32 and under torch.autocast(bfloat16).
  $FB train $recipe train.max_steps=50 output.run=$name-plain data.tokens=$tokens ${CURVE_OVERRIDES:-} \
      --dry-run --rows /tmp/$name-rows.jsonl | tail -1
  $FB data export $tokens --out /tmp/$name-tokens.jsonl | tail -1
  for mode in f32 bf16; do
    rm -rf checkpoints/$name-torch-$mode && mkdir -p checkpoints/$name-torch-$mode
    timeout 200 python3 benches/curves/torch_replay.py --device cuda --run checkpoints/$name-plain \
        --tokens /tmp/$name-tokens.jsonl --rows /tmp/$name-rows.jsonl \
        --out checkpoints/$name-torch-$mode/metrics.jsonl $([ $mode = bf16 ] && echo --autocast) 2>&1 \
      | grep -v "Loading weights" | tail -3 | tee -a "$OUT/curves.txt"
    cp checkpoints/$name-torch-$mode/metrics.jsonl "$OUT/$name-torch-$mode.jsonl" 2>/dev/null
  done
  python3 benches/gpu/compare_curves.py checkpoints/$name-{plain,fast,plain-reordered,torch-f32,torch-bf16}/metrics.jsonl 2>&1 \
    | tee -a "$OUT/curves.txt"
  python3 benches/gpu/compare_curves.py checkpoints/$name-torch-{f32,bf16}/metrics.jsonl 2>&1 | grep -v tokens/s \
    | tee -a "$OUT/curves.txt"
}
CURVE_DATA=${CURVE_DATA:-quickstart code}
[[ " $CURVE_DATA " == *" quickstart "* ]] && curves quickstart quickstart/tokens-1024.lance
[[ " $CURVE_DATA " == *" code "* ]] && curves code quickstart/code-1024.lance
ls -la "$FIREBRAND_KERNEL_CACHE" | tee -a "$OUT/curves.txt"
