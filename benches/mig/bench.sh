#!/usr/bin/env bash
# MIG speed and parity at scale, firebrand against the reference on the same machine.
#
# Run on the GPU machine (the reference samples on CUDA, as its README does) through the device
# tool, with the stripped release binary in .gpu/firebrand.xz, pydantic + jsonlines wheels in .whl
# and the reference checkout (yichengchen24/MIG @969eb53, never committed) in .ref/MIG:
#
#   run: bash benches/mig/bench.sh        carry: [".gpu", ".whl", ".ref"]
#
# 1. A synthetic pool of 1M records, 5k labels with 384-dim vectors (make_pool.py, seed 1).
# 2. firebrand: data import + synth mig --n 50000 (first-order gain), timed by phase.
# 3. The reference: MIGSampler.sample with --batch-size 32768 (its README's setting) on CUDA,
#    stopped after REF_SECONDS; its per-pick cost is a full scan of the pool, constant over picks,
#    so the time for 50k picks is extrapolated from the picks it made (stated as such).
# 4. Parity at scale: the reference's picks against firebrand's, position by position.
# 5. Parity on the committed 10k fixture with the reference in float64 (test fixture).
set -euo pipefail
OUT=${OUT:-out/mig-bench}
mkdir -p "$OUT"
REF_SECONDS=${REF_SECONDS:-150}
N=${N:-50000}

xz -dc .gpu/firebrand.xz > /tmp/firebrand && chmod +x /tmp/firebrand
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
nproc | sed 's/^/cpu cores: /' | tee "$OUT/machine.txt"
nvidia-smi --query-gpu=name --format=csv,noheader | sed 's/^/gpu: /' | tee -a "$OUT/machine.txt"

# Parity fixture: the reference in float64 on the committed 10k pool.
python3 benches/mig/reference.py synthetic --ref .ref/MIG --pool synth/tests/fixtures/mig/synthetic/pool.jsonl \
  --vectors synth/tests/fixtures/mig/synthetic/vectors.jsonl --n 9999 --float64 --out "$OUT/synthetic_picks_f64.json"

P=/tmp/pool1m
time python3 benches/mig/make_pool.py --records 1000000 --labels 5000 --dim 384 --seed 1 --out $P
/tmp/firebrand data import $P/pool.jsonl --out $P/pool.lance
/usr/bin/time -v /tmp/firebrand synth mig $P/pool.lance --n "$N" --out $P/sel.lance --embeddings $P/vectors.jsonl \
  --picks "$OUT/firebrand_picks.jsonl" > "$OUT/firebrand.log" 2>&1 || { cat "$OUT/firebrand.log"; exit 1; }
grep -v "^\s" "$OUT/firebrand.log"
grep -E "Elapsed|Maximum resident" "$OUT/firebrand.log" || true

python3 benches/mig/reference.py synthetic --ref .ref/MIG --pool $P/pool.jsonl --vectors $P/vectors.jsonl \
  --n "$N" --batch-size 32768 --max-seconds "$REF_SECONDS" --out "$OUT/reference_picks.json" | tee "$OUT/reference.log"

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
ours = [json.loads(l)["id"] for l in open(f"{out}/firebrand_picks.jsonl")]
ref = json.load(open(f"{out}/reference_picks.json"))
picks = ref["picks"]
diff = [i for i, (a, b) in enumerate(zip(ours, picks)) if a != b]
per_pick = (ref["select_seconds"] - ref["first_pick_seconds"]) / max(1, len(picks) - 1)
summary = {
    "reference_picks_made": len(picks),
    "reference_select_seconds": ref["select_seconds"],
    "reference_first_pick_seconds": ref["first_pick_seconds"],
    "reference_seconds_per_pick": per_pick,
    "reference_extrapolated_seconds": ref["first_pick_seconds"] + per_pick * (ref["n_requested"] - 1),
    "reference_graph_seconds": ref["graph_seconds"],
    "positions_compared": min(len(ours), len(picks)),
    "positions_differing": len(diff),
    "first_difference": diff[0] if diff else None,
    "same_set": set(ours[: len(picks)]) == set(picks),
}
print(json.dumps(summary, indent=1))
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
EOF
