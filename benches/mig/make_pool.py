#!/usr/bin/env python3
"""Synthetic MIG pools: records with random labels and scores, and label vectors in clusters.

Writes, under OUT:
  pool.jsonl     {"id", "prompt", "completion", "labels", "score"} per record (a `completion`
                 dataset for `firebrand data import`, and the reference harness reads the same file)
  vectors.jsonl  {"label", "vector"} per label, unit length up to rounding

Every number is exactly representable in float32 (scores are multiples of 1/64, vector entries
multiples of 2^-20), so Rust and Python read the same values from the text. Label vectors are drawn
around a few hundred centres, so the graph at threshold 0.9 has edges. Standard library only.

    python3 benches/mig/make_pool.py --records 10000 --labels 1000 --dim 64 --seed 0 --out DIR
"""

import argparse
import json
import math
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--labels", type=int, required=True)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--max-labels", type=int, default=7, help="labels per record: 1..max")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)

    centres = max(1, args.labels // 8)
    centre_vecs = [[rng.gauss(0.0, 1.0) for _ in range(args.dim)] for _ in range(centres)]
    names = [f"label-{i:05d}" for i in range(args.labels)]
    with open(os.path.join(args.out, "vectors.jsonl"), "w") as f:
        for i, name in enumerate(names):
            c = centre_vecs[rng.randrange(centres)]
            spread = rng.choice([0.15, 0.3, 0.6])
            v = [x + rng.gauss(0.0, spread) for x in c]
            n = math.sqrt(sum(x * x for x in v))
            v = [round(x / n * 2**20) / 2**20 for x in v]
            f.write(json.dumps({"label": name, "vector": v}) + "\n")

    # Zipf-like label popularity, so some labels are common and many are rare.
    weights = [1.0 / (r + 1) ** 0.7 for r in range(args.labels)]
    order = list(range(args.labels))
    rng.shuffle(order)
    cum = []
    total = 0.0
    for r in range(args.labels):
        total += weights[r]
        cum.append(total)
    import bisect

    with open(os.path.join(args.out, "pool.jsonl"), "w") as f:
        for i in range(args.records):
            k = rng.randint(1, args.max_labels)
            labels = [names[order[bisect.bisect_left(cum, rng.random() * total)]] for _ in range(k)]
            score = rng.randint(64, 36 * 64) / 64.0
            f.write(
                json.dumps({"id": f"r{i:07d}", "prompt": "", "completion": "", "labels": labels, "score": score})
                + "\n"
            )


if __name__ == "__main__":
    main()
