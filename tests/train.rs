//! `firebrand train` end to end on CPU: learning, exact resume (also after SIGKILL), checkpoint
//! retention, the NaN guard, recipe errors, and export with identical logits.

use std::path::Path;
use std::time::Duration;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use firebrand_train::hf;

use crate::cli::{firebrand, kill_once_written, text};

/// Quickstart data plus a short recipe in `dir`.
fn setup(dir: &Path) {
    let o = firebrand(dir, &["quickstart", "--dir", "qs", "--train-steps", "2"]);
    assert!(o.status.success(), "{:?}", text(&o));
}

/// Overrides that make the quickstart recipe a short, frequently checkpointed run named `run`.
fn args<'a>(run: &'a str, steps: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "train".into(),
        "qs/sft-tiny.toml".into(),
        "data.tokens=qs/tokens.lance".into(),
        "data.tokenizer=qs/tokenizer.json".into(),
        "output.dir=runs".into(),
        format!("output.run={run}"),
        format!("train.max_steps={steps}"),
        "train.checkpoint_every=4".into(),
        "train.eval_every=4".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run(dir: &Path, args: &[String]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    firebrand(dir, &refs)
}

/// `(step, loss)` of each training step, and `(step, eval loss)` of each evaluation.
/// `(step, value)` pairs.
type Curve = Vec<(u64, f64)>;

fn curve(dir: &Path, run: &str) -> (Curve, Curve) {
    let text = std::fs::read_to_string(dir.join("runs").join(run).join("metrics.jsonl")).unwrap();
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_u64().unwrap();
        match (v.get("loss"), v.get("eval/loss")) {
            (Some(l), _) => train.push((step, l.as_f64().unwrap())),
            (_, Some(l)) => eval.push((step, l.as_f64().unwrap())),
            _ => panic!("unexpected line {line}"),
        }
    }
    (train, eval)
}

fn assert_same_curve(a: &[(u64, f64)], b: &[(u64, f64)]) {
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0);
        assert!(
            (x.1 - y.1).abs() <= 1e-6 * x.1.abs(),
            "step {}: {} vs {}",
            x.0,
            x.1,
            y.1
        );
    }
}

