"""Compares runs' metrics.jsonl step by step against the first (the plain path): the loss of each
step (relative difference) and the throughput (median tokens/s of steps 11 on).
Usage: compare_curves.py PLAIN.jsonl OTHER.jsonl [MORE.jsonl ...]"""
import json, os, statistics, sys

def steps(path):
    return [m for m in map(json.loads, open(path)) if "loss" in m]

def name(path):
    return os.path.basename(os.path.dirname(path)) or path

ref = steps(sys.argv[1])
for path in sys.argv[2:]:
    b = steps(path)
    n = min(len(ref), len(b))
    rel = [abs(b[i]["loss"] - ref[i]["loss"]) / abs(ref[i]["loss"]) for i in range(n)]
    worst = max(range(n), key=lambda i: rel[i])
    first_over = next((ref[i]["step"] for i in range(n) if rel[i] > 0.01), None)
    print(f"-- {name(path)} against {name(sys.argv[1])}")
    for i in range(n):
        if i < 3 or i % 10 == 9 or i == worst:
            print(f"step {ref[i]['step']:>3}: {ref[i]['loss']:.5f}  {b[i]['loss']:.5f}  rel {rel[i]:.2e}")
    print(f"{n} steps; median relative difference {statistics.median(rel):.1e}, "
          f"largest {max(rel):.2e} at step {ref[worst]['step']}; {sum(r > 0.01 for r in rel)} steps over 1%; "
          f"within 1% at every step: {all(r <= 0.01 for r in rel)}"
          + (f" (first over 1% at step {first_over})" if first_over else ""))
for path in sys.argv[1:]:
    m = steps(path)[10:]
    if m:
        print(f"{name(path)}: median {statistics.median(x['tokens_per_s'] for x in m):,.0f} tokens/s, "
              f"MFU {100 * statistics.median(x['mfu'] or 0 for x in m):.1f}% (steps 11-{len(m) + 10}; real tokens, padding excluded)")
