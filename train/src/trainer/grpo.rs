//! GRPO's arithmetic (DeepSeekMath, arXiv 2402.03300 §4.1; the variants as TRL's `GRPOTrainer`
//! names them, huggingface/trl `grpo_trainer.py`): group-normalised advantages, the per-token
//! clipped-ratio loss with an optional k3 KL to a reference, and the four aggregations. Rollouts
//! are in `rollout.rs`; the step that joins them is in the shared loop (`run.rs`).
//!
//! - Advantages: A_i = r_i − mean of its group, divided by (std + 1e-4) with the std (Bessel-
//!   corrected) of the group (`Group`), of the whole batch (`Batch`), or not at all (`None`). A
//!   sample whose reward is `None` (no reward function applied to it) is left out of the mean and
//!   std and gets advantage 0. (TRL sums reward functions with `nansum`, so such a sample would
//!   count as 0 there; the issue asks for it to be left out, which is what this does.)
//! - Per token: ℓ = −min(ρA, clip(ρ, 1 − ε_low, 1 + ε_high)·A) + β·k3, ρ = exp(log π − log π_old),
//!   k3 = exp(ref − log π) − (ref − log π) − 1. With no recorded old log-probs (μ = 1) π_old is π
//!   detached, so ρ = 1 and the gradient is the plain policy gradient −A ∇log π.
//! - Aggregation over the completion mask m: `grpo` mean over sequences of Σ_t mℓ / Σ_t m; `bnpo`
//!   Σ mℓ / Σ m; `dr_grpo` Σ mℓ / (rows · max_completion_length); `dapo` Σ mℓ / the active tokens
//!   of the whole generation batch (given by the caller, so accumulation windows weigh tokens
//!   equally). Over an accumulation window the loop averages the micro-batches' grpo, bnpo and
//!   dr_grpo losses and sums dapo's, as TRL does.
//!
//! Positions: the tensors may span whole rows (prompt and completion); only the mask decides which
//! positions are completion tokens.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

use crate::error::TrainError;

/// How advantages are scaled after centring on the group mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleRewards {
    /// By the group's std (TRL's default, DeepSeekMath's).
    #[default]
    Group,
    /// By the std of the whole batch.
    Batch,
    /// Not scaled (Dr. GRPO).
    None,
}

/// How per-token losses are reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over sequences of each sequence's token mean (DeepSeekMath).
    Grpo,
    /// Token mean over the micro-batch.
    Bnpo,
    /// Token sum over rows × max completion length (Dr. GRPO).
    DrGrpo,
    /// Token sum over the active tokens of the whole generation batch (DAPO; TRL's default).
    #[default]
    Dapo,
}

/// GRPO's loss options (TRL's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoOptions {
    /// ε_low (0.2).
    pub epsilon_low: f64,
    /// ε_high (0.2; DAPO's clip-higher uses 0.28).
    pub epsilon_high: f64,
    /// KL weight β (0: no reference model is needed).
    pub beta: f64,
    /// The aggregation.
    pub loss_type: LossType,
    /// Completion length limit, `dr_grpo`'s constant.
    pub max_completion_length: usize,
}

impl Default for GrpoOptions {
    fn default() -> Self {
        GrpoOptions {
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.0,
            loss_type: LossType::Dapo,
            max_completion_length: 512,
        }
    }
}

/// Advantages per completion, in the order of `rewards` (groups of `group` consecutive
/// completions share a prompt).
///
/// # Errors
/// When `rewards` is not a whole number of groups.
pub fn advantages(rewards: &[Option<f64>], group: usize, scale: ScaleRewards) -> Result<Vec<f64>, TrainError> {
    if group == 0 || !rewards.len().is_multiple_of(group) {
        return Err(TrainError::Batch(format!(
            "{} rewards do not split into groups of {group}",
            rewards.len()
        )));
    }
    let batch_std = unbiased_std(rewards);
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group) {
        let valid: Vec<f64> = g.iter().flatten().copied().collect();
        let mean = if valid.is_empty() {
            0.0
        } else {
            valid.iter().sum::<f64>() / valid.len() as f64
        };
        let std = match scale {
            ScaleRewards::Group => Some(unbiased_std(g)),
            ScaleRewards::Batch => Some(batch_std),
            ScaleRewards::None => None,
        };
        out.extend(g.iter().map(|r| match r {
            None => 0.0,
            Some(r) => match std {
                Some(s) => (r - mean) / (s + 1e-4),
                None => r - mean,
            },
        }));
    }
    Ok(out)
}

