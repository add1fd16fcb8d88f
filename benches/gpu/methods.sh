#!/usr/bin/env bash
# Issue 23 on one GPU: every method on the kernel engine. The kernel checks (every kernel against
# the CPU reference, including the log-prob kernel at a temperature with entropies; the whole step
# against the burn engine for SFT's fused pass and DPO/GRPO's split pass), then the training step of
# SFT, DPO, GRPO (β = 0 and 0.04) and localist SFT (λ 0.6) on the reference 125M configuration and the same rows
# (`firebrand bench step`), beside PyTorch's torch.compile SFT step (torch_llama_sft.py) and its DPO
# and GRPO steps of TRL's formulas (torch_methods.py), on the same card; then the end-to-end GRPO
# step at 125M scale on the addition demo (benches/grpo/addition-125m.sh: rollout and training
# time apart). STAGES picks parts ("kernels steps torch demo"; all of it may not fit one 600 s
# call: STAGES="kernels steps torch", then STAGES=demo). Run from the repo root on the device
# machine, the binary carried in .gpu/ (benches/gpu/lib.sh). Logs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. benches/gpu/lib.sh
fb_kernel_start
STAGES=${STAGES:-kernels steps torch demo}
if has kernels; then
  echo "== kernels"
  timeout 240 $FB bench kernels --device cuda 2>&1 | tee "$OUT/kernels.txt"
fi
if has steps; then
  echo "== training steps on the kernel engine, reference configuration, 16 x 1024"
  for m in "sft" "dpo" "grpo" "grpo --beta 0.04" "sft --localist 0.6"; do
    timeout 120 $FB bench step --device cuda --steps 20 --method $m 2>&1 | tee -a "$OUT/steps.txt"
  done
  timeout 120 $FB bench step --device cuda --steps 5 --method dpo --profile 2>&1 | tee -a "$OUT/profile-dpo.txt"
fi
if has torch; then
  echo "== PyTorch"
  PYTHONUNBUFFERED=1 timeout 150 python3 benches/gpu/torch_llama_sft.py compile 2>&1 | tee "$OUT/torch-sft.txt"
  PYTHONUNBUFFERED=1 timeout 300 python3 benches/gpu/torch_methods.py ${TORCH_MODES:-dpo-compile grpo-compile grpo-beta-compile} \
      2>&1 | tee "$OUT/torch-methods.txt"
fi
if has demo; then
  echo "== GRPO on the addition demo at 125M scale"
  FB=$FB bash benches/grpo/addition-125m.sh 2>&1 | tail -20
fi
