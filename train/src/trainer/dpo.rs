//! DPO's losses (Rafailov et al. 2023, Eq. 7) and the metrics users debug DPO with, on sequence
//! log-probabilities; the first piece of `method = "dpo"` (issue 9). The wiring into the shared
//! loop (preference collate, cached reference log-probs, staged recipes) is not here yet.
//!
//! With Δ = (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x)), log-probs summed
//! over completion tokens:
//! - `sigmoid`: −log σ(βΔ); with label smoothing ε (cDPO, the "robust to label noise" form TRL used
//!   to fold into sigmoid): −(1 − ε) log σ(βΔ) − ε log σ(−βΔ);
//! - `hinge`: max(0, 1 − βΔ) (SLiC);
//! - `ipo`: (Δ̄ − 1/(2β))², where Δ̄ uses per-token averaged log-ratios, as TRL does after
//!   confirming it with the IPO authors (β plays τ's role).
//!
//! Each loss is a mean over the pairs of the batch. Rewards are the implicit ones, β(log π − log π_ref)
//! of each completion; accuracy is the share of pairs whose chosen reward beats the rejected one.

use burn::tensor::activation::{log_sigmoid, relu};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

use super::sft::{SftBatch, target_logps};
use crate::error::TrainError;
use crate::model::Decoder;

/// Which DPO loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DpoLoss {
    /// −log σ(βΔ), the paper's.
    #[default]
    Sigmoid,
    /// max(0, 1 − βΔ).
    Hinge,
    /// (Δ̄ − 1/(2β))² on per-token averaged log-ratios.
    Ipo,
}

/// DPO's options (TRL's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpoOptions {
    /// β (default 0.1).
    pub beta: f64,
    /// The loss.
    pub loss: DpoLoss,
    /// ε of cDPO label smoothing, sigmoid only (default 0).
    pub label_smoothing: f64,
}

impl Default for DpoOptions {
    fn default() -> Self {
        DpoOptions {
            beta: 0.1,
            loss: DpoLoss::Sigmoid,
            label_smoothing: 0.0,
        }
    }
}

impl DpoOptions {
    /// Checks the ranges.
    ///
    /// # Errors
    /// β ≤ 0, ε outside [0, 0.5), or label smoothing with a loss other than sigmoid.
    pub fn validate(&self) -> Result<(), TrainError> {
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return Err(TrainError::Config(format!("dpo beta must be > 0 (got {})", self.beta)));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return Err(TrainError::Config(format!(
                "dpo label_smoothing must lie in [0, 0.5) (got {})",
                self.label_smoothing
            )));
        }
        if self.label_smoothing > 0.0 && self.loss != DpoLoss::Sigmoid {
            return Err(TrainError::Config(
                "dpo label_smoothing applies to the sigmoid loss only".into(),
            ));
        }
        Ok(())
    }
}

/// Sequence log-probabilities of a batch of pairs, each `[pairs]`.
#[derive(Debug, Clone)]
pub struct PairLogps<B: Backend> {
    /// log π(y_w|x), summed over the chosen completion's tokens.
    pub chosen: Tensor<B, 1>,
    /// log π(y_l|x).
    pub rejected: Tensor<B, 1>,
    /// log π_ref(y_w|x).
    pub ref_chosen: Tensor<B, 1>,
    /// log π_ref(y_l|x).
    pub ref_rejected: Tensor<B, 1>,
    /// Tokens of each chosen completion (for IPO's averages).
    pub chosen_tokens: Tensor<B, 1>,
    /// Tokens of each rejected completion.
    pub rejected_tokens: Tensor<B, 1>,
}

