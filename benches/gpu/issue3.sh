#!/usr/bin/env bash
# Issue 3 on one GPU, one call: matmul per dtype beside PyTorch, the 125M SFT run twice (cold and
# warm kernel cache) beside PyTorch, and batched generation beside transformers.
# Run on the device machine from the repo root with the release binary carried in .gpu/.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. benches/gpu/lib.sh
fb_unpack > "$OUT/gpu.txt"; cat "$OUT/gpu.txt"
echo "== matmul 8192"
for d in f32 bf16 f16; do $FB bench matmul --device cuda --size 8192 --dtype $d --iters 20; done
python3 - <<'PY'
import torch, time
for name, dt, tf32 in [("f32 (no TF32)", torch.float32, False), ("f32 TF32", torch.float32, True), ("bf16", torch.bfloat16, False)]:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(8192, 8192, device="cuda", dtype=dt); b = torch.randn_like(a)
    for _ in range(3): a @ b
    torch.cuda.synchronize(); t = time.time()
    for _ in range(20): a @ b
    torch.cuda.synchronize(); s = (time.time() - t) / 20
    print(f"torch matmul 8192 {name}: {s*1e3:.3f} ms, {2*8192**3/s/1e12:.1f} TFLOP/s")
PY
echo "== data"
fb_data
echo "== SFT 125M, cold kernel cache then warm"
rm -rf ~/.cache/firebrand/kernels
for run in cold warm; do
  t0=$(date +%s.%N)
  $FB train recipes/sft-125m.toml train.max_steps=30 output.run=sft-125m-$run 2>&1 | grep -E "kernel cache|step +(1|2|30) |trained|rror"
  echo "$run: process wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
  python3 -c "
import json,statistics as st
m=[json.loads(l) for l in open('checkpoints/sft-125m-$run/metrics.jsonl') if '\"loss\"' in l]
d=[b['elapsed_s']-a['elapsed_s'] for a,b in zip(m,m[1:])]
print('$run: first step %.2f s; median of steps 11-30 %.1f ms, %.0f tokens/s, MFU %.2f%%' % (m[0]['elapsed_s'], 1e3*st.median(d[9:]), st.median([x['tokens_per_s'] for x in m[10:]]), 100*st.median([x['mfu'] for x in m[10:]])))"
done
du -sh ~/.cache/firebrand/kernels
python3 benches/gpu/torch_llama_sft.py
echo "== generate: 32 prompts x 128 new tokens, greedy"
$FB export checkpoints/sft-125m-warm --out /tmp/export125 | tail -1
grep -o '"content": "[^"]*"' quickstart/chat.jsonl | sed -n '1~2p' | head -32 | sed 's/"content": "//; s/"$//' > /tmp/prompts.txt
for i in 1 2; do
  $FB generate /tmp/export125 --prompts /tmp/prompts.txt --device cuda --temperature 0 --max-new-tokens 128 \
      --batch-size 32 --json > /tmp/fb_gen.jsonl 2> /tmp/fb_gen.err; echo "firebrand run $i: $(cat /tmp/fb_gen.err)"
done
python3 benches/gpu/hf_generate.py /tmp/export125 /tmp/prompts.txt /tmp/fb_gen.jsonl 128
cp /tmp/fb_gen.jsonl "$OUT/" 2>/dev/null; cp checkpoints/sft-125m-warm/metrics.jsonl "$OUT/metrics-warm.jsonl"
