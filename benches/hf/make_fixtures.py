"""Makes the HF parity fixtures of train/tests/fixtures/: tiny random checkpoints of every family
firebrand reads (Llama, Llama 3.1's RoPE scaling, dynamic NTK RoPE, Qwen2, Qwen3 with YaRN, Mistral
with a sliding window, Phi-3 with LongRoPE and fused projections, Gemma 2, Gemma 3's text model) saved by transformers, with input
ids and the fp32 logits transformers computes for them. The Rust test
`hf::parity_with_transformers_logits` loads each folder and compares its logits with these
(<= 1e-4 relative).

Run where torch and transformers are installed (CPU is used):
    python3 benches/hf/make_fixtures.py OUT_DIR [NAME ...]
"""
import json, os, sys
import torch
from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Phi3Config,
                          Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

out, only = sys.argv[1], set(sys.argv[2:])
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
    # Llama 3.1's RoPE scaling; the pre-training length 32 puts the head's 8 frequencies in all
    # three of its bands (kept, ramped, divided by 8)
    "llama31": LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=32),
        attn_implementation="eager", **common)),
    # dynamic NTK: past max_position_embeddings (8) the base grows with the length; the 12-token
    # rows are past it, the 6-token segment is not
    "llama-dynamic": LlamaForCausalLM(LlamaConfig(num_key_value_heads=4, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0),
        attn_implementation="eager", **{**common, "max_position_embeddings": 8})),
    # per-head q/k RMSNorm, head_dim 32 != 64 / 4, no biases, YaRN (factor 4 over 32 positions)
    "qwen3": Qwen3ForCausalLM(Qwen3Config(num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="yarn", rope_theta=1000000.0, factor=4.0,
                             original_max_position_embeddings=32),
        attn_implementation="eager", **common)),
    # a sliding window of 4 keys over 12-token rows
    "mistral": MistralForCausalLM(MistralConfig(num_key_value_heads=2, sliding_window=4, tie_word_embeddings=False,
                                               rope_theta=10000.0, attn_implementation="eager", **common)),
    # fused qkv_proj and gate_up_proj; LongRoPE with the long factors past 8 positions (the
    # 12-token rows) and the short ones below (the 6-token segment)
    "phi3": Phi3ForCausalLM(Phi3Config(num_key_value_heads=2, tie_word_embeddings=False, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, original_max_position_embeddings=8,
        rope_parameters=dict(rope_type="longrope", rope_theta=10000.0,
                             short_factor=[1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 3.5],
                             long_factor=[1.0, 1.5, 2.5, 4.0, 6.0, 8.0, 10.0, 12.0]),
        attn_implementation="eager", **common)),
    # GeGLU, norms around attention and MLP stored as scale - 1, embeddings scaled by sqrt(64),
    # q.k over sqrt(24) (not sqrt(16)), a sliding window of 4 on the first layer, and caps small
    # enough (2 on scores, 3 on logits) that tanh bends them
    "gemma2": Gemma2ForCausalLM(Gemma2Config(num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        sliding_window=4, attn_logit_softcapping=2.0, final_logit_softcapping=3.0, pad_token_id=0,
        attn_implementation="eager", **common)),
    # Gemma 3's text model: q/k norms stored as scale - 1, a window of 4 on sliding layers 0 and 2
    # with their own RoPE base (10000) and a linear scaling of the global layer's (1e6, factor 8)
    "gemma3": Gemma3ForCausalLM(Gemma3TextConfig(num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        sliding_window=4, pad_token_id=0, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        attn_implementation="eager", **{**common, "num_hidden_layers": 3})),
}
# two sequences: a plain one and one whose positions restart (a packed row, read per segment)
ids = torch.randint(0, 96, (2, 12))
for name, model in models.items():
    if only and name not in only:
        continue
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
