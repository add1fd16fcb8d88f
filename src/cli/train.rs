//! `firebrand train RECIPE [section.key=value ...]`, `--dry-run`, `--resume RUN`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use burn::backend::{Autodiff, Cuda, NdArray};
use clap::Args;
use firebrand_data::{Dataset, DatasetKind, TokensRow};
use firebrand_train::checkpoint;
use firebrand_train::device::DeviceSpec;
use firebrand_train::recipe::{RESUMABLE_KEYS, Recipe, TextSource};
use firebrand_train::trainer::data;
use firebrand_train::trainer::method::{Evaluation, Note};
use firebrand_train::trainer::plan::RunPlan;
use firebrand_train::trainer::run::{Event, flops_per_token, train};

use super::progress;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The recipe (TOML); with --resume, the recipe saved in the run is used instead.
    recipe: Option<String>,
    /// Overrides, e.g. train.lr=1e-4 train.max_steps=200.
    overrides: Vec<String>,
    /// Print the resolved recipe, parameter count, tokens per step and data plan; train nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: write the dataset rows each step reads to this file, one JSON line per step
    /// ({"step": 1, "micro_batches": [[row, ...], ...]}; DPO: pair k is rows 2k and 2k+1).
    #[arg(long, requires = "dry_run", value_name = "FILE")]
    rows: Option<PathBuf>,
    /// Continue the run in this folder (e.g. checkpoints/sft-tiny) from its latest checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// cpu or cuda[:N] (overrides train.device).
    #[arg(long)]
    device: Option<String>,
}

/// Peak dense bf16 FLOP/s for MFU when the recipe gives none: H100 SXM (DESIGN.md's reference).
const CUDA_PEAK_TFLOPS: f64 = 989.0;

