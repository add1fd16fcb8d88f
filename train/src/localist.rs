//! Localist attention: a dial λ ∈ [0, 1] that pulls each query's attention into its semantic
//! block (Diederich, "Localist LLMs", arXiv 2510.09338; AILA 2511.03559; Progressive
//! Localisation 2511.18375).
//!
//! **Our formulation.** The papers' equations were not available (only their abstracts; see
//! `shared/research/localist_grpo.md` part A), so this is a reconstruction, not their method:
//! - Blocks partition the keys: by segment ([`BlockSource::Segments`]), a new block after each
//!   anchor token such as sentence punctuation ([`BlockSource::Anchors`]), or a new block where the
//!   cosine of neighbouring token embeddings falls below a threshold ([`BlockSource::Adaptive`]).
//!   A query's target block is its own, or the one before it ([`TargetRule`]).
//! - **Bias** (works at inference without retraining): scores of keys outside the target block get
//!   `−λ_l·Δ` before the softmax.
//! - **Penalty** (training): `λ_l·γ·Ω_l`, Ω the mean off-target attention mass, or a group lasso
//!   (Σ over non-target blocks of the L2 norm of the block's weights), averaged over rows, heads
//!   and queries.
//! - **Schedules**: uniform λ_l = λ, or polynomial λ_l = λ·(l/(L−1))^β (β = 1, 3, 5 in
//!   Progressive Localisation), so early layers stay distributed.
//! - **Metrics**: attention entropy in bits and pointer fidelity (mass on the target block), per
//!   layer, averaged over real (non-padding) queries.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// How λ varies with depth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// The same λ in every layer.
    #[default]
    Uniform,
    /// λ_l = λ·(l/(L−1))^β.
    Polynomial,
}

/// What the penalty measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Penalty {
    /// No penalty (bias only).
    None,
    /// Mean attention mass outside the target block.
    #[default]
    OffTarget,
    /// Σ over non-target blocks of ‖weights in the block‖₂.
    GroupLasso,
}

/// Where blocks come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BlockSource {
    /// One block per segment (packed documents, Multiverse segments).
    Segments,
    /// A new block after each anchor token (and at each segment start).
    #[default]
    Anchors,
    /// A new block where neighbouring token embeddings' cosine falls below `threshold`.
    Adaptive,
}

/// Which block a query should attend to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TargetRule {
    /// Its own block.
    #[default]
    Own,
    /// The block before its own (its own in the first block): a pointer to the previous sentence.
    Previous,
}

/// The target block of each token under `rule`. `Previous` points to the block before only
/// within one segment: the first block of a document (or of a Multiverse path) targets itself,
/// since the mask hides other segments anyway.
pub fn targets(blocks: &[i32], segment_ids: &[i32], rule: TargetRule) -> Vec<i32> {
    match rule {
        TargetRule::Own => blocks.to_vec(),
        TargetRule::Previous => {
            // The segment each block starts in.
            let mut segment_of: std::collections::HashMap<i32, i32> = std::collections::HashMap::new();
            for (&b, &s) in blocks.iter().zip(segment_ids) {
                segment_of.entry(b).or_insert(s);
            }
            blocks
                .iter()
                .zip(segment_ids)
                .map(|(&b, &s)| if segment_of.get(&(b - 1)) == Some(&s) { b - 1 } else { b })
                .collect()
        }
    }
}

/// `[localist]` of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalistConfig {
    /// The dial's maximum, in [0, 1].
    pub lambda: f64,
    /// How λ varies with depth.
    #[serde(default)]
    pub schedule: Schedule,
    /// Exponent of the polynomial schedule.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Bias strength Δ: off-block scores get −λ_l·Δ (0 turns the bias off).
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// Penalty weight γ (0 turns the penalty off).
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// What the penalty measures.
    #[serde(default)]
    pub penalty: Penalty,
    /// Where blocks come from.
    #[serde(default)]
    pub blocks: BlockSource,
    /// Anchor texts (each must be one token), for `blocks = "anchors"`.
    #[serde(default = "default_anchors")]
    pub anchors: Vec<String>,
    /// Cosine threshold, for `blocks = "adaptive"`.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Which block each query should attend to.
    #[serde(default)]
    pub target: TargetRule,
}

