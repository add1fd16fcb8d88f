#!/usr/bin/env bash
# Issue 10's CPU demonstration: GRPO raises the share of right answers a tiny SFT'd model samples
# on 2-digit addition. make_addition.py writes 2,000 worked examples and the same questions as
# `prompts` rows; a 270-token byte-level BPE (digits stay single tokens); recipes/sft-addition.toml
# teaches the answer format and memorises part of the sums; recipes/grpo-addition.toml then
# rewards exact sums on 320 of the questions (8 samples per prompt, 16 prompts per step, no KL).
# `reward` is the share of sampled answers that are right; eval/reward that of greedy answers on
# the 64 questions GRPO holds out.
# Run from the repository root; writes data/addition, checkpoints/sft-addition, checkpoints/grpo-addition.
set -euo pipefail
. scripts/env.sh
cargo build --locked --release --quiet
B="$CARGO_TARGET_DIR/release/firebrand"
python3 benches/grpo/make_addition.py data/addition 2
"$B" data import data/addition/sft.jsonl --kind chat --out data/addition/sft.lance --overwrite
"$B" data import data/addition/prompts.jsonl --kind prompts --out data/addition/prompts.lance --overwrite
"$B" tokenizer train data/addition/sft.lance --vocab-size 270 --out data/addition/tokenizer.json
rm -rf checkpoints/sft-addition checkpoints/grpo-addition
"$B" train recipes/sft-addition.toml | grep -v "^step"
"$B" train recipes/grpo-addition.toml | grep -E "eval/reward|trained"
"$B" plot checkpoints/grpo-addition --out checkpoints/grpo-addition/metrics.png
python3 - <<'PY'
import json
rows = [json.loads(l) for l in open("checkpoints/grpo-addition/metrics.jsonl")]
steps = [r for r in rows if "loss" in r]
evals = [r for r in rows if "eval/reward" in r]
for r in evals:
    print(f"step {r['step']:>4}  eval/reward (greedy accuracy, 64 held-out questions) {r['eval/reward']:.3f}")
def window(a, b):
    w = [s for s in steps if a <= s["step"] <= b]
    return sum(s["reward"] for s in w) / len(w)
print(f"sampled reward, steps 1-10: {window(1, 10):.3f}; last 10 steps: {window(len(steps) - 9, len(steps)):.3f}")
roll = sum(s["rollout_s"] for s in steps); train = sum(s["train_s"] for s in steps)
print(f"time: rollout {roll:.0f} s, training {train:.0f} s")
PY
