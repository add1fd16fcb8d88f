#!/usr/bin/env bash
# train.dtype = bf16 against f32 on the 125M recipe, one GPU, one call (issue 3 item 7).
set -uo pipefail
. benches/gpu/lib.sh
fb_unpack
fb_data
for dt in f32 bf16 f32 bf16; do
  run=sft-125m-$dt-$RANDOM
  $FB train recipes/sft-125m.toml train.max_steps=30 train.dtype=$dt output.run=$run 2>&1 | grep -E "step +(1|30) |rror"
  python3 -c "
import json,statistics as st
m=[json.loads(l) for l in open('checkpoints/$run/metrics.jsonl') if '\"loss\"' in l]
d=[b['elapsed_s']-a['elapsed_s'] for a,b in zip(m,m[1:])]
print('$dt: first step %.2f s; median of steps 11-30 %.1f ms, %.0f tokens/s, MFU %.2f%%; loss at 10/20/30: %.3f %.3f %.3f' % (m[0]['elapsed_s'], 1e3*st.median(d[9:]), st.median([x['tokens_per_s'] for x in m[10:]]), 100*st.median([x['mfu'] for x in m[10:]]), m[9]['loss'], m[19]['loss'], m[29]['loss']))"
done
