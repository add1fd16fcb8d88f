#!/usr/bin/env python3
"""Embeds the sentences of a JSON list with sentence-transformers (the oracle of firebrand's
encoder test) and writes JSONL {"text", "vector"}, vectors as sentence-transformers returns them.

    python3 benches/mig/st_vectors.py --model DIR --sentences train/tests/fixtures/encoder_sentences.json \
        --out train/tests/fixtures/minilm_vectors.jsonl
"""
import argparse
import json

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--sentences", required=True)
ap.add_argument("--out", required=True)
args = ap.parse_args()
texts = json.load(open(args.sentences))
model = SentenceTransformer(args.model, device="cpu")
vecs = model.encode(texts, batch_size=8, convert_to_numpy=True)
with open(args.out, "w") as f:
    for t, v in zip(texts, vecs):
        f.write(json.dumps({"text": t, "vector": [float(x) for x in v]}) + "\n")
print(f"{len(texts)} vectors of {vecs.shape[1]} dims; sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, max_seq_length {model.max_seq_length}")
