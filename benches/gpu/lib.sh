# Shared steps of the GPU benchmark scripts (sourced): unpack the carried release binary into $FB,
# and build the quickstart data with its 1024-token packed rows (what recipes/sft-125m.toml reads).
fb_unpack() {
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.gpu/firebrand.xz'), open('/tmp/firebrand','wb'))"
  chmod +x /tmp/firebrand
  FB=/tmp/firebrand
  nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader
}
fb_data() {
  # The quickstart's last steps embed labels with all-MiniLM-L6-v2, which this offline machine
  # lacks; what the benchmarks need (chat data, tokenizer) is written before them.
  $FB quickstart --dir quickstart --train-steps 1 > /tmp/quickstart.log 2>&1 \
    || [ -f quickstart/tokenizer.json ] && [ -d quickstart/chat.lance ] \
    || { tail -20 /tmp/quickstart.log; exit 1; }
  $FB data tokenize quickstart/chat.lance --tokenizer quickstart/tokenizer.json --max-len 1024 --pack \
      --out quickstart/tokens-1024.lance --overwrite | tail -1
}
fb_libs() {
  # The fast path loads cuBLASLt and NVRTC at run time: from the system's CUDA when the loader
  # finds them, else from the CUDA wheels beside PyTorch (added at the end of LD_LIBRARY_PATH).
  local extra
  extra=$(python3 - <<'PY'
import glob, os, site
dirs = []
for root in site.getsitepackages() + ["/usr/local/cuda/lib64"]:
    for pat in ["libcublasLt.so*", "libnvrtc.so*", "nvidia/*/lib/libcublasLt.so*", "nvidia/*/lib/libnvrtc.so*"]:
        for f in sorted(glob.glob(os.path.join(root, pat))):
            d = os.path.dirname(f)
            if d not in dirs:
                dirs.append(d)
print(":".join(dirs))
PY
)
  echo "loader cache: $(ldconfig -p | grep -oE 'lib(cublasLt|nvrtc)\.so[.0-9]*' | sort -u | tr '\n' ' ')"
  echo "library folders added: $extra"
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$extra"
}
fb_kernel_start() {
  # What the kernel-engine benchmarks do first: the binary unpacked and the card named (gpu.txt),
  # cuBLASLt and NVRTC found (libs.txt), one kernel cache for every command of the call.
  fb_unpack > "$OUT/gpu.txt"; cat "$OUT/gpu.txt"
  fb_libs > "$OUT/libs.txt"; cat "$OUT/libs.txt"
  export FIREBRAND_KERNEL_CACHE=/tmp/fb-kernels
}
# Whether stage $1 is in $STAGES.
has() { [[ " $STAGES " == *" $1 "* ]]; }
