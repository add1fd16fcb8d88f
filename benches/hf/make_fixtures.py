"""Makes the HF parity fixtures of train/tests/fixtures/: tiny random LlamaForCausalLM and
Qwen2ForCausalLM checkpoints saved by transformers, with input ids, position ids and the fp32 logits
transformers computes for them. The Rust test `hf::parity_with_transformers_logits` loads each folder
and compares its logits with these (<= 1e-4 relative).

Run where torch and transformers are installed (the GPU machine has both; CPU is used):
    python3 benches/hf/make_fixtures.py OUT_DIR
"""
import json, os, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

out = sys.argv[1]
torch.manual_seed(1234)
common = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, max_position_embeddings=128, rms_norm_eps=1e-6)
models = {
    # grouped-query attention (4 query heads over 2 kv heads), untied head, theta 10000
    "llama": LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False,
                                           rope_theta=10000.0, attn_implementation="eager", **common)),
    # q/k/v biases, tied embeddings, theta 1e6 (Qwen2's)
    "qwen2": Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, tie_word_embeddings=True,
                                           rope_theta=1000000.0, attn_implementation="eager", **common)),
}
# two sequences: a plain one and one whose positions restart (a packed row, read per segment)
ids = torch.randint(0, 96, (2, 12))
for name, model in models.items():
    model.eval()
    with torch.no_grad():
        for p in model.parameters():  # larger-than-default weights so errors show in the logits
            p.add_(torch.randn_like(p) * 0.05)
    d = os.path.join(out, name)
    model.save_pretrained(d, safe_serialization=True)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        # the second half of row 1 as its own document: positions restart at 0
        seg = model(input_ids=ids[1:, 6:]).logits
    json.dump({"input_ids": ids.tolist(), "logits": logits.tolist(),
               "segment_input_ids": ids[1:, 6:].tolist(), "segment_logits": seg.tolist(),
               "transformers": __import__("transformers").__version__, "torch": torch.__version__},
              open(os.path.join(d, "expected.json"), "w"))
    print(name, "saved", sum(p.numel() for p in model.parameters()), "parameters")
