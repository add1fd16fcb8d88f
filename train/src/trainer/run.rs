//! The shared training loop, top to bottom as torchtune's `train()`.
//!
//! Per optimizer step: read `grad_accum_steps` micro-batches at the current position of the seeded
//! data order; count their loss tokens; for each, backward of `loss_sum / window_count` (so the
//! accumulated gradient is the mean over every loss token of the window, whatever the split into
//! micro-batches); clip the global gradient norm; step AdamW at the scheduled learning rate; log;
//! evaluate every `eval_every` steps; checkpoint every `checkpoint_every` steps and at the end.
//! A non-finite loss or gradient norm stops the run with an error naming the last good checkpoint,
//! which is never overwritten by a bad step.
//!
//! Determinism: the data order is a pure function of the seed and the number of rows consumed
//! (a fresh permutation of the training rows per epoch), initialisation is seeded, and checkpoints
//! hold full-precision weights and optimizer moments, so a resumed run repeats the uninterrupted
//! run's losses.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::Recorder;
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use firebrand_data::{Dataset, DatasetKind, TokensRow};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::checkpoint::{self, LoopState, recorder};
use super::optim::{AdamW, clip_global_norm};
use super::schedule::lr_at;
use super::sft;
use crate::error::TrainError;
use crate::localist::LocalistRun;
use crate::model::{Decoder, ModelConfig};
use crate::recipe::Recipe;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The resolved recipe.
    pub recipe: Recipe,
    /// The model configuration.
    pub config: ModelConfig,
    /// `output.dir / run`.
    pub run_dir: PathBuf,
    /// Continue from the run's latest checkpoint.
    pub resume: bool,
}

/// One line of `metrics.jsonl` for a training step.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    /// Optimizer steps done.
    pub step: usize,
    /// Mean loss per loss token over the window.
    pub loss: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens in the window (padding excluded).
    pub tokens: usize,
    /// Loss tokens in the window.
    pub loss_tokens: usize,
    /// Tokens per second of this step.
    pub tokens_per_s: f64,
    /// Model FLOP utilisation, when the device's peak is known.
    pub mfu: Option<f64>,
    /// Seconds since the run (or its resumption) started.
    pub elapsed_s: f64,
    /// With `[localist]`: the penalty term (per token) of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localist_penalty: Option<f64>,
    /// With `[localist]`: each layer's attention entropy (bits) and fidelity, over the window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attention: Vec<crate::localist::LayerMetrics>,
    /// With DPO: rewards, margins, accuracy and log-probs, over the window's pairs.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub dpo: Option<super::dpo::DpoMetrics>,
    /// With GRPO: rewards, advantages, KL, clipping, entropy, lengths, rollout and training time.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub grpo: Option<super::grpo::GrpoStepMetrics>,
}

/// DPO's part of a run: its options and the reference log-probs by pair id.
struct DpoFlow {
    options: super::dpo::DpoOptions,
    reference: super::reference::ReferenceLogps,
}

/// Token rows of pairs `pairs` collated as [chosen..., rejected...].
fn pair_rows(ds: &Dataset, pairs: &[u64]) -> Result<Vec<TokensRow>, TrainError> {
    let idx: Vec<u64> = pairs
        .iter()
        .map(|p| 2 * p)
        .chain(pairs.iter().map(|p| 2 * p + 1))
        .collect();
    Ok(ds.take(&idx)?)
}

/// What the loop reports as it goes.
#[derive(Debug, Clone)]
pub enum Event {
    /// Which kernels run the steps, and why (`kernels: fast (...)`, `kernels: burn (...)`).
    Kernels(String),
    /// A step finished.
    Step(Box<StepMetrics>),
    /// An evaluation finished: step and mean loss per loss token.
    Eval(usize, f64),
    /// A checkpoint was written.
    Checkpoint(PathBuf),
    /// DPO's reference log-probs are ready (reused from the cache or computed).
    Reference(super::reference::CacheReport),
    /// GRPO's held-out evaluation: step and mean reward of greedy completions.
    EvalReward(usize, f64),
    /// GRPO logged a group of completions.
    Completions(Vec<super::grpo_step::LoggedSample>),
    /// GRPO's prompts are loaded: how many, and how many were left out.
    Prompts {
        /// Prompts to sample from.
        kept: usize,
        /// Left out: longer than data.max_len − method.max_completion_length.
        too_long: usize,
        /// Left out: no token.
        empty: usize,
    },
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

/// The order in which training rows are read: a seeded permutation per epoch.
pub(crate) struct DataOrder {
    rows: Vec<u64>,
    seed: u64,
    epoch: Option<u64>,
    perm: Vec<u64>,
}

impl DataOrder {
    pub(crate) fn new(rows: Vec<u64>, seed: u64) -> Self {
        Self {
            rows,
            seed,
            epoch: None,
            perm: Vec::new(),
        }
    }

