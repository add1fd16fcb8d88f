//! The method interface: a step's [`Window`] of micro-batches, a micro-batch's [`Loss`], what a
//! method reports ([`Note`], [`Evaluation`], [`MethodMetrics`]), and the [`Method`] trait (see the
//! `method` module's doc).

use std::path::PathBuf;

use crate::recipe::Recipe;

use burn::tensor::backend::AutodiffBackend;

use firebrand_data::TokensRow;

use crate::engine::api::{Engine, Forward, Grad, Micro, Want};
use crate::error::TrainError;
use crate::trainer::method::reference::CacheReport;
use crate::trainer::order::Cursor;

/// One optimizer step's micro-batches, and what the loop needs to know of them.
#[derive(Clone)]
pub struct Window {
    /// The micro-batches.
    pub micros: Vec<Micro>,
    /// Data position (in units) of the window's first unit, and after its last.
    pub start: u64,
    /// See `start`.
    pub end: u64,
    /// Counted targets of all micro-batches.
    pub count: usize,
    /// Tokens, padding excluded.
    pub tokens: usize,
    /// The longest row.
    pub seq_len: usize,
    /// Seconds spent sampling and scoring the window's completions (GRPO), 0 otherwise.
    pub rollout_s: f64,
}

impl Window {
    /// The window of `micros`, read from data positions `start..end`.
    pub fn new(micros: Vec<Micro>, start: u64, end: u64) -> Self {
        Window {
            count: micros.iter().map(Micro::count).sum(),
            tokens: micros.iter().map(|m| m.tokens).sum(),
            seq_len: micros.iter().map(|m| m.seq_len).max().unwrap_or(0),
            micros,
            start,
            end,
            rollout_s: 0.0,
        }
    }
}

/// A micro-batch's share of the window's loss, and its gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct Loss {
    /// Its share of the window's loss (the window's loss is the sum of the shares).
    pub value: f64,
    /// ∂(window loss)/∂log p of its targets (and ∂/∂Ω of each layer).
    pub grad: Grad,
}

/// What a method reports besides its steps.
#[derive(Debug, Clone)]
pub enum Note {
    /// DPO's reference log-probs are ready (reused from the cache or computed).
    Reference(CacheReport),
    /// GRPO's prompts are loaded: how many, and how many were left out.
    Prompts {
        /// Prompts to sample from.
        kept: usize,
        /// Left out: longer than data.max_len − method.max_completion_length.
        too_long: usize,
        /// Left out: no token.
        empty: usize,
    },
    /// GRPO logged a group of completions.
    Completions(Vec<LoggedSample>),
}

/// A held-out evaluation's headline number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Evaluation {
    /// Mean loss per unit (SFT: per loss token; DPO: per pair).
    Loss(f64),
    /// Mean reward of greedy completions (GRPO).
    Reward(f64),
}

/// A step's metrics of the method, beside the loop's own in `metrics.jsonl`, under TRL's names
/// (`rewards/margins`, `reward`, `kl`, ...).
pub type MethodMetrics = serde_json::Map<String, serde_json::Value>;

/// The metrics of a serializable struct, as [`MethodMetrics`].
pub fn metrics_of(m: &impl serde::Serialize) -> MethodMetrics {
    match serde_json::to_value(m) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => MethodMetrics::new(),
    }
}

/// One completion as `RUN/completions.jsonl` records it (GRPO).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoggedSample {
    /// The step that sampled it.
    pub step: usize,
    /// The prompt's last message.
    pub prompt: String,
    /// The completion's text.
    pub completion: String,
    /// Its total reward.
    pub reward: Option<f64>,
    /// Its advantage.
    pub advantage: f64,
    /// Its length in tokens.
    pub tokens: usize,
}

/// What a training method adds to the shared loop.
pub trait Method<B: AutodiffBackend> {
    /// Training units in the data (rows, pairs or prompts); the loop splits and orders them.
    fn units(&self) -> u64;

    /// Where the units come from (for messages).
    fn source(&self) -> PathBuf;

    /// What every forward of a training micro-batch computes: log-probs at temperature 1 with
    /// gradients, unless the method asks for more.
    fn want(&self) -> Want {
        Want::default()
    }

    /// Whether the loop may build the next step's window while the device runs the current step
    /// (not GRPO's: it samples from the policy the step updates, and its windows carry state).
    fn read_ahead(&self) -> bool {
        true
    }

