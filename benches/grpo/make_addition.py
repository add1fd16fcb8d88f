#!/usr/bin/env python3
"""Multi-digit addition, the verifiable task of issue 10's CPU demonstration.

Usage: make_addition.py OUT [DIGITS=2] [N_SFT=2000]

Writes, with a fixed seed, JSONL files for `firebrand data import`:
  OUT/sft.jsonl      chat rows "What is a + b?" -> "c" (the SFT warm-up),
  OUT/prompts.jsonl  the same questions as `prompts` rows with `answer` (what GRPO samples from
                     and is rewarded on),
Operands have 1 to DIGITS digits (the digit count uniform). A 0.8M-parameter model does not learn
to add from 2,000 examples (of its samples for sums it never saw, about 5% are right): it learns the
format and part of the questions it saw; GRPO then raises the share of those it answers right.
"""
import json
import os
import random
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "data/addition"
digits = int(sys.argv[2]) if len(sys.argv) > 2 else 2
n_sft = int(sys.argv[3]) if len(sys.argv) > 3 else 2000

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
sft = [fresh() for _ in range(n_sft)]
with open(f"{out}/sft.jsonl", "w") as f:
    for i, (a, b) in enumerate(sft):
        f.write(json.dumps({"id": f"sft-{i}", "messages": [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {"role": "assistant", "content": str(a + b)}]}) + "\n")
with open(f"{out}/prompts.jsonl", "w") as f:
    for i, (a, b) in enumerate(sft):
        f.write(json.dumps({"id": f"add-{i}", "prompt": f"What is {a} + {b}?",
                            "answer": str(a + b), "verifiers": []}) + "\n")