    /// The dataset rows at positions `start..start + n` of the infinite epoch sequence.
    pub(crate) fn take(&mut self, start: u64, n: usize) -> Vec<u64> {
        let len = self.rows.len() as u64;
        (start..start + n as u64)
            .map(|p| {
                let epoch = p / len;
                if self.epoch != Some(epoch) {
                    let mut perm = self.rows.clone();
                    perm.shuffle(&mut StdRng::seed_from_u64(
                        self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    ));
                    self.perm = perm;
                    self.epoch = Some(epoch);
                }
                self.perm[(p % len) as usize]
            })
            .collect()
    }
}

/// Splits the rows into held-out evaluation rows and training rows, by seed.
fn split(n: u64, eval_rows: usize, seed: u64) -> (Vec<u64>, Vec<u64>) {
    let mut all: Vec<u64> = (0..n).collect();
    all.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_add(0xE7A1)));
    let (eval, train) = all.split_at(eval_rows.min(all.len()));
    let (mut eval, mut train) = (eval.to_vec(), train.to_vec());
    eval.sort_unstable();
    train.sort_unstable();
    (eval, train)
}

/// The rows that SFT or DPO steps `1..=steps` read, micro-batch by micro-batch, for a dataset of
/// `units` training units (rows; DPO: pairs, unit `k` being rows `2k` and `2k + 1`): the loop's
/// own split and order, so a run can be inspected (which rows did step 32 see?) or replayed in
/// another framework (`firebrand train --dry-run --rows FILE`).
pub fn step_rows(recipe: &Recipe, units: u64, steps: usize) -> Vec<Vec<Vec<u64>>> {
    let t = &recipe.train;
    let (_, train_rows) = split(units, recipe.data.eval_rows, t.seed);
    if train_rows.is_empty() {
        return Vec::new();
    }
    let mut order = DataOrder::new(train_rows, t.seed);
    let mut pos = 0;
    (0..steps)
        .map(|_| {
            (0..t.grad_accum_steps)
                .map(|_| {
                    let idx = order.take(pos, t.micro_batch_size);
                    pos += idx.len() as u64;
                    idx
                })
                .collect()
        })
        .collect()
}

