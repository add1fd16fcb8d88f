//! Supervised fine-tuning: the masked cross-entropy of a `tokens` dataset's rows.
//!
//! The loss of a window is `−Σ log p / W` over its counted targets (`engine::counted_targets`),
//! `W` the window's count of them, whatever its split into micro-batches (torchtune's
//! normalisation; nanoGPT's division by the accumulation steps is wrong once loss masks make
//! micro-batches unequal). Its gradient, `−1/W` per target, is known before the forward, so the
//! engine runs the backward in the same pass.
//!
//! With `[localist]` (`crate::localist`), each layer's penalty `λ_l·γ·Ω_l` is added per
//! micro-batch weighted by its count of targets (Ω is a mean per query), so that after the
//! division by `W` it weighs like a per-token term; the reported loss is the cross-entropy alone,
//! and `localist_penalty` the penalty per token. Evaluation keeps the bias (it is part of the
//! model at this λ) and leaves the penalty out.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use firebrand_data::{Dataset, DatasetKind, TokensRow};

use crate::engine::api::{Engine, Forward, Grad, Micro};
use crate::error::TrainError;
use crate::localist::{LayerMetrics, Penalty};
use crate::trainer::method::api::{
    Evaluation, Loss, Method, MethodMetrics, Window, metrics_of, read_window, score_units,
};
use crate::trainer::order::Cursor;
use crate::trainer::plan::RunPlan;

/// SFT's metrics (only with `[localist]`).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct SftMetrics {
    /// The penalty term per loss token of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localist_penalty: Option<f64>,
    /// Each layer's attention entropy (bits) and fidelity over the window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attention: Vec<LayerMetrics>,
}

/// An SFT run's data and its window's metrics.
pub struct Sft {
    ds: Dataset,
    path: PathBuf,
    micro_batch: usize,
    accum: usize,
    /// `λ_l·γ` of each layer, when `[localist]` has a penalty.
    penalty_scales: Option<Vec<f64>>,
    metrics: SftMetrics,
}

impl Sft {
    /// Opens the run's `tokens` dataset.
    ///
    /// # Errors
    /// When the dataset is missing or of another kind, or `[localist]` does not resolve.
    pub fn open(plan: &RunPlan) -> Result<Self, TrainError> {
        let path = crate::trainer::data::tokens_path(&plan.recipe, &plan.run_dir);
        let ds = Dataset::open_kind(&path, DatasetKind::Tokens)?;
        let penalty_scales = match &plan.recipe.localist {
            Some(c) if c.penalty != Penalty::None => Some(
                c.layer_lambdas(plan.config.num_hidden_layers)
                    .iter()
                    .map(|l| l * c.gamma)
                    .collect(),
            ),
            _ => None,
        };
        Ok(Sft {
            ds,
            path,
            micro_batch: plan.recipe.train.micro_batch_size,
            accum: plan.recipe.train.grad_accum_steps,
            metrics: SftMetrics {
                localist_penalty: plan.recipe.localist.as_ref().map(|_| 0.0),
                attention: Vec::new(),
            },
            penalty_scales,
        })
    }

    fn rows(&self, idx: &[u64]) -> Result<Vec<TokensRow>, TrainError> {
        Ok(self.ds.take(idx)?)
    }
}

/// `∂loss/∂log p = −1/W` for every target of `micro`, and the penalty's `λ_l·γ·count/W`.
fn gradient(micro: &Micro, window_count: usize, penalty_scales: Option<&[f64]>) -> Grad {
    let w = window_count.max(1) as f64;
    Grad {
        dlogp: vec![(-1.0 / w) as f32; micro.count()],
        domega: penalty_scales.map_or_else(Vec::new, |s| {
            s.iter().map(|&x| (x * micro.count() as f64 / w) as f32).collect()
        }),
    }
}

impl<B: AutodiffBackend> Method<B> for Sft {
    fn units(&self) -> u64 {
        self.ds.len().unwrap_or(0) as u64
    }

    fn source(&self) -> PathBuf {
        self.path.clone()
    }

    fn window(&mut self, engine: &mut dyn Engine<B>, cursor: &mut Cursor, step: usize) -> Result<Window, TrainError> {
        read_window(engine, cursor, step, (self.accum, self.micro_batch), |idx| {
            self.rows(idx)
        })
    }

    fn fixed(&self, micro: &Micro, window: &Window) -> Option<Grad> {
        Some(gradient(micro, window.count, self.penalty_scales.as_deref()))
    }

    fn loss(&mut self, _i: usize, micro: &Micro, forward: &Forward, window: &Window) -> Result<Loss, TrainError> {
        let w = window.count.max(1) as f64;
        let ce = -forward.logp.iter().map(|&x| f64::from(x)).sum::<f64>();
        if self.metrics.localist_penalty.is_some() {
            let share = micro.count() as f64 / w;
            let penalty: f64 = match &self.penalty_scales {
                Some(s) => s.iter().zip(&forward.omega).map(|(s, o)| s * o).sum(),
                None => 0.0,
            };
            if let Some(p) = self.metrics.localist_penalty.as_mut() {
                *p += penalty * share;
            }
            let acc = &mut self.metrics.attention;
            if acc.is_empty() {
                acc.resize(forward.attention.len(), LayerMetrics::default());
            }
            for (a, m) in acc.iter_mut().zip(&forward.attention) {
                a.entropy_bits += share * m.entropy_bits;
                a.fidelity += share * m.fidelity;
            }
        }
        Ok(Loss {
            value: ce / w,
            grad: gradient(micro, window.count, self.penalty_scales.as_deref()),
        })
    }

    fn finish(&mut self, _window: &Window, _seconds: f64) -> MethodMetrics {
        let fresh = SftMetrics {
            localist_penalty: self.metrics.localist_penalty.map(|_| 0.0),
            attention: Vec::new(),
        };
        metrics_of(&std::mem::replace(&mut self.metrics, fresh))
    }

    fn evaluate(
        &mut self,
        engine: &mut dyn Engine<B>,
        units: &[u64],
        batch: usize,
        step: usize,
    ) -> Result<(Evaluation, serde_json::Value), TrainError> {
        let (mut sum, mut count) = (0.0, 0usize);
        score_units(
            engine,
            units,
            batch,
            step,
            |idx| self.rows(idx),
            |micro, f| {
                sum -= f.logp.iter().map(|&x| f64::from(x)).sum::<f64>();
                count += micro.count();
                Ok(())
            },
        )?;
        let loss = sum / count.max(1) as f64;
        Ok((
            Evaluation::Loss(loss),
            serde_json::json!({"step": step, "eval/loss": loss}),
        ))
    }
}
