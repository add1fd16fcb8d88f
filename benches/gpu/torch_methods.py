"""PyTorch anchors for issue 23: DPO and GRPO training steps of TRL's formulas on the reference 125M
Llama (HF transformers), on the rows `firebrand bench step --method dpo|grpo` times, beside the SFT
step of ../../shared/bench/torch_llama_sft.py.

Rows: 16 rows of 1024 random tokens, bf16 autocast with fp32 weights and fused AdamW, as
torch_llama_sft.py. The loss is compiled with the model (torch.compile of the whole forward + loss
function) in the `compile` modes, eager in the `eager` modes.
- dpo: 8 pairs, chosen rows first (TRL's concatenated forward), the reply is the second half of each
  row; sequence log-probs summed over reply tokens; sigmoid loss, beta 0.1, against constant
  reference log-probs (TRL's precompute_ref_log_probs). TRL trl/trainer/dpo_trainer.py
  `concatenated_forward` / `dpo_loss`.
- grpo: completions of 768 tokens after 256-token prompts, per-token log-probs at temperature 1 and
  their entropies (TRL computes both every step, `_get_per_token_logps_and_entropies`), num_iterations
  1 (the old log-probs are the current ones, detached), clipped ratio (eps 0.2), dapo aggregation
  over the batch's completion tokens, random advantages. TRL trl/trainer/grpo_trainer.py
  `_compute_loss`. grpo-beta adds beta 0.04 with a reference model's forward each step.

Usage: python3 torch_methods.py [MODE ...]  (default: every mode); prints one line per mode.
"""
import sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM

torch.backends.cuda.matmul.allow_tf32 = True
cfg = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=2048,
                  tie_word_embeddings=True, attn_implementation="sdpa")
B, T = 16, 1024


def token_logps(model, x, temperature=1.0, entropy=False):
    """log p of each next token (and the entropy of each position's distribution)."""
    logits = model(input_ids=x).logits[:, :-1].float() / temperature
    logp_all = logits.log_softmax(-1)
    lp = torch.gather(logp_all, 2, x[:, 1:, None]).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1) if entropy else None
    return lp, ent


def dpo_step(model, x, mask, ref_chosen, ref_rejected, beta=0.1):
    lp, _ = token_logps(model, x)
    seq = (lp * mask).sum(-1)
    n = x.shape[0] // 2
    chosen, rejected = seq[:n], seq[n:]
    logits = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return -torch.nn.functional.logsigmoid(logits).mean()


def grpo_step(model, x, mask, adv, ref_lp=None, beta=0.0, eps=0.2):
    lp, ent = token_logps(model, x, entropy=True)
    old = lp.detach()
    ratio = torch.exp(lp - old)
    per_token = -torch.min(ratio * adv[:, None], torch.clamp(ratio, 1 - eps, 1 + eps) * adv[:, None])
    if ref_lp is not None:
        d = ref_lp - lp
        per_token = per_token + beta * (torch.exp(d) - d - 1)
    loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    return loss, (ent * mask).sum() / mask.sum()


def run(mode, steps=30):
    method, how = mode.rsplit("-", 1)
    torch.manual_seed(0)
    m = LlamaForCausalLM(cfg).cuda()
    n = sum(p.numel() for p in m.parameters())
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True)
    x = torch.randint(0, 32000, (B, T), device="cuda")
    pos = torch.arange(1, T, device="cuda")[None, :].expand(B, -1)  # the position each target sits at
    ref = None
    if method == "dpo":
        x[B // 2:, : T // 2] = x[: B // 2, : T // 2]  # a pair's replies follow one prompt
        mask = (pos >= T // 2).float()
        ref_c = torch.full((B // 2,), -5000.0, device="cuda") + torch.randn(B // 2, device="cuda") * 50
        ref_r = torch.full((B // 2,), -5000.0, device="cuda")
        fn = lambda: dpo_step(m_fwd, x, mask, ref_c, ref_r)
    else:
        mask = (pos >= T // 4).float()
        adv = torch.randn(B, device="cuda") * 0.7
        if method == "grpo-beta":
            ref = LlamaForCausalLM(cfg).cuda().eval()
            for p in ref.parameters():
                p.requires_grad_(False)

        def fn():
            ref_lp = None
            if ref is not None:
                with torch.no_grad():
                    ref_lp, _ = token_logps(ref, x)
            loss, _ = grpo_step(m_fwd, x, mask, adv, ref_lp, beta=0.04 if ref is not None else 0.0)
            return loss
    m_fwd = m  # the model is compiled with the loss, as one function
    step_fn = torch.compile(fn) if how == "compile" else fn
    ts = []
    for i in range(steps):
        torch.cuda.synchronize(); t = time.time()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn()
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(); ts.append(time.time() - t)
    s = sorted(ts[10:])[len(ts[10:]) // 2]
    tok = B * T / s
    flops = 6 * n * B * T + 12 * cfg.num_hidden_layers * T * cfg.hidden_size * B * T
    print(f"{mode}: params {n/1e6:.1f}M, median step {s*1e3:.1f} ms, {tok:,.0f} tokens/s, MFU {flops/s/989e12*100:.1f}% "
          f"(of 989 TFLOP/s dense bf16; training FLOPs only), loss {loss.item():.4f}, peak mem "
          f"{torch.cuda.max_memory_allocated()/2**30:.1f} GiB", flush=True)
    del m, opt, ref
    torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()


print(torch.__version__, torch.cuda.get_device_name())
modes = sys.argv[1:] or ["dpo-compile", "grpo-compile", "grpo-beta-compile", "dpo-eager", "grpo-eager"]
for mode in modes:
    try:
        run(mode)
    except Exception as e:
        print(mode, "failed:", repr(e)[:300], flush=True)
