#!/usr/bin/env bash
# Batched greedy generation throughput, firebrand vs transformers, one GPU, one call: a 125M model
# trained one step (near-random, so no row stops early), 32 prompts × 256 new tokens, fp32.
set -uo pipefail
. benches/gpu/lib.sh
fb_unpack
fb_data > /dev/null
$FB train recipes/sft-125m.toml train.max_steps=1 output.run=gen > /dev/null 2>&1
$FB export checkpoints/gen --out /tmp/gen | tail -1
grep -o '"content": "[^"]*"' quickstart/chat.jsonl | sed -n '1~2p' | head -32 | sed 's/"content": "//; s/"$//' > /tmp/prompts.txt
for i in 1 2 3; do
  $FB generate /tmp/gen --prompts /tmp/prompts.txt --device cuda --temperature 0 --max-new-tokens 256 \
      --batch-size 32 --json > /tmp/fb_gen.jsonl 2> /tmp/fb_gen.err; echo "firebrand run $i: $(cat /tmp/fb_gen.err)"
done
python3 benches/gpu/hf_generate.py /tmp/gen /tmp/prompts.txt /tmp/fb_gen.jsonl 256
