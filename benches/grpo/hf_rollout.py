"""Peer for `firebrand bench rollout`: transformers' `generate` sampling GRPO rollouts from the same
export, the same prompts and the same shape, on the same card.

Each prompt is rendered with the export's chat template (which renders firebrand's chatml), left
padded, and sampled `G` times (num_return_sequences) at temperature 1 with no top-k/top-p;
`min_new_tokens = max_new_tokens` keeps every row to full length, as firebrand's bench does by
giving no stop token. Times one call after a warm-up call, in fp32 (TF32 off) and in bf16.
usage: hf_rollout.py EXPORT_DIR PROMPTS_FILE G NEW_TOKENS
"""
import sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

export, prompts_file, g, new = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
prompts = [l.rstrip("\n") for l in open(prompts_file) if l.strip()]
tok = AutoTokenizer.from_pretrained(export)
rendered = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts]
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
import transformers
for dtype in (torch.float32, torch.bfloat16):
    model = AutoModelForCausalLM.from_pretrained(export, dtype=dtype).cuda().eval()
    enc = tok(rendered, return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")
    gen = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=g,
               max_new_tokens=new, min_new_tokens=new, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        model.generate(**enc, **dict(gen, max_new_tokens=8, min_new_tokens=8))  # warm-up
        torch.cuda.synchronize(); t = time.time()
        out = model.generate(**enc, **gen)
        torch.cuda.synchronize(); secs = time.time() - t
    n = (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    print(f"transformers {transformers.__version__} generate {str(dtype).split('.')[-1]}: {len(prompts)} prompts x {g} "
          f"= {out.shape[0]} rows x {new} new tokens: {n} tokens in {secs:.2f} s = {n / secs:,.0f} tokens/s")
    del model
    torch.cuda.empty_cache()