/// Bessel-corrected std of the present values (0 with fewer than two).
fn unbiased_std(values: &[Option<f64>]) -> f64 {
    let v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.len() < 2 {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// The tensors of one micro-batch of completions, `[rows, T]` over completion positions.
#[derive(Debug, Clone)]
pub struct TokenTerms<B: Backend> {
    /// log π of each sampled token (with gradient).
    pub logp: Tensor<B, 2>,
    /// log π_old recorded at sampling (μ > 1); `None` for strictly on-policy steps.
    pub old_logp: Option<Tensor<B, 2>>,
    /// log π_ref (when β > 0).
    pub ref_logp: Option<Tensor<B, 2>>,
    /// 1.0 on completion tokens.
    pub mask: Tensor<B, 2>,
    /// `[rows]` advantages.
    pub advantages: Tensor<B, 1>,
}

/// What a GRPO step is debugged with, over the micro-batch's completion tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GrpoMetrics {
    /// Mean k3 KL to the reference (0 without one).
    pub kl: f64,
    /// Share of tokens clipped below (ρ < 1 − ε_low with A < 0).
    pub clip_low: f64,
    /// Share clipped above (ρ > 1 + ε_high with A > 0).
    pub clip_high: f64,
}

/// The aggregated loss (one element) and metrics. `active_tokens` is DAPO's normaliser: the
/// completion tokens of the whole generation batch (ignored by the other aggregations).
///
/// # Errors
/// When β > 0 without reference log-probs.
pub fn grpo_loss<B: Backend>(
    options: &GrpoOptions,
    t: &TokenTerms<B>,
    active_tokens: usize,
) -> Result<(Tensor<B, 1>, GrpoMetrics), TrainError> {
    let [rows, _] = t.logp.dims();
    let old = t.old_logp.clone().unwrap_or_else(|| t.logp.clone().detach());
    // Log differences are zeroed off the completion, so padding never makes exp overflow.
    let ratio = ((t.logp.clone() - old) * t.mask.clone()).exp();
    let adv = t.advantages.clone().reshape([rows, 1]);
    let unclipped = ratio.clone() * adv.clone();
    let clipped = ratio
        .clone()
        .clamp(1.0 - options.epsilon_low, 1.0 + options.epsilon_high)
        * adv.clone();
    let mut per_token = unclipped.min_pair(clipped).neg();
    let tokens = t.mask.clone().sum().into_scalar().elem::<f64>().max(1.0);
    let mut kl_mean = 0.0;
    if options.beta > 0.0 {
        let Some(reference) = &t.ref_logp else {
            return Err(TrainError::Batch(
                "grpo beta > 0 needs the reference's log-probs".into(),
            ));
        };
        let diff = (reference.clone() - t.logp.clone()) * t.mask.clone();
        let kl = diff.clone().exp() - diff - 1.0;
        kl_mean = (kl.clone().detach() * t.mask.clone()).sum().into_scalar().elem::<f64>() / tokens;
        per_token = per_token + kl.mul_scalar(options.beta);
    }
    let masked = per_token * t.mask.clone();
    let loss = match options.loss_type {
        LossType::Grpo => {
            let per_row = masked.sum_dim(1).reshape([rows]) / t.mask.clone().sum_dim(1).reshape([rows]).clamp_min(1.0);
            per_row.mean()
        }
        LossType::Bnpo => masked.sum().div_scalar(tokens),
        LossType::DrGrpo => masked.sum().div_scalar((rows * options.max_completion_length) as f64),
        LossType::Dapo => masked.sum().div_scalar(active_tokens.max(1) as f64),
    };
    let share = |m: Tensor<B, 2>| (m * t.mask.clone()).sum().into_scalar().elem::<f64>() / tokens;
    let ratio = ratio.detach();
    let negative = adv.clone().lower_elem(0.0).float();
    let positive = adv.greater_elem(0.0).float();
    let metrics = GrpoMetrics {
        kl: kl_mean,
        clip_low: share(ratio.clone().lower_elem(1.0 - options.epsilon_low).float() * negative),
        clip_high: share(ratio.greater_elem(1.0 + options.epsilon_high).float() * positive),
    };
    Ok((loss, metrics))
}

impl GrpoMetrics {
    /// Adds a micro-batch's metrics weighted by `w` (its share of the window's tokens).
    pub fn add_weighted(&mut self, other: &GrpoMetrics, w: f64) {
        self.kl += w * other.kl;
        self.clip_low += w * other.clip_low;
        self.clip_high += w * other.clip_high;
    }
}

/// One GRPO step's line in `metrics.jsonl`, next to the loop's own fields (TRL's names).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GrpoStepMetrics {
    /// The generation batch: rewards, advantages, lengths.
    #[serde(flatten)]
    pub rollout: super::rollout::RolloutMetrics,
    /// Mean k3 KL to the reference (0 without one).
    pub kl: f64,
    /// Share of completion tokens clipped below.
    #[serde(rename = "clip_ratio/low_mean")]
    pub clip_low: f64,
    /// Share clipped above.
    #[serde(rename = "clip_ratio/high_mean")]
    pub clip_high: f64,
    /// Share clipped either way.
    #[serde(rename = "clip_ratio/region_mean")]
    pub clip_region: f64,
    /// Mean entropy (nats) of the policy over completion tokens.
    pub entropy: f64,
    /// Which of the μ iterations over this generation batch the step was (0 for the first).
    pub iteration: usize,
    /// On the first iteration: mean |log π − log π_sampler| over completion tokens, the gap
    /// between the training forward and the sampler's KV-cached forward (should be ~1e-6 in f32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampler_logp_diff: Option<f64>,
    /// Seconds spent sampling and scoring this step's generation batch (0 on later iterations).
    pub rollout_s: f64,
    /// The rest of the step: forward and backward (with the reference's forward when β > 0),
    /// clipping and the optimizer step; MFU is computed over it.
    pub train_s: f64,
    /// Generated tokens per second of sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_tokens_per_s: Option<f64>,
    /// Trained tokens (prompt and completion) per second of training.
    pub train_tokens_per_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use burn::backend::Autodiff;

    #[test]
    fn advantages_match_hand_computed_values() {
        // Group 1: rewards 1, 0, 1 and one None: mean 2/3, unbiased std √(1/3) = 0.577350.
        // Group 2: all equal: advantages 0.
        let r = [
            Some(1.0),
            Some(0.0),
            Some(1.0),
            None,
            Some(2.0),
            Some(2.0),
            Some(2.0),
            Some(2.0),
        ];
        let a = advantages(&r, 4, ScaleRewards::Group).unwrap();
        let s = (1.0f64 / 3.0).sqrt() + 1e-4;
        let want = [
            (1.0 / 3.0) / s,
            (-2.0 / 3.0) / s,
            (1.0 / 3.0) / s,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        for (x, y) in a.iter().zip(want) {
            assert!((x - y).abs() < 1e-12, "{a:?}");
        }
        // Unscaled: just centred.
        let a = advantages(&r, 4, ScaleRewards::None).unwrap();
        assert!((a[1] + 2.0 / 3.0).abs() < 1e-12 && a[3] == 0.0 && a[4] == 0.0);
        // Batch scale: the std of all seven present rewards [1, 0, 1, 2, 2, 2, 2]: mean 10/7,
        // Σ(x − mean)² = 2·(3/7)² + (10/7)² + 4·(4/7)² = 26/7 → std √((26/7)/6).
        let a = advantages(&r, 4, ScaleRewards::Batch).unwrap();
        let std = ((26.0f64 / 7.0) / 6.0).sqrt() + 1e-4;
        assert!((a[0] - (1.0 / 3.0) / std).abs() < 1e-12, "{a:?}");
        assert!(advantages(&r, 3, ScaleRewards::Group).is_err());
    }

    fn terms(logp: Tensor<Autodiff<B>, 2>, adv: [f32; 2], old: Option<[[f32; 3]; 2]>) -> TokenTerms<Autodiff<B>> {
        let d = Default::default();
        TokenTerms {
            logp,
            old_logp: old.map(|o| Tensor::from_floats(o, &d)),
            ref_logp: None,
            // Row 0 has 3 completion tokens, row 1 has 2.
            mask: Tensor::from_floats([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], &d),
            advantages: Tensor::from_floats(adv, &d),
        }
    }

    #[test]
    fn on_policy_gradient_is_the_plain_policy_gradient_for_each_aggregation() {
        let d = Default::default();
        let lp = [[-1.0f32, -2.0, -0.5], [-0.3, -1.2, -4.0]];
        let adv = [0.7f32, -1.3];
        for (loss_type, norm) in [
            (LossType::Bnpo, [5.0, 5.0]),
            (LossType::Dapo, [20.0, 20.0]),
            (LossType::DrGrpo, [2.0 * 8.0, 2.0 * 8.0]),
            (LossType::Grpo, [2.0 * 3.0, 2.0 * 2.0]),
        ] {
            let logp = Tensor::<Autodiff<B>, 2>::from_floats(lp, &d).require_grad();
            let options = GrpoOptions {
                loss_type,
                max_completion_length: 8,
                ..GrpoOptions::default()
            };
            let (loss, m) = grpo_loss(&options, &terms(logp.clone(), adv, None), 20).unwrap();
            // ρ = 1, so the value is −Σ mA / normaliser.
            let value = loss.clone().into_scalar().elem::<f64>();
            let want_value = -(3.0 * 0.7 / norm[0] + 2.0 * -1.3 / norm[1]);
            assert!(
                (value - want_value).abs() < 1e-5,
                "{loss_type:?}: {value} vs {want_value}"
            );
            let g: Vec<f32> = logp.grad(&loss.backward()).unwrap().into_data().to_vec().unwrap();
            // ∂/∂log π = −A·m / normaliser.
            let want = [
                -0.7 / norm[0],
                -0.7 / norm[0],
                -0.7 / norm[0],
                1.3 / norm[1],
                1.3 / norm[1],
                0.0,
            ];
            for (x, y) in g.iter().zip(want) {
                assert!((*x as f64 - y).abs() < 1e-6, "{loss_type:?}: {g:?}");
            }
            assert_eq!((m.clip_low, m.clip_high, m.kl), (0.0, 0.0, 0.0));
        }
    }

    #[test]
    fn clipping_and_kl_match_hand_computed_values() {
        let d = Default::default();
        // Row 0 (A = 1): ratios e^0.5 ≈ 1.6487 (clipped at 1.2), e^0 = 1, e^-0.5 ≈ 0.6065.
        // Row 1 (A = −1): ratios e^-0.5 (clipped at 0.8), e^0.1 ≈ 1.1052; third token masked.
        let logp = Tensor::<Autodiff<B>, 2>::from_floats([[0.0f32, 0.0, 0.0], [0.0, 0.0, 0.0]], &d).require_grad();
        let old = [[-0.5f32, 0.0, 0.5], [0.5, -0.1, 0.0]];
        let options = GrpoOptions {
            loss_type: LossType::Bnpo,
            ..GrpoOptions::default()
        };
        let (loss, m) = grpo_loss(&options, &terms(logp.clone(), [1.0, -1.0], Some(old)), 5).unwrap();
        // ℓ = −min(ρA, clip(ρ)A): row 0: −1.2, −1, −0.60653; row 1 (A = −1): min(−0.60653, −0.8) = −0.8 → 0.8;
        // min(−1.10517, −1.10517) → 1.10517. Mean over 5 tokens.
        let want = (-1.2 - 1.0 - 0.606_531 + 0.8 + 1.105_171) / 5.0;
        let value = loss.into_scalar().elem::<f64>();
        assert!((value - want).abs() < 1e-5, "{value} vs {want}");
        // One token clipped above (row 0, ρ = 1.65, A > 0); one below (row 1, ρ = 0.61, A < 0).
        assert!(
            (m.clip_high - 0.2).abs() < 1e-9 && (m.clip_low - 0.2).abs() < 1e-9,
            "{m:?}"
        );

        // k3 with β = 0.1 against a reference 0.5 below on every token: e^-0.5 + 0.5 − 1 = 0.106531.
        let logp = Tensor::<Autodiff<B>, 2>::from_floats([[0.0f32, 0.0, 0.0], [0.0, 0.0, 0.0]], &d).require_grad();
        let mut t = terms(logp, [0.0, 0.0], None);
        t.ref_logp = Some(Tensor::from_floats([[-0.5f32, -0.5, -0.5], [-0.5, -0.5, -0.5]], &d));
        let options = GrpoOptions {
            beta: 0.1,
            loss_type: LossType::Bnpo,
            ..GrpoOptions::default()
        };
        let (loss, m) = grpo_loss(&options, &t, 5).unwrap();
        let k3 = (-0.5f64).exp() + 0.5 - 1.0;
        assert!((m.kl - k3).abs() < 1e-6, "{m:?}");
        assert!((loss.into_scalar().elem::<f64>() - 0.1 * k3).abs() < 1e-6);
        // β > 0 without a reference is an error.
        let logp = Tensor::<Autodiff<B>, 2>::from_floats([[0.0f32, 0.0, 0.0], [0.0, 0.0, 0.0]], &d);
        assert!(grpo_loss(&options, &terms(logp, [0.0, 0.0], None), 5).is_err());
    }
}
