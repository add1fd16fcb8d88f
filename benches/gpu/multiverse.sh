#!/usr/bin/env bash
# Multiverse parallel generation against sequential generation of the same tokens, on one GPU
# (issue 11, item 6). Run through the device tool with carry [".gpu"]; output in $OUT.
set -euo pipefail
source benches/gpu/lib.sh
fb_unpack
for cfg in "768 12" "256 4"; do
  set -- $cfg
  for p in 2 4 8; do
    $FB bench multiverse --device cuda --hidden $1 --layers $2 --paths $p --path-tokens 256 --repeats 3 | tee -a $OUT/multiverse.txt
  done
done
