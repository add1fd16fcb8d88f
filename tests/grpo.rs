//! GRPO end to end on CPU: a tiny model from scratch samples completions of imported prompts,
//! is rewarded for short answers (a graded reward, so every group carries signal) and learns to
//! stop early; the training forward agrees with the sampler's log-probs; completions are logged;
//! a resumed run repeats the uninterrupted one; μ > 1 with a KL to a reference.

use std::path::Path;

use serde_json::Value;

use crate::cli::{firebrand, kill_once_written, text};

const RECIPE: &str = r#"
[model]
model_type = "llama"
hidden_size = 32
intermediate_size = 64
num_attention_heads = 2
num_hidden_layers = 2

[data]
dataset = "prompts.lance"
tokenizer = "tok.json"
template = "chatml"
max_len = 64
eval_rows = 4

[train]
max_steps = 30
micro_batch_size = 16
grad_accum_steps = 2
lr = 1e-2
warmup_steps = 0
schedule = "constant"
eval_every = 10
eval_on_start = true
checkpoint_every = 10
seed = 0
device = "cpu"

[method]
kind = "grpo"
num_generations = 8
max_completion_length = 12
log_completions_every = 10

[[method.rewards]]
kind = "length"
max_chars = 1

[output]
dir = "runs"
"#;

fn setup(d: &Path) {
    let mut chat = String::new();
    let mut prompts = String::new();
    for i in 0..40 {
        let q = format!("Tell me about topic number {i}, please.");
        chat.push_str(&format!(
            "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{q}\"}}, {{\"role\": \"assistant\", \"content\": \"Topic {i} is about things and words.\"}}]}}\n"
        ));
        prompts.push_str(&format!(
            "{{\"id\": \"p{i}\", \"prompt\": \"{q}\", \"verifiers\": []}}\n"
        ));
    }
    std::fs::write(d.join("chat.jsonl"), chat).unwrap();
    std::fs::write(d.join("prompts.jsonl"), prompts).unwrap();
    for args in [
        &["data", "import", "chat.jsonl", "--out", "chat.lance"][..],
        &[
            "data",
            "import",
            "prompts.jsonl",
            "--kind",
            "prompts",
            "--out",
            "prompts.lance",
        ],
        &[
            "tokenizer",
            "train",
            "chat.lance",
            "--vocab-size",
            "300",
            "--out",
            "tok.json",
        ],
    ] {
        let o = firebrand(d, args);
        assert!(o.status.success(), "{args:?}: {:?}", text(&o));
    }
    std::fs::write(d.join("grpo.toml"), RECIPE).unwrap();
}

