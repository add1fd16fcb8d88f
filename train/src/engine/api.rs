//! The engine interface: a micro-batch in the form every engine takes ([`Micro`]), what a forward
//! computes ([`Want`], [`Forward`]), the gradient a method sends back ([`Grad`]), and the
//! [`Engine`] trait (see the `engine` module's doc).

use std::any::Any;
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use firebrand_data::TokensRow;

use crate::engine::state::{EngineState, Tensors};
use crate::error::TrainError;
use crate::localist::LayerMetrics;
use crate::model::Decoder;

/// The positions of `row` whose next token is a target, with that token.
///
/// Position `t` predicts token `t + 1`. A target counts when `loss_mask[t + 1]` is set and tokens
/// `t` and `t + 1` belong to one document (one segment, or `t + 1` opens a segment that has
/// parents, as a Multiverse path or conclusion does), so the last token of one packed document
/// never learns to predict the first of the next. The row's columns must have equal lengths
/// ([`check_row`]).
pub fn counted_targets(row: &TokensRow) -> impl Iterator<Item = (usize, i32)> + '_ {
    let same_document = |i: usize| {
        let next = row.segment_ids[i + 1];
        next == row.segment_ids[i] || !row.parents_of(next.max(0) as usize).is_empty()
    };
    (0..row.input_ids.len().saturating_sub(1))
        .filter(move |&i| row.loss_mask[i + 1] && same_document(i))
        .map(|i| (i, row.input_ids[i + 1]))
}

/// Checks that a row's columns have equal lengths and its segment ids are not negative.
///
/// # Errors
/// Naming the lengths, or the position of the negative segment id.
pub fn check_row(row: &TokensRow) -> Result<(), TrainError> {
    let len = row.input_ids.len();
    if row.loss_mask.len() != len || row.position_ids.len() != len || row.segment_ids.len() != len {
        return Err(TrainError::Batch(format!(
            "a tokens row has columns of different lengths ({} ids, {} mask bits, {} positions, {} segments)",
            len,
            row.loss_mask.len(),
            row.position_ids.len(),
            row.segment_ids.len()
        )));
    }
    if let Some(i) = row.segment_ids.iter().position(|&s| s < 0) {
        return Err(TrainError::Batch(format!(
            "a tokens row has a negative segment id ({}) at position {i}",
            row.segment_ids[i]
        )));
    }
    Ok(())
}

/// One micro-batch on the host: its rows and, in the order every engine reports them, its counted
/// targets (row by row, positions ascending), plus what the engine prepared from the rows ahead of
/// time (the kernel engine's padded batch and mask tiles). Cloning shares what was prepared.
#[derive(Clone)]
pub struct Micro {
    /// The rows.
    pub rows: Vec<TokensRow>,
    /// The row of each counted target.
    pub target_row: Vec<u32>,
    /// Tokens, padding excluded.
    pub tokens: usize,
    /// The longest row.
    pub seq_len: usize,
    prepared: Option<Arc<dyn Any + Send + Sync>>,
}

impl Micro {
    /// The micro-batch of `rows`.
    ///
    /// # Errors
    /// When a row is malformed ([`check_row`]), no row has 2 tokens, or no row has a counted target
    /// (a micro-batch that would train on nothing is an error, never a silent zero loss).
    pub fn new(rows: Vec<TokensRow>) -> Result<Self, TrainError> {
        let mut target_row = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            check_row(row)?;
            target_row.extend(counted_targets(row).map(|_| r as u32));
        }
        let seq_len = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
        if seq_len < 2 {
            return Err(TrainError::Batch(
                "a micro-batch needs rows of at least 2 tokens".into(),
            ));
        }
        if target_row.is_empty() {
            return Err(TrainError::Batch(
                "a micro-batch has no token to train on (every loss-mask bit is off)\n  hint: check the dataset with `firebrand data debug`; `data tokenize` drops such rows".into(),
            ));
        }
        Ok(Micro {
            tokens: rows.iter().map(|r| r.input_ids.len()).sum(),
            rows,
            target_row,
            seq_len,
            prepared: None,
        })
    }

    /// Counted targets.
    pub fn count(&self) -> usize {
        self.target_row.len()
    }

    /// Counted targets of each row.
    pub fn row_counts(&self) -> Vec<usize> {
        let mut n = vec![0; self.rows.len()];
        for &r in &self.target_row {
            n[r as usize] += 1;
        }
        n
    }

    /// Sums `values` (one per counted target) per row.
    pub fn row_sums(&self, values: &[f32]) -> Vec<f64> {
        let mut s = vec![0.0; self.rows.len()];
        for (&r, &v) in self.target_row.iter().zip(values) {
            s[r as usize] += f64::from(v);
        }
        s
    }

    /// What the engine prepared, if it prepared a value of type `T`.
    pub fn prepared<T: 'static>(&self) -> Option<&T> {
        self.prepared.as_ref()?.downcast_ref()
    }

    /// Attaches what an engine prepared.
    pub fn with_prepared(mut self, p: impl Any + Send + Sync) -> Self {
        self.prepared = Some(Arc::new(p));
        self
    }
}