fn default_beta() -> f64 {
    1.0
}
fn default_delta() -> f64 {
    8.0
}
fn default_gamma() -> f64 {
    1.0
}
fn default_threshold() -> f64 {
    0.0
}
fn default_anchors() -> Vec<String> {
    [".", "!", "?", "\n"].iter().map(|s| s.to_string()).collect()
}

impl LocalistConfig {
    /// λ of each of `layers` layers.
    pub fn layer_lambdas(&self, layers: usize) -> Vec<f64> {
        (0..layers)
            .map(|l| match self.schedule {
                Schedule::Uniform => self.lambda,
                Schedule::Polynomial if layers > 1 => self.lambda * (l as f64 / (layers - 1) as f64).powf(self.beta),
                Schedule::Polynomial => self.lambda,
            })
            .collect()
    }
}

/// Block ids per token: a new block after each token in `anchors`, and at each segment change.
pub fn blocks_from_anchors(input_ids: &[i32], segment_ids: &[i32], anchors: &[i32]) -> Vec<i32> {
    let mut out = Vec::with_capacity(input_ids.len());
    let mut block = 0;
    for i in 0..input_ids.len() {
        if i > 0 && (segment_ids[i] != segment_ids[i - 1] || anchors.contains(&input_ids[i - 1])) {
            block += 1;
        }
        out.push(block);
    }
    out
}

/// Block ids per token: a new block where the cosine of token `i`'s embedding with token `i−1`'s
/// is below `threshold`, and at each segment change.
pub fn blocks_adaptive(embeddings: &[Vec<f32>], segment_ids: &[i32], threshold: f64) -> Vec<i32> {
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        f64::from(dot / (na * nb).max(1e-12))
    };
    let mut out = Vec::with_capacity(embeddings.len());
    let mut block = 0;
    for i in 0..embeddings.len() {
        if i > 0 && (segment_ids[i] != segment_ids[i - 1] || cos(&embeddings[i], &embeddings[i - 1]) < threshold) {
            block += 1;
        }
        out.push(block);
    }
    out
}

/// Blocks of a batch on the device: which keys are off each query's target block, and blocks
/// and targets as one-hot columns (for the group lasso).
#[derive(Debug, Clone)]
pub struct BlockTensors<B: Backend> {
    /// `[batch, 1, seq, seq]`, true where key `k`'s block differs from query `q`'s target.
    pub off: Tensor<B, 4, Bool>,
    /// `[batch, 1, seq, blocks]`, 1 at each key's block.
    pub onehot: Tensor<B, 4>,
    /// `[batch, 1, seq, blocks]`, 1 at each query's target block.
    pub target: Tensor<B, 4>,
    /// `[batch, 1, seq, 1]`, 1 for real queries, 0 for padding.
    pub real: Tensor<B, 4>,
}

