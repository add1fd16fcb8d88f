"""Replays a firebrand SFT run in PyTorch + transformers, to set firebrand's loss curves beside the
peer's on the same problem.

The replay starts from the run's initial weights (the Hugging Face folder its recipe names as
model.init), reads the same rows in the same order (`firebrand train --dry-run --rows FILE`),
computes the same loss (the next-token cross-entropy summed over counted targets, divided by the
window's count; packed documents see only themselves, positions restart per document), clips the
global gradient norm and steps torch.optim.AdamW with weight decay on matrices only, at the
learning rate the run logged for each step. With --autocast the forward runs under
torch.autocast(bfloat16) with fp32 weights and optimizer: PyTorch's mixed precision, so its
distance from the f32 replay is how far the peer's own bf16 moves this curve.

Each step's token and counted-target totals are checked against the firebrand run's, so a replay
that read other rows stops with an error instead of printing a curve.

Usage: torch_replay.py --run RUN_DIR --tokens TOKENS.jsonl --rows ROWS.jsonl --out METRICS.jsonl
                       [--autocast] [--device cpu|cuda]
  RUN_DIR: the firebrand run (its metrics.jsonl and latest checkpoint's recipe.toml are read)
  TOKENS.jsonl: `firebrand data export` of the run's tokens dataset
       torch_replay.py --fresh-init LIKE_HF OUT_HF
  writes a model of LIKE_HF's config.json with transformers' own random initialisation (seed 0),
  for runs that start from scratch
"""
import argparse, glob, json, os, time

import torch
from transformers import AutoModelForCausalLM

try:
    from tomllib import loads as parse_toml
except ImportError:  # Python < 3.11
    def parse_toml(text):
        """`[section]` headers and `key = value` lines of strings, numbers and booleans: enough of
        the resolved recipe that `firebrand train` saves for the keys read here."""
        tree, section = {}, None
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("[["):
                section = None
            elif line.startswith("["):
                section = tree.setdefault(line.strip("[]"), {})
            elif section is not None and "=" in line and not line.startswith("#"):
                key, value = (x.strip() for x in line.split("=", 1))
                try:
                    section[key] = json.loads(value)
                except ValueError:
                    pass  # dates, inline tables: not read here
        return tree


def fresh_init(like, out):
    from transformers import AutoConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(like))
    model.save_pretrained(out)


def main():
    if len(os.sys.argv) == 4 and os.sys.argv[1] == "--fresh-init":
        return fresh_init(os.sys.argv[2], os.sys.argv[3])
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--rows", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--autocast", action="store_true")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.manual_seed(0)
    if a.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    recipe_path = sorted(glob.glob(os.path.join(a.run, "step-*", "recipe.toml")))[-1]
    recipe = parse_toml(open(recipe_path).read())
    t = recipe["train"]
    init = recipe["model"].get("init")
    if not init:
        raise SystemExit(f"{recipe_path}: the replay needs model.init, the weights both frameworks start from")
    logged = [m for m in map(json.loads, open(os.path.join(a.run, "metrics.jsonl"))) if "loss" in m]
    rows = [json.loads(l) for l in open(a.tokens)]
    steps = [json.loads(l) for l in open(a.rows)][: len(logged)]

    try:
        model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32, attn_implementation="eager")
    except TypeError:  # transformers < 4.56
        model = AutoModelForCausalLM.from_pretrained(init, torch_dtype=torch.float32, attn_implementation="eager")
    model = model.to(a.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": t["weight_decay"]},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=t["lr"], betas=(t["beta1"], t["beta2"]), eps=t["eps"])
    clip = t.get("grad_clip")

    out = open(a.out, "w")
    start = time.time()
    for step, fb in zip(steps, logged):
        assert step["step"] == fb["step"], (step["step"], fb["step"])
        batches = [batch([rows[i] for i in mb], a.device) for mb in step["micro_batches"]]
        count = sum(int(b[4].sum()) for b in batches)
        tokens = sum(b[5] for b in batches)
        if (tokens, count) != (fb["tokens"], fb["loss_tokens"]):
            raise SystemExit(
                f"step {fb['step']}: the replay's rows hold {tokens} tokens and {count} targets, "
                f"the run's {fb['tokens']} and {fb['loss_tokens']}: not the run's rows"
            )
        t0 = time.time()
        loss_sum = 0.0
        for ids, pos, mask, targets, counted, _ in batches:
            with torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16, enabled=a.autocast):
                logits = model(input_ids=ids, position_ids=pos, attention_mask=mask).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            s = (nll * counted).sum()
            (s / count).backward()
            loss_sum += s.item()
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf")).item()
        for g in opt.param_groups:
            g["lr"] = fb["lr"]
        opt.step()
        opt.zero_grad(set_to_none=True)
        if a.device != "cpu":
            torch.cuda.synchronize()
        dt = time.time() - t0
        line = {"step": fb["step"], "loss": loss_sum / count, "grad_norm": norm, "lr": fb["lr"],
                "tokens": tokens, "loss_tokens": count, "tokens_per_s": tokens / dt, "mfu": None,
                "elapsed_s": time.time() - start}
        out.write(json.dumps(line) + "\n")
    out.close()


def batch(rows, device):
    """One micro-batch as firebrand's SFT collates it (trainer/sft.rs): right-padded to the longest
    row; a token sees the earlier tokens of its own segment; a target counts where the next token
    is trained on and belongs to the same segment."""
    n = max(len(r["input_ids"]) for r in rows)
    b = len(rows)
    ids = torch.zeros(b, n, dtype=torch.long)
    pos = torch.zeros(b, n, dtype=torch.long)
    seg = torch.full((b, n), -1, dtype=torch.long)
    targets = torch.zeros(b, n, dtype=torch.long)
    counted = torch.zeros(b, n)
    for i, r in enumerate(rows):
        if any(r.get("segment_parents") or []):
            raise SystemExit("the replay takes plain or packed rows, not Multiverse rows")
        k = len(r["input_ids"])
        ids[i, :k] = torch.tensor(r["input_ids"])
        pos[i, :k] = torch.tensor(r["position_ids"])
        seg[i, :k] = torch.tensor(r["segment_ids"])
        for j in range(k - 1):
            if r["loss_mask"][j + 1] and r["segment_ids"][j + 1] == r["segment_ids"][j]:
                targets[i, j] = r["input_ids"][j + 1]
                counted[i, j] = 1.0
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    allowed = causal & (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] >= 0)
    # Additive mask; padding queries see nothing and are never targets.
    mask = torch.zeros(b, 1, n, n).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
    tokens = sum(len(r["input_ids"]) for r in rows)
    return ids.to(device), pos.to(device), mask.to(device), targets.to(device), counted.to(device), tokens


if __name__ == "__main__":
    main()
