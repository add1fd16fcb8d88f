"""Peer for `firebrand generate`: transformers' generate on a firebrand export, same prompts, same card.

Checks that the export's `chat_template` renders what firebrand renders, compares greedy tokens
with firebrand's (`--json` output), and times batched greedy generation.
usage: hf_generate.py EXPORT_DIR PROMPTS_FILE FIREBRAND_JSONL MAX_NEW_TOKENS
"""
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

export, prompts_file, fb_jsonl, max_new = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
prompts = [l.rstrip("\n") for l in open(prompts_file) if l.strip()]
tok = AutoTokenizer.from_pretrained(export)
rendered = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts]
expect = f"<|im_start|>user\n{prompts[0]}<|im_end|>\n<|im_start|>assistant\n"
print("chat_template renders firebrand's chatml:", rendered[0] == expect)
model = AutoModelForCausalLM.from_pretrained(export, torch_dtype=torch.float32).cuda().eval()
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
enc = tok(rendered, return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")
gen = dict(max_new_tokens=max_new, do_sample=False, eos_token_id=model.generation_config.eos_token_id,
           pad_token_id=tok.pad_token_id)
with torch.no_grad():
    model.generate(**enc, **dict(gen, max_new_tokens=4))  # warm-up
    torch.cuda.synchronize(); t = time.time()
    out = model.generate(**enc, **gen)
    torch.cuda.synchronize(); secs = time.time() - t
new = out[:, enc["input_ids"].shape[1]:]
eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
          else [model.generation_config.eos_token_id])
hf_rows = []
for row in new.tolist():
    kept = []
    for t_ in row:
        kept.append(t_)
        if t_ in eos:
            break
    hf_rows.append(kept)
n_tokens = sum(len(r) for r in hf_rows)
print(f"transformers {__import__('transformers').__version__} generate fp32 (no TF32), batch {len(prompts)}: "
      f"{n_tokens} tokens in {secs:.2f} s = {n_tokens / secs:,.0f} tokens/s")
fb = [json.loads(l) for l in open(fb_jsonl)]
same = sum(1 for a, b in zip(hf_rows, fb) if a == b["tokens"])
prefix = [next((i for i, (x, y) in enumerate(zip(a, b["tokens"])) if x != y), min(len(a), len(b["tokens"])))
          for a, b in zip(hf_rows, fb)]
print(f"greedy tokens identical for {same}/{len(fb)} prompts; mean common prefix {sum(prefix)/len(prefix):.1f} tokens "
      f"(firebrand mean length {sum(len(b['tokens']) for b in fb)/len(fb):.1f}, transformers {n_tokens/len(hf_rows):.1f})")
