//! Supervised fine-tuning: micro-batches of `tokens` rows and the masked cross-entropy.
//!
//! Position `t` predicts token `t + 1`. A target counts when `loss_mask[t + 1]` is set and tokens
//! `t` and `t + 1` belong to one document (one segment, or `t + 1` opens a segment that has parents,
//! as a Multiverse path or conclusion does), so the last token of one packed document never learns
//! to predict the first of the next. Multiverse rows (segments with parents) get their attention
//! mask built on the host from the segment graph; plain rows get it from segment ids on the device. The loss is summed over counted targets, never averaged: the loop
//! divides by the count of the whole accumulation window. Rows are right-padded to the longest row
//! of the micro-batch; padding forms its own segment (id -1) and is never a target.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use firebrand_data::TokensRow;

use burn::tensor::ElementConversion;

use crate::attention::AttentionMask;
use crate::error::TrainError;
use crate::localist::{BlockTensors, LayerMetrics, LocalistRun, Penalty};
use crate::model::Decoder;

/// One micro-batch on the device.
#[derive(Debug, Clone)]
pub struct SftBatch<B: Backend> {
    /// `[batch, seq]` token ids.
    pub input_ids: Tensor<B, 2, Int>,
    /// `[batch, seq]` positions within segments.
    pub position_ids: Tensor<B, 2, Int>,
    /// Which keys each query sees.
    pub mask: AttentionMask<B>,
    /// `[batch, seq]` the token each position predicts (0 where not counted).
    pub targets: Tensor<B, 2, Int>,
    /// `[batch, seq]` 1.0 where the target counts.
    pub weights: Tensor<B, 2>,
    /// Number of counted targets.
    pub count: usize,
    /// Tokens in the batch, padding excluded.
    pub tokens: usize,
}

/// The positions of `row` whose next token is a target, with that token (see the module doc).
/// The row's columns must have equal lengths.
pub fn counted_targets(row: &TokensRow) -> impl Iterator<Item = (usize, i32)> + '_ {
    let same_document = |i: usize| {
        let next = row.segment_ids[i + 1];
        next == row.segment_ids[i] || !row.parents_of(next.max(0) as usize).is_empty()
    };
    (0..row.input_ids.len().saturating_sub(1))
        .filter(move |&i| row.loss_mask[i + 1] && same_document(i))
        .map(|i| (i, row.input_ids[i + 1]))
}

/// Checks that a row's columns have equal lengths.
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
    Ok(())
}

