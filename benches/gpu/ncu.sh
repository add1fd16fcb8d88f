#!/usr/bin/env bash
# Hardware counters of the fast path's attention kernels (Nsight Compute, clocks left alone), one
# launch of each, during `firebrand bench sft`. Run after benches/gpu/fast.sh has unpacked $FB.
set -uo pipefail
OUT=${OUT:-/tmp/out}
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "ncu not found"; exit 0; }
for k in flash_fwd_d64 flash_bwd_dkdv_d64 flash_bwd_dq_d64 ${NCU_EXTRA:-}; do
  timeout 120 "$NCU" --clock-control none --kernel-name "$k" --launch-skip 2 --launch-count 1 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
      --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      $FB bench sft --device cuda --steps 1 --warmup 1 > "$OUT/ncu-$k.txt" 2>&1
  echo "== $k"
  grep -E "Duration|Registers Per Thread|Achieved Occupancy|Theoretical Occupancy|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|Executed Ipc Active|Block Limit (Registers|Shared Mem)|L1/TEX Hit|Bank" "$OUT/ncu-$k.txt" | sed 's/  */ /g' | head -20
  grep -iE "stall|warp cycles per issued" "$OUT/ncu-$k.txt" | sed 's/  */ /g' | head -6
done