fn rec_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Weights {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

/// FLOPs of one token's forward and backward: 6N plus attention's 12·L·T·h (PaLM, Appendix B).
pub fn flops_per_token(config: &ModelConfig, seq_len: usize) -> f64 {
    6.0 * config.num_parameters() as f64
        + 12.0 * (config.num_hidden_layers * seq_len * config.num_attention_heads * config.head_dim) as f64
}

/// Runs (or resumes) a training run on the `kernels` that [`crate::fast::choose`] picked for it
/// (whose choice also decides `B`'s float type); `on_event` sees every step, evaluation and
/// checkpoint.
///
/// # Errors
/// On unreadable data, a batch without loss tokens, a non-finite loss or gradient norm (naming the
/// last good checkpoint), or a checkpoint that cannot be written or read.
pub fn train<B: AutodiffBackend>(
    plan: &RunPlan,
    kernels: crate::fast::Choice,
    device: &B::Device,
    peak_flops: Option<f64>,
    mut on_event: impl FnMut(&Event),
) -> Result<Summary, TrainError> {
    let t = &plan.recipe.train;
    std::fs::create_dir_all(&plan.run_dir).map_err(|e| TrainError::io(&plan.run_dir, e))?;
    let start_step = match plan.resume {
        true => checkpoint::latest(&plan.run_dir)?.0,
        false => 0,
    };
    // GRPO samples from prompts (its reference, with β > 0, loads before the policy); SFT and DPO
    // read a tokens dataset, where DPO's units are pairs (rows 2k and 2k + 1).
    let mut grpo = match plan.recipe.method.grpo() {
        Some(m) => {
            let flow = super::grpo_step::GrpoFlow::<B>::new(plan, m, start_step, device)?;
            on_event(&Event::Prompts {
                kept: flow.prompts.len(),
                too_long: flow.prompts.too_long,
                empty: flow.prompts.empty,
            });
            Some(flow)
        }
        None => None,
    };
    let dpo_options = plan.recipe.method.dpo();
    let tokens = super::data::tokens_path(&plan.recipe, &plan.run_dir);
    let (ds, n) = match &grpo {
        Some(flow) => (None, flow.prompts.len() as u64),
        None => {
            let ds = Dataset::open_kind(&tokens, DatasetKind::Tokens)?;
            let n = ds.len()? as u64 / if dpo_options.is_some() { 2 } else { 1 };
            (Some(ds), n)
        }
    };
    let (eval_rows, train_rows) = split(n, plan.recipe.data.eval_rows, t.seed);
    if train_rows.is_empty() {
        let source = match &grpo {
            Some(_) => super::data::text_path(&plan.recipe, &plan.run_dir).unwrap_or(tokens),
            None => tokens,
        };
        return Err(TrainError::Config(format!(
            "{}: no rows to train on ({n} rows, {} held out by data.eval_rows)",
            source.display(),
            eval_rows.len()
        )));
    }
    let mut order = DataOrder::new(train_rows, t.seed);

    // DPO's reference log-probs first, so the reference model is gone before the policy loads.
    let dpo = match dpo_options {
        None => None,
        Some(options) => {
            let ds = ds.as_ref().expect("DPO reads a tokens dataset");
            let (reference, report) = reference_logps::<B>(plan, ds, device)?;
            on_event(&Event::Reference(report));
            Some(DpoFlow { options, reference })
        }
    };
    // Model, optimizer and loop state: fresh, or from the latest checkpoint.
    B::seed(device, t.seed);
    let adamw = AdamW {
        beta1: t.beta1,
        beta2: t.beta2,
        eps: t.eps,
        weight_decay: t.weight_decay,
    };
    let mut optimizer = OptimizerAdaptor::<AdamW, Decoder<B>, B>::from(adamw.clone());
    let (mut model, mut state) = if plan.resume {
        let (_, dir) = checkpoint::latest(&plan.run_dir)?;
        let text =
            std::fs::read_to_string(dir.join("state.json")).map_err(|e| TrainError::io(dir.join("state.json"), e))?;
        let state: LoopState = serde_json::from_str(&text).map_err(|e| rec_err(&dir.join("state.json"), e))?;
        let model = Decoder::<B>::init(&plan.config, device)?
            .load_file(dir.join("model"), &recorder(), device)
            .map_err(|e| rec_err(&dir.join("model.mpk"), e))?;
        let record = recorder()
            .load(dir.join("optim"), device)
            .map_err(|e| rec_err(&dir.join("optim.mpk"), e))?;
        optimizer = optimizer.load_record(record);
        (model, state)
    } else {
        let model = match &plan.recipe.model.init {
            // A Hugging Face folder, a run or a checkpoint (a staged recipe's previous stage).
            Some(dir) => checkpoint::load_trained::<B>(dir, device)?.model,
            None => Decoder::<B>::init(&plan.config, device)?,
        };
        (
            model,
            LoopState {
                step: 0,
                rows_consumed: 0,
                seed: t.seed,
            },
        )
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
    // The fast path (`crate::fast`) takes over SFT's micro-batches, clipping and steps when it
    // can run this recipe; it starts from the model and optimizer state just loaded.
    let selection = crate::fast::select(kernels, &plan.recipe, &plan.config, &model, &optimizer)?;
    on_event(&Event::Kernels(selection.note));
    let mut fast = selection.fast;
    // On the fast path burn's AdamW moments are only needed at checkpoints, rebuilt from the
    // engine there: an empty optimizer holds no device memory meanwhile.
    let fresh_optimizer = || OptimizerAdaptor::<AdamW, Decoder<B>, B>::from(adamw.clone());
    if fast.is_some() {
        optimizer = fresh_optimizer();
    }
    let mut prefetched: Option<FastWindow> = None;
    let metrics_path = plan.run_dir.join("metrics.jsonl");
    let mut metrics = open_metrics(&metrics_path, plan.resume.then_some(state.step))?;

    let started = Instant::now();
    let mut last_loss = f64::NAN;
    let mut last_checkpoint = checkpoint::list(&plan.run_dir)?.pop().map(|(_, p)| p);
    // The held-out evaluation of the model at a step (GRPO's state is lent per call: the loop
    // mutates it between evaluations).
    let evaluate_at = |model: &Decoder<B>,
                       step: usize,
                       grpo: Option<&super::grpo_step::GrpoFlow<B>>,
                       fast: Option<&mut crate::fast::FastRun>| {
        if let (Some(fast), Some(ds)) = (fast, ds.as_ref()) {
            let loss = evaluate_fast(fast, ds, &eval_rows, t.micro_batch_size)?;
            return Ok((
                Event::Eval(step, loss),
                serde_json::json!({"step": step, "eval/loss": loss}),
            ));
        }
        HeldOut {
            rows: &eval_rows,
            ds: ds.as_ref(),
            dpo: dpo.as_ref(),
            grpo,
            localist: localist.as_ref(),
            batch: t.micro_batch_size,
        }
        .evaluate(model, step)
    };
    if t.eval_on_start && state.step == 0 && !eval_rows.is_empty() {
        let (event, line) = evaluate_at(&model, 0, grpo.as_ref(), fast.as_mut())?;
        write_line(&mut metrics, &metrics_path, &line)?;
        on_event(&event);
    }
    while state.step < t.max_steps {
        let step_start = Instant::now();
        let mut penalty_sum = 0.0;
        let mut attention: Vec<crate::localist::LayerMetrics> = Vec::new();
        let mut dpo_metrics = super::dpo::DpoMetrics::default();
        let mut grpo_metrics = None;
        let (loss, grads, tokens, window_count, seq_len) = if let Some(flow) = grpo.as_mut() {
            // GRPO: a generation batch every μ steps, its micro-batches' gradients accumulated.
            let step = state.step;
            let consumed = &mut state.rows_consumed;
            let w = flow.window(
                &model,
                step,
                |n| {
                    let idx = order.take(*consumed, n);
                    *consumed += idx.len() as u64;
                    idx
                },
                t,
                device,
            )?;
            if !w.logged.is_empty() {
                on_event(&Event::Completions(w.logged));
            }
            grpo_metrics = Some(w.metrics);
            (w.loss, Some(w.grads), w.tokens, w.count, w.seq_len)
        } else if let Some(fast) = fast.as_mut() {
            let ds = ds.as_ref().expect("SFT reads a tokens dataset");
            // 1. The window's micro-batches, prepared on the host (by the previous step, while the
            //    device computed, when it could), and its count of loss tokens.
            let window = match prefetched.take() {
                Some(w) if w.start == state.rows_consumed => w,
                _ => FastWindow::read(ds, &mut order, state.rows_consumed, state.step + 1, t)?,
            };
            state.rows_consumed = window.end;
            let FastWindow { batches, seq_len, .. } = window;
            let batches = batches?;
            let window_count: usize = batches.iter().map(|b| b.count()).sum();
            let tokens: usize = batches.iter().map(|b| b.tokens).sum();
            // 2. Forward and backward of each, gradients accumulated on the device; the next
            //    window is read while the last micro-batch runs.
            let mut loss_sum = 0.0;
            for (i, batch) in batches.iter().enumerate() {
                if i + 1 < batches.len() {
                    loss_sum += fast.train_micro_batch(batch, window_count)?;
                    continue;
                }
                let queued = fast.queue_micro_batch(batch, window_count)?;
                if state.step + 1 < t.max_steps {
                    prefetched = Some(FastWindow::read(
                        ds,
                        &mut order,
                        state.rows_consumed,
                        state.step + 2,
                        t,
                    )?);
                }
                loss_sum += fast.finish(queued)?;
            }
            (loss_sum / window_count as f64, None, tokens, window_count, seq_len)
        } else {
            let ds = ds.as_ref().expect("SFT and DPO read a tokens dataset");
            // 1. The window's micro-batches, and its count of loss tokens.
            let mut batches = Vec::with_capacity(t.grad_accum_steps);
            for _ in 0..t.grad_accum_steps {
                let idx = order.take(state.rows_consumed, t.micro_batch_size);
                state.rows_consumed += idx.len() as u64;
                let rows: Vec<TokensRow> = match &dpo {
                    None => ds.take(&idx)?,
                    Some(_) => pair_rows(ds, &idx)?,
                };
                let batch = sft::collate::<B>(&rows, device).map_err(|e| match e {
                    TrainError::Batch(m) => TrainError::Batch(format!("step {}: rows {idx:?}: {m}", state.step + 1)),
                    other => other,
                })?;
                batches.push((batch, rows));
            }
            let window_count: usize = batches.iter().map(|(b, _)| b.count).sum();
            let tokens: usize = batches.iter().map(|(b, _)| b.tokens).sum();
            let seq_len = batches.iter().map(|(b, _)| b.input_ids.dims()[1]).max().unwrap_or(0);
            // 2. Backward of each micro-batch's summed loss over the window's count.
            let mut accumulator = GradientsAccumulator::<Decoder<B>>::new();
            let mut loss_sum = 0.0;
            if let Some(flow) = &dpo {
                // DPO's loss is a mean over pairs: each micro-batch weighs by its share of the window.
                let window_pairs: usize = batches.iter().map(|(_, rows)| rows.len() / 2).sum();
                for (batch, rows) in &batches {
                    let (loss, m) = super::dpo::batch_loss(&flow.options, &model, batch, rows, &flow.reference)?;
                    let w = (rows.len() / 2) as f64 / window_pairs.max(1) as f64;
                    loss_sum += w * loss.clone().into_scalar().elem::<f64>();
                    dpo_metrics.add_weighted(&m, w);
                    let grads = loss.mul_scalar(w).backward();
                    accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
                }
            }
            for (batch, rows) in batches.iter().filter(|_| dpo.is_none()) {
                let (loss, ce) = match &localist {
                    None => {
                        let loss = sft::loss(&model, batch);
                        let ce = loss.clone().into_scalar().elem::<f64>();
                        (loss, ce)
                    }
                    Some(run) => {
                        let (loss, ce, penalty, layers) = sft::loss_localist(&model, batch, rows, run);
                        penalty_sum += penalty * batch.count as f64;
                        accumulate_layers(&mut attention, &layers, batch.count, window_count);
                        (loss, ce)
                    }
                };
                let grads = loss.div_scalar(window_count as f64).backward();
                accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
                loss_sum += ce;
            }
            // SFT sums over tokens and divides by the window's count; DPO's sum is already a mean.
            let loss = if dpo.is_some() {
                loss_sum
            } else {
                loss_sum / window_count as f64
            };
            (loss, Some(accumulator.grads()), tokens, window_count, seq_len)
        };
        // 3. Clip, guard, step.
        let max_norm = t.grad_clip.filter(|c| *c > 0.0);
        let (grad_norm, mut grads) = match (grads, fast.as_mut()) {
            (Some(mut grads), _) => (clip_global_norm(&model, &mut grads, max_norm), Some(grads)),
            (None, Some(fast)) => (fast.grad_norm()?, None),
            (None, None) => unreachable!("the burn path always has gradients"),
        };
        if !loss.is_finite() || !grad_norm.is_finite() {
            let last = last_checkpoint
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into());
            return Err(TrainError::Batch(format!(
                "step {}: the loss ({loss}) or gradient norm ({grad_norm}) is not finite; stopped without stepping. Last good checkpoint: {last}\n  hint: lower train.lr, or check the data with `firebrand data debug`",
                state.step + 1
            )));
        }
        let lr = lr_at(
            state.step,
            t.max_steps,
            t.warmup_steps,
            t.lr,
            t.min_lr_ratio,
            t.schedule,
        );
        match (grads.take(), fast.as_mut()) {
            (Some(grads), _) => model = optimizer.step(lr, model, grads),
            (None, Some(fast)) => fast.step(lr, grad_norm, max_norm)?,
            (None, None) => unreachable!("the burn path always has gradients"),
        }
        state.step += 1;
        last_loss = loss;
        // 4. Log.
        let seconds = step_start.elapsed().as_secs_f64();
        let flops = flops_per_token(&plan.config, seq_len) * tokens as f64;
        // GRPO's MFU counts the training part of the step only (sampling is not 6N per token).
        let compute_s = (seconds - grpo_metrics.as_ref().map_or(0.0, |g| g.rollout_s)).max(1e-9);
        let m = StepMetrics {
            step: state.step,
            loss,
            lr,
            grad_norm,
            tokens,
            loss_tokens: window_count,
            tokens_per_s: tokens as f64 / seconds,
            mfu: peak_flops.map(|p| flops / compute_s / p),
            elapsed_s: started.elapsed().as_secs_f64(),
            localist_penalty: localist.as_ref().map(|_| penalty_sum / window_count as f64),
            attention,
            dpo: dpo.as_ref().map(|_| dpo_metrics),
            grpo: grpo_metrics.map(|mut g| {
                g.train_s = compute_s;
                g.train_tokens_per_s = tokens as f64 / compute_s;
                g
            }),
        };
        write_line(
            &mut metrics,
            &metrics_path,
            &serde_json::to_value(&m).expect("metrics serialize"),
        )?;
        on_event(&Event::Step(Box::new(m)));
        // 5. Evaluate.
        if t.eval_every > 0 && state.step % t.eval_every == 0 && !eval_rows.is_empty() {
            let (event, line) = evaluate_at(&model, state.step, grpo.as_ref(), fast.as_mut())?;
            write_line(&mut metrics, &metrics_path, &line)?;
            on_event(&event);
        }
        // 6. Checkpoint.
        let due = t.checkpoint_every > 0 && state.step % t.checkpoint_every == 0;
        if due || state.step == t.max_steps {
            if let Some(fast) = fast.as_mut() {
                (model, optimizer) = fast.to_burn(&plan.config, optimizer, device)?;
            }
            let dir = save(plan, &model, &optimizer, &state)?;
            if fast.is_some() {
                optimizer = fresh_optimizer();
            }
            on_event(&Event::Checkpoint(dir.clone()));
            last_checkpoint = Some(dir);
        }
    }
    let checkpoint = match last_checkpoint {
        Some(p) => p,
        None => {
            if let Some(fast) = fast.as_mut() {
                (model, optimizer) = fast.to_burn(&plan.config, optimizer, device)?;
            }
            save(plan, &model, &optimizer, &state)?
        }
    };
    Ok(Summary {
        steps: state.step,
        last_loss,
        checkpoint,
    })
}

/// What the held-out evaluation needs: the held-out units and the method's state.
struct HeldOut<'a, B: AutodiffBackend> {
    rows: &'a [u64],
    ds: Option<&'a Dataset>,
    dpo: Option<&'a DpoFlow>,
    grpo: Option<&'a super::grpo_step::GrpoFlow<B>>,
    localist: Option<&'a LocalistRun>,
    batch: usize,
}

