"""Loads a folder written by `firebrand export` with transformers and records its logits.

    python3 benches/hf/check_export.py EXPORT_DIR OUT.json

Checks that AutoModelForCausalLM and AutoTokenizer open the folder, then writes the fp32 logits
transformers computes for fixed token ids to OUT.json. The Rust test
`hf::a_firebrand_export_reads_the_same_in_transformers` compares firebrand's logits on the same
folder with them (train/tests/fixtures/firebrand-export/ holds the folder and the JSON).
"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

src, out = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(src, torch_dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(src)
text = "<|im_start|>user\nWhat is 12 plus 30?<|im_end|>\n<|im_start|>assistant\n"
ids = tok(text, add_special_tokens=False)["input_ids"]
with torch.no_grad():
    logits = model(input_ids=torch.tensor([ids])).logits
json.dump({"text": text, "input_ids": [ids], "logits": logits.tolist(),
           "architecture": type(model).__name__, "transformers": __import__("transformers").__version__},
          open(out, "w"))
print(type(model).__name__, "loaded;", len(ids), "tokens; greedy next token:",
      repr(tok.decode([int(logits[0, -1].argmax())])))
