//! The burn engine: the decoder (`crate::model`) under burn's autodiff, on any burn backend (CPU
//! through ndarray, CUDA through cubecl). Portable and slower than the kernel engine; it is also
//! where localist attention runs, since it forms every layer's attention weights.
//!
//! A forward collates the rows into padded `[batch, seq]` tensors (padding is a segment of its own,
//! id −1, and never a target; Multiverse rows get their attention mask built on the host from the
//! segment graph, plain rows from segment ids on the device), takes the log-softmax of the logits
//! divided by the temperature, and gathers each counted target's entry in the order of
//! [`Micro::target_row`]. The backward is that of `Σ dlogp·log p + Σ_l dΩ_l·Ω_l`, accumulated over
//! the window's micro-batches; the step is burn's optimizer with our AdamW (`engine/optim.rs`).

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use firebrand_data::TokensRow;

use crate::attention::AttentionMask;
use crate::engine::api::{Engine, Forward, Grad, Micro, Want, check_row, counted_targets};
use crate::engine::optim::{AdamW, clip_factor, global_norm, scale_grads};
use crate::engine::state::{EngineState, Tensors, decoder_from, gradients_of, load_moments};
use crate::error::TrainError;
use crate::localist::{BlockTensors, LayerMetrics, LocalistRun, Penalty};
use crate::model::{Decoder, ModelConfig};

/// One micro-batch as burn tensors.
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    /// `[batch, seq]` token ids.
    pub input_ids: Tensor<B, 2, Int>,
    /// `[batch, seq]` positions within segments.
    pub position_ids: Tensor<B, 2, Int>,
    /// Which keys each query sees.
    pub mask: AttentionMask<B>,
    /// `[batch, seq]` the token each position predicts (0 where not counted).
    pub targets: Tensor<B, 2, Int>,
    /// `[count]` flat positions (`row · seq + t`) of the counted targets, in order.
    pub index: Tensor<B, 1, Int>,
    /// `[batch, seq]` 1.0 where the target counts.
    pub weights: Tensor<B, 2>,
    /// Number of counted targets.
    pub count: usize,
}

/// Builds the tensors of `rows` (already checked by [`Micro::new`]).
///
/// # Errors
/// When the rows do not form a batch (see [`Micro::new`]).
pub fn collate<B: Backend>(rows: &[TokensRow], device: &B::Device) -> Result<Batch<B>, TrainError> {
    let t = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
    if t < 2 {
        return Err(TrainError::Batch(
            "a micro-batch needs rows of at least 2 tokens".into(),
        ));
    }
    let n = rows.len() * t;
    let (mut ids, mut pos, mut seg, mut tgt, mut w) = (
        vec![0i64; n],
        vec![0i64; n],
        vec![-1i64; n],
        vec![0i64; n],
        vec![0f32; n],
    );
    let mut index = Vec::new();
    for (b, row) in rows.iter().enumerate() {
        check_row(row)?;
        for i in 0..row.input_ids.len() {
            let k = b * t + i;
            ids[k] = row.input_ids[i] as i64;
            pos[k] = row.position_ids[i] as i64;
            seg[k] = row.segment_ids[i] as i64;
        }
        for (i, target) in counted_targets(row) {
            tgt[b * t + i] = target as i64;
            w[b * t + i] = 1.0;
            index.push((b * t + i) as i64);
        }
    }
    if index.is_empty() {
        return Err(TrainError::Batch(
            "a micro-batch has no token to train on (every loss-mask bit is off)".into(),
        ));
    }
    let shape = [rows.len(), t];
    let int = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, shape), device);
    let mask = if rows.iter().any(TokensRow::has_parents) {
        // Padding sees itself only, so its attention row is never empty.
        let mut allowed = vec![false; rows.len() * t * t];
        for (b, row) in rows.iter().enumerate() {
            let dense = firebrand_data::multiverse::dense_mask(&row.segment_ids, &row.segment_parents);
            for q in 0..t {
                for k in 0..=q {
                    allowed[(b * t + q) * t + k] = if q < dense.len() { dense[q][k] } else { k == q };
                }
            }
        }
        AttentionMask::from_dense(allowed, [rows.len(), t, t], device)
    } else {
        AttentionMask::segments(int(seg))
    };
    let count = index.len();
    Ok(Batch {
        input_ids: int(ids),
        position_ids: int(pos),
        mask,
        targets: int(tgt),
        index: Tensor::from_data(TensorData::new(index, [count]), device),
        weights: Tensor::from_data(TensorData::new(w, shape), device),
        count,
    })
}