impl<B: AutodiffBackend> HeldOut<'_, B> {
    /// The held-out loss (SFT), loss and preference metrics (DPO) or greedy reward (GRPO) at
    /// `step`: the event to report and the `metrics.jsonl` line.
    fn evaluate(&self, model: &Decoder<B>, step: usize) -> Result<(Event, serde_json::Value), TrainError> {
        Ok(match (self.grpo, self.dpo, self.ds) {
            (Some(flow), _, _) => {
                let (reward, line) = flow.evaluate(model, self.rows, self.batch, step)?;
                (Event::EvalReward(step, reward), line)
            }
            (None, Some(flow), Some(ds)) => {
                let (loss, m) = evaluate_dpo(model, ds, self.rows, self.batch, flow)?;
                let mut line = serde_json::json!({"step": step, "eval/loss": loss});
                if let (Some(obj), serde_json::Value::Object(extra)) = (
                    line.as_object_mut(),
                    serde_json::to_value(m).expect("metrics serialize"),
                ) {
                    obj.extend(extra.into_iter().map(|(k, v)| (format!("eval/{k}"), v)));
                }
                (Event::Eval(step, loss), line)
            }
            (None, _, ds) => {
                let ds = ds.expect("SFT reads a tokens dataset");
                let loss = evaluate(model, ds, self.rows, self.batch, self.localist)?;
                (
                    Event::Eval(step, loss),
                    serde_json::json!({"step": step, "eval/loss": loss}),
                )
            }
        })
    }
}

