#!/usr/bin/env bash
# GRPO rollout throughput on one GPU, one call: firebrand's sampler (the GRPO rollout path:
# prompts repeated G times, one batched call with the KV cache, temperature 1) against
# transformers' `generate` (num_return_sequences = G) on the same export of the 125M reference
# model (one SFT step from random, so nothing is learned; no row stops early on either side).
# Usage on the device machine: bash benches/grpo/rollout.sh [PROMPTS=16] [G=8] [NEW_TOKENS=256]
set -uo pipefail
. benches/gpu/lib.sh
P=${1:-16}; G=${2:-8}; N=${3:-256}
fb_unpack
fb_data > /dev/null
$FB train recipes/sft-125m.toml train.max_steps=1 output.run=rollout > /dev/null 2>&1
$FB export checkpoints/rollout --out /tmp/rollout | tail -1
grep -o '"content": "[^"]*"' quickstart/chat.jsonl | sed -n '1~2p' | head -"$P" | sed 's/"content": "//; s/"$//' > /tmp/prompts.txt
$FB bench rollout /tmp/rollout --prompts /tmp/prompts.txt --generations "$G" --new-tokens "$N" --device cuda --repeats 2
$FB bench rollout /tmp/rollout --prompts /tmp/prompts.txt --generations "$G" --new-tokens "$N" --device cuda --repeats 2 --dtype bf16
python3 benches/grpo/hf_rollout.py /tmp/rollout /tmp/prompts.txt "$G" "$N"
