#!/usr/bin/env bash
# Localist schedules on a 12-layer model (issue 11, item 4): no dial, uniform λ = 1, and the
# polynomial schedules λ_l = (l/11)^β for β = 1, 3, 5, each trained 400 steps on CUDA on the README
# corpus (benches/localist/corpus.py, tokenized here and carried in .gpu/localist), then measured
# on the held-out paragraphs at its own setting. Run through the device tool with carry [".gpu"].
set -euo pipefail
source benches/gpu/lib.sh
fb_unpack
D=.gpu/localist
R=benches/localist/sft-12layer.toml
run() {
  name=$1; shift
  $FB train $R data.tokens=$D/train.tokens.lance data.tokenizer=$D/tok.json train.device=cuda \
      output.dir=/tmp/runs output.run=$name "$@" > /tmp/train-$name.log 2>&1 || { tail -20 /tmp/train-$name.log; exit 1; }
  tail -1 /tmp/train-$name.log | tee -a $OUT/localist12.txt
  echo "== $name" | tee -a $OUT/localist12.txt
  $FB eval attention /tmp/runs/$name $D/test.tokens.lance --rows 1000 | tee -a $OUT/localist12.txt
}
run none localist.lambda=0.0
run uniform localist.lambda=1.0
for b in 1 3 5; do run poly$b localist.lambda=1.0 localist.schedule=polynomial localist.beta=$b; done
