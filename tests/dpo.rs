//! DPO end to end on CPU: a preference dataset in TRL's layout, the quickstart's export as policy
//! and reference; the reference log-probs are computed once, cached in the dataset, reused, and
//! recomputed when the key changes; bad pairs are counted or refused.

use std::path::Path;

use firebrand_data::Dataset;
use firebrand_data::records::PreferenceRow;

use crate::cli::{firebrand, kill_once_written, text};

const RECIPE: &str = r#"
[model]
init = "qs/export"

[data]
dataset = "prefs.lance"
tokenizer = "qs/export/tokenizer.json"
template = "chatml"
max_len = 256
eval_rows = 2

[train]
max_steps = 4
micro_batch_size = 2
grad_accum_steps = 2
lr = 1e-3
warmup_steps = 0
schedule = "constant"
eval_every = 2
checkpoint_every = 4
device = "cpu"

[method]
kind = "dpo"
beta = 0.1

[output]
dir = "runs"
"#;

fn setup(d: &Path) {
    let o = firebrand(d, &["quickstart", "--dir", "qs", "--train-steps", "2"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        d.join("qs/export/config.json").exists(),
        "the quickstart exports its model"
    );
    let mut lines = String::new();
    for i in 0..8 {
        lines.push_str(&format!(
            "{{\"id\": \"p{i}\", \"prompt\": \"What is {i} plus {i}?\", \"chosen\": \"{}\", \"rejected\": \"I do not know.\"}}\n",
            2 * i
        ));
    }
    lines.push_str("{\"id\": \"same\", \"prompt\": \"Hi\", \"chosen\": \"Hello\", \"rejected\": \"Hello\"}\n");
    std::fs::write(d.join("prefs.jsonl"), lines).unwrap();
    let o = firebrand(d, &["data", "import", "prefs.jsonl", "--out", "prefs.lance"]);
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::write(d.join("dpo.toml"), RECIPE).unwrap();
}

fn train(d: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["train", "dpo.toml"];
    args.extend_from_slice(extra);
    let o = firebrand(d, &args);
    let (out, err) = text(&o);
    (o.status.success(), out, err)
}

#[test]
fn dpo_trains_with_cached_reference_log_probs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (ok, out, err) = train(d, &["output.run=a"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("left out 1: identical chosen and rejected"), "{out}");
    assert!(out.contains("reference log-probs: 8 pairs computed, 0 reused"), "{out}");
    // The policy starts as the reference: the first loss is ln 2 and the margin 0.
    let metrics = std::fs::read_to_string(d.join("runs/a/metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert!(
        (first["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-4,
        "{first}"
    );
    assert!(first["rewards/margins"].as_f64().unwrap().abs() < 1e-4, "{first}");
    assert!(metrics.contains("\"eval/rewards/accuracies\""), "{metrics}");
    // The values are in the dataset, with their key.
    let rows: Vec<PreferenceRow> = Dataset::open(d.join("prefs.lance")).unwrap().read_all().unwrap();
    let cached: Vec<&PreferenceRow> = rows.iter().filter(|r| r.ref_chosen_logp.is_some()).collect();
    assert_eq!(cached.len(), 8, "every trainable pair is cached");
    assert!(
        cached
            .iter()
            .all(|r| r.ref_rejected_logp.unwrap() < 0.0 && r.provenance.meta.contains("ref_logp_key"))
    );
    // A second run reuses them; a changed key (another row length) recomputes them.
    let (ok, out, err) = train(d, &["output.run=b", "train.max_steps=1"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("reference log-probs: 0 pairs computed, 8 reused"), "{out}");
    // A resumed run's plan reads the tokens the run wrote (it once looked in an empty scratch
    // folder and said they were gone).
    let o = firebrand(d, &["train", "--resume", "runs/b", "train.max_steps=2", "--dry-run"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("(resuming)"), "{:?}", text(&o));
    let (ok, out, err) = train(d, &["output.run=c", "train.max_steps=1", "data.max_len=300"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("reference log-probs: 8 pairs computed, 0 reused"), "{out}");
    // strict: the bad pair stops the run, naming it.
    let (ok, out, err) = train(d, &["output.run=d", "method.strict=true"]);
    assert!(!ok, "{out}");
    assert!(err.contains("pair `same`: identical chosen and rejected"), "{err}");
}

#[test]
fn a_staged_recipe_runs_each_stage_from_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let staged = format!(
        "{}\n[[stage]]\nname = \"first\"\nquery = \"SELECT * FROM 'prefs.lance' WHERE id < 'p4'\"\nlr = 2e-3\nmax_steps = 2\n\n[[stage]]\nname = \"second\"\nquery = \"SELECT * FROM 'prefs.lance' WHERE id >= 'p4'\"\nlr = 2e-4\nmax_steps = 1\n",
        RECIPE
            .replace("dataset = \"prefs.lance\"\n", "")
            .replace("eval_rows = 2", "eval_rows = 1")
    );
    std::fs::write(d.join("staged.toml"), staged).unwrap();
    let o = firebrand(d, &["train", "staged.toml"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("== stage 1 of 2: first ==") && out.contains("== stage 2 of 2: second =="),
        "{out}"
    );
    // Each stage's checkpoint records its own data and learning rate, and the second starts from
    // the first one's final checkpoint, which is also its reference.
    let first = d.join("runs/staged/first/step-000002");
    let second = std::fs::read_to_string(d.join("runs/staged/second/step-000001/recipe.toml")).unwrap();
    let second: toml::Value = toml::from_str(&second).unwrap();
    assert_eq!(second["train"]["lr"].as_float(), Some(2e-4));
    assert!(second["data"]["query"].as_str().unwrap().contains(">= 'p4'"));
    assert_eq!(second["model"]["init"].as_str(), Some("runs/staged/first/step-000002"));
    assert!(first.join("model.safetensors").exists() && first.join("optimizer.safetensors").exists());
    // Stage 2's reference is its own starting model (stage 1's last checkpoint): its first loss is
    // ln 2, which the quickstart export as reference would not give.
    let metrics = std::fs::read_to_string(d.join("runs/staged/second/metrics.jsonl")).unwrap();
    let step1: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert!(
        (step1["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-4,
        "{step1}"
    );
    // Each stage computed its reference log-probs (a query's result is cached in the stage's own
    // copy of the data; the second stage's reference is the first stage's model).
    assert_eq!(
        out.matches("reference log-probs: 4 pairs computed, 0 reused").count(),
        2,
        "{out}"
    );
    // Running the recipe again continues it: both stages are done, nothing trains.
    let o = firebrand(d, &["train", "staged.toml"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(out.matches("done already").count(), 2, "{out}");
    assert!(!out.contains("reference log-probs"), "{out}");
}

/// `(step, loss, margin)` of each training step in a run's metrics.
fn dpo_curve(d: &Path, run: &str) -> Vec<(u64, f64, f64)> {
    std::fs::read_to_string(d.join(format!("runs/{run}/metrics.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m.get("loss").is_some())
        .map(|m| {
            (
                m["step"].as_u64().unwrap(),
                m["loss"].as_f64().unwrap(),
                m["rewards/margins"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn assert_close(a: &[(u64, f64, f64)], b: &[(u64, f64, f64)]) {
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.0, y.0);
        assert!(
            (x.1 - y.1).abs() <= 1e-4 * x.1.abs().max(1e-3),
            "step {}: loss {} vs {}",
            x.0,
            x.1,
            y.1
        );
        assert!(
            (x.2 - y.2).abs() <= 1e-4 * x.2.abs().max(1e-2),
            "step {}: margin {} vs {}",
            x.0,
            x.2,
            y.2
        );
    }
}

/// DPO on the kernel engine (its CPU reference, f32) trains the burn engine's curve; a run killed
/// with SIGKILL after a checkpoint resumes on the other engine to the same curve, and a burn run
/// resumes on the kernel engine.
#[test]
fn dpo_on_the_kernel_engine_trains_the_burn_curve_and_resumes_across_engines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let every = ["train.checkpoint_every=1", "train.max_steps=4"];
    let (ok, out, err) = train(d, &[&["output.run=burn", "train.kernels=burn"][..], &every].concat());
    assert!(ok, "{out}\n{err}");
    let (ok, out, err) = train(
        d,
        &[&["output.run=kernel", "train.kernels=reference"][..], &every].concat(),
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("engine: kernel on the CPU reference"), "{out}");
    let burn = dpo_curve(d, "burn");
    assert_eq!(burn.len(), 4);
    assert_close(&burn, &dpo_curve(d, "kernel"));

    // Killed once its second checkpoint exists, then resumed on the burn engine.
    let args = [
        &["train", "dpo.toml", "output.run=killed", "train.kernels=reference"][..],
        &every[..],
    ]
    .concat();
    kill_once_written(d, &args, "runs/killed/step-000002", std::time::Duration::from_secs(300));
    let o = firebrand(d, &["train", "--resume", "runs/killed", "train.kernels=burn"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_close(&burn, &dpo_curve(d, "killed"));

    // Two burn steps, then two on the kernel engine.
    let (ok, out, err) = train(d, &["output.run=b2k", "train.kernels=burn", "train.max_steps=2"]);
    assert!(ok, "{out}\n{err}");
    let o = firebrand(
        d,
        &[
            "train",
            "--resume",
            "runs/b2k",
            "train.max_steps=4",
            "train.kernels=reference",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert_close(&burn, &dpo_curve(d, "b2k"));
}