/// What one forward computes, on backend `C`.
struct Outputs<C: Backend> {
    /// `[count]` log p of the counted targets.
    logp: Tensor<C, 1>,
    /// `[count]` their entropies (nats), when asked.
    entropy: Option<Tensor<C, 1>>,
    /// Ω of each layer whose penalty weighs (λ_l·γ > 0), else `None`.
    omegas: Vec<Option<Tensor<C, 1>>>,
    /// Each layer's entropy and fidelity (with `[localist]`).
    stats: Vec<LayerMetrics>,
    /// Each layer's Ω (0 where it does not weigh).
    omega: Vec<f64>,
}

/// The forward of `batch` through `model` (on any backend: the autodiff one when a backward
/// follows, its inner one otherwise).
fn run<C: Backend>(
    model: &Decoder<C>,
    batch: &Batch<C>,
    rows: &[TokensRow],
    localist: Option<&LocalistRun>,
    want: Want,
) -> Outputs<C> {
    let (hidden, omegas, stats, omega) = match localist {
        None => (
            model.hidden(batch.input_ids.clone(), batch.position_ids.clone(), &batch.mask),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        ),
        Some(run) => {
            let device = batch.input_ids.device();
            let [_, t] = batch.input_ids.dims();
            let blocks = run.blocks(rows, model);
            let real: Vec<Vec<bool>> = rows.iter().map(|r| vec![true; r.input_ids.len()]).collect();
            let bt = BlockTensors::new(&blocks, &run.targets(&blocks, rows), &real, t, &device);
            let (hidden, weights) = model.hidden_with_weights(
                batch.input_ids.clone(),
                batch.position_ids.clone(),
                &batch.mask,
                &run.biases(&bt),
            );
            let mut omegas = Vec::with_capacity(weights.len());
            let mut stats = Vec::with_capacity(weights.len());
            let mut values = Vec::with_capacity(weights.len());
            for (w, &lambda) in weights.iter().zip(&run.lambdas) {
                let weighs = lambda * run.config.gamma > 0.0 && run.config.penalty != Penalty::None;
                let omega = weighs.then(|| bt.penalty(w, run.config.penalty));
                stats.push(LayerMetrics {
                    entropy_bits: bt.entropy_bits(w).into_scalar().elem::<f64>(),
                    fidelity: bt.fidelity(w).into_scalar().elem::<f64>(),
                });
                values.push(omega.clone().map_or(0.0, |o| o.into_scalar().elem::<f64>()));
                omegas.push(omega);
            }
            (hidden, omegas, stats, values)
        }
    };
    let logits = model.logits(hidden);
    let [b, t, _] = logits.dims();
    let scaled = if want.temperature == 1.0 {
        logits
    } else {
        logits.div_scalar(want.temperature)
    };
    let lp = log_softmax(scaled, 2);
    let flat = |x: Tensor<C, 2>| x.reshape([b * t]).select(0, batch.index.clone());
    let entropy = want.entropy.then(|| {
        let d = lp.clone().detach();
        flat((d.clone().exp() * d).sum_dim(2).neg().reshape([b, t]))
    });
    let logp = flat(lp.gather(2, batch.targets.clone().reshape([b, t, 1])).reshape([b, t]));
    Outputs {
        logp,
        entropy,
        omegas,
        stats,
        omega,
    }
}

fn host<C: Backend>(t: Tensor<C, 1>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap_or_default()
}

