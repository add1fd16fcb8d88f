#!/usr/bin/env bash
# Issue 23's end-to-end GRPO step at the 125M reference scale (hidden 768, 12 layers, 12 heads,
# intermediate 2048) on the addition demo's data, on one GPU: a short SFT of that model on the
# worked examples (the kernel engine), then GRPO steps (recipes/grpo-addition.toml: 16 prompts × 8
# samples per step, exact-sum reward) on the kernel engine, with the step's rollout time (sampling
# and scoring) and training time (forward, loss, backward, AdamW) apart, as metrics.jsonl records
# them. Run from the repo root on the device machine with the binary carried in .gpu/
# (benches/gpu/lib.sh); logs go to $OUT. SFT_STEPS and GRPO_STEPS set the lengths.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. benches/gpu/lib.sh
[ -n "${FB:-}" ] || { fb_unpack > /dev/null; fb_libs > /dev/null; }
export FIREBRAND_KERNEL_CACHE=${FIREBRAND_KERNEL_CACHE:-/tmp/fb-kernels}
SFT_STEPS=${SFT_STEPS:-60}
GRPO_STEPS=${GRPO_STEPS:-10}
python3 benches/grpo/make_addition.py data/addition 2 > /dev/null
$FB data import data/addition/sft.jsonl --kind chat --out data/addition/sft.lance --overwrite | tail -1
$FB data import data/addition/prompts.jsonl --kind prompts --out data/addition/prompts.lance --overwrite | tail -1
$FB tokenizer train data/addition/sft.lance --vocab-size 270 --out data/addition/tokenizer.json | tail -1
SHAPE="model.hidden_size=768 model.intermediate_size=2048 model.num_attention_heads=12 model.num_key_value_heads=12 model.num_hidden_layers=12"
GPU="train.device=cuda train.dtype=bf16 train.kernels=fast"
rm -rf checkpoints/sft-addition-125m checkpoints/grpo-addition-125m
echo "== SFT, $SFT_STEPS steps" | tee "$OUT/addition-125m.txt"
timeout 240 $FB train recipes/sft-addition.toml $SHAPE $GPU output.run=sft-addition-125m \
    train.max_steps=$SFT_STEPS train.micro_batch_size=32 train.lr=3e-4 train.eval_every=0 train.checkpoint_every=$SFT_STEPS \
    2>&1 | grep -E "engine:|trained|rror" | tee -a "$OUT/addition-125m.txt"
echo "== GRPO, $GRPO_STEPS steps" | tee -a "$OUT/addition-125m.txt"
timeout 300 $FB train recipes/grpo-addition.toml $GPU model.init=checkpoints/sft-addition-125m output.run=grpo-addition-125m \
    train.max_steps=$GRPO_STEPS train.eval_every=0 train.eval_on_start=false train.checkpoint_every=$GRPO_STEPS \
    2>&1 | grep -E "engine:|trained|rror" | tee -a "$OUT/addition-125m.txt"
cp checkpoints/grpo-addition-125m/metrics.jsonl "$OUT/grpo-addition-125m.jsonl" 2>/dev/null
python3 - "$OUT/grpo-addition-125m.jsonl" <<'PY' | tee -a "$OUT/addition-125m.txt"
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1])]
steps = [s for s in steps if "loss" in s]
for s in steps:
    print(f"step {s['step']:>3}  rollout {s['rollout_s']*1e3:7.1f} ms ({s.get('rollout_tokens_per_s', 0):8.0f} generated tok/s)  "
          f"training {s['train_s']*1e3:6.1f} ms ({s['train_tokens_per_s']:8.0f} tok/s)  reward {s['reward']:.3f}")
later = steps[1:] or steps
n = len(later)
print(f"mean over steps 2-{len(steps)}: rollout {sum(s['rollout_s'] for s in later)/n*1e3:.1f} ms, "
      f"training {sum(s['train_s'] for s in later)/n*1e3:.1f} ms per step")
PY