fn train(d: &Path, args: &[&str]) -> String {
    let o = firebrand(d, args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{args:?}\n{out}\n{err}");
    out
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn steps(metrics: &[Value]) -> Vec<&Value> {
    metrics.iter().filter(|m| m.get("loss").is_some()).collect()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn grpo_learns_a_graded_reward_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);

    let plan = train(d, &["train", "grpo.toml", "--dry-run"]);
    assert!(
        plan.contains("generation batch: 4 prompts × 8 completions of at most 12 tokens"),
        "{plan}"
    );

    let out = train(d, &["train", "grpo.toml", "output.run=a"]);
    assert!(out.contains("prompts: 40 to sample from"), "{out}");
    assert!(out.contains("eval/reward"), "{out}");
    let metrics = lines(&d.join("runs/a/metrics.jsonl"));
    let s = steps(&metrics);
    assert_eq!(s.len(), 30);
    for key in [
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "rewards/length_penalty/mean",
        "rewards/length_penalty/std",
        "advantages/std",
        "kl",
        "clip_ratio/low_mean",
        "clip_ratio/high_mean",
        "entropy",
        "completions/mean_length",
        "completions/clipped_ratio",
        "rollout_s",
        "train_s",
        "rollout_tokens_per_s",
        "train_tokens_per_s",
        "sampler_logp_diff",
    ] {
        assert!(s[0].get(key).is_some(), "step lines have {key}: {}", s[0]);
    }
    // The training forward scores the sampled tokens as the KV-cached sampler did.
    for m in &s {
        let diff = m["sampler_logp_diff"].as_f64().unwrap();
        assert!(diff < 1e-4, "log-prob gap {diff} at step {}", m["step"]);
    }
    // μ = 1: the ratio is exactly 1, nothing is clipped; β = 0: no KL.
    assert!(s.iter().all(|m| m["clip_ratio/region_mean"] == 0.0 && m["kl"] == 0.0));
    // Learning: shorter completions, higher reward.
    let first_len = mean(s[..5].iter().map(|m| m["completions/mean_length"].as_f64().unwrap()));
    let last_len = mean(s[25..].iter().map(|m| m["completions/mean_length"].as_f64().unwrap()));
    let first_reward = mean(s[..5].iter().map(|m| m["reward"].as_f64().unwrap()));
    let last_reward = mean(s[25..].iter().map(|m| m["reward"].as_f64().unwrap()));
    assert!(
        last_len < 0.6 * first_len && last_reward > first_reward + 1.0,
        "length {first_len} → {last_len}, reward {first_reward} → {last_reward}"
    );
    let evals: Vec<u64> = metrics
        .iter()
        .filter(|m| m.get("eval/reward").is_some())
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        evals,
        [0, 10, 20, 30],
        "greedy held-out reward before the first step, then every 10"
    );
    // Logged groups: 8 completions at steps 1, 11 and 21, advantages centred within the group.
    let logged = lines(&d.join("runs/a/completions.jsonl"));
    assert_eq!(logged.len(), 24);
    let logged_steps: Vec<u64> = logged.iter().step_by(8).map(|g| g["step"].as_u64().unwrap()).collect();
    assert_eq!(logged_steps, [1, 11, 21]);
    for group in logged.chunks(8) {
        assert!(
            group
                .iter()
                .all(|g| g["step"] == group[0]["step"] && g["prompt"] == group[0]["prompt"])
        );
        let sum: f64 = group.iter().map(|g| g["advantage"].as_f64().unwrap()).sum();
        assert!(sum.abs() < 1e-6, "{sum}");
    }

    // Stopped at step 20 and resumed: the same samples, losses and rewards as the straight run.
    train(d, &["train", "grpo.toml", "output.run=b", "train.max_steps=20"]);
    train(d, &["train", "--resume", "runs/b", "train.max_steps=30"]);
    let resumed = lines(&d.join("runs/b/metrics.jsonl"));
    let r = steps(&resumed);
    assert_eq!(r.len(), 30);
    for (x, y) in s.iter().zip(&r) {
        for key in ["loss", "reward", "completions/mean_length", "grad_norm"] {
            let (a, b) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                "step {}: {key} {a} vs {b}",
                x["step"]
            );
        }
    }
    assert_eq!(lines(&d.join("runs/b/completions.jsonl")), logged);

    // μ = 2 with a KL to the first run's step 20 (still learning) as reference and start: the second iteration
    // reuses the batch, with the sampler's log-probs as the old policy's; at the start the policy
    // is the reference, so the KL is 0.
    let model = RECIPE.split("[data]").next().unwrap();
    std::fs::write(
        d.join("kl.toml"),
        RECIPE.replace(model, "[model]\ninit = \"runs/a/step-000020\"\n\n"),
    )
    .unwrap();
    train(
        d,
        &[
            "train",
            "kl.toml",
            "output.run=c",
            "train.max_steps=4",
            "train.checkpoint_every=2",
            "method.num_iterations=2",
            "method.beta=0.1",
        ],
    );
    let metrics = lines(&d.join("runs/c/metrics.jsonl"));
    let c = steps(&metrics);
    let iterations: Vec<u64> = c.iter().map(|m| m["iteration"].as_u64().unwrap()).collect();
    assert_eq!(iterations, [0, 1, 0, 1]);
    assert!(c[0]["kl"].as_f64().unwrap() < 1e-6, "{}", c[0]);
    assert!(
        c[1]["kl"].as_f64().unwrap() > 0.0,
        "the policy moved after step 1: {}",
        c[1]
    );
    for m in &c {
        let first = m["iteration"] == 0;
        assert_eq!(m.get("sampler_logp_diff").is_some(), first, "{m}");
        assert_eq!(m.get("rollout_tokens_per_s").is_some(), first, "{m}");
    }
    // The second iteration trains on the same completions as the first.
    assert_eq!(c[0]["completions/mean_length"], c[1]["completions/mean_length"]);
    assert_eq!(c[0]["reward"], c[1]["reward"]);
}