/// Builds a micro-batch from rows.
///
/// # Errors
/// When a row's columns disagree in length, or no row has a counted target (a batch that would
/// train on nothing is an error, never a silent zero loss).
pub fn collate<B: Backend>(rows: &[TokensRow], device: &B::Device) -> Result<SftBatch<B>, TrainError> {
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
    let (mut count, mut tokens) = (0, 0);
    for (b, row) in rows.iter().enumerate() {
        check_row(row)?;
        let len = row.input_ids.len();
        tokens += len;
        for i in 0..len {
            let k = b * t + i;
            ids[k] = row.input_ids[i] as i64;
            pos[k] = row.position_ids[i] as i64;
            seg[k] = row.segment_ids[i] as i64;
        }
        for (i, target) in counted_targets(row) {
            tgt[b * t + i] = target as i64;
            w[b * t + i] = 1.0;
            count += 1;
        }
    }
    if count == 0 {
        return Err(TrainError::Batch(
            "a micro-batch has no token to train on (every loss-mask bit is off)\n  hint: check the dataset with `firebrand data debug`; `data tokenize` drops such rows".into(),
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
    Ok(SftBatch {
        input_ids: int(ids),
        position_ids: int(pos),
        mask,
        targets: int(tgt),
        weights: Tensor::from_data(TensorData::new(w, shape), device),
        count,
        tokens,
    })
}

/// Summed negative log-likelihood of the counted targets (Eq. of plain SFT: -Σ log p(x_{t+1} | x_≤t)).
///
/// # Shapes
/// Returns a one-element tensor.
pub fn loss<B: Backend>(model: &Decoder<B>, batch: &SftBatch<B>) -> Tensor<B, 1> {
    target_logps(model, batch).sum().neg()
}

/// `[batch, seq]` log p of each position's target, zero where the target does not count: what the
/// SFT loss sums over the batch and DPO's sequence log-probs sum per row.
pub fn target_logps<B: Backend>(model: &Decoder<B>, batch: &SftBatch<B>) -> Tensor<B, 2> {
    gather_targets(log_probs(model, batch, 1.0), batch)
}

/// `[batch, seq, vocab]` log-softmax of the logits divided by `temperature` (GRPO scores its
/// samples under the distribution they were drawn from).
pub fn log_probs<B: Backend>(model: &Decoder<B>, batch: &SftBatch<B>, temperature: f64) -> Tensor<B, 3> {
    let hidden = model.hidden(batch.input_ids.clone(), batch.position_ids.clone(), &batch.mask);
    let logits = model.logits(hidden);
    let logits = if temperature == 1.0 {
        logits
    } else {
        logits.div_scalar(temperature)
    };
    log_softmax(logits, 2)
}

/// `[batch, seq]` each position's target's entry of `log_probs`, zero where it does not count.
pub fn gather_targets<B: Backend>(log_probs: Tensor<B, 3>, batch: &SftBatch<B>) -> Tensor<B, 2> {
    let [b, t, _] = log_probs.dims();
    let logp = log_probs
        .gather(2, batch.targets.clone().reshape([b, t, 1]))
        .reshape([b, t]);
    logp * batch.weights.clone()
}

/// The SFT loss with the localist dial (`crate::localist`): every layer's scores get its bias,
/// and `Σ_l λ_l·γ·Ω_l` (Ω a mean per query) is added, scaled by the batch's count of targets so
/// that after the window's division it weighs like a per-token term. Returns the total, the
/// cross-entropy part alone, the penalty and each layer's entropy and fidelity.
pub fn loss_localist<B: Backend>(
    model: &Decoder<B>,
    batch: &SftBatch<B>,
    rows: &[TokensRow],
    run: &LocalistRun,
) -> (Tensor<B, 1>, f64, f64, Vec<LayerMetrics>) {
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
    let logits = model.logits(hidden);
    let [b, t, _] = logits.dims();
    let logp = log_softmax(logits, 2)
        .gather(2, batch.targets.clone().reshape([b, t, 1]))
        .reshape([b, t]);
    let ce = (logp * batch.weights.clone()).sum().neg();
    let mut total = ce.clone();
    let mut penalty = 0.0;
    let mut metrics = Vec::with_capacity(weights.len());
    for (w, &lambda) in weights.iter().zip(&run.lambdas) {
        let scale = lambda * run.config.gamma;
        if scale > 0.0 && run.config.penalty != Penalty::None {
            let omega = bt.penalty(w, run.config.penalty);
            penalty += scale * omega.clone().into_scalar().elem::<f64>();
            total = total + omega.mul_scalar(scale * batch.count as f64);
        }
        metrics.push(LayerMetrics {
            entropy_bits: bt.entropy_bits(w).into_scalar().elem::<f64>(),
            fidelity: bt.fidelity(w).into_scalar().elem::<f64>(),
        });
    }
    let ce = ce.into_scalar().elem::<f64>();
    (total, ce, penalty, metrics)
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
        assert_eq!((b.count, b.tokens), (3, 7));
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

    /// At λ = 0 the localist loss is the plain loss; above, the bias concentrates attention on the
    /// block and the penalty (weighted by the target count) is added to the cross-entropy.
    #[test]
    fn localist_loss_is_plain_at_lambda_zero_and_adds_the_penalty_above() {
        use crate::localist::{LocalistConfig, LocalistRun};
        let dev = Default::default();
        // A small initialisation: attention starts close to uniform, so the dial's effect is clear
        // whatever the draw.
        let config = crate::model::ModelConfig {
            initializer_range: 0.02,
            ..crate::model::config::tiny_for_tests()
        };
        let model = crate::model::Decoder::<TestBackend>::init(&config, &dev).unwrap();
        let r = row(&[1, 2, 3, 4, 5, 6, 7, 8], &[true; 8], &[0; 8]);
        let b = collate::<TestBackend>(std::slice::from_ref(&r), &dev).unwrap();
        let plain: f32 = loss(&model, &b).into_scalar();
        // Threshold 2: every cosine is below it, so every token is a block of its own.
        let localist = |lambda: f64| -> LocalistConfig {
            toml::from_str(&format!("lambda = {lambda}\nblocks = \"adaptive\"\nthreshold = 2.0")).unwrap()
        };
        let run0 = LocalistRun::new(&localist(0.0), 2, None).unwrap();
        let (total, ce, penalty, layers0) = loss_localist(&model, &b, std::slice::from_ref(&r), &run0);
        assert!((total.into_scalar() - plain).abs() < 1e-4 && (ce as f32 - plain).abs() < 1e-4);
        assert_eq!((penalty, layers0.len()), (0.0, 2));
        let run1 = LocalistRun::new(&localist(1.0), 2, None).unwrap();
        let (total, ce, penalty, layers1) = loss_localist(&model, &b, std::slice::from_ref(&r), &run1);
        assert!(penalty > 0.0);
        let expected = ce + penalty * b.count as f64;
        assert!((f64::from(total.into_scalar()) - expected).abs() < 1e-3 * expected);
        for (a, z) in layers1.iter().zip(&layers0) {
            assert!(
                a.fidelity > z.fidelity && a.entropy_bits < z.entropy_bits,
                "{a:?} vs {z:?}"
            );
        }
        assert!(LocalistRun::new(&localist(1.5), 2, None).is_err());
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
