"""Compares LintSeq runs: the reference's JSONL (ref_run.py) and firebrand's `data export` JSONL.

Usage: python compare.py REF.jsonl REF_SECONDS FIREBRAND.jsonl FIREBRAND_SECONDS FILES
Prints programs/s for both and their ratio, and for both the distribution of edits per program and
of lines per edit (the reference's empty "" edits are left out, as firebrand and pylintseq drop them).
"""
import json
import statistics
import sys


def shape(seqs):
    edits = [len(s) for s in seqs]
    lines = [sum(1 for l in e.split("\n") if l.startswith("+")) for s in seqs for e in s]
    return edits, lines


def describe(v):
    if not v:
        return "n/a"
    v = sorted(v)
    q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
    return f"mean {statistics.mean(v):.2f}, median {q(0.5)}, p10 {q(0.1)}, p90 {q(0.9)}, max {v[-1]}"


def main():
    ref_path, ref_s, fb_path, fb_s, n_files = sys.argv[1:6]
    ref_s, fb_s, n_files = float(ref_s), float(fb_s), int(n_files)
    ref = [json.loads(l) for l in open(ref_path)]
    ok = [r for r in ref if "edit_path" in r]
    errors = {}
    for r in ref:
        if "error" in r:
            key = r["error"].split(":")[0]
            errors[key] = errors.get(key, 0) + 1
    ref_seqs = [[e for e in r["edit_path"] if e] for r in ok]
    fb = [json.loads(l) for l in open(fb_path)]
    fb_seqs = [r["edits"] for r in fb]
    print(f"files: {n_files}")
    print(f"reference: {len(ok)} sequences, {len(ref) - len(ok)} failed {errors}; {ref_s:.1f} s, {n_files / ref_s:.2f} programs/s")
    print(f"firebrand: {len(fb_seqs)} sequences; {fb_s:.2f} s, {n_files / fb_s:.1f} programs/s")
    print(f"speed ratio (firebrand / reference): {ref_s / fb_s:.0f}x")
    for name, seqs in (("reference", ref_seqs), ("firebrand", fb_seqs)):
        edits, lines = shape(seqs)
        print(f"{name:10} edits per program: {describe(edits)}")
        print(f"{name:10} lines per edit:    {describe(lines)}")


if __name__ == "__main__":
    main()
