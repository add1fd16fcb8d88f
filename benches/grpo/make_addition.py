#!/usr/bin/env python3
"""Multi-digit addition, the verifiable task of issue 10's CPU demonstration.

Usage: make_addition.py OUT [DIGITS=3] [N_SFT=2000] [N_PROMPTS=2000]

Writes, with a fixed seed, two JSONL files for `firebrand data import`:
  OUT/sft.jsonl      chat rows "What is a + b?" -> "c" (the SFT warm-up),
  OUT/prompts.jsonl  prompts rows with `answer` (what GRPO samples from and is rewarded on).
Operands have 1 to DIGITS digits (the digit count uniform); prompts never repeat an SFT question.
"""
import json
import os
import random
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "data/addition"
digits = int(sys.argv[2]) if len(sys.argv) > 2 else 3
n_sft = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
n_prompts = int(sys.argv[4]) if len(sys.argv) > 4 else 2000

rng = random.Random(1234)


def operand():
    d = rng.randint(1, digits)
    return rng.randint(0 if d == 1 else 10 ** (d - 1), 10 ** d - 1)


seen = set()


def fresh():
    while True:
        a, b = operand(), operand()
        if (a, b) not in seen:
            seen.add((a, b))
            return a, b


os.makedirs(out, exist_ok=True)
with open(f"{out}/sft.jsonl", "w") as f:
    for i in range(n_sft):
        a, b = fresh()
        f.write(json.dumps({"id": f"sft-{i}", "messages": [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": str(a + b)}]}) + "\n")
with open(f"{out}/prompts.jsonl", "w") as f:
    for i in range(n_prompts):
        a, b = fresh()
        f.write(json.dumps({"id": f"add-{i}", "prompt": f"What is {a} + {b}?",
                            "answer": str(a + b), "verifiers": []}) + "\n")
