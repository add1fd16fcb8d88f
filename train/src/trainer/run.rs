//! The shared training loop, top to bottom as torchtune's `train()`.
//!
//! Per optimizer step: the method builds the window of `grad_accum_steps` micro-batches at the
//! current position of the seeded data order (`order.rs`); for each, the engine's forward gives
//! log p of every counted target, the method turns it into its share of the window's loss and the
//! gradient `∂loss/∂log p`, and the engine's backward accumulates it (SFT's gradient is known
//! before the forward, so the engine fuses the two). Then: the global gradient norm, a guard
//! against non-finite values, AdamW at the scheduled learning rate with the gradients clipped,
//! a `metrics.jsonl` line, a checkpoint every `checkpoint_every` steps and at the end, then
//! evaluation every `eval_every` steps. A non-finite loss or gradient norm stops the run with
//! an error naming the last good checkpoint, which is never overwritten by a bad step.
//!
//! The loop names no method and no engine: `method::open` and `Choice::open` make them.
//! While the device runs a step's last micro-batch, the host reads the next window (for methods
//! whose next window does not depend on this step's update: not GRPO).
//!
//! Determinism: the data order is a pure function of the seed and the number of units consumed,
//! initialisation is seeded, and checkpoints hold full-precision weights and optimizer moments
//! under Hugging Face names, so a resumed run (on either engine) repeats the uninterrupted run's
//! losses.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::log::{open as open_log, write_line};
use super::method::{Evaluation, Method, MethodMetrics, Note, Window};
use super::order::{Cursor, DataOrder, split};
use super::plan::RunPlan;
use super::schedule::lr_at;
use crate::checkpoint::{self, LoopState};
use crate::engine::api::Engine;
use crate::engine::choose::Choice;
use crate::engine::optim::AdamW;
use crate::engine::state::EngineState;
use crate::error::TrainError;
use crate::localist::LocalistRun;
use crate::model::{Decoder, ModelConfig};

/// One line of `metrics.jsonl` for a training step.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    /// Optimizer steps done.
    pub step: usize,
    /// The window's loss (SFT: mean per loss token; DPO: mean per pair; GRPO: its aggregation).
    pub loss: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens in the window (padding excluded).
    pub tokens: usize,
    /// Loss tokens (counted targets) in the window.
    pub loss_tokens: usize,
    /// Tokens per second of this step.
    pub tokens_per_s: f64,
    /// Model FLOP utilisation of the step's training part, when the device's peak is known.
    pub mfu: Option<f64>,
    /// Seconds since the run (or its resumption) started.
    pub elapsed_s: f64,
    /// The method's own (TRL's names).
    #[serde(flatten)]
    pub method: MethodMetrics,
}

/// What the loop reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// Which engine runs the steps, and why (`engine: kernel (...)`, `engine: burn (...)`).
    Engine(String),
    /// A step finished.
    Step(Box<StepMetrics>),
    /// An evaluation finished, at a step.
    Eval(usize, Evaluation),
    /// A checkpoint was written.
    Checkpoint(PathBuf),
    /// The method's news (reference log-probs, prompts, logged completions).
    Method(Note),
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Steps done in total.
    pub steps: usize,
    /// Loss of the last step.
    pub last_loss: f64,
    /// The final checkpoint.
    pub checkpoint: PathBuf,
}

/// FLOPs of one token's forward and backward: 6N plus attention's 12·L·T·h (PaLM, Appendix B).
pub fn flops_per_token(config: &ModelConfig, seq_len: usize) -> f64 {
    6.0 * config.num_parameters() as f64
        + 12.0 * (config.num_hidden_layers * seq_len * config.num_attention_heads * config.head_dim) as f64
}

/// Forward, loss and backward of every micro-batch of `window` on `engine`, gradients accumulated;
/// `meanwhile` runs once while the device works on the last micro-batch (after its fused pass is
/// queued, or after its backward is), given the engine and the method: the loop reads the next
/// window there. Returns the window's loss.
///
/// # Errors
/// What the engine, the method or `meanwhile` return.
pub fn step_window<B: AutodiffBackend>(
    engine: &mut dyn Engine<B>,
    method: &mut dyn Method<B>,
    window: &Window,
    meanwhile: impl FnOnce(&mut dyn Engine<B>, &mut dyn Method<B>) -> Result<(), TrainError>,
) -> Result<f64, TrainError> {
    let want = method.want();
    let mut meanwhile = Some(meanwhile);
    let mut loss = 0.0;
    let last = window.micros.len().saturating_sub(1);
    for (i, micro) in window.micros.iter().enumerate() {
        let fixed = method.fixed(micro, window);
        engine.forward(micro, want, fixed.as_ref())?;
        // A fused micro-batch's work is all queued now; a split one's backward comes below.
        if i == last
            && fixed.is_some()
            && let Some(f) = meanwhile.take()
        {
            f(engine, method)?;
        }
        let forward = engine.collect()?;
        let share = method.loss(i, micro, &forward, window)?;
        if fixed.is_none() {
            engine.backward(&share.grad)?;
        }
        loss += share.value;
    }
    if let Some(f) = meanwhile.take() {
        f(engine, method)?;
    }
    Ok(loss)
}