impl<B: Backend> BlockTensors<B> {
    /// From per-row block ids and target blocks (rows padded to `seq`; `real[b][i]` false at
    /// padding).
    pub fn new(blocks: &[Vec<i32>], targets: &[Vec<i32>], real: &[Vec<bool>], seq: usize, device: &B::Device) -> Self {
        let b = blocks.len();
        let k = blocks.iter().flatten().copied().max().unwrap_or(0).max(0) as usize + 1;
        let block_at = |r: usize, i: usize| blocks[r].get(i).copied().unwrap_or(-1);
        let target_at = |r: usize, i: usize| targets.get(r).and_then(|t| t.get(i)).copied().unwrap_or(-1);
        let mut off = Vec::with_capacity(b * seq * seq);
        let mut onehot = vec![0f32; b * seq * k];
        let mut target = vec![0f32; b * seq * k];
        let mut realv = Vec::with_capacity(b * seq);
        for r in 0..b {
            for q in 0..seq {
                for key in 0..seq {
                    off.push(block_at(r, key) != target_at(r, q));
                }
                if let Ok(blk) = usize::try_from(block_at(r, q)) {
                    onehot[(r * seq + q) * k + blk] = 1.0;
                }
                if let Some(t) = usize::try_from(target_at(r, q)).ok().filter(|&t| t < k) {
                    target[(r * seq + q) * k + t] = 1.0;
                }
                realv.push(if real[r].get(q).copied().unwrap_or(false) {
                    1f32
                } else {
                    0.0
                });
            }
        }
        BlockTensors {
            off: Tensor::from_data(TensorData::new(off, [b, 1, seq, seq]), device),
            onehot: Tensor::from_data(TensorData::new(onehot, [b, 1, seq, k]), device),
            target: Tensor::from_data(TensorData::new(target, [b, 1, seq, k]), device),
            real: Tensor::from_data(TensorData::new(realv, [b, 1, seq, 1]), device),
        }
    }

    /// The additive bias of a layer: `−λ·Δ` on off-block keys.
    pub fn bias(&self, lambda_delta: f64) -> Tensor<B, 4> {
        self.off.clone().float().mul_scalar(-lambda_delta)
    }

    fn mean_over_queries(&self, per_query: Tensor<B, 4>) -> Tensor<B, 1> {
        // per_query: [b, h, q, 1]; average over real queries and heads.
        let [b, h, q, _] = per_query.dims();
        let total = (per_query * self.real.clone().expand([b, h, q, 1])).sum();
        total / self.real.clone().sum().mul_scalar(h as f64).clamp_min(1.0)
    }

    /// Mean attention mass on the target block (pointer fidelity).
    pub fn fidelity(&self, weights: &Tensor<B, 4>) -> Tensor<B, 1> {
        let on = self.off.clone().bool_not().float();
        let [b, h, q, k] = weights.dims();
        self.mean_over_queries((weights.clone() * on.expand([b, h, q, k])).sum_dim(3))
    }

    /// Mean attention entropy in bits.
    pub fn entropy_bits(&self, weights: &Tensor<B, 4>) -> Tensor<B, 1> {
        let w = weights.clone();
        let h = (w.clone() * w.add_scalar(1e-12).log()).sum_dim(3).neg();
        self.mean_over_queries(h).div_scalar(std::f64::consts::LN_2)
    }