/// Batch means of what DPO runs are debugged with (logged under TRL's names).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct DpoMetrics {
    /// β(log π − log π_ref) of the chosen completions.
    #[serde(rename = "rewards/chosen")]
    pub reward_chosen: f64,
    /// The same of the rejected completions.
    #[serde(rename = "rewards/rejected")]
    pub reward_rejected: f64,
    /// Chosen minus rejected reward.
    #[serde(rename = "rewards/margins")]
    pub margin: f64,
    /// Share of pairs with a positive margin.
    #[serde(rename = "rewards/accuracies")]
    pub accuracy: f64,
    /// Policy log-prob of the chosen completions.
    #[serde(rename = "logps/chosen")]
    pub logp_chosen: f64,
    /// Policy log-prob of the rejected completions.
    #[serde(rename = "logps/rejected")]
    pub logp_rejected: f64,
}

impl DpoMetrics {
    /// `self + w · other`, field by field (for weighted means over micro-batches).
    pub fn add_weighted(&mut self, other: &DpoMetrics, w: f64) {
        self.reward_chosen += w * other.reward_chosen;
        self.reward_rejected += w * other.reward_rejected;
        self.margin += w * other.margin;
        self.accuracy += w * other.accuracy;
        self.logp_chosen += w * other.logp_chosen;
        self.logp_rejected += w * other.logp_rejected;
    }
}

/// The loss and metrics of a micro-batch of pairs collated as [chosen rows..., rejected rows...]
/// (`rows` is the batch's token rows, for the pair ids), with the reference log-probs by pair id.
///
/// # Errors
/// When a pair has no reference log-probs.
pub fn batch_loss<B: Backend>(
    options: &DpoOptions,
    model: &Decoder<B>,
    batch: &SftBatch<B>,
    rows: &[firebrand_data::TokensRow],
    reference: &std::collections::HashMap<String, (f64, f64)>,
) -> Result<(Tensor<B, 1>, DpoMetrics), TrainError> {
    let n = rows.len() / 2;
    let device = batch.weights.device();
    let logps = sequence_logps(model, batch);
    let tokens = batch.weights.clone().sum_dim(1).reshape([2 * n]);
    let mut ref_c = Vec::with_capacity(n);
    let mut ref_r = Vec::with_capacity(n);
    for row in &rows[..n] {
        let id = row.source_ids.first().map(String::as_str).unwrap_or("");
        let &(c, r) = reference
            .get(id)
            .ok_or_else(|| TrainError::Batch(format!("pair `{id}` has no reference log-probs")))?;
        ref_c.push(c as f32);
        ref_r.push(r as f32);
    }
    let p = PairLogps {
        chosen: logps.clone().slice(0..n),
        rejected: logps.slice(n..2 * n),
        ref_chosen: Tensor::from_floats(ref_c.as_slice(), &device),
        ref_rejected: Tensor::from_floats(ref_r.as_slice(), &device),
        chosen_tokens: tokens.clone().slice(0..n),
        rejected_tokens: tokens.slice(n..2 * n),
    };
    Ok(dpo_loss(options, &p))
}

/// The loss (a one-element tensor, the mean over pairs) and the metrics.
pub fn dpo_loss<B: Backend>(options: &DpoOptions, p: &PairLogps<B>) -> (Tensor<B, 1>, DpoMetrics) {
    let beta = options.beta;
    let chosen_ratio = p.chosen.clone() - p.ref_chosen.clone();
    let rejected_ratio = p.rejected.clone() - p.ref_rejected.clone();
    let logits = (chosen_ratio.clone() - rejected_ratio.clone()).mul_scalar(beta);
    let per_pair = match options.loss {
        DpoLoss::Sigmoid => {
            let eps = options.label_smoothing;
            let fit = log_sigmoid(logits.clone()).mul_scalar(-(1.0 - eps));
            if eps > 0.0 {
                fit - log_sigmoid(logits.clone().neg()).mul_scalar(eps)
            } else {
                fit
            }
        }
        DpoLoss::Hinge => relu(logits.clone().neg().add_scalar(1.0)),
        DpoLoss::Ipo => {
            let mean_chosen = chosen_ratio.clone() / p.chosen_tokens.clone().clamp_min(1.0);
            let mean_rejected = rejected_ratio.clone() / p.rejected_tokens.clone().clamp_min(1.0);
            (mean_chosen - mean_rejected)
                .sub_scalar(1.0 / (2.0 * beta))
                .powi_scalar(2)
        }
    };
    let mean = |t: Tensor<B, 1>| -> f64 { t.mean().into_scalar().elem::<f64>() };
    let reward_chosen = chosen_ratio.mul_scalar(beta);
    let reward_rejected = rejected_ratio.mul_scalar(beta);
    let margins = reward_chosen.clone() - reward_rejected.clone();
    let metrics = DpoMetrics {
        reward_chosen: mean(reward_chosen),
        reward_rejected: mean(reward_rejected),
        margin: mean(margins.clone()),
        accuracy: mean(margins.greater_elem(0.0).float()),
        logp_chosen: mean(p.chosen.clone()),
        logp_rejected: mean(p.rejected.clone()),
    };
    (per_pair.mean(), metrics)
}