/// The ends of a forward's graph: log p of the targets and each layer's Ω (where it weighs).
type Graph<B> = (Tensor<B, 1>, Vec<Option<Tensor<B, 1>>>);

/// What the last forward left for `collect` and `backward`.
struct Pending<B: AutodiffBackend> {
    logp: Tensor<B::InnerBackend, 1>,
    entropy: Option<Tensor<B::InnerBackend, 1>>,
    attention: Vec<LayerMetrics>,
    omega: Vec<f64>,
    /// The graph's ends (log p and each layer's Ω), until the backward.
    graph: Option<Graph<B>>,
}

/// A model on the burn engine.
pub struct BurnEngine<B: AutodiffBackend> {
    model: Decoder<B>,
    /// `None` for an engine that only scores.
    optimizer: Option<OptimizerAdaptor<AdamW, Decoder<B>, B>>,
    accumulator: GradientsAccumulator<Decoder<B>>,
    /// Gradients taken out of the accumulator (by the norm, or a look at them) and not stepped yet.
    grads: Option<GradientsParams>,
    localist: Option<LocalistRun>,
    pending: Option<Pending<B>>,
    device: B::Device,
}

impl<B: AutodiffBackend> BurnEngine<B> {
    /// An engine holding `state` on `device`; with `adamw` it trains, without it only scores.
    ///
    /// # Errors
    /// When `state` does not fit `config`.
    pub fn new(
        config: &ModelConfig,
        state: &EngineState,
        adamw: Option<AdamW>,
        localist: Option<LocalistRun>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let model = decoder_from::<B>(config, &state.weights, device)?;
        let optimizer = match (adamw, &state.moments) {
            (None, _) => None,
            (Some(a), None) => Some(OptimizerAdaptor::from(a)),
            (Some(a), Some(m)) => Some(load_moments(
                &model,
                OptimizerAdaptor::from(a),
                &m.m,
                &m.v,
                m.steps,
                device,
            )?),
        };
        Ok(BurnEngine {
            model,
            optimizer,
            accumulator: GradientsAccumulator::new(),
            grads: None,
            localist,
            pending: None,
            device: device.clone(),
        })
    }

    /// The model.
    pub fn model(&self) -> &Decoder<B> {
        &self.model
    }

    /// Everything accumulated so far, out of the accumulator.
    fn gathered(&mut self) -> &GradientsParams {
        if let Some(old) = self.grads.take() {
            self.accumulator.accumulate(&self.model, old);
        }
        self.grads.insert(self.accumulator.grads())
    }
}

impl<B: AutodiffBackend> Engine<B> for BurnEngine<B> {
    fn prepare(&self, rows: Vec<TokensRow>) -> Result<Micro, TrainError> {
        Micro::new(rows)
    }

    fn forward(&mut self, micro: &Micro, want: Want, fixed: Option<&Grad>) -> Result<(), TrainError> {
        self.pending = None;
        if (want.grad || fixed.is_some()) && self.optimizer.is_none() {
            return Err(TrainError::Config(
                "this burn engine only scores (it has no optimizer)".into(),
            ));
        }
        let vocab = self.model.vocab_size();
        if let Some(bad) = micro
            .rows
            .iter()
            .flat_map(|r| &r.input_ids)
            .find(|&&i| i < 0 || i as usize >= vocab)
        {
            return Err(TrainError::Batch(format!(
                "token id {bad} is outside the model's vocabulary of {vocab}\n  hint: was the dataset tokenized with another tokenizer?"
            )));
        }
        if !(want.temperature > 0.0 && want.temperature.is_finite()) {
            return Err(TrainError::Config(format!(
                "a forward at temperature {} (it must be > 0)",
                want.temperature
            )));
        }
        if !(want.grad || fixed.is_some()) {
            let model = self.model.valid();
            let batch = collate::<B::InnerBackend>(&micro.rows, &self.device)?;
            let o = run(&model, &batch, &micro.rows, self.localist.as_ref(), want);
            self.pending = Some(Pending {
                logp: o.logp,
                entropy: o.entropy,
                attention: o.stats,
                omega: o.omega,
                graph: None,
            });
            return Ok(());
        }
        let batch = collate::<B>(&micro.rows, &self.device)?;
        let o = run(&self.model, &batch, &micro.rows, self.localist.as_ref(), want);
        self.pending = Some(Pending {
            logp: o.logp.clone().inner(),
            entropy: o.entropy.map(|e| e.inner()),
            attention: o.stats,
            omega: o.omega,
            graph: Some((o.logp, o.omegas)),
        });
        match fixed {
            Some(g) => self.backward(g),
            None => Ok(()),
        }
    }