/// What a forward computes besides the targets' log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Want {
    /// Log-probabilities are of `softmax(logits / temperature)` (GRPO scores its samples under the
    /// distribution they were drawn from).
    pub temperature: f32,
    /// Each target's entropy (nats) of that distribution.
    pub entropy: bool,
    /// A backward follows (without it the engine keeps nothing for one).
    pub grad: bool,
}

impl Default for Want {
    fn default() -> Self {
        Want {
            temperature: 1.0,
            entropy: false,
            grad: true,
        }
    }
}

impl Want {
    /// A forward for scoring only (evaluation, references, old policies).
    pub fn no_grad() -> Self {
        Want {
            grad: false,
            ..Want::default()
        }
    }
}

/// What a forward reports, on the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forward {
    /// log p of each counted target, in [`Micro::target_row`] order.
    pub logp: Vec<f32>,
    /// Each target's entropy in nats (empty unless asked).
    pub entropy: Vec<f32>,
    /// Each layer's attention entropy and fidelity, with `[localist]` (empty otherwise).
    pub attention: Vec<LayerMetrics>,
    /// Each layer's penalty Ω (see `crate::localist`), with `[localist]`; 0 where it does not
    /// weigh (λ_l·γ = 0).
    pub omega: Vec<f64>,
}

/// The gradient of the loss with respect to what a forward reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grad {
    /// ∂loss/∂log p of each counted target.
    pub dlogp: Vec<f32>,
    /// ∂loss/∂Ω of each layer (empty: none).
    pub domega: Vec<f32>,
}

/// A model being trained (or scored): one forward/backward per micro-batch, gradients accumulated
/// over a window, then one AdamW step.
///
/// Per micro-batch the loop calls [`Engine::forward`], then [`Engine::collect`] (which waits for
/// the device), then [`Engine::backward`] with the method's gradient, unless the forward was given
/// a `fixed` gradient, in which case the engine ran the backward with the forward (SFT knows its
/// gradient before the forward: −1/W per target, W the window's count of targets; the kernel
/// engine then never holds more than a chunk of logits). `forward` and `backward` queue work and
/// return; `collect` waits. The loop reads the next window while the device runs the last
/// micro-batch of a step.
pub trait Engine<B: AutodiffBackend> {
    /// Prepares `rows` on the host (no device work: safe while the device runs queued work).
    ///
    /// # Errors
    /// Malformed rows, or rows with nothing to train on (see [`Micro::new`]).
    fn prepare(&self, rows: Vec<TokensRow>) -> Result<Micro, TrainError>;

    /// Queues the forward of `micro`; with `fixed`, also its backward for that gradient.
    ///
    /// # Errors
    /// Token ids outside the vocabulary, a device failure, or a `want` the engine cannot give.
    fn forward(&mut self, micro: &Micro, want: Want, fixed: Option<&Grad>) -> Result<(), TrainError>;

    /// The outputs of the last forward (waits for the device).
    ///
    /// # Errors
    /// On a device failure, or without a forward.
    fn collect(&mut self) -> Result<Forward, TrainError>;

    /// Queues the backward of the last forward (which must have had `want.grad` and no `fixed`),
    /// adding its gradients into the accumulated ones.
    ///
    /// # Errors
    /// On a device failure, or without a pending forward.
    fn backward(&mut self, grad: &Grad) -> Result<(), TrainError>;

    /// The global L2 norm of the accumulated gradients.
    ///
    /// # Errors
    /// On a device failure.
    fn grad_norm(&mut self) -> Result<f64, TrainError>;

    /// AdamW at `lr`, the gradients first scaled by [`crate::engine::optim::clip_factor`] of
    /// `norm` (the value [`Engine::grad_norm`] returned) and `max_norm`; then zeroes them.
    ///
    /// # Errors
    /// On a device failure.
    fn step(&mut self, lr: f64, norm: f64, max_norm: Option<f64>) -> Result<(), TrainError>;

    /// The weights and AdamW state under Hugging Face names (for checkpoints).
    ///
    /// # Errors
    /// When the device cannot be read.
    fn state(&mut self) -> Result<EngineState, TrainError>;

    /// The gradients accumulated since the last step, under Hugging Face names, HF layout.
    ///
    /// # Errors
    /// When the device cannot be read.
    fn gradients(&mut self) -> Result<Tensors, TrainError>;

    /// The current weights as a burn model for the sampler (GRPO's rollouts, evaluation).
    ///
    /// # Errors
    /// When the weights cannot be moved.
    fn sampler(&mut self, device: &B::Device) -> Result<Decoder<B::InnerBackend>, TrainError>;
}
