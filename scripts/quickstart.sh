#!/usr/bin/env bash
# The README's first command: install build dependencies, fetch the label embedder, build, and run
# the quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/models.sh
. scripts/env.sh
cargo run --locked --quiet -- quickstart "$@"