    /// The micro-batches of step `step` (0-based), taking units from `cursor` when it needs new
    /// ones; `engine` prepares the rows (and GRPO samples from its weights).
    ///
    /// # Errors
    /// When the data cannot be read, a micro-batch does not form (naming the step and its rows),
    /// or sampling fails.
    fn window(&mut self, engine: &mut dyn Engine<B>, cursor: &mut Cursor, step: usize) -> Result<Window, TrainError>;

    /// The gradient of a micro-batch when it is known before its forward (SFT's: −1/W per target,
    /// W the window's count of targets), so the engine can run the backward with the forward.
    fn fixed(&self, _micro: &Micro, _window: &Window) -> Option<Grad> {
        None
    }

    /// The `i`-th micro-batch's share of the window's loss from its forward, and its gradient.
    ///
    /// # Errors
    /// When the forward does not fit the micro-batch, or a unit lacks what the loss needs.
    fn loss(&mut self, i: usize, micro: &Micro, forward: &Forward, window: &Window) -> Result<Loss, TrainError>;

    /// The step's metrics, accumulated over the window's micro-batches (then reset); `seconds` is
    /// the whole step's time.
    fn finish(&mut self, window: &Window, seconds: f64) -> MethodMetrics;

    /// The held-out evaluation of `units` in micro-batches of `batch`: the headline and the
    /// `metrics.jsonl` line.
    ///
    /// # Errors
    /// When the data cannot be read, or a forward or sampling fails.
    fn evaluate(
        &mut self,
        engine: &mut dyn Engine<B>,
        units: &[u64],
        batch: usize,
        step: usize,
    ) -> Result<(Evaluation, serde_json::Value), TrainError>;

    /// What happened since the last call (references computed, prompts loaded, completions
    /// logged).
    fn notes(&mut self) -> Vec<Note> {
        Vec::new()
    }
}

/// Tags a micro-batch's error with its step and units.
pub(crate) fn at_step(step: usize, units: &[u64]) -> impl Fn(TrainError) -> TrainError + '_ {
    move |e| match e {
        TrainError::Batch(m) => TrainError::Batch(format!("step {}: rows {units:?}: {m}", step + 1)),
        other => other,
    }
}

/// A window of `accum` micro-batches of `micro_batch` units each, read from `cursor` and made into
/// rows by `rows` (SFT's rows, DPO's pairs), prepared by `engine`.
///
/// # Errors
/// When the rows cannot be read or a micro-batch does not form (naming the step and its units).
pub fn read_window<B: AutodiffBackend>(
    engine: &mut dyn Engine<B>,
    cursor: &mut Cursor,
    step: usize,
    (accum, micro_batch): (usize, usize),
    rows: impl Fn(&[u64]) -> Result<Vec<TokensRow>, TrainError>,
) -> Result<Window, TrainError> {
    let start = cursor.pos;
    let mut micros = Vec::with_capacity(accum);
    for _ in 0..accum {
        let idx = cursor.take(micro_batch);
        micros.push(engine.prepare(rows(&idx)?).map_err(at_step(step, &idx))?);
    }
    Ok(Window::new(micros, start, cursor.pos))
}

/// Scores held-out `units` in micro-batches of `batch` (forwards without gradients), handing each
/// micro-batch and its forward to `seen`.
///
/// # Errors
/// When the rows cannot be read, a micro-batch does not form, or a forward fails.
pub fn score_units<B: AutodiffBackend>(
    engine: &mut dyn Engine<B>,
    units: &[u64],
    batch: usize,
    step: usize,
    rows: impl Fn(&[u64]) -> Result<Vec<TokensRow>, TrainError>,
    mut seen: impl FnMut(&Micro, &Forward) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    for idx in units.chunks(batch.max(1)) {
        let micro = engine.prepare(rows(idx)?).map_err(at_step(step, idx))?;
        engine.forward(&micro, Want::no_grad(), None)?;
        seen(&micro, &engine.collect()?)?;
    }
    Ok(())
}

/// The text dataset and the tokenizer a method reads (`method` names it in errors).
///
/// # Errors
/// When the recipe gives neither `data.dataset` nor `data.query`, or no `data.tokenizer`.
pub fn text_and_tokenizer(
    recipe: &Recipe,
    run_dir: &std::path::Path,
    method: &str,
) -> Result<(PathBuf, PathBuf), TrainError> {
    let text = crate::trainer::data::text_path(recipe, run_dir)
        .ok_or_else(|| TrainError::Config(format!("method {method} reads data.dataset or data.query")))?;
    let tokenizer = recipe
        .data
        .tokenizer
        .clone()
        .ok_or_else(|| TrainError::Config(format!("method {method} needs data.tokenizer")))?;
    Ok((text, tokenizer))
}