pub fn run(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let (plan, overrides) = match &a.resume {
        Some(run_dir) => {
            // Every positional is an override when resuming.
            let overrides: Vec<String> = a.recipe.iter().chain(&a.overrides).cloned().collect();
            let (_, dir) = checkpoint::latest(run_dir)?;
            let saved = Recipe::load(&dir.join("recipe.toml"), &[])?;
            let mut recipe = Recipe::load(&dir.join("recipe.toml"), &overrides)?;
            if let Some(d) = &a.device {
                recipe.train.device = d.clone();
            }
            let changed: Vec<String> = saved
                .changed_keys(&recipe)
                .into_iter()
                .filter(|k| !RESUMABLE_KEYS.contains(&k.as_str()))
                .collect();
            if !changed.is_empty() {
                bail!(
                    "resuming {} may not change {} (keys that may change: {})",
                    run_dir.display(),
                    changed.join(", "),
                    RESUMABLE_KEYS.join(", ")
                );
            }
            let config = firebrand_train::hf::read_config(&dir)?;
            (
                RunPlan {
                    recipe,
                    config,
                    run_dir: run_dir.clone(),
                    resume: true,
                },
                overrides,
            )
        }
        None => {
            let Some(path) = &a.recipe else {
                bail!("give a recipe (e.g. recipes/sft-tiny.toml) or --resume RUN");
            };
            let path = PathBuf::from(path);
            let mut recipe = Recipe::load(&path, &a.overrides)?;
            if let Some(d) = &a.device {
                recipe.train.device = d.clone();
            }
            let vocab = match &recipe.data.tokenizer {
                Some(t) => Some(firebrand_data::tokenizer::load(t)?.get_vocab_size(true)),
                None => None,
            };
            let config = recipe.model_config(vocab)?;
            let run = recipe.output.run.clone().unwrap_or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "run".into())
            });
            let run_dir = recipe.output.dir.join(run);
            (
                RunPlan {
                    recipe,
                    config,
                    run_dir,
                    resume: false,
                },
                a.overrides.clone(),
            )
        }
    };
    if plan.recipe.stages.is_empty() {
        return run_plan(plan, &overrides, a.dry_run, a.rows.as_deref()).map(|_| ExitCode::SUCCESS);
    }
    if a.rows.is_some() {
        bail!("--rows lists one run's rows: give it one stage's recipe (this recipe has [[stages]])");
    }
    // Stages in order, each from the previous one's final checkpoint.
    let base = plan;
    let vocab = match &base.recipe.data.tokenizer {
        Some(t) => Some(firebrand_data::tokenizer::load(t)?.get_vocab_size(true)),
        None => None,
    };
    // Every stage's recipe is checked before the first trains (a later stage's init is a
    // checkpoint that does not exist yet, so the base init stands in for it here).
    let mut names = std::collections::HashSet::new();
    for stage in &base.recipe.stages {
        if !names.insert(stage.name.as_str()) {
            bail!("two stages are named `{}`", stage.name);
        }
        base.recipe.for_stage(stage, base.recipe.model.init.clone())?.check()?;
    }
    let mut init = base.recipe.model.init.clone();
    let n = base.recipe.stages.len();
    for (i, stage) in base.recipe.stages.iter().enumerate() {
        let recipe = base.recipe.for_stage(stage, init.clone())?;
        let config = recipe.model_config(vocab)?;
        println!("== stage {} of {n}: {} ==", i + 1, stage.name);
        let run_dir = base.run_dir.join(&stage.name);
        // Running the recipe again continues it: finished stages are skipped; a stage that stopped
        // part-way is resumed by hand first (its data position and optimizer are in its checkpoint).
        if !a.dry_run
            && let Ok((step, dir)) = checkpoint::latest(&run_dir)
        {
            if step >= recipe.train.max_steps {
                println!("done already ({}); next stage", dir.display());
                init = Some(dir);
                continue;
            }
            bail!(
                "stage `{}` stopped at step {step} of {}\n  hint: finish it with `firebrand train --resume {}`, then run the recipe again",
                stage.name,
                recipe.train.max_steps,
                run_dir.display()
            );
        }
        let plan = RunPlan {
            recipe,
            config,
            run_dir,
            resume: false,
        };
        if let Some(checkpoint) = run_plan(plan, &overrides, a.dry_run, None)? {
            init = Some(checkpoint);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks, prepares and trains one run (or prints its plan); returns its final checkpoint.
fn run_plan(
    plan: RunPlan,
    overrides: &[String],
    dry_run: bool,
    rows_out: Option<&Path>,
) -> anyhow::Result<Option<PathBuf>> {
    plan.recipe.check()?;
    let device: DeviceSpec = plan
        .recipe
        .train
        .device
        .parse()
        .map_err(anyhow::Error::msg)
        .context("train.device")?;
    if !dry_run && !plan.resume && !checkpoint::list(&plan.run_dir)?.is_empty() {
        bail!(
            "{} already holds checkpoints\n  hint: continue it with `firebrand train --resume {}`, or set output.run to start another run",
            plan.run_dir.display(),
            plan.run_dir.display()
        );
    }
    // A dry run tokenizes text sources into a scratch folder, so its numbers are the run's own.
    // A resumed run's tokens are already in its folder (`data::prepare` only checks them then).
    let scratch = (dry_run && !plan.resume)
        .then(|| std::env::temp_dir().join(format!("firebrand-dry-run-{}", std::process::id())));
    if rows_out.is_some() && plan.recipe.method.grpo().is_some() {
        bail!("--rows: GRPO draws its prompts per generation batch; it lists SFT and DPO rows");
    }
    let work_dir = scratch.as_deref().unwrap_or(&plan.run_dir);
    let tokens = data::tokens_path(&plan.recipe, work_dir);
    if let Some(grpo) = plan.recipe.method.grpo() {
        // The prompts are tokenized when they load; a query's result is written once per run.
        data::prepare(&plan.recipe, work_dir, plan.resume, |_| {})?;
        if dry_run {
            let shown = print_grpo_plan(&plan, grpo, work_dir, overrides);
            if let Some(dir) = &scratch {
                let _ = std::fs::remove_dir_all(dir);
            }
            return shown.map(|_| None);
        }
        return train_on(&plan, device).map(Some);
    }
    if let Some(source) = plan.recipe.data.text_source() {
        let input = data::open_text(&source, work_dir)?;
        let pb = progress::bar(input.len()? as u64, "tokenizing", false);
        let report = data::prepare(&plan.recipe, work_dir, plan.resume, |n| pb.inc(n as u64));
        pb.finish_and_clear();
        if let Some(r) = report? {
            for (why, n) in &r.dropped {
                println!("left out {n}: {why}");
            }
            println!(
                "tokenized {} rows into {} rows of {} tokens ({} trained, {:.1}% fill){}",
                r.rows_in,
                r.rows_out,
                r.tokens,
                r.loss_tokens,
                100.0 * r.fill(plan.recipe.data.tokenize_options()?.max_len),
                if dry_run {
                    String::new()
                } else {
                    format!(" at {}", tokens.display())
                }
            );
        }
    }
    let checked = Dataset::open_kind(&tokens, DatasetKind::Tokens)
        .map_err(anyhow::Error::from)
        .and_then(|ds| match plan.config.vocab_size {
            0 => Ok(()),
            v => check_vocab(&ds, v),
        });
    if dry_run {
        let shown = checked.and_then(|()| print_plan(&plan, &tokens, overrides, rows_out));
        if let Some(dir) = &scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        return shown.map(|_| None);
    }
    checked?;
    train_on(&plan, device).map(Some)
}

/// Trains a checked, prepared plan on its device; returns the final checkpoint.
fn train_on(plan: &RunPlan, device: DeviceSpec) -> anyhow::Result<PathBuf> {
    let t = &plan.recipe.train;
    let peak = t
        .peak_tflops
        .or(matches!(device, DeviceSpec::Cuda(_)).then_some(CUDA_PEAK_TFLOPS))
        .map(|p| p * 1e12);
    let pb = progress::bar(t.max_steps as u64, "training", false);
    // Above the bar on a terminal; plainly when the bar is hidden (indicatif drops it there).
    let say = |line: String| {
        if pb.is_hidden() {
            println!("{line}")
        } else {
            pb.println(line)
        }
    };
    let on_event = |e: &Event| match e {
        Event::Step(m) => {
            // The method's metrics under TRL's names; the ones a method does not log are absent.
            let get = |k: &str| m.method.get(k).and_then(serde_json::Value::as_f64);
            pb.set_position(m.step as u64);
            pb.set_message(match get("reward") {
                Some(r) => format!("reward {r:.3}"),
                None => format!("loss {:.4}", m.loss),
            });
            if !pb.is_hidden() {
                return;
            }
            let mfu = m.mfu.map(|x| format!(", MFU {:.1}%", 100.0 * x)).unwrap_or_default();
            let mut method = String::new();
            if let (Some(a), Some(g)) = (get("rewards/accuracies"), get("rewards/margins")) {
                method.push_str(&format!("  accuracy {a:.2}  margin {g:.4}"));
            }
            if let Some(r) = get("reward") {
                method.push_str(&format!(
                    "  reward {r:.3}  zero-std groups {:.2}  length {:.1}  kl {:.4}  entropy {:.3}",
                    get("frac_reward_zero_std").unwrap_or(f64::NAN),
                    get("completions/mean_length").unwrap_or(f64::NAN),
                    get("kl").unwrap_or(f64::NAN),
                    get("entropy").unwrap_or(f64::NAN)
                ));
            }
            if let (Some(s), Some(r)) = (get("rollout_s"), get("rollout_tokens_per_s")) {
                method.push_str(&format!("  rollout {s:.1} s ({r:.0} tok/s)"));
            }
            println!(
                "step {:>5}  loss {:.4}  lr {:.2e}  grad_norm {:.3}  {:.0} tok/s{mfu}{method}",
                m.step, m.loss, m.lr, m.grad_norm, m.tokens_per_s
            );
        }
        Event::Eval(step, Evaluation::Loss(loss)) => say(format!("step {step:>5}  eval/loss {loss:.4}")),
        Event::Eval(step, Evaluation::Reward(reward)) => say(format!("step {step:>5}  eval/reward {reward:.4}")),
        Event::Method(Note::Completions(group)) => {
            // The group's best and worst completions of the logged prompt.
            let scored = |s: &&firebrand_train::trainer::method::LoggedSample| s.reward.unwrap_or(f64::NEG_INFINITY);
            let best = group.iter().max_by(|a, b| scored(a).total_cmp(&scored(b)));
            let worst = group.iter().min_by(|a, b| scored(a).total_cmp(&scored(b)));
            if let (Some(best), Some(worst)) = (best, worst) {
                say(format!(
                    "step {:>5}  sample  {:?}\n             best  {:?} (reward {})\n             worst {:?} (reward {})",
                    best.step,
                    clip(&best.prompt, 100),
                    clip(&best.completion, 160),
                    reward_text(best.reward),
                    clip(&worst.completion, 160),
                    reward_text(worst.reward)
                ));
            }
        }
        Event::Method(Note::Prompts { kept, too_long, empty }) => {
            let mut line = format!("prompts: {kept} to sample from");
            if *too_long > 0 {
                line.push_str(&format!(
                    ", {too_long} left out (longer than data.max_len − method.max_completion_length)"
                ));
            }
            if *empty > 0 {
                line.push_str(&format!(", {empty} left out (no token)"));
            }
            say(line)
        }
        Event::Checkpoint(dir) => say(format!("checkpoint {}", dir.display())),
        Event::Engine(note) => say(note.clone()),
        Event::Method(Note::Reference(r)) => {
            let line = format!(
                "reference log-probs: {} pairs computed, {} reused from the dataset's cache",
                r.computed, r.reused
            );
            say(line)
        }
    };
    let summary = match device {
        DeviceSpec::Cpu => firebrand_train::engine::choose(&plan.recipe, &plan.config)
            .and_then(|k| train::<Autodiff<NdArray<f32>>>(plan, k, &Default::default(), peak, on_event)),
        DeviceSpec::Cuda(i) => {
            if let Some(dir) = firebrand_train::device::configure_kernel_cache() {
                pb.println(format!("kernel cache: {}", dir.display()));
            }
            let device = burn::backend::cuda::CudaDevice::new(i);
            // The engine is chosen (and the kernel engine's device opened) first: the kernel
            // engine keeps burn only to initialise the weights and to sample, in f32, so the fp32
            // master weights are initialised as the f32 path initialises them; the burn engine
            // runs in train.dtype.
            firebrand_train::engine::choose(&plan.recipe, &plan.config).and_then(|k| {
                if plan.recipe.train.dtype == "bf16" && !k.is_kernel() {
                    train::<Autodiff<Cuda<half::bf16>>>(plan, k, &device, peak, on_event)
                } else {
                    train::<Autodiff<Cuda<f32>>>(plan, k, &device, peak, on_event)
                }
            })
        }
    };
    pb.finish_and_clear();
    let s = summary.with_context(|| format!("training run {}", plan.run_dir.display()))?;
    println!(
        "trained {} steps, last loss {:.4}; checkpoint {}; metrics {}",
        s.steps,
        s.last_loss,
        s.checkpoint.display(),
        plan.run_dir.join("metrics.jsonl").display()
    );
    Ok(s.checkpoint)
}

/// GRPO's `--dry-run`: the prompts, the generation batch and the rewards.
fn print_grpo_plan(
    plan: &RunPlan,
    grpo: &firebrand_train::recipe::GrpoMethod,
    work_dir: &Path,
    overrides: &[String],
) -> anyhow::Result<()> {
    use firebrand_train::trainer::method::rollout::Prompts;
    let t = &plan.recipe.train;
    println!("# resolved recipe{}", overrides_note(overrides));
    println!("{}", plan.recipe.to_toml());
    println!("# plan");
    println!("run folder: {}", plan.run_dir.display());
    println!(
        "model: {:?}, {} parameters",
        plan.config.model_type,
        plan.config.num_parameters()
    );
    let path = data::text_path(&plan.recipe, work_dir).context("method grpo reads data.dataset or data.query")?;
    let tok_path = plan
        .recipe
        .data
        .tokenizer
        .as_ref()
        .context("method grpo needs data.tokenizer")?;
    let tok = firebrand_data::tokenizer::load(tok_path)?;
    let max_len = plan.recipe.data.max_len.unwrap_or(2048);
    let prompts = Prompts::load(
        &path,
        &tok,
        &plan.recipe.data.template()?,
        max_len.saturating_sub(grpo.max_completion_length),
    )?;
    let mean = prompts.ids.iter().map(Vec::len).sum::<usize>() as f64 / prompts.len().max(1) as f64;
    let per_step = t.micro_batch_size * t.grad_accum_steps / grpo.num_generations;
    let rounds = t.max_steps.div_ceil(grpo.num_iterations);
    let train_prompts = prompts.len().saturating_sub(plan.recipe.data.eval_rows);
    println!(
        "prompts: {} (mean {mean:.0} tokens; {} left out as too long; {} held out for eval, {train_prompts} to sample from)",
        prompts.len(),
        prompts.too_long,
        plan.recipe.data.eval_rows
    );
    println!(
        "generation batch: {per_step} prompts × {} completions of at most {} tokens (temperature {}), used for {} optimizer step(s) in micro-batches of {}",
        grpo.num_generations, grpo.max_completion_length, grpo.temperature, grpo.num_iterations, t.micro_batch_size
    );
    println!(
        "{} steps sample {rounds} generation batches: {} prompts ({:.2} epochs)",
        t.max_steps,
        rounds * per_step,
        (rounds * per_step) as f64 / train_prompts.max(1) as f64
    );
    let names: Vec<String> = grpo
        .rewards
        .iter()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
        .collect();
    println!("rewards: {}", names.join(", "));
    println!(
        "loss: {:?}, ε {} / {}, β {}, advantages scaled by {:?}",
        grpo.loss_type,
        grpo.epsilon,
        grpo.epsilon_high.unwrap_or(grpo.epsilon),
        grpo.beta,
        grpo.scale_rewards
    );
    println!("device: {}, {}", t.device, t.dtype);
    Ok(())
}

fn overrides_note(overrides: &[String]) -> String {
    if overrides.is_empty() {
        String::new()
    } else {
        format!(" (overrides: {})", overrides.join(" "))
    }
}

/// The first `n` characters of `s`, with an ellipsis when cut.
fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

fn reward_text(r: Option<f64>) -> String {
    r.map_or_else(|| "none".into(), |r| format!("{r:.3}"))
}

/// Every token id must fit the embedding table.
fn check_vocab(ds: &Dataset, vocab: usize) -> anyhow::Result<()> {
    for (i, row) in ds.rows::<TokensRow>(4096)?.enumerate() {
        let row = row?;
        if let Some(bad) = row.input_ids.iter().find(|&&id| id < 0 || id as usize >= vocab) {
            bail!(
                "{}: row {i} has token id {bad}, outside the model's vocabulary of {vocab}\n  hint: model.vocab_size must cover the tokenizer (set data.tokenizer to size it automatically)",
                ds.path().display()
            );
        }
    }
    Ok(())
}

fn print_plan(
    plan: &RunPlan,
    tokens: &Path,
    overrides: &[String],
    rows_out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let t = &plan.recipe.train;
    println!("# resolved recipe{}", overrides_note(overrides));
    println!("{}", plan.recipe.to_toml());
    println!("# plan");
    println!(
        "run folder: {}{}",
        plan.run_dir.display(),
        if plan.resume { " (resuming)" } else { "" }
    );
    println!(
        "model: {:?}, {} parameters",
        plan.config.model_type,
        plan.config.num_parameters()
    );
    let ds = Dataset::open_kind(tokens, DatasetKind::Tokens)?;
    let lengths: Vec<usize> = ds
        .rows::<TokensRow>(4096)?
        .map(|r| r.map(|r| r.input_ids.len()))
        .collect::<Result<_, _>>()?;
    let mean_len = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
    // DPO's unit is a pair (two rows); micro_batch_size and eval_rows count pairs there.
    let (unit, per_unit) = if plan.recipe.method.dpo().is_some() {
        ("pairs", 2)
    } else {
        ("rows", 1)
    };
    let rows = lengths.len() / per_unit;
    let mean_len = mean_len * per_unit as f64;
    let rows_per_step = t.micro_batch_size * t.grad_accum_steps;
    let train_rows = rows.saturating_sub(plan.recipe.data.eval_rows);
    let source = match plan.recipe.data.text_source() {
        Some(TextSource::Dataset(p)) => format!(", tokenized from {} when the run starts", p.display()),
        Some(TextSource::Query(q)) => format!(", tokenized from the query `{q}` when the run starts"),
        None => String::new(),
    };
    println!(
        "data: {} ({rows} {unit}, mean {mean_len:.0} tokens; {} held out for eval, {train_rows} for training){source}",
        if source.is_empty() {
            tokens.display().to_string()
        } else {
            data::tokens_path(&plan.recipe, &plan.run_dir).display().to_string()
        },
        plan.recipe.data.eval_rows
    );
    println!(
        "per step: {rows_per_step} {unit} = {} micro-batches of {}, about {:.0} tokens",
        t.grad_accum_steps,
        t.micro_batch_size,
        rows_per_step as f64 * mean_len
    );
    println!(
        "{} steps read {} {unit} ({:.2} epochs); about {:.3e} FLOPs",
        t.max_steps,
        t.max_steps * rows_per_step,
        (t.max_steps * rows_per_step) as f64 / train_rows.max(1) as f64,
        flops_per_token(&plan.config, mean_len as usize) * mean_len * (t.max_steps * rows_per_step) as f64
    );
    println!("device: {}, {}", plan.recipe.train.device, plan.recipe.train.dtype);
    println!("{}", planned_kernels(plan));
    if let Some(path) = rows_out {
        if train_rows == 0 {
            bail!(
                "--rows: no rows are left for training ({rows} {unit}, data.eval_rows = {}); \
                 lower data.eval_rows",
                plan.recipe.data.eval_rows
            );
        }
        let steps = firebrand_train::trainer::order::step_rows(&plan.recipe, rows as u64, t.max_steps);
        let mut text = String::new();
        for (i, micro_batches) in steps.iter().enumerate() {
            text.push_str(&serde_json::json!({"step": i + 1, "micro_batches": micro_batches}).to_string());
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("rows of {} steps: {}", steps.len(), path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// What `train.kernels` will run, as far as the recipe decides it (the device's libraries are
/// only checked when the run starts).
fn planned_kernels(plan: &RunPlan) -> String {
    match firebrand_train::engine::choose::plan(&plan.recipe, &plan.config) {
        Ok(choice) => choice.note,
        Err(e) => format!("refused: {e}"),
    }
}