/// GRPO on the kernel engine (its CPU reference, f32), with μ = 2 and a KL to a reference: the
/// same samples, rewards and losses as the burn engine; a run killed with SIGKILL after a
/// checkpoint resumes to the uninterrupted run's numbers, and a burn run resumes on the kernel
/// engine.
#[test]
fn grpo_on_the_kernel_engine_trains_the_burn_curve_and_resumes_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    // A reference and starting point that has learned a little.
    train(
        d,
        &[
            "train",
            "grpo.toml",
            "output.run=base",
            "train.max_steps=2",
            "train.checkpoint_every=2",
        ],
    );
    let model = RECIPE.split("[data]").next().unwrap();
    std::fs::write(
        d.join("kl.toml"),
        RECIPE.replace(model, "[model]\ninit = \"runs/base/step-000002\"\n\n"),
    )
    .unwrap();
    let opts = [
        "train.max_steps=6",
        "train.checkpoint_every=2",
        "train.eval_every=0",
        "method.num_iterations=2",
        "method.beta=0.1",
    ];
    let run = |name: &str, kernels: &str| {
        let args = [&["train", "kl.toml", name, kernels][..], &opts].concat();
        train(d, &args)
    };
    run("output.run=burn", "train.kernels=burn");
    let out = run("output.run=kernel", "train.kernels=reference");
    assert!(out.contains("engine: kernel on the CPU reference"), "{out}");
    let burn = lines(&d.join("runs/burn/metrics.jsonl"));
    let kernel = lines(&d.join("runs/kernel/metrics.jsonl"));
    let (b, k) = (steps(&burn), steps(&kernel));
    assert_eq!((b.len(), k.len()), (6, 6));
    let close = |x: &Value, y: &Value, keys: &[&str], rel: f64| {
        for key in keys {
            let (a, c) = (x[*key].as_f64().unwrap(), y[*key].as_f64().unwrap());
            assert!(
                (a - c).abs() <= rel * a.abs().max(1e-3),
                "step {}: {key} {a} vs {c}",
                x["step"]
            );
        }
    };
    for (x, y) in b.iter().zip(&k) {
        // The same completions (sampled from weights equal to f32 rounding), so the same rewards.
        assert_eq!(x["reward"], y["reward"], "step {}", x["step"]);
        close(x, y, &["loss", "kl", "entropy", "grad_norm"], 1e-4);
    }
    assert!(
        k.iter().any(|m| m["kl"].as_f64().unwrap() > 0.0),
        "the KL term is exercised"
    );
    let iterations: Vec<u64> = k.iter().map(|m| m["iteration"].as_u64().unwrap()).collect();
    assert_eq!(
        iterations,
        [0, 1, 0, 1, 0, 1],
        "second iterations (π_old ≠ π) are exercised"
    );

    // Killed once its second checkpoint exists, then resumed on the same engine: the same numbers.
    let args = [
        &["train", "kl.toml", "output.run=killed", "train.kernels=reference"][..],
        &opts,
    ]
    .concat();
    kill_once_written(d, &args, "runs/killed/step-000004", std::time::Duration::from_secs(300));
    train(d, &["train", "--resume", "runs/killed"]);
    let killed = lines(&d.join("runs/killed/metrics.jsonl"));
    for (x, y) in k.iter().zip(steps(&killed)) {
        assert_eq!(x["reward"], y["reward"]);
        close(x, y, &["loss", "kl", "grad_norm"], 1e-9);
    }

    // Two burn steps, then four on the kernel engine: the burn run's numbers.
    let args = [&["train", "kl.toml", "output.run=b2k", "train.kernels=burn"][..], &opts].concat();
    let mut args: Vec<&str> = args.to_vec();
    args.push("train.max_steps=2");
    train(d, &args);
    train(
        d,
        &[
            "train",
            "--resume",
            "runs/b2k",
            "train.max_steps=6",
            "train.kernels=reference",
        ],
    );
    let b2k = lines(&d.join("runs/b2k/metrics.jsonl"));
    for (x, y) in b.iter().zip(steps(&b2k)) {
        assert_eq!(x["reward"], y["reward"], "step {}", x["step"]);
        close(x, y, &["loss", "kl"], 1e-4);
    }
}