#[test]
fn training_learns_resumes_exactly_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);

    // The uninterrupted run: 12 steps; the loss falls.
    let o = run(d, &args("full", "12", &[]));
    assert!(o.status.success(), "{:?}", text(&o));
    let (full, full_eval) = curve(d, "full");
    assert_eq!(full.len(), 12);
    assert_eq!(full_eval.len(), 3);
    let mean = |w: &[(u64, f64)]| w.iter().map(|x| x.1).sum::<f64>() / w.len() as f64;
    assert!(
        mean(&full[9..]) < mean(&full[..3]) - 0.5,
        "the loss falls by half a nat: {full:?}"
    );
    // Only the last two checkpoints are kept.
    let kept: Vec<String> = std::fs::read_dir(d.join("runs/full"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(kept, vec!["step-000008", "step-000012"]);

    // Stopped after 4 steps, then resumed to 12: the same curve. (The first 5 steps are warmup,
    // whose learning rate does not depend on max_steps, so the shorter first leg matches.)
    let o = run(d, &args("split", "4", &[]));
    assert!(o.status.success(), "{:?}", text(&o));
    let o = firebrand(d, &["train", "--resume", "runs/split", "train.max_steps=12"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (split, split_eval) = curve(d, "split");
    assert_same_curve(&full, &split);
    assert_same_curve(&full_eval, &split_eval);

    // Killed with SIGKILL once a checkpoint exists (mid-run, unless the run was faster than the
    // poll), then resumed: the same curve again, the metrics cut back to the checkpoint.
    let a = args("killed", "12", &[]);
    kill_once_written(d, &a, "runs/killed/step-000004", Duration::from_secs(120));
    let o = firebrand(d, &["train", "--resume", "runs/killed"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (killed, _) = curve(d, "killed");
    assert_same_curve(&full, &killed);

    // A resumed run may not change other keys.
    let o = firebrand(d, &["train", "--resume", "runs/full", "train.seed=5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("may not change train.seed"), "{:?}", text(&o));
    // A fresh run into a folder with checkpoints is refused.
    let o = run(d, &args("full", "12", &[]));
    assert!(text(&o).1.contains("already holds checkpoints"), "{:?}", text(&o));

    // Export, then load the folder: identical logits to the checkpoint.
    let o = firebrand(d, &["export", "runs/full", "--out", "hf", "--max-shard-mb", "1"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let device = Default::default();
    let (config, exported) = hf::load::<NdArray<f32>>(&d.join("hf"), &device).unwrap();
    // The checkpoint folder is a Hugging Face folder itself (config.json, model.safetensors).
    // (The export adds the tokenizer's eos_token_id to its config; the architecture is the same.)
    let (ckpt_config, ckpt) = hf::load::<NdArray<f32>>(&d.join("runs/full/step-000012"), &device).unwrap();
    assert_eq!(ckpt_config.hf_shapes(), config.hf_shapes());
    let ids = Tensor::<NdArray<f32>, 2, Int>::from_data(TensorData::new(vec![1i64, 20, 33, 7, 9, 2], [1, 6]), &device);
    let pos =
        Tensor::<NdArray<f32>, 2, Int>::from_data(TensorData::new((0..6i64).collect::<Vec<_>>(), [1, 6]), &device);
    let seg = Tensor::<NdArray<f32>, 2, Int>::zeros([1, 6], &device);
    let a: Vec<f32> = exported
        .forward(ids.clone(), pos.clone(), seg.clone())
        .into_data()
        .to_vec()
        .unwrap();
    let b: Vec<f32> = ckpt.forward(ids, pos, seg).into_data().to_vec().unwrap();
    assert_eq!(a, b);
}

/// `--dry-run --rows FILE` lists the rows each step reads, as the run reads them: every step's
/// listed rows hold the tokens and counted targets that the run's metrics report for that step
/// (through several epochs, each in its own order), and no held-out row is listed.
#[test]
fn the_dry_run_lists_the_rows_each_step_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = run(d, &args("rows", "12", &["--dry-run", "--rows", "rows.jsonl"]));
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("rows of 12 steps: rows.jsonl"), "{:?}", text(&o));
    assert!(!d.join("runs/rows").exists(), "a dry run trains nothing");
    // With every row held out there is nothing to list: an error, not an empty file.
    let o = run(
        d,
        &args(
            "rows",
            "12",
            &["--dry-run", "--rows", "none.jsonl", "data.eval_rows=25"],
        ),
    );
    assert!(!o.status.success(), "{:?}", text(&o));
    assert!(text(&o).1.contains("no rows are left for training"), "{:?}", text(&o));
    assert!(!d.join("none.jsonl").exists());
    let o = run(d, &args("rows", "12", &[]));
    assert!(o.status.success(), "{:?}", text(&o));

    let ds = firebrand_data::Dataset::open(d.join("qs/tokens.lance")).unwrap();
    let metrics = std::fs::read_to_string(d.join("runs/rows/metrics.jsonl")).unwrap();
    let metrics: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .collect();
    let listed = std::fs::read_to_string(d.join("rows.jsonl")).unwrap();
    let listed: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 12);
    let (mut seen, mut loss_tokens) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for (step, m) in listed.iter().zip(&metrics) {
        assert_eq!(step["step"], m["step"]);
        let micro_batches = step["micro_batches"].as_array().unwrap();
        assert_eq!(micro_batches.len(), 2, "grad_accum_steps micro-batches");
        let ids: Vec<u64> = micro_batches
            .iter()
            .flat_map(|mb| mb.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
            .collect();
        assert_eq!(ids.len(), 8);
        let rows: Vec<firebrand_data::TokensRow> = ds.take(&ids).unwrap();
        let tokens: usize = rows.iter().map(|r| r.input_ids.len()).sum();
        let counted: usize = rows
            .iter()
            .map(|r| firebrand_train::engine::counted_targets(r).count())
            .sum();
        assert_eq!(m["tokens"].as_u64(), Some(tokens as u64), "step {}", step["step"]);
        assert_eq!(m["loss_tokens"].as_u64(), Some(counted as u64), "step {}", step["step"]);
        seen.extend(ids);
        loss_tokens.insert(counted);
    }
    // The check tells orders apart: steps differ in their counted targets.
    assert!(loss_tokens.len() > 3, "{loss_tokens:?}");
    // 96 rows read from 22 training rows: all of them, and never the 3 held out.
    assert_eq!(seen.len(), ds.len().unwrap() as usize - 3);
}

fn assert_close_curve(a: &[(u64, f64)], b: &[(u64, f64)], rel: f64) {
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0);
        assert!((x.1 - y.1).abs() <= rel * x.1.abs(), "step {}: {} vs {}", x.0, x.1, y.1);
    }
}

/// The kernel engine, run on its CPU reference kernels in f32 (`train.kernels=reference`), trains
/// the same curve as the burn engine: the same loss at every step and evaluation, through gradient
/// accumulation, clipping, AdamW and the schedule. Checkpoints are engine-neutral: a run stopped on
/// one engine resumes on the other and repeats the uninterrupted curve.
#[test]
fn the_kernel_engine_trains_the_burn_curve_and_checkpoints_interchange() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = run(d, &args("burn", "8", &["train.kernels=burn"]));
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("engine: burn"), "{:?}", text(&o));
    let (burn, burn_eval) = curve(d, "burn");
    let o = run(d, &args("fast", "8", &["train.kernels=reference"]));
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("engine: kernel on the CPU reference"),
        "{:?}",
        text(&o)
    );
    let (fast, fast_eval) = curve(d, "fast");
    // f32 on both sides: only the order of sums differs.
    assert_close_curve(&burn, &fast, 1e-4);
    assert_close_curve(&burn_eval, &fast_eval, 1e-4);

    // Stopped at step 4 on one path, resumed to 8 on the other, both ways.
    for (name, first, second) in [("f2b", "reference", "burn"), ("b2f", "burn", "reference")] {
        let o = run(d, &args(name, "4", &[&format!("train.kernels={first}")]));
        assert!(o.status.success(), "{:?}", text(&o));
        let runs = format!("runs/{name}");
        let kernels = format!("train.kernels={second}");
        let o = firebrand(d, &["train", "--resume", &runs, "train.max_steps=8", &kernels]);
        assert!(o.status.success(), "{:?}", text(&o));
        let (split, split_eval) = curve(d, name);
        assert_close_curve(&burn, &split, 1e-4);
        assert_close_curve(&burn_eval, &split_eval, 1e-4);
    }

    // The reference in bf16 (rounding as the GPU stores activations) stays close to f32.
    let o = run(d, &args("bf16", "8", &["train.kernels=reference", "train.dtype=bf16"]));
    assert!(o.status.success(), "{:?}", text(&o));
    let (bf16, _) = curve(d, "bf16");
    assert_close_curve(&burn, &bf16, 2e-2);

    // What the kernel engine refuses, it names.
    let o = run(d, &args("x", "2", &["train.kernels=fast"]));
    assert!(
        text(&o).1.contains("train.kernels = \"fast\" runs on CUDA"),
        "{:?}",
        text(&o)
    );
    let o = run(d, &args("x", "2", &["train.kernels=fast", "train.device=cuda"]));
    assert!(text(&o).1.contains("set train.dtype = \"bf16\""), "{:?}", text(&o));
}

#[test]
fn a_diverging_run_stops_with_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = run(
        d,
        &args(
            "diverge",
            "30",
            &[
                "train.lr=1e30",
                "train.warmup_steps=0",
                "train.checkpoint_every=1",
                "train.grad_clip=0",
            ],
        ),
    );
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    let err = text(&o).1;
    assert!(
        err.contains("is not finite") && err.contains("Last good checkpoint"),
        "{err}"
    );
}

#[test]
fn recipe_mistakes_are_named_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = run(d, &args("x", "10", &["train.warmup_step=3"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("did you mean `warmup_steps`?"), "{:?}", text(&o));
    let o = run(d, &args("x", "10", &["--dry-run"]));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("# resolved recipe") && out.contains("parameters") && out.contains("per step: 8 rows"),
        "{out}"
    );
    assert!(!d.join("runs/x").exists(), "a dry run writes nothing");
    // Every shipped recipe resolves (the GPU one only as a dry run here: CI has no GPU).
    let gpu = crate::cli::manifest_dir().join("recipes/sft-125m.toml");
    let gpu = gpu.to_str().unwrap();
    let o = firebrand(
        d,
        &[
            "train",
            gpu,
            "data.tokens=qs/tokens.lance",
            "data.tokenizer=qs/tokenizer.json",
            "--dry-run",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("109529856 parameters")
            && out.contains("device: cuda, bf16")
            && out.contains("engine: kernel (CUDA kernels and cuBLASLt"),
        "{out}"
    );
    let o = run(d, &args("x", "10", &["train.dtype=bf16", "--dry-run"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o)
            .1
            .contains("train.dtype = \"bf16\" needs train.device = \"cuda\""),
        "{:?}",
        text(&o)
    );
}

#[test]
fn a_run_tokenizes_a_query_then_generates_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let recipe = std::fs::read_to_string(d.join("qs/sft-tiny.toml")).unwrap().replace(
        "tokens = \"quickstart/tokens.lance\"",
        "query = \"SELECT * FROM 'qs/chat.lance' WHERE id LIKE 'faq-%'\"\nmax_len = 128",
    );
    std::fs::write(d.join("qs/query.toml"), recipe).unwrap();
    let base = |run: &str, steps: &str| -> Vec<String> {
        [
            "train",
            "qs/query.toml",
            "data.tokenizer=qs/tokenizer.json",
            "data.eval_rows=1",
            "output.dir=runs",
            &format!("output.run={run}"),
            &format!("train.max_steps={steps}"),
            "train.checkpoint_every=3",
            "train.eval_every=3",
        ]
        .map(String::from)
        .to_vec()
    };

    // A dry run tokenizes into a scratch folder: real numbers, nothing left in the run folder.
    let mut dry = base("q", "3");
    dry.push("--dry-run".into());
    let o = run(d, &dry);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("tokenized 20 rows into"), "{out}");
    assert!(
        out.contains("tokenized from the query `SELECT * FROM 'qs/chat.lance' WHERE id LIKE 'faq-%'`"),
        "{out}"
    );
    assert!(!d.join("runs/q").exists());

    let o = run(d, &base("q", "3"));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("tokenized 20 rows into") && out.contains("runs/q/data/tokens.lance"),
        "{out}"
    );
    let o = firebrand(d, &["data", "stats", "runs/q/data/tokens.lance"]);
    assert!(text(&o).0.contains("tokens dataset"), "{:?}", text(&o));
    // A resumed run reuses the tokenized rows.
    let o = firebrand(d, &["train", "--resume", "runs/q", "train.max_steps=4"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(!out.contains("tokenized"), "{out}");

    // Generate from the run: JSON lines with tokens and log-probabilities.
    let o = firebrand(
        d,
        &[
            "generate",
            "runs/q",
            "--prompt",
            "What is SFT?",
            "--prompt",
            "What is DPO?",
            "--json",
            "--temperature",
            "0",
            "--max-new-tokens",
            "5",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let n = l["tokens"].as_array().unwrap().len();
        assert!((1..=5).contains(&n), "{l}");
        assert_eq!(l["logprobs"].as_array().unwrap().len(), n);
        assert!(["length", "stop_token"].contains(&l["finish"].as_str().unwrap()), "{l}");
    }
    assert_eq!(lines[1]["prompt"], "What is DPO?");
    assert!(err.contains("generated") && err.contains("tokens/s"), "{err}");
    // --parallel without a goal to fork at decodes exactly as the sequential sampler.
    let o = firebrand(
        d,
        &[
            "generate",
            "runs/q",
            "--prompt",
            "What is SFT?",
            "--json",
            "--temperature",
            "0",
            "--max-new-tokens",
            "5",
            "--parallel",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let parallel: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(parallel["tokens"], lines[0]["tokens"], "{err}");
    assert_eq!(parallel["finish"], lines[0]["finish"]);
    assert!(err.contains("forks with [] paths"), "{err}");

    let o = firebrand(d, &["plot", "runs/q"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let png = std::fs::read(d.join("runs/q/metrics.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let o = firebrand(d, &["generate", "runs/nope", "--prompt", "x"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
}
