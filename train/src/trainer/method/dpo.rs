//! DPO (Rafailov et al. 2023, Eq. 7) on a `preference` dataset's pairs against a frozen reference
//! whose log-probabilities are cached in the dataset (`reference.rs`), with the metrics users debug
//! DPO with (TRL's names).
//!
//! With Δ = (log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x)), log-probs summed
//! over each reply's counted targets:
//! - `sigmoid`: −log σ(βΔ); with label smoothing ε (cDPO, the "robust to label noise" form TRL used
//!   to fold into sigmoid): −(1 − ε) log σ(βΔ) − ε log σ(−βΔ);
//! - `hinge`: max(0, 1 − βΔ) (SLiC);
//! - `ipo`: (Δ̄ − 1/(2β))², where Δ̄ uses per-token averaged log-ratios, as TRL does after
//!   confirming it with the IPO authors (β plays τ's role).
//!
//! A window's loss is the mean over its pairs. A micro-batch holds whole pairs, chosen rows first,
//! so the forward gives both sequence sums; each target's gradient is its pair's `∂ℓ/∂log π` of
//! its reply over the window's pair count (the method computes it here, on the host, and the
//! engine takes it back). Rewards are the implicit ones, β(log π − log π_ref) of each reply;
//! accuracy is the share of pairs whose chosen reward beats the rejected one.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use firebrand_data::{Dataset, DatasetKind, TokensRow};

use crate::engine::api::{Engine, Forward, Grad, Micro, Want};
use crate::engine::choose::Choice;
use crate::error::TrainError;
use crate::recipe::{DpoLoss, DpoOptions};
use crate::trainer::method::api::{
    Evaluation, Loss, Method, MethodMetrics, Note, Window, metrics_of, read_window, score_units, text_and_tokenizer,
};
use crate::trainer::method::reference::{self, ReferenceLogps};
use crate::trainer::order::Cursor;
use crate::trainer::plan::RunPlan;

/// Window means of what DPO runs are debugged with (logged under TRL's names).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct DpoMetrics {
    /// β(log π − log π_ref) of the chosen replies.
    #[serde(rename = "rewards/chosen")]
    pub reward_chosen: f64,
    /// The same of the rejected replies.
    #[serde(rename = "rewards/rejected")]
    pub reward_rejected: f64,
    /// Chosen minus rejected reward.
    #[serde(rename = "rewards/margins")]
    pub margin: f64,
    /// Share of pairs with a positive margin.
    #[serde(rename = "rewards/accuracies")]
    pub accuracy: f64,
    /// Policy log-prob of the chosen replies.
    #[serde(rename = "logps/chosen")]
    pub logp_chosen: f64,
    /// Policy log-prob of the rejected replies.
    #[serde(rename = "logps/rejected")]
    pub logp_rejected: f64,
}

/// One pair's sequence log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// log π(y_w|x), summed over the chosen reply's targets.
    pub chosen: f64,
    /// log π(y_l|x).
    pub rejected: f64,
    /// log π_ref(y_w|x).
    pub ref_chosen: f64,
    /// log π_ref(y_l|x).
    pub ref_rejected: f64,
    /// Targets of the chosen reply (IPO's averages).
    pub chosen_tokens: usize,
    /// Targets of the rejected reply.
    pub rejected_tokens: usize,
}

/// `log σ(z)`, stable for large |z|.
fn log_sigmoid(z: f64) -> f64 {
    -((-z).max(0.0) + (-z.abs()).exp().ln_1p())
}