    fn collect(&mut self) -> Result<Forward, TrainError> {
        let p = self
            .pending
            .as_ref()
            .ok_or_else(|| TrainError::Batch("collect without a forward".into()))?;
        Ok(Forward {
            logp: host(p.logp.clone()),
            entropy: p.entropy.clone().map(host).unwrap_or_default(),
            attention: p.attention.clone(),
            omega: p.omega.clone(),
        })
    }

    fn backward(&mut self, grad: &Grad) -> Result<(), TrainError> {
        let (logp, omegas) = self
            .pending
            .as_mut()
            .and_then(|p| p.graph.take())
            .ok_or_else(|| TrainError::Batch("backward without a forward that kept its graph".into()))?;
        let n = logp.dims()[0];
        if grad.dlogp.len() != n {
            return Err(TrainError::Batch(format!(
                "{} gradients for {n} targets",
                grad.dlogp.len()
            )));
        }
        if !grad.domega.is_empty() && grad.domega.len() != omegas.len() {
            return Err(TrainError::Batch(format!(
                "{} penalty gradients for {} layers with a localist penalty",
                grad.domega.len(),
                omegas.len()
            )));
        }
        let d = Tensor::<B, 1>::from_data(TensorData::new(grad.dlogp.clone(), [n]), &self.device);
        let mut objective = (logp * d).sum();
        for (omega, &g) in omegas.into_iter().zip(&grad.domega) {
            match omega {
                Some(o) if g != 0.0 => objective = objective + o.mul_scalar(g),
                None if g != 0.0 => {
                    return Err(TrainError::Batch(
                        "a gradient for the penalty of a layer whose penalty does not weigh".into(),
                    ));
                }
                _ => {}
            }
        }
        let grads = GradientsParams::from_grads(objective.backward(), &self.model);
        self.accumulator.accumulate(&self.model, grads);
        Ok(())
    }

    fn grad_norm(&mut self) -> Result<f64, TrainError> {
        self.gathered();
        let grads = self.grads.as_ref().expect("just gathered");
        Ok(global_norm(&self.model, grads))
    }

    fn step(&mut self, lr: f64, norm: f64, max_norm: Option<f64>) -> Result<(), TrainError> {
        self.gathered();
        let mut grads = self.grads.take().expect("just gathered");
        scale_grads(&self.model, &mut grads, clip_factor(norm, max_norm));
        let optimizer = self
            .optimizer
            .as_mut()
            .ok_or_else(|| TrainError::Config("this burn engine only scores (it has no optimizer)".into()))?;
        self.model = optimizer.step(lr, self.model.clone(), grads);
        Ok(())
    }

    fn state(&mut self) -> Result<EngineState, TrainError> {
        match &self.optimizer {
            Some(o) => EngineState::of_burn(&self.model, o),
            None => Ok(EngineState::fresh(&self.model)),
        }
    }

    fn gradients(&mut self) -> Result<Tensors, TrainError> {
        let model = self.model.clone();
        Ok(gradients_of(&model, self.gathered()))
    }

    fn sampler(&mut self, _device: &B::Device) -> Result<Decoder<B::InnerBackend>, TrainError> {
        Ok(self.model.valid())
    }
}

