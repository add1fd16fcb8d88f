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
