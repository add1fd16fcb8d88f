#!/usr/bin/env bash
# LintSeq: firebrand against the reference implementation (upiterbarg/lintseq, unchanged, with
# pylint 3.2.6 / astroid 3.2.4 / numpy 1.26.4 from PyPI, its pins) on the same files of this
# machine's CPython 3.12 standard library, on the same machine with the same number of workers.
# Reports programs/s for both, their ratio, and for both the distributions of edits per program and
# lines per edit; then firebrand alone over the whole standard library (tests left out).
#
# Usage: bash benches/lintseq/bench.sh [N_FILES=100] [SAMPLES=1]
# Env:   PYTHON312 (a Python >= 3.12: the reference needs it), FIREBRAND (binary; default
#        target/release/firebrand under CARGO_TARGET_DIR), LINTSEQ_REF (a checkout or git dir of
#        upiterbarg/lintseq; cloned from GitHub into the cache when unset), WORKERS (default: cores).
# Nothing fetched here is committed: the reference code and the venv live under ~/.cache.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100}
S=${2:-1}
WORKERS=${WORKERS:-$(nproc)}
PY=
for c in ${PYTHON312:-} python3.13 python3.12 "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 python3; do
  if "$c" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then PY=$c; break; fi
done
[ -n "$PY" ] || { echo "the reference needs Python >= 3.12 (set PYTHON312)" >&2; exit 1; }
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/firebrand-bench/lintseq
FB=${FIREBRAND:-${CARGO_TARGET_DIR:-target}/release/firebrand}
mkdir -p "$CACHE"
[ -x "$FB" ] || { echo "no firebrand binary at $FB: cargo build --release (or set FIREBRAND)" >&2; exit 1; }

# The reference's two files, from a checkout, a git dir, or a fresh clone.
REF_SRC=$CACHE/lintseq-ref/src
mkdir -p "$REF_SRC"
REF=${LINTSEQ_REF:-$CACHE/lintseq}
if [ ! -e "$REF" ]; then git clone --quiet --depth 1 https://github.com/upiterbarg/lintseq "$REF"; fi
if [ -f "$REF/src/utils.py" ]; then
  cp "$REF/src/utils.py" "$REF/src/data_gen/lintseq.py" "$REF_SRC/"
  REV=$(git -C "$REF" rev-parse --short HEAD 2>/dev/null || echo unknown)
else
  git --git-dir="$REF" show HEAD:src/utils.py >"$REF_SRC/utils.py"
  git --git-dir="$REF" show HEAD:src/data_gen/lintseq.py >"$REF_SRC/lintseq.py"
  REV=$(git --git-dir="$REF" rev-parse --short HEAD)
fi

VENV=$CACHE/venv
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet pylint==3.2.6 astroid==3.2.4 numpy==1.26.4
fi

# The corpus: stdlib modules of 30-300 lines (tests and site-packages left out), every k-th of
# them in path order, copied under one folder (ids are the paths below it).
STDLIB=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
find "$STDLIB" -name '*.py' -not -path '*/test/*' -not -path '*/tests/*' -not -path '*/idle_test/*' \
  -not -path '*/site-packages/*' | sort >"$WORK/all.txt"
while read -r f; do n=$(wc -l <"$f"); [ "$n" -ge 30 ] && [ "$n" -le 300 ] && echo "$f"; done <"$WORK/all.txt" >"$WORK/mid.txt"
TOTAL=$(wc -l <"$WORK/mid.txt")
STEP=$(( TOTAL / N > 0 ? TOTAL / N : 1 ))
awk -v s="$STEP" -v n="$N" 'NR % s == 0 && c < n { print; c++ }' "$WORK/mid.txt" >"$WORK/files.txt"
mkdir -p "$WORK/corpus"
while read -r f; do rel=${f#"$STDLIB"/}; mkdir -p "$WORK/corpus/$(dirname "$rel")"; cp "$f" "$WORK/corpus/$rel"; done <"$WORK/files.txt"
FILES=$(wc -l <"$WORK/files.txt")
(cd "$WORK/corpus" && find . -name '*.py' | sort | sed 's|^\./||') | sed "s|^|$WORK/corpus/|" >"$WORK/corpus.txt"

echo "== $(date -u +%FT%TZ) $(nproc) cores, $WORKERS workers; $FILES files of 30-300 lines from $STDLIB (Python $("$PY" -V 2>&1 | cut -d' ' -f2)); $S sample(s) per program"
echo "== reference upiterbarg/lintseq@$REV, pylint 3.2.6; firebrand $(git rev-parse --short HEAD)"

t0=$(date +%s.%N)
"$FB" synth lintseq "$WORK/corpus" --out "$WORK/fb.lance" --samples-per-program "$S" --max-lines 0 --overwrite
t1=$(date +%s.%N)
FB_S=$(echo "$t1 - $t0" | bc)
"$FB" data export "$WORK/fb.lance" --out "$WORK/fb.jsonl" >/dev/null

t0=$(date +%s.%N)
"$VENV/bin/python" benches/lintseq/ref_run.py "$REF_SRC" "$WORK/corpus.txt" "$WORK/ref.jsonl" "$WORKERS" "$S"
t1=$(date +%s.%N)
REF_S=$(echo "$t1 - $t0" | bc)

python3 benches/lintseq/compare.py "$WORK/ref.jsonl" "$REF_S" "$WORK/fb.jsonl" "$FB_S" "$FILES"

echo "== firebrand alone: the whole standard library ($(wc -l <"$WORK/all.txt") files, tests left out), 1 sample per program"
mkdir -p "$WORK/stdlib"
while read -r f; do rel=${f#"$STDLIB"/}; mkdir -p "$WORK/stdlib/$(dirname "$rel")"; cp "$f" "$WORK/stdlib/$rel"; done <"$WORK/all.txt"
"$FB" synth lintseq "$WORK/stdlib" --out "$WORK/all.lance" --samples-per-program 1 --overwrite