/// Each row's log-probability of its counted targets, `[rows]`: the sequence log-prob of a
/// completion when the row's loss mask covers the completion (as the preference template renders
/// it). Same targets and masking as the SFT loss, summed per row instead of over the batch.
pub fn sequence_logps<B: Backend>(model: &Decoder<B>, batch: &SftBatch<B>) -> Tensor<B, 1> {
    let logp = target_logps(model, batch);
    let [b, _] = logp.dims();
    logp.sum_dim(1).reshape([b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;

    fn t(v: &[f32]) -> Tensor<B, 1> {
        Tensor::from_floats(v, &Default::default())
    }

    /// Two pairs, hand-computed (β = 0.1):
    /// pair 1: π(w) = −10, π(l) = −12, ref −11 and −11 → Δ = 2, βΔ = 0.2;
    /// pair 2: π(w) = −5, π(l) = −4, ref −5 and −5 → Δ = −1, βΔ = −0.1.
    fn pairs() -> PairLogps<B> {
        PairLogps {
            chosen: t(&[-10.0, -5.0]),
            rejected: t(&[-12.0, -4.0]),
            ref_chosen: t(&[-11.0, -5.0]),
            ref_rejected: t(&[-11.0, -5.0]),
            chosen_tokens: t(&[4.0, 3.0]),
            rejected_tokens: t(&[5.0, 2.0]),
        }
    }

    fn value(options: DpoOptions) -> f64 {
        options.validate().unwrap();
        dpo_loss(&options, &pairs()).0.into_scalar().elem::<f64>()
    }

    #[test]
    fn losses_match_hand_computed_values() {
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        // sigmoid: (ln(1 + e^-0.2) + ln(1 + e^0.1)) / 2 = (0.598139 + 0.744397) / 2
        close(value(DpoOptions::default()), 0.671_267_8);
        // cDPO, ε = 0.1: pair 1 0.9·0.598139 + 0.1·0.798139 = 0.618139; pair 2 0.9·0.744397 + 0.1·0.644397
        close(
            value(DpoOptions {
                label_smoothing: 0.1,
                ..DpoOptions::default()
            }),
            (0.618_138_9 + 0.734_396_7) / 2.0,
        );
        // hinge: (max(0, 0.8) + max(0, 1.1)) / 2
        close(
            value(DpoOptions {
                loss: DpoLoss::Hinge,
                ..DpoOptions::default()
            }),
            0.95,
        );
        // ipo: Δ̄1 = (1/4) − (−1/5) = 0.45, Δ̄2 = 0 − (1/2) = −0.5; 1/(2β) = 5:
        // ((0.45 − 5)² + (−0.5 − 5)²) / 2 = (20.7025 + 30.25) / 2
        close(
            value(DpoOptions {
                loss: DpoLoss::Ipo,
                ..DpoOptions::default()
            }),
            25.476_25,
        );
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let (_, m) = dpo_loss(&DpoOptions::default(), &pairs());
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        // rewards chosen 0.1·(1, 0), rejected 0.1·(−1, 1)
        close(m.reward_chosen, 0.05);
        close(m.reward_rejected, 0.0);
        close(m.margin, 0.05);
        close(m.accuracy, 0.5);
        close(m.logp_chosen, -7.5);
        close(m.logp_rejected, -8.0);
    }

    #[test]
    fn the_sigmoid_gradient_pushes_chosen_up_and_rejected_down() {
        use burn::backend::Autodiff;
        type A = Autodiff<B>;
        let d = Default::default();
        let chosen = Tensor::<A, 1>::from_floats([-10.0], &d).require_grad();
        let rejected = Tensor::<A, 1>::from_floats([-12.0], &d).require_grad();
        let p = PairLogps {
            chosen: chosen.clone(),
            rejected: rejected.clone(),
            ref_chosen: Tensor::from_floats([-11.0], &d),
            ref_rejected: Tensor::from_floats([-11.0], &d),
            chosen_tokens: Tensor::from_floats([4.0], &d),
            rejected_tokens: Tensor::from_floats([5.0], &d),
        };
        let (loss, _) = dpo_loss(&DpoOptions::default(), &p);
        let grads = loss.backward();
        // d/dπ(w) of −log σ(β(π(w) − π(l) + c)) = −β σ(−βΔ) = −0.1 · σ(−0.2)
        let expected = -0.1 / (1.0 + 0.2f64.exp());
        let gc = chosen.grad(&grads).unwrap().into_scalar().elem::<f64>();
        let gr = rejected.grad(&grads).unwrap().into_scalar().elem::<f64>();
        assert!((gc - expected).abs() < 1e-6, "{gc} vs {expected}");
        assert!((gr + expected).abs() < 1e-6, "{gr}");
    }

    #[test]
    fn sequence_logps_sum_to_the_sft_loss() {
        use firebrand_data::TokensRow;
        let device = Default::default();
        let config = crate::model::config::tiny_for_tests();
        let model = Decoder::<B>::init(&config, &device).unwrap();
        let row = |ids: Vec<i32>, mask: Vec<bool>| TokensRow {
            position_ids: (0..ids.len() as i32).collect(),
            segment_ids: vec![0; ids.len()],
            input_ids: ids,
            loss_mask: mask,
            segment_parents: vec![],
            source_ids: vec!["r".into()],
        };
        let rows = vec![
            row(vec![1, 2, 3, 4, 5], vec![false, false, true, true, true]),
            row(vec![6, 7, 8], vec![false, true, true]),
        ];
        let batch = super::super::sft::collate::<B>(&rows, &device).unwrap();
        let per_row = sequence_logps(&model, &batch);
        assert_eq!(per_row.dims(), [2]);
        let total = per_row.clone().sum().into_scalar().elem::<f64>();
        let sft = super::super::sft::loss(&model, &batch).into_scalar().elem::<f64>();
        assert!((total + sft).abs() < 1e-4, "{total} vs {sft}");
        // Each row alone gives its own value (padding does not leak into the shorter row).
        let alone = super::super::sft::collate::<B>(&rows[1..], &device).unwrap();
        let one = sequence_logps(&model, &alone).into_scalar().elem::<f64>();
        let both: Vec<f32> = per_row.into_data().to_vec().unwrap();
        assert!((one - both[1] as f64).abs() < 1e-4, "{one} vs {}", both[1]);
    }

    #[test]
    fn options_are_validated() {
        assert!(
            DpoOptions {
                beta: 0.0,
                ..DpoOptions::default()
            }
            .validate()
            .is_err()
        );
        let bad = DpoOptions {
            loss: DpoLoss::Hinge,
            label_smoothing: 0.1,
            ..DpoOptions::default()
        };
        assert!(bad.validate().is_err());
        assert!(
            DpoOptions {
                label_smoothing: 0.5,
                ..DpoOptions::default()
            }
            .validate()
            .is_err()
        );
    }
}