/// Adds a micro-batch's per-layer metrics to the window's, weighted by its share of targets.
fn accumulate_layers(
    window: &mut Vec<crate::localist::LayerMetrics>,
    batch: &[crate::localist::LayerMetrics],
    count: usize,
    window_count: usize,
) {
    let w = count as f64 / window_count.max(1) as f64;
    if window.is_empty() {
        window.extend(batch.iter().map(|_| crate::localist::LayerMetrics {
            entropy_bits: 0.0,
            fidelity: 0.0,
        }));
    }
    for (acc, m) in window.iter_mut().zip(batch) {
        acc.entropy_bits += w * m.entropy_bits;
        acc.fidelity += w * m.fidelity;
    }
}

/// Mean loss per loss token over the held-out rows, without gradients.
fn evaluate<B: AutodiffBackend>(
    model: &Decoder<B>,
    ds: &Dataset,
    rows: &[u64],
    batch: usize,
    localist: Option<&LocalistRun>,
) -> Result<f64, TrainError> {
    let valid = model.valid();
    let device = valid.embed_tokens.weight.val().device();
    let (mut sum, mut count) = (0.0, 0usize);
    for idx in rows.chunks(batch.max(1)) {
        let rows: Vec<TokensRow> = ds.take(idx)?;
        let b = sft::collate::<B::InnerBackend>(&rows, &device)?;
        sum += match localist {
            None => sft::loss(&valid, &b).into_scalar().elem::<f64>(),
            // The bias is part of the model at this λ; the penalty is not part of the loss.
            Some(run) => sft::loss_localist(&valid, &b, &rows, run).1,
        };
        count += b.count;
    }
    Ok(sum / count.max(1) as f64)
}

