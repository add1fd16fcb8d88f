#!/usr/bin/env bash
# Issue 8 on one GPU, one call: the fast path's kernel checks (every kernel against the CPU
# reference, the whole step against burn's autodiff) and kernel timings beside burn; its training
# step on the reference configuration beside PyTorch (eager, bf16 weights, torch.compile) on the
# same card; and 50 steps of recipes/sft-125m.toml on the fast path against the plain path (burn,
# f32), step by step, on the quickstart's chat rows (which the run memorises) and on Python source
# (read once). STAGES and CURVE_DATA pick parts. Run from the repo root on the device machine, the release binary carried in
# .gpu/ (benches/gpu/lib.sh). Logs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. benches/gpu/lib.sh
fb_unpack > "$OUT/gpu.txt"; cat "$OUT/gpu.txt"
fb_libs > "$OUT/libs.txt"; cat "$OUT/libs.txt"
export FIREBRAND_KERNEL_CACHE=/tmp/fb-kernels
STAGES=${STAGES:-kernels sft torch curves}
has() { [[ " $STAGES " == *" $1 "* ]]; }
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
  PYTHONUNBUFFERED=1 timeout 300 python3 benches/gpu/torch_llama_sft.py 2>&1 | tee "$OUT/torch.txt"
fi
has curves || exit 0
fb_data
# Python source from the machine's standard library (benches/gpu/code_corpus.py): 1.4k packed rows,
# so 50 steps of 16 rows read each row once, several documents per row.
python3 benches/gpu/code_corpus.py /tmp/code.jsonl --chars 600 --total 1600000
$FB data import /tmp/code.jsonl --out quickstart/code.lance --overwrite | tail -1
$FB data tokenize quickstart/code.lance --tokenizer quickstart/tokenizer.json --max-len 1024 --pack \
    --out quickstart/code-1024.lance --overwrite | tail -1
train() {  # run name, overrides... (plus $CURVE_OVERRIDES, e.g. "train.lr=1e-4", for every run)
  local run=$1; shift
  timeout 150 $FB train recipes/sft-125m.toml train.max_steps=50 output.run=$run "$@" ${CURVE_OVERRIDES:-} 2>&1 \
      | grep -E "kernels:|step +(1|2|50) |trained|rror" | tee -a "$OUT/curves.txt"
  cp checkpoints/$run/metrics.jsonl "$OUT/$run.jsonl" 2>/dev/null
}
curves() {  # data name, tokens dataset
  local name=$1 tokens=$2
  echo "== loss curves on $name ($tokens): 50 steps of recipes/sft-125m.toml, fast (bf16) and burn (f32) reordered, against burn (f32)" \
    | tee -a "$OUT/curves.txt"
  train $name-plain data.tokens=$tokens train.kernels=burn train.dtype=f32
  train $name-fast data.tokens=$tokens train.kernels=fast train.dtype=bf16
  # The plain path again with the same gradient summed in another order (two micro-batches of 8):
  # how far f32 rounding alone moves this run's curve.
  train $name-plain-reordered data.tokens=$tokens train.kernels=burn train.dtype=f32 \
      train.micro_batch_size=8 train.grad_accum_steps=2
  python3 benches/gpu/compare_curves.py checkpoints/$name-{plain,fast,plain-reordered}/metrics.jsonl 2>&1 \
    | tee -a "$OUT/curves.txt"
}
CURVE_DATA=${CURVE_DATA:-quickstart code}
[[ " $CURVE_DATA " == *" quickstart "* ]] && curves quickstart quickstart/tokens-1024.lance
[[ " $CURVE_DATA " == *" code "* ]] && curves code quickstart/code-1024.lance
ls -la "$FIREBRAND_KERNEL_CACHE" | tee -a "$OUT/curves.txt"