/// Runs (or resumes) a training run on the engine `choice` picked (whose choice also decided `B`'s
/// float type); `on_event` sees every step, evaluation and checkpoint.
///
/// # Errors
/// On unreadable data, a batch without loss tokens, a non-finite loss or gradient norm (naming the
/// last good checkpoint), or a checkpoint that cannot be written or read.
pub fn train<B: AutodiffBackend>(
    plan: &RunPlan,
    mut choice: Choice,
    device: &B::Device,
    peak_flops: Option<f64>,
    mut on_event: impl FnMut(&Event),
) -> Result<Summary, TrainError> {
    let t = &plan.recipe.train;
    std::fs::create_dir_all(&plan.run_dir).map_err(|e| TrainError::io(&plan.run_dir, e))?;
    let resumed = match plan.resume {
        true => Some(checkpoint::latest(&plan.run_dir)?),
        false => None,
    };
    let start_step = resumed.as_ref().map_or(0, |(s, _)| *s);

    // 1. The method, with its data and references (these load before the policy).
    let mut method = super::method::open::<B>(plan, &mut choice, start_step, device)?;
    for note in method.notes() {
        on_event(&Event::Method(note));
    }
    let units = method.units();
    let (eval_units, train_units) = split(units, plan.recipe.data.eval_rows, t.seed);
    if train_units.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: no rows to train on ({units} rows, {} held out by data.eval_rows)",
            method.source().display(),
            eval_units.len()
        )));
    }
    let mut order = DataOrder::new(train_units, t.seed);

    // 2. The policy and the loop state: fresh, or from the latest checkpoint.
    B::seed(device, t.seed);
    let (state, mut loop_state) = match &resumed {
        Some((_, dir)) => {
            let path = dir.join("state.json");
            let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
            let loop_state: LoopState = serde_json::from_str(&text).map_err(|e| TrainError::Weights {
                path: path.clone(),
                problem: e.to_string(),
            })?;
            (EngineState::load::<B>(dir, &plan.config, device)?, loop_state)
        }
        None => {
            let state = match &plan.recipe.model.init {
                // A Hugging Face folder, a run or a checkpoint (a staged recipe's previous stage).
                Some(dir) => crate::trained::load_state::<B>(dir, device)?.1,
                None => EngineState::fresh(&Decoder::<B::InnerBackend>::init(&plan.config, device)?),
            };
            let fresh = LoopState {
                step: 0,
                rows_consumed: 0,
                seed: t.seed,
            };
            (state, fresh)
        }
    };
    let localist = match &plan.recipe.localist {
        None => None,
        Some(c) => {
            let tokenizer = match &plan.recipe.data.tokenizer {
                Some(p) => Some(firebrand_data::tokenizer::load(p)?),
                None => None,
            };
            Some(LocalistRun::new(c, plan.config.num_hidden_layers, tokenizer.as_ref())?)
        }
    };
    let mut engine = choice.open::<B>(&plan.config, &state, Some(AdamW::of(t)), localist, device)?;
    drop(state);
    on_event(&Event::Engine(choice.note.clone()));

    let metrics_path = plan.run_dir.join("metrics.jsonl");
    let mut metrics = open_log(&metrics_path, plan.resume.then_some(loop_state.step))?;
    let started = Instant::now();
    let mut last_loss = f64::NAN;
    let mut last_checkpoint = checkpoint::list(&plan.run_dir)?.pop().map(|(_, p)| p);
    let evaluate = |engine: &mut dyn Engine<B>,
                    method: &mut dyn Method<B>,
                    step: usize,
                    metrics: &mut std::fs::File,
                    on_event: &mut dyn FnMut(&Event)|
     -> Result<(), TrainError> {
        if eval_units.is_empty() {
            return Ok(());
        }
        let (headline, line) = method.evaluate(engine, &eval_units, t.micro_batch_size, step)?;
        write_line(metrics, &metrics_path, &line)?;
        on_event(&Event::Eval(step, headline));
        Ok(())
    };
    if t.eval_on_start && loop_state.step == 0 {
        evaluate(engine.as_mut(), method.as_mut(), 0, &mut metrics, &mut on_event)?;
    }
    let mut ahead: Option<Result<Window, TrainError>> = None;
    while loop_state.step < t.max_steps {
        let step_start = Instant::now();
        let step = loop_state.step;
        // 1. The window: read ahead during the previous step, or now.
        let window = match ahead.take() {
            Some(Ok(w)) if w.start == loop_state.rows_consumed => w,
            Some(Err(e)) => return Err(e),
            _ => {
                let mut cursor = Cursor::new(&mut order, loop_state.rows_consumed);
                method.window(engine.as_mut(), &mut cursor, step)?
            }
        };
        loop_state.rows_consumed = window.end;
        for note in method.notes() {
            on_event(&Event::Method(note));
        }
        // 2. Forward, loss and backward of each micro-batch; the next window is read meanwhile.
        let read_ahead = step + 1 < t.max_steps && method.read_ahead();
        let (next, pos) = (&mut ahead, loop_state.rows_consumed);
        let loss = step_window(engine.as_mut(), method.as_mut(), &window, |engine, method| {
            if read_ahead {
                // An error here belongs to the next step: it is raised when that step starts.
                let mut cursor = Cursor::new(&mut order, pos);
                *next = Some(method.window(engine, &mut cursor, step + 1));
            }
            Ok(())
        })?;
        // 3. Norm, guard, clip and step.
        let max_norm = t.grad_clip.filter(|c| *c > 0.0);
        let grad_norm = engine.grad_norm()?;
        if !loss.is_finite() || !grad_norm.is_finite() {
            let last = last_checkpoint
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into());
            return Err(TrainError::Batch(format!(
                "step {}: the loss ({loss}) or gradient norm ({grad_norm}) is not finite; stopped without stepping. Last good checkpoint: {last}\n  hint: lower train.lr, or check the data with `firebrand data debug`",
                step + 1
            )));
        }
        let lr = lr_at(step, t.max_steps, t.warmup_steps, t.lr, t.min_lr_ratio, t.schedule);
        engine.step(lr, grad_norm, max_norm)?;
        loop_state.step += 1;
        last_loss = loss;
        // 4. Log. MFU counts the training part of the step (sampling is not 6N per token).
        let seconds = step_start.elapsed().as_secs_f64();
        let compute_s = (seconds - window.rollout_s).max(1e-9);
        let flops = flops_per_token(&plan.config, window.seq_len) * window.tokens as f64;
        let m = StepMetrics {
            step: loop_state.step,
            loss,
            lr,
            grad_norm,
            tokens: window.tokens,
            loss_tokens: window.count,
            tokens_per_s: window.tokens as f64 / seconds,
            mfu: peak_flops.map(|p| flops / compute_s / p),
            elapsed_s: started.elapsed().as_secs_f64(),
            method: method.finish(&window, seconds),
        };
        write_line(
            &mut metrics,
            &metrics_path,
            &serde_json::to_value(&m).expect("metrics serialize"),
        )?;
        on_event(&Event::Step(Box::new(m)));
        // 5. Checkpoint (before evaluating: a failed evaluation loses no training).
        let due = t.checkpoint_every > 0 && loop_state.step.is_multiple_of(t.checkpoint_every);
        if due || loop_state.step == t.max_steps {
            let dir = save(plan, engine.as_mut(), &loop_state)?;
            on_event(&Event::Checkpoint(dir.clone()));
            last_checkpoint = Some(dir);
        }
        // 6. Evaluate.
        if t.eval_every > 0 && loop_state.step.is_multiple_of(t.eval_every) {
            evaluate(
                engine.as_mut(),
                method.as_mut(),
                loop_state.step,
                &mut metrics,
                &mut on_event,
            )?;
        }
    }
    let checkpoint = match last_checkpoint {
        Some(p) => p,
        None => save(plan, engine.as_mut(), &loop_state)?,
    };
    Ok(Summary {
        steps: loop_state.step,
        last_loss,
        checkpoint,
    })
}

/// Writes a checkpoint of the engine's state atomically.
fn save<B: AutodiffBackend>(
    plan: &RunPlan,
    engine: &mut dyn Engine<B>,
    state: &LoopState,
) -> Result<PathBuf, TrainError> {
    let tmp = checkpoint::begin(&plan.run_dir, state.step)?;
    engine.state()?.save(&tmp, &plan.config)?;
    let files = [
        (
            "state.json",
            serde_json::to_string_pretty(state).expect("state serializes"),
        ),
        ("recipe.toml", plan.recipe.to_toml()),
        ("config.json", plan.config.to_hf_json()),
    ];
    for (name, text) in files {
        std::fs::write(tmp.join(name), text).map_err(|e| TrainError::io(tmp.join(name), e))?;
    }
    checkpoint::commit(&plan.run_dir, &tmp, state.step, plan.recipe.train.keep_last)
}