/// `σ(z)`, stable for large |z|.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// A pair's loss and its derivatives by `p.chosen` and `p.rejected`.
pub fn pair_loss(o: &DpoOptions, p: &Pair) -> (f64, f64, f64) {
    let beta = o.beta;
    let chosen_ratio = p.chosen - p.ref_chosen;
    let rejected_ratio = p.rejected - p.ref_rejected;
    let z = beta * (chosen_ratio - rejected_ratio);
    match o.loss {
        DpoLoss::Sigmoid => {
            let eps = o.label_smoothing;
            let loss = -(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
            // d/dz: −(1 − ε)σ(−z) + εσ(z).
            let dz = -(1.0 - eps) * sigmoid(-z) + eps * sigmoid(z);
            (loss, beta * dz, -beta * dz)
        }
        DpoLoss::Hinge => {
            let loss = (1.0 - z).max(0.0);
            let dz = if z < 1.0 { -1.0 } else { 0.0 };
            (loss, beta * dz, -beta * dz)
        }
        DpoLoss::Ipo => {
            let (nc, nr) = (p.chosen_tokens.max(1) as f64, p.rejected_tokens.max(1) as f64);
            let d = chosen_ratio / nc - rejected_ratio / nr - 1.0 / (2.0 * beta);
            (d * d, 2.0 * d / nc, -2.0 * d / nr)
        }
    }
}

impl DpoMetrics {
    /// `self + w ·` the metrics of pair `p`.
    fn add(&mut self, o: &DpoOptions, p: &Pair, w: f64) {
        let rc = o.beta * (p.chosen - p.ref_chosen);
        let rr = o.beta * (p.rejected - p.ref_rejected);
        self.reward_chosen += w * rc;
        self.reward_rejected += w * rr;
        self.margin += w * (rc - rr);
        self.accuracy += w * f64::from(u8::from(rc - rr > 0.0));
        self.logp_chosen += w * p.chosen;
        self.logp_rejected += w * p.rejected;
    }
}

/// The pairs of a micro-batch collated as `[chosen..., rejected...]`, from its forward and the
/// reference log-probs by pair id.
///
/// # Errors
/// When the rows are not whole pairs or a pair has no reference log-probs.
pub fn pairs(micro: &Micro, forward: &Forward, reference: &ReferenceLogps) -> Result<Vec<Pair>, TrainError> {
    if forward.logp.len() != micro.count() || !micro.rows.len().is_multiple_of(2) {
        return Err(TrainError::Batch(format!(
            "a DPO micro-batch of {} rows and {} log-probs is not whole pairs",
            micro.rows.len(),
            forward.logp.len()
        )));
    }
    let n = micro.rows.len() / 2;
    let sums = micro.row_sums(&forward.logp);
    let counts = micro.row_counts();
    micro.rows[..n]
        .iter()
        .enumerate()
        .map(|(k, row)| {
            let id = row.source_ids.first().map(String::as_str).unwrap_or("");
            let &(ref_chosen, ref_rejected) = reference
                .get(id)
                .ok_or_else(|| TrainError::Batch(format!("pair `{id}` has no reference log-probs")))?;
            Ok(Pair {
                chosen: sums[k],
                rejected: sums[n + k],
                ref_chosen,
                ref_rejected,
                chosen_tokens: counts[k],
                rejected_tokens: counts[n + k],
            })
        })
        .collect()
}

/// The loss of `pairs` (their sum, each weighted `w`), and the gradient of it by each target of
/// `micro` (each reply's derivative, spread over its targets).
pub fn pairs_loss(o: &DpoOptions, micro: &Micro, pairs: &[Pair], w: f64) -> (f64, Grad) {
    let n = pairs.len();
    let mut per_row = vec![0.0; 2 * n];
    let mut loss = 0.0;
    for (k, p) in pairs.iter().enumerate() {
        let (l, dc, dr) = pair_loss(o, p);
        loss += w * l;
        per_row[k] = w * dc;
        per_row[n + k] = w * dr;
    }
    let dlogp = micro.target_row.iter().map(|&r| per_row[r as usize] as f32).collect();
    (
        loss,
        Grad {
            dlogp,
            domega: Vec::new(),
        },
    )
}

/// A DPO run's pairs, reference log-probs, and its window's metrics.
pub struct Dpo {
    tokens: Dataset,
    path: PathBuf,
    pairs: u64,
    options: DpoOptions,
    reference: ReferenceLogps,
    micro_batch: usize,
    accum: usize,
    metrics: DpoMetrics,
    notes: Vec<Note>,
}

impl Dpo {
    /// Opens the run's pairs and makes sure every pair has reference log-probs (from the
    /// preference dataset's cache, or computed now on a scoring engine of `choice`).
    ///
    /// # Errors
    /// When the data, tokenizer or reference do not load.
    pub fn open<B: AutodiffBackend>(
        plan: &RunPlan,
        choice: &mut Choice,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let recipe = &plan.recipe;
        let options = recipe
            .method
            .dpo()
            .ok_or_else(|| TrainError::Config("not a DPO recipe".into()))?;
        let path = crate::trainer::data::tokens_path(recipe, &plan.run_dir);
        let tokens = Dataset::open_kind(&path, DatasetKind::Tokens)?;
        let reference_dir = match &recipe.method {
            crate::recipe::Method::Dpo { reference: Some(r), .. } => r.clone(),
            _ => recipe
                .model
                .init
                .clone()
                .ok_or_else(|| TrainError::Config("method dpo needs method.reference or model.init".into()))?,
        };
        let (preferences, tokenizer) = text_and_tokenizer(recipe, &plan.run_dir, "dpo")?;
        let opts = recipe.data.tokenize_options()?;
        let numerics = choice.numerics(&recipe.train.dtype);
        let key = reference::cache_key(
            &reference_dir,
            opts.template.name(),
            &tokenizer,
            opts.max_len,
            &numerics,
        )?;
        // The reference is opened only when some pair needs it, and dropped before the policy.
        let mut scorer: Option<Box<dyn Engine<B>>> = None;
        let (reference, report) = reference::ensure(
            &preferences,
            &tokens,
            &key,
            recipe.train.micro_batch_size,
            |rows: Vec<TokensRow>| {
                if scorer.is_none() {
                    let (config, state) = crate::trained::load_state::<B>(&reference_dir, device)?;
                    check_vocab(&reference_dir, config.vocab_size, plan.config.vocab_size)?;
                    scorer = Some(choice.open::<B>(&config, &state, None, None, device)?);
                }
                let engine = scorer.as_mut().expect("opened above");
                let micro = engine.prepare(rows)?;
                engine.forward(&micro, Want::no_grad(), None)?;
                let f = engine.collect()?;
                Ok(micro.row_sums(&f.logp))
            },
        )?;
        Ok(Dpo {
            pairs: tokens.len()? as u64 / 2,
            tokens,
            path,
            options,
            reference,
            micro_batch: recipe.train.micro_batch_size,
            accum: recipe.train.grad_accum_steps,
            metrics: DpoMetrics::default(),
            notes: vec![Note::Reference(report)],
        })
    }

    /// The token rows of pairs `idx`, collated as `[chosen..., rejected...]`.
    fn rows(&self, idx: &[u64]) -> Result<Vec<TokensRow>, TrainError> {
        let rows: Vec<u64> = idx.iter().map(|p| 2 * p).chain(idx.iter().map(|p| 2 * p + 1)).collect();
        Ok(self.tokens.take(&rows)?)
    }
}

/// Refuses a reference whose vocabulary is not the policy's.
pub(crate) fn check_vocab(dir: &std::path::Path, reference: usize, policy: usize) -> Result<(), TrainError> {
    if reference != policy {
        return Err(TrainError::Config(format!(
            "{}: the reference's vocabulary ({reference}) is not the policy's ({policy})",
            dir.display()
        )));
    }
    Ok(())
}

fn window_pairs(window: &Window) -> usize {
    window.micros.iter().map(|m| m.rows.len() / 2).sum::<usize>().max(1)
}

impl<B: AutodiffBackend> Method<B> for Dpo {
    fn units(&self) -> u64 {
        self.pairs
    }

    fn source(&self) -> PathBuf {
        self.path.clone()
    }

    fn window(&mut self, engine: &mut dyn Engine<B>, cursor: &mut Cursor, step: usize) -> Result<Window, TrainError> {
        read_window(engine, cursor, step, (self.accum, self.micro_batch), |idx| {
            self.rows(idx)
        })
    }

    fn loss(&mut self, _i: usize, micro: &Micro, forward: &Forward, window: &Window) -> Result<Loss, TrainError> {
        let pairs = pairs(micro, forward, &self.reference)?;
        let w = 1.0 / window_pairs(window) as f64;
        for p in &pairs {
            self.metrics.add(&self.options, p, w);
        }
        let (value, grad) = pairs_loss(&self.options, micro, &pairs, w);
        Ok(Loss { value, grad })
    }

    fn finish(&mut self, _window: &Window, _seconds: f64) -> MethodMetrics {
        metrics_of(&std::mem::take(&mut self.metrics))
    }

    fn evaluate(
        &mut self,
        engine: &mut dyn Engine<B>,
        units: &[u64],
        batch: usize,
        step: usize,
    ) -> Result<(Evaluation, serde_json::Value), TrainError> {
        let w = 1.0 / units.len().max(1) as f64;
        let (mut loss, mut metrics) = (0.0, DpoMetrics::default());
        let (options, reference) = (&self.options, &self.reference);
        score_units(
            engine,
            units,
            batch,
            step,
            |idx| self.rows(idx),
            |micro, f| {
                for p in pairs(micro, f, reference)? {
                    loss += w * pair_loss(options, &p).0;
                    metrics.add(options, &p, w);
                }
                Ok(())
            },
        )?;
        let mut line = serde_json::json!({"step": step, "eval/loss": loss});
        if let (Some(obj), serde_json::Value::Object(extra)) = (
            line.as_object_mut(),
            serde_json::to_value(metrics).expect("metrics serialize"),
        ) {
            obj.extend(extra.into_iter().map(|(k, v)| (format!("eval/{k}"), v)));
        }
        Ok((Evaluation::Loss(loss), line))
    }

    fn notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pairs, hand-computed (β = 0.1):
    /// pair 1: π(w) = −10, π(l) = −12, ref −11 and −11 → Δ = 2, βΔ = 0.2;
    /// pair 2: π(w) = −5, π(l) = −4, ref −5 and −5 → Δ = −1, βΔ = −0.1.
    fn two() -> [Pair; 2] {
        [
            Pair {
                chosen: -10.0,
                rejected: -12.0,
                ref_chosen: -11.0,
                ref_rejected: -11.0,
                chosen_tokens: 4,
                rejected_tokens: 5,
            },
            Pair {
                chosen: -5.0,
                rejected: -4.0,
                ref_chosen: -5.0,
                ref_rejected: -5.0,
                chosen_tokens: 3,
                rejected_tokens: 2,
            },
        ]
    }

    fn mean_loss(o: DpoOptions) -> f64 {
        o.validate().unwrap();
        two().iter().map(|p| pair_loss(&o, p).0).sum::<f64>() / 2.0
    }

    #[test]
    fn losses_match_hand_computed_values() {
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        // sigmoid: (ln(1 + e^-0.2) + ln(1 + e^0.1)) / 2 = (0.598139 + 0.744397) / 2
        close(mean_loss(DpoOptions::default()), 0.671_267_8);
        // cDPO, ε = 0.1: pair 1 0.9·0.598139 + 0.1·0.798139 = 0.618139; pair 2 0.9·0.744397 + 0.1·0.644397
        close(
            mean_loss(DpoOptions {
                label_smoothing: 0.1,
                ..DpoOptions::default()
            }),
            (0.618_138_9 + 0.734_396_7) / 2.0,
        );
        // hinge: (max(0, 0.8) + max(0, 1.1)) / 2
        close(
            mean_loss(DpoOptions {
                loss: DpoLoss::Hinge,
                ..DpoOptions::default()
            }),
            0.95,
        );
        // ipo: Δ̄1 = (1/4) − (−1/5) = 0.45, Δ̄2 = 0 − (1/2) = −0.5; 1/(2β) = 5:
        // ((0.45 − 5)² + (−0.5 − 5)²) / 2 = (20.7025 + 30.25) / 2
        close(
            mean_loss(DpoOptions {
                loss: DpoLoss::Ipo,
                ..DpoOptions::default()
            }),
            25.476_25,
        );
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let o = DpoOptions::default();
        let mut m = DpoMetrics::default();
        for p in two() {
            m.add(&o, &p, 0.5);
        }
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        // rewards chosen 0.1·(1, 0), rejected 0.1·(−1, 1)
        close(m.reward_chosen, 0.05);
        close(m.reward_rejected, 0.0);
        close(m.margin, 0.05);
        close(m.accuracy, 0.5);
        close(m.logp_chosen, -7.5);
        close(m.logp_rejected, -8.0);
    }

    /// Every loss's derivatives equal central finite differences, at margins on both sides of
    /// the hinge's kink and for large |βΔ| (where a naive log σ overflows).
    #[test]
    fn derivatives_match_finite_differences() {
        let options = [
            DpoOptions::default(),
            DpoOptions {
                label_smoothing: 0.2,
                ..DpoOptions::default()
            },
            DpoOptions {
                loss: DpoLoss::Hinge,
                ..DpoOptions::default()
            },
            DpoOptions {
                loss: DpoLoss::Ipo,
                beta: 0.5,
                ..DpoOptions::default()
            },
        ];
        let mut far = two()[0];
        far.chosen = 2000.0;
        for o in options {
            for p in two().into_iter().chain([far]) {
                let (_, dc, dr) = pair_loss(&o, &p);
                let h = 1e-5;
                let at = |c: f64, r: f64| {
                    pair_loss(
                        &o,
                        &Pair {
                            chosen: c,
                            rejected: r,
                            ..p
                        },
                    )
                    .0
                };
                let nc = (at(p.chosen + h, p.rejected) - at(p.chosen - h, p.rejected)) / (2.0 * h);
                let nr = (at(p.chosen, p.rejected + h) - at(p.chosen, p.rejected - h)) / (2.0 * h);
                let near = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
                assert!(near(dc, nc) && near(dr, nr), "{o:?} {p:?}: {dc} {nc} {dr} {nr}");
                assert!(pair_loss(&o, &p).0.is_finite());
            }
        }
        // The sigmoid loss pushes the chosen reply up and the rejected down:
        // ∂/∂π(w) = −β σ(−βΔ) = −0.1 · σ(−0.2).
        let (_, dc, dr) = pair_loss(&DpoOptions::default(), &two()[0]);
        let expected = -0.1 / (1.0 + 0.2f64.exp());
        assert!((dc - expected).abs() < 1e-12 && (dr + expected).abs() < 1e-12);
    }

    #[test]
    fn options_are_validated() {
        let bad = |o: DpoOptions| assert!(o.validate().is_err(), "{o:?}");
        bad(DpoOptions {
            beta: 0.0,
            ..DpoOptions::default()
        });
        bad(DpoOptions {
            loss: DpoLoss::Hinge,
            label_smoothing: 0.1,
            ..DpoOptions::default()
        });
        bad(DpoOptions {
            label_smoothing: 0.5,
            ..DpoOptions::default()
        });
    }
}
