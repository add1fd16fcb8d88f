#!/usr/bin/env bash
# Issue 9's CPU demonstration: SFT a tiny model (the quickstart), build preference pairs with it
# through the local sampler (`synth prefs`), then DPO it and read the held-out preference accuracy.
# Run from the repository root; writes quickstart/, data/ and checkpoints/dpo-tiny.
set -euo pipefail
. scripts/env.sh
cargo build --locked --quiet
B="$CARGO_TARGET_DIR/debug/firebrand"
[ -f quickstart/export/config.json ] || "$B" quickstart
mkdir -p data
"$B" synth vifrag --sample --per-query 16 --out data/prompts.lance --seed 3 --overwrite
"$B" synth prefs data/prompts.lance --out data/prefs.lance --model quickstart/export \
  --n 16 --temperature 1.0 --max-tokens 32 --seed 3 --perspectives instruction --overwrite
rm -rf checkpoints/dpo-tiny
"$B" train recipes/dpo-tiny.toml
python3 - <<'PY'
import json
for line in open("checkpoints/dpo-tiny/metrics.jsonl"):
    d = json.loads(line)
    if "eval/loss" in d:
        print(f"step {d['step']:>3}  eval/loss {d['eval/loss']:.4f}  eval/rewards/accuracies {d['eval/rewards/accuracies']:.3f}  eval/rewards/margins {d['eval/rewards/margins']:.4f}")
PY