/// Attention entropy and fidelity per layer, perplexity and next-token accuracy of `model` on
/// `rows` (in micro-batches of `batch`), with the bias of `run` (the dial at inference).
///
/// # Errors
/// Rows that do not form a batch (no targets, mismatched columns).
pub fn attention_report<B: Backend>(
    model: &Decoder<B>,
    rows: &[firebrand_data::TokensRow],
    run: &LocalistRun,
    batch: usize,
) -> Result<crate::localist::AttentionReport, TrainError> {
    use burn::tensor::ElementConversion;
    let device = model.device();
    let (mut nll, mut correct, mut targets) = (0.0f64, 0usize, 0usize);
    let mut layers: Vec<(f64, f64)> = Vec::new();
    for chunk in rows.chunks(batch.max(1)) {
        let b = collate::<B>(chunk, &device)?;
        let [_, t] = b.input_ids.dims();
        let blocks = run.blocks(chunk, model);
        let real: Vec<Vec<bool>> = chunk.iter().map(|r| vec![true; r.input_ids.len()]).collect();
        let bt = BlockTensors::new(&blocks, &run.targets(&blocks, chunk), &real, t, &device);
        let (hidden, weights) =
            model.hidden_with_weights(b.input_ids.clone(), b.position_ids.clone(), &b.mask, &run.biases(&bt));
        let logits = model.logits(hidden);
        let [rb, rt, _] = logits.dims();
        let logp = burn::tensor::activation::log_softmax(logits.clone(), 2)
            .gather(2, b.targets.clone().reshape([rb, rt, 1]))
            .reshape([rb, rt]);
        nll -= (logp * b.weights.clone()).sum().into_scalar().elem::<f64>();
        let hits = logits
            .argmax(2)
            .reshape([rb, rt])
            .equal(b.targets.clone())
            .float()
            .mul(b.weights.clone())
            .sum()
            .into_scalar()
            .elem::<f64>();
        correct += hits.round() as usize;
        targets += b.count;
        if layers.is_empty() {
            layers = vec![(0.0, 0.0); weights.len()];
        }
        for (acc, w) in layers.iter_mut().zip(&weights) {
            acc.0 += bt.entropy_bits(w).into_scalar().elem::<f64>() * b.count as f64;
            acc.1 += bt.fidelity(w).into_scalar().elem::<f64>() * b.count as f64;
        }
    }
    if targets == 0 {
        return Err(TrainError::Batch(
            "no target tokens to measure on (no rows, or every loss-mask bit is off)".into(),
        ));
    }
    let n = targets as f64;
    let nll = nll / n;
    Ok(crate::localist::AttentionReport {
        lambdas: run.lambdas.clone(),
        layers: layers
            .into_iter()
            .map(|(e, f)| crate::localist::LayerMetrics {
                entropy_bits: e / n,
                fidelity: f / n,
            })
            .collect(),
        nll,
        perplexity: nll.exp(),
        accuracy: correct as f64 / n,
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;

    fn row(ids: &[i32], mask: &[bool], seg: &[i32]) -> TokensRow {
        TokensRow {
            input_ids: ids.to_vec(),
            loss_mask: mask.to_vec(),
            position_ids: (0..ids.len() as i32).collect(),
            segment_ids: seg.to_vec(),
            segment_parents: vec![],
            source_ids: vec![],
        }
    }

    #[test]
    fn targets_are_shifted_masked_and_never_cross_segments() {
        // Two packed documents; the mask is on for the second token of each and for the first
        // token of the second document, which must not be predicted from the first document.
        let r = row(&[5, 6, 7, 8, 9], &[false, true, true, true, false], &[0, 0, 0, 1, 1]);
        let b = collate::<TestBackend>(&[r, row(&[1, 2], &[false, true], &[0, 0])], &Default::default()).unwrap();
        let tgt: Vec<i64> = b.targets.into_data().to_vec().unwrap();
        let w: Vec<f32> = b.weights.into_data().to_vec().unwrap();
        assert_eq!(
            w,
            vec![
                1.0, 1.0, 0.0, 0.0, 0.0, /* row 2, padded */ 1.0, 0.0, 0.0, 0.0, 0.0
            ]
        );
        assert_eq!(&tgt[..2], &[6, 7]);
        assert_eq!(tgt[5], 2);
        assert_eq!(b.count, 3);
        let index: Vec<i64> = b.index.into_data().to_vec().unwrap();
        assert_eq!(index, vec![0, 1, 5], "counted targets in row order");
        let m = b.mask.to_vec();
        assert_eq!(
            m[1][4],
            vec![false, false, true, true, true],
            "padding is a segment of its own"
        );
        assert_eq!(m[0][3], vec![false, false, false, true, false], "documents stay apart");
    }

    #[test]
    fn a_multiverse_row_predicts_across_its_segments_and_attends_by_the_graph() {
        // prefix (seg 0), path 1 (seg 1), path 2 (seg 2), conclusion (seg 3), then a plain document.
        let mut r = row(&[1, 2, 3, 4, 5, 6, 7], &[true; 7], &[0, 1, 1, 2, 3, 4, 4]);
        r.segment_parents = vec![vec![], vec![0], vec![0], vec![0, 1, 2], vec![]];
        let b = collate::<TestBackend>(&[r], &Default::default()).unwrap();
        let w: Vec<f32> = b.weights.into_data().to_vec().unwrap();
        // Every next token of the first document is a target; the plain document's first is not.
        assert_eq!(w, vec![1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0]);
        let m = b.mask.to_vec();
        assert_eq!(
            m[0][3],
            vec![true, false, false, true, false, false, false],
            "path 2 is blind to path 1"
        );
        assert_eq!(
            m[0][4],
            vec![true, true, true, true, true, false, false],
            "the conclusion sees all"
        );
        assert_eq!(m[0][5], vec![false, false, false, false, false, true, false]);
    }

    /// Multiverse attention in training: changing one path's tokens leaves its sibling's logits
    /// unchanged; changing the shared prefix changes them (issue 11, item 5).
    #[test]
    fn sibling_paths_are_blind_to_each_other_and_see_the_prefix() {
        let model =
            crate::model::Decoder::<TestBackend>::init(&crate::model::config::tiny_for_tests(), &Default::default())
                .unwrap();
        // prefix 0..3 (seg 0), path A 3..6 (seg 1), path B 6..9 (seg 2), conclusion 9..11 (seg 3).
        let logits = |ids: &[i32]| -> Vec<Vec<f32>> {
            let mut r = row(ids, &[true; 11], &[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]);
            r.position_ids = vec![0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7];
            r.segment_parents = vec![vec![], vec![0], vec![0], vec![0, 1, 2]];
            let b = collate::<TestBackend>(&[r], &Default::default()).unwrap();
            let out = model.logits(model.hidden(b.input_ids, b.position_ids, &b.mask));
            let v: Vec<f32> = out.into_data().to_vec().unwrap();
            v.chunks(64).map(<[f32]>::to_vec).collect()
        };
        let same = |a: &[Vec<f32>], b: &[Vec<f32>], range: std::ops::Range<usize>| {
            range
                .into_iter()
                .all(|i| a[i].iter().zip(&b[i]).all(|(x, y)| (x - y).abs() < 1e-6))
        };
        let base = logits(&[1, 2, 3, 10, 11, 12, 20, 21, 22, 30, 31]);
        let path_a_changed = logits(&[1, 2, 3, 13, 14, 15, 20, 21, 22, 30, 31]);
        assert!(same(&base, &path_a_changed, 6..9), "path B saw path A");
        assert!(same(&base, &path_a_changed, 0..3), "the prefix saw path A");
        assert!(!same(&base, &path_a_changed, 3..6) && !same(&base, &path_a_changed, 9..11));
        let prefix_changed = logits(&[1, 5, 3, 10, 11, 12, 20, 21, 22, 30, 31]);
        assert!(!same(&base, &prefix_changed, 6..9), "path B must see the prefix");
        // Path B at the same positions as path A with the same tokens gives the same logits.
        let twins = logits(&[1, 2, 3, 10, 11, 12, 10, 11, 12, 30, 31]);
        assert!((0..3).all(|j| {
            twins[3 + j]
                .iter()
                .zip(&twins[6 + j])
                .all(|(x, y)| (x - y).abs() < 1e-5)
        }));
    }

    /// At λ = 0 the localist engine's log-probs are the plain ones and its penalty is 0; above,
    /// the bias concentrates attention on the block (fidelity up, entropy down) and Ω > 0; a
    /// gradient sent for Ω changes the weights' gradient.
    #[test]
    fn localist_is_plain_at_lambda_zero_and_concentrates_attention_above() {
        use crate::engine::api::{Engine, Grad, Want};
        use crate::engine::optim::AdamW;
        use crate::engine::state::EngineState;
        use crate::localist::{LocalistConfig, LocalistRun};
        type A = burn::backend::Autodiff<TestBackend>;
        let dev = Default::default();
        // A small initialisation: attention starts close to uniform, so the dial's effect is clear
        // whatever the draw.
        let config = crate::model::ModelConfig {
            initializer_range: 0.02,
            ..crate::model::config::tiny_for_tests()
        };
        let state = EngineState::fresh(&crate::model::Decoder::<A>::init(&config, &dev).unwrap());
        let r = row(&[1, 2, 3, 4, 5, 6, 7, 8], &[true; 8], &[0; 8]);
        // Threshold 2: every cosine is below it, so every token is a block of its own.
        let localist = |lambda: f64| -> LocalistRun {
            let c: LocalistConfig =
                toml::from_str(&format!("lambda = {lambda}\nblocks = \"adaptive\"\nthreshold = 2.0")).unwrap();
            LocalistRun::new(&c, 2, None).unwrap()
        };
        let run = |l: Option<LocalistRun>, domega: f32| {
            let mut e = BurnEngine::<A>::new(&config, &state, Some(AdamW::default()), l, &dev).unwrap();
            let micro = e.prepare(vec![r.clone()]).unwrap();
            e.forward(&micro, Want::default(), None).unwrap();
            let f = e.collect().unwrap();
            let layers = f.attention.len();
            e.backward(&Grad {
                dlogp: vec![-1.0; micro.count()],
                domega: vec![domega; layers],
            })
            .unwrap();
            (f, e.gradients().unwrap())
        };
        let (plain, plain_grads) = run(None, 0.0);
        assert!(plain.attention.is_empty() && plain.omega.is_empty());
        let (zero, _) = run(Some(localist(0.0)), 0.0);
        assert!(plain.logp.iter().zip(&zero.logp).all(|(a, b)| (a - b).abs() < 1e-5));
        assert_eq!((zero.omega.clone(), zero.attention.len()), (vec![0.0, 0.0], 2));
        let (one, _) = run(Some(localist(1.0)), 0.0);
        assert!(one.omega.iter().all(|&o| o > 0.0), "{:?}", one.omega);
        for (a, z) in one.attention.iter().zip(&zero.attention) {
            assert!(
                a.fidelity > z.fidelity && a.entropy_bits < z.entropy_bits,
                "{a:?} vs {z:?}"
            );
        }
        let (_, without) = run(Some(localist(1.0)), 0.0);
        let (_, with) = run(Some(localist(1.0)), 0.5);
        let q = "model.layers.1.self_attn.q_proj.weight";
        assert!(crate::engine::kernel::check::rel_err(&with[q], &without[q]) > 1e-3);
        assert!(crate::engine::kernel::check::rel_err(&without[q], &plain_grads[q]) > 1e-3);
        assert!(LocalistRun::new(&toml::from_str("lambda = 1.5").unwrap(), 2, None).is_err());
    }

    #[test]
    fn a_batch_without_loss_tokens_is_an_error() {
        let r = row(&[1, 2, 3], &[true, false, false], &[0, 0, 0]);
        let err = collate::<TestBackend>(&[r], &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no token to train on"), "{err}");
    }
}