    /// The penalty Ω of one layer's weights.
    pub fn penalty(&self, weights: &Tensor<B, 4>, kind: Penalty) -> Tensor<B, 1> {
        let device = weights.device();
        match kind {
            Penalty::None => Tensor::zeros([1], &device),
            Penalty::OffTarget => self.fidelity(weights).neg().add_scalar(1.0),
            Penalty::GroupLasso => {
                let [b, h, q, _] = weights.dims();
                let kb = self.onehot.dims()[3];
                // Squared weights summed per block: [b, h, q, K].
                let per_block = weights.clone().powi_scalar(2).matmul(self.onehot.clone().expand([
                    b,
                    h,
                    self.onehot.dims()[2],
                    kb,
                ]));
                let norms = per_block.add_scalar(1e-12).sqrt();
                let not_target = self.target.clone().neg().add_scalar(1.0).expand([b, h, q, kb]);
                self.mean_over_queries((norms * not_target).sum_dim(3))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;

    type B = TestBackend;

    #[test]
    fn schedules_follow_the_formula() {
        let mut c: LocalistConfig = toml::from_str("lambda = 1.0\nschedule = \"polynomial\"\nbeta = 3.0").unwrap();
        let l = c.layer_lambdas(12);
        assert_eq!(l[0], 0.0);
        assert!((l[6] - (6.0f64 / 11.0).powi(3)).abs() < 1e-12 && (l[6] - 0.162).abs() < 1e-3);
        assert!((l[10] - 0.751).abs() < 1e-3 && l[11] == 1.0);
        c.beta = 5.0;
        assert!((c.layer_lambdas(12)[8] - 0.203).abs() < 1e-3);
        c.schedule = Schedule::Uniform;
        c.lambda = 0.6;
        assert!(c.layer_lambdas(3).iter().all(|&x| x == 0.6));
    }

    #[test]
    fn blocks_from_anchors_segments_and_embeddings() {
        // "a b . c d ! e" with anchors . and !; a segment change before the last token.
        assert_eq!(
            blocks_from_anchors(&[1, 2, 9, 3, 4, 8, 5], &[0, 0, 0, 0, 0, 0, 1], &[9, 8]),
            [0, 0, 0, 1, 1, 1, 2]
        );
        let e = vec![vec![1.0, 0.0], vec![0.9, 0.1], vec![0.0, 1.0], vec![0.1, 1.0]];
        assert_eq!(blocks_adaptive(&e, &[0, 0, 0, 0], 0.5), [0, 0, 1, 1]);
    }

    fn uniform_weights(causal: usize) -> Tensor<B, 4> {
        // One row, one head, 4 queries attending uniformly over their causal prefix.
        let mut w = vec![0f32; causal * causal];
        for q in 0..causal {
            for k in 0..=q {
                w[q * causal + k] = 1.0 / (q + 1) as f32;
            }
        }
        Tensor::from_data(TensorData::new(w, [1, 1, causal, causal]), &Default::default())
    }

    #[test]
    fn entropy_fidelity_and_penalties_on_small_tensors() {
        // Blocks [0, 0, 1, 1]; uniform causal weights.
        let blocks = [vec![0, 0, 1, 1]];
        let t = BlockTensors::<B>::new(&blocks, &blocks, &[vec![true; 4]], 4, &Default::default());
        let w = uniform_weights(4);
        let scalar = |x: Tensor<B, 1>| x.into_scalar();
        // Entropy: mean of log2(1), log2(2), log2(3), log2(4).
        let h = (0.0 + 1.0 + 3f32.log2() + 2.0) / 4.0;
        assert!((scalar(t.entropy_bits(&w)) - h).abs() < 1e-5);
        // Fidelity: q0 1, q1 1, q2 1/3, q3 2/4.
        let f = (1.0 + 1.0 + 1.0 / 3.0 + 0.5) / 4.0;
        assert!((scalar(t.fidelity(&w)) - f).abs() < 1e-6);
        assert!((scalar(t.penalty(&w, Penalty::OffTarget)) - (1.0 - f)).abs() < 1e-6);
        // Group lasso: q2 off-block norm sqrt(2·(1/3)²), q3 sqrt(2·(1/4)²); q0, q1 have none.
        let gl = ((2.0f32 / 9.0).sqrt() + (2.0f32 / 16.0).sqrt()) / 4.0;
        assert!((scalar(t.penalty(&w, Penalty::GroupLasso)) - gl).abs() < 1e-5);
        // Padding queries do not count.
        let t2 = BlockTensors::<B>::new(
            &blocks,
            &blocks,
            &[vec![true, true, false, false]],
            4,
            &Default::default(),
        );
        assert!((scalar(t2.fidelity(&w)) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_previous_block_rule_points_back_one_sentence() {
        assert_eq!(
            targets(&[0, 0, 1, 1, 2], &[0; 5], TargetRule::Previous),
            [0, 0, 0, 0, 1]
        );
        assert_eq!(targets(&[0, 0, 1], &[0; 3], TargetRule::Own), [0, 0, 1]);
        // A new document's first block targets itself, not the other document's last block.
        assert_eq!(
            targets(&[0, 1, 2, 3], &[0, 0, 1, 1], TargetRule::Previous),
            [0, 0, 2, 2]
        );
        // Query 3 (block 1) targets block 0: its fidelity counts keys 0 and 1.
        let blocks = [vec![0, 0, 1, 1]];
        let t = BlockTensors::<B>::new(
            &blocks,
            &[targets(&blocks[0], &[0; 4], TargetRule::Previous)],
            &[vec![true; 4]],
            4,
            &Default::default(),
        );
        let w = uniform_weights(4);
        let f = (1.0 + 1.0 + 2.0 / 3.0 + 2.0 / 4.0) / 4.0;
        assert!((t.fidelity(&w).into_scalar() - f).abs() < 1e-6);
        // Group lasso excludes the target block: q2 and q3 are charged for block 1.
        let gl = ((1.0f32 / 9.0).sqrt() + (2.0f32 / 16.0).sqrt()) / 4.0;
        assert!((t.penalty(&w, Penalty::GroupLasso).into_scalar() - gl).abs() < 1e-5);
    }

    #[test]
    fn the_bias_moves_mass_onto_the_block_and_lowers_entropy() {
        let blocks = [vec![0, 0, 1, 1]];
        let t = BlockTensors::<B>::new(&blocks, &blocks, &[vec![true; 4]], 4, &Default::default());
        let scores = Tensor::<B, 4>::zeros([1, 1, 4, 4], &Default::default());
        let causal = crate::attention::AttentionMask::<B>::segments(Tensor::zeros([1, 4], &Default::default()));
        let attend = |lam: f64| burn::tensor::activation::softmax(causal.apply(scores.clone() + t.bias(lam * 8.0)), 3);
        let (w0, w1) = (attend(0.0), attend(1.0));
        let bias = t.bias(2.0).into_data().to_vec::<f32>().unwrap();
        assert_eq!(bias[2 * 4..3 * 4], [-2.0, -2.0, 0.0, 0.0], "query 2 is in block 1");
        assert!(t.fidelity(&w1).into_scalar() > 0.99 && t.fidelity(&w0).into_scalar() < 0.71);
        assert!(t.entropy_bits(&w1).into_scalar() < t.entropy_bits(&w0).into_scalar());
    }
}

/// A recipe's `[localist]` resolved for a model and tokenizer: λ per layer and anchor token ids.
#[derive(Debug, Clone)]
pub struct LocalistRun {
    /// The configuration.
    pub config: LocalistConfig,
    /// λ_l per layer.
    pub lambdas: Vec<f64>,
    /// Token ids of the anchors.
    pub anchor_ids: Vec<i32>,
}

impl LocalistRun {
    /// Resolves `config` for `layers` layers; anchors are looked up in `tokenizer`.
    ///
    /// # Errors
    /// λ outside [0, 1], or an anchor that is not a single token.
    pub fn new(
        config: &LocalistConfig,
        layers: usize,
        tokenizer: Option<&firebrand_data::tokenizer::Tokenizer>,
    ) -> Result<Self, crate::error::TrainError> {
        if !(0.0..=1.0).contains(&config.lambda) {
            return Err(crate::error::TrainError::Config(format!(
                "localist.lambda must be in [0, 1], got {}",
                config.lambda
            )));
        }
        for (name, v) in [("beta", config.beta), ("delta", config.delta), ("gamma", config.gamma)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(crate::error::TrainError::Config(format!(
                    "localist.{name} must be a finite number ≥ 0, got {v}"
                )));
            }
        }
        let mut anchor_ids = Vec::new();
        if config.blocks == BlockSource::Anchors {
            let Some(tok) = tokenizer else {
                return Err(crate::error::TrainError::Config(
                    "localist.blocks = \"anchors\" needs a tokenizer (data.tokenizer) to find the anchor tokens".into(),
                ));
            };
            for a in &config.anchors {
                let ids = tok
                    .encode(a.as_str(), false)
                    .map_err(|e| crate::error::TrainError::Config(format!("localist.anchors: {a:?}: {e}")))?;
                match ids.get_ids() {
                    [id] => anchor_ids.push(*id as i32),
                    other => {
                        return Err(crate::error::TrainError::Config(format!(
                            "localist.anchors: {a:?} is {} tokens, not one\n  hint: use single-token anchors such as \".\" or \"\\n\"",
                            other.len()
                        )));
                    }
                }
            }
        }
        Ok(LocalistRun {
            lambdas: config.layer_lambdas(layers),
            config: config.clone(),
            anchor_ids,
        })
    }

    /// Block ids of each row (padding excluded), by the configured source; `embeddings` gives a
    /// row's token embeddings (asked only for adaptive blocks, see [`LocalistRun::needs_embeddings`]).
    pub fn blocks_with(
        &self,
        rows: &[firebrand_data::TokensRow],
        mut embeddings: impl FnMut(&firebrand_data::TokensRow) -> Vec<Vec<f32>>,
    ) -> Vec<Vec<i32>> {
        rows.iter()
            .map(|r| match self.config.blocks {
                BlockSource::Segments => r.segment_ids.clone(),
                BlockSource::Anchors => blocks_from_anchors(&r.input_ids, &r.segment_ids, &self.anchor_ids),
                BlockSource::Adaptive => blocks_adaptive(&embeddings(r), &r.segment_ids, self.config.threshold),
            })
            .collect()
    }

    /// Whether blocks come from the token embeddings (`blocks = "adaptive"`).
    pub fn needs_embeddings(&self) -> bool {
        self.config.blocks == BlockSource::Adaptive
    }

    /// Block ids of each row (padding excluded), with the embeddings of `model`.
    pub fn blocks<B: Backend>(
        &self,
        rows: &[firebrand_data::TokensRow],
        model: &crate::model::Decoder<B>,
    ) -> Vec<Vec<i32>> {
        // Only the rows' own embeddings come to the host, not the whole table.
        let w = model.embed_tokens.weight.val();
        let [_, d] = w.dims();
        let device = w.device();
        self.blocks_with(rows, |r| {
            let n = r.input_ids.len();
            let ids: Vec<i64> = r.input_ids.iter().map(|&t| i64::from(t)).collect();
            let idx = Tensor::<B, 1, burn::tensor::Int>::from_data(TensorData::new(ids, [n]), &device);
            let flat: Vec<f32> = w
                .clone()
                .select(0, idx)
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap_or_default();
            flat.chunks(d.max(1)).map(<[f32]>::to_vec).collect()
        })
    }

    /// The target block of every token of every row, by the configured rule.
    pub fn targets(&self, blocks: &[Vec<i32>], rows: &[firebrand_data::TokensRow]) -> Vec<Vec<i32>> {
        blocks
            .iter()
            .zip(rows)
            .map(|(b, r)| targets(b, &r.segment_ids, self.config.target))
            .collect()
    }

    /// Per-layer biases (`None` where λ_l·Δ is 0).
    pub fn biases<B: Backend>(&self, blocks: &BlockTensors<B>) -> Vec<Option<Tensor<B, 4>>> {
        self.lambdas
            .iter()
            .map(|&l| (l * self.config.delta > 0.0).then(|| blocks.bias(l * self.config.delta)))
            .collect()
    }
}

/// Attention metrics of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LayerMetrics {
    /// Mean entropy in bits.
    pub entropy_bits: f64,
    /// Mean mass on the target block.
    pub fidelity: f64,
}

/// What `firebrand eval attention` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttentionReport {
    /// λ_l per layer used.
    pub lambdas: Vec<f64>,
    /// Per layer, averaged over rows (weighted by targets).
    pub layers: Vec<LayerMetrics>,
    /// Mean negative log-likelihood per target token.
    pub nll: f64,
    /// exp(nll).
    pub perplexity: f64,
    /// Share of targets predicted by the argmax.
    pub accuracy: f64,
    /// Targets scored.
    pub targets: usize,
}