/// One window of micro-batches for the fast path, read from the data order at `start`.
struct FastWindow {
    /// Data position of its first row.
    start: u64,
    /// Data position after its last row.
    end: u64,
    /// The micro-batches, or why the rows cannot be trained on (raised when the window is used).
    batches: Result<Vec<crate::fast::batch::HostBatch>, TrainError>,
    /// Longest row.
    seq_len: usize,
}

impl FastWindow {
    fn read(
        ds: &Dataset,
        order: &mut DataOrder,
        start: u64,
        step: usize,
        t: &crate::recipe::TrainSection,
    ) -> Result<Self, TrainError> {
        let (mut pos, mut seq_len, mut batches) = (start, 0, Vec::with_capacity(t.grad_accum_steps));
        let mut bad = None;
        for _ in 0..t.grad_accum_steps {
            let idx = order.take(pos, t.micro_batch_size);
            pos += idx.len() as u64;
            let rows: Vec<TokensRow> = ds.take(&idx)?;
            seq_len = seq_len.max(rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0));
            match crate::fast::batch::HostBatch::new(&rows) {
                Ok(b) => batches.push(b),
                Err(TrainError::Batch(m)) => {
                    bad.get_or_insert(TrainError::Batch(format!("step {step}: rows {idx:?}: {m}")));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(FastWindow {
            start,
            end: pos,
            batches: match bad {
                Some(e) => Err(e),
                None => Ok(batches),
            },
            seq_len,
        })
    }
}

/// Mean loss per loss token over the held-out rows, on the fast path.
fn evaluate_fast(fast: &mut crate::fast::FastRun, ds: &Dataset, rows: &[u64], batch: usize) -> Result<f64, TrainError> {
    let (mut sum, mut count) = (0.0, 0usize);
    for idx in rows.chunks(batch.max(1)) {
        let (s, c) = fast.eval_rows(&ds.take(idx)?)?;
        sum += s;
        count += c;
    }
    Ok(sum / count.max(1) as f64)
}

/// DPO's mean loss and metrics over the held-out pairs, without gradients.
fn evaluate_dpo<B: AutodiffBackend>(
    model: &Decoder<B>,
    ds: &Dataset,
    pairs: &[u64],
    batch: usize,
    flow: &DpoFlow,
) -> Result<(f64, super::dpo::DpoMetrics), TrainError> {
    let valid = model.valid();
    let device = valid.embed_tokens.weight.val().device();
    let (mut loss, mut metrics) = (0.0, super::dpo::DpoMetrics::default());
    for chunk in pairs.chunks(batch.max(1)) {
        let rows = pair_rows(ds, chunk)?;
        let b = sft::collate::<B::InnerBackend>(&rows, &device)?;
        let (l, m) = super::dpo::batch_loss(&flow.options, &valid, &b, &rows, &flow.reference)?;
        let w = chunk.len() as f64 / pairs.len() as f64;
        loss += w * l.into_scalar().elem::<f64>();
        metrics.add_weighted(&m, w);
    }
    Ok((loss, metrics))
}

/// The reference log-probs of every pair of the run's tokens, from the preference dataset's cache
/// or computed now (see `reference.rs`).
fn reference_logps<B: AutodiffBackend>(
    plan: &RunPlan,
    tokens: &Dataset,
    device: &B::Device,
) -> Result<(super::reference::ReferenceLogps, super::reference::CacheReport), TrainError> {
    let recipe = &plan.recipe;
    let reference = match &recipe.method {
        crate::recipe::Method::Dpo { reference: Some(r), .. } => r.clone(),
        _ => recipe
            .model
            .init
            .clone()
            .ok_or_else(|| TrainError::Config("method dpo needs method.reference or model.init".into()))?,
    };
    let preferences = super::data::text_path(recipe, &plan.run_dir)
        .ok_or_else(|| TrainError::Config("method dpo reads data.dataset or data.query".into()))?;
    let tokenizer = recipe
        .data
        .tokenizer
        .clone()
        .ok_or_else(|| TrainError::Config("method dpo needs data.tokenizer".into()))?;
    let opts = recipe.data.tokenize_options()?;
    let key = super::reference::cache_key(&reference, opts.template.name(), &tokenizer, opts.max_len)?;
    super::reference::ensure::<B::InnerBackend>(
        &preferences,
        tokens,
        &reference,
        &key,
        device,
        recipe.train.micro_batch_size,
        |_| {},
    )
}

/// Writes a checkpoint of the current state atomically.
fn save<B: AutodiffBackend>(
    plan: &RunPlan,
    model: &Decoder<B>,
    optimizer: &OptimizerAdaptor<AdamW, Decoder<B>, B>,
    state: &LoopState,
) -> Result<PathBuf, TrainError> {
    let tmp = checkpoint::begin(&plan.run_dir, state.step)?;
    model
        .clone()
        .save_file(tmp.join("model"), &recorder())
        .map_err(|e| rec_err(&tmp, e))?;
    recorder()
        .record(optimizer.to_record(), tmp.join("optim"))
        .map_err(|e| rec_err(&tmp, e))?;
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

/// Opens `metrics.jsonl`: truncated for a fresh run; for a resumed one, cut back to the lines of
/// steps up to the checkpoint, so the file reads as one uninterrupted run.
pub(crate) fn open_metrics(path: &Path, resume_step: Option<usize>) -> Result<std::fs::File, TrainError> {
    let kept = match resume_step {
        None => String::new(),
        Some(step) => std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s as usize <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect(),
    };
    std::fs::write(path, kept).map_err(|e| TrainError::io(path, e))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))
}

pub(crate) fn write_line(file: &mut std::fs::File, path: &Path, v: &serde_json::Value) -> Result<(), TrainError> {
    writeln!(file, "{v}").map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_order_is_a_seeded_permutation_per_epoch() {
        let mut a = DataOrder::new((10..20).collect(), 7);
        let first = a.take(0, 10);
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (10..20).collect::<Vec<_>>());
        // Reading from any position gives the same rows as reading straight through.
        let mut b = DataOrder::new((10..20).collect(), 7);
        let straight = b.take(0, 25);
        let mut c = DataOrder::new((10..20).collect(), 7);
        assert_eq!(c.take(13, 12), straight[13..].to_vec());
        assert_ne!(straight[..10], straight[10..20], "each epoch has its own order");
    }

    #[test]
    fn eval_rows_are_held_out() {
        let (eval, train) = split(100, 10, 3);
        assert_eq!(eval.len(), 10);
        assert_eq!(train.len(), 90);
        assert!(eval.iter().all(|e| !train.contains(e)));
        assert_eq!(split(100, 10, 3), (eval, train));
    }
}
