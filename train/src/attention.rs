//! Attention masks built from the segment structure of `tokens` rows.
//!
//! A mask says which keys each query may attend to. Today: causal within a segment, never across
//! one (`segment_ids` from packing; padding gets its own segment, so no query row is ever empty).
//! The mask is a value the layers receive, not something they compute, so Multiverse masks (sibling
//! paths blind to each other) and localist biases can be added as constructors and fields here
//! without changing the layers' callers.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

/// Which keys each query may attend to, for every row of a batch.
#[derive(Debug, Clone)]
pub struct AttentionMask<B: Backend> {
    /// `[batch, 1, seq_q, seq_k]`, true where attention is allowed.
    allowed: Tensor<B, 4, Bool>,
}

impl<B: Backend> AttentionMask<B> {
    /// Causal within segments: query `q` sees key `k` iff `k <= q` and both are in one segment.
    ///
    /// # Shapes
    /// `segment_ids`: `[batch, seq]`.
    pub fn segments(segment_ids: Tensor<B, 2, Int>) -> Self {
        let [b, t] = segment_ids.dims();
        let device = segment_ids.device();
        let same = segment_ids
            .clone()
            .reshape([b, t, 1])
            .equal(segment_ids.reshape([b, 1, t]));
        let pos = Tensor::<B, 1, Int>::arange(0..t as i64, &device);
        let causal = pos.clone().reshape([1, 1, t]).lower_equal(pos.reshape([1, t, 1]));
        let allowed = same.bool_and(causal.expand([b, t, t])).reshape([b, 1, t, t]);
        AttentionMask { allowed }
    }

    /// Causal over a left-padded batch whose keys are partly in a KV cache: query `i` of `seq_q`
    /// new queries sits at absolute position `seq_k - seq_q + i` and sees every valid key at or before
    /// it. A padding query sees itself only, so its row is never empty (an all `-inf` row would give
    /// NaN hidden states that reach real rows through `0 × NaN` in later layers).
    ///
    /// # Shapes
    /// `valid`: `[batch, seq_k]`, false at padding.
    pub fn padded_causal(valid: Tensor<B, 2, Bool>, seq_q: usize) -> Self {
        let [b, tk] = valid.dims();
        let device = valid.device();
        let offset = (tk - seq_q) as i64;
        let q_pos = Tensor::<B, 1, Int>::arange(offset..tk as i64, &device).reshape([1, seq_q, 1]);
        let k_pos = Tensor::<B, 1, Int>::arange(0..tk as i64, &device).reshape([1, 1, tk]);
        let causal = k_pos.clone().lower_equal(q_pos.clone()).expand([b, seq_q, tk]);
        let diagonal = k_pos.equal(q_pos).expand([b, seq_q, tk]);
        let keys = valid.reshape([b, 1, tk]).expand([b, seq_q, tk]);
        let allowed = causal.bool_and(keys).bool_or(diagonal).reshape([b, 1, seq_q, tk]);
        AttentionMask { allowed }
    }

    /// A mask given in full on the host: `allowed[(b * seq_q + q) * seq_k + k]`.
    pub fn from_dense(allowed: Vec<bool>, [b, q, k]: [usize; 3], device: &B::Device) -> Self {
        let allowed = Tensor::<B, 3, Bool>::from_data(burn::tensor::TensorData::new(allowed, [b, q, k]), device);
        AttentionMask {
            allowed: allowed.reshape([b, 1, q, k]),
        }
    }

    /// This mask narrowed to a sliding window of `size` keys: query `i` (at index
    /// `seq_k - seq_q + i` of the keys, as with a KV cache) keeps key `j` only when
    /// `i - size < j`, as `transformers`' `sliding_window_overlay` does. A query always keeps
    /// itself, so no row is emptied.
    pub fn windowed(&self, size: usize) -> Self {
        let [b, _, tq, tk] = self.allowed.dims();
        if tk <= size {
            return self.clone();
        }
        let device = self.allowed.device();
        let offset = (tk - tq) as i64;
        let q_pos = Tensor::<B, 1, Int>::arange(offset..tk as i64, &device).reshape([1, 1, tq, 1]);
        let k_pos = Tensor::<B, 1, Int>::arange(0..tk as i64, &device).reshape([1, 1, 1, tk]);
        let near = k_pos.greater(q_pos.sub_scalar(size as i64)).expand([b, 1, tq, tk]);
        AttentionMask {
            allowed: self.allowed.clone().bool_and(near),
        }
    }

    /// Sets disallowed scores to -inf.
    ///
    /// # Shapes
    /// `scores`: `[batch, heads, seq_q, seq_k]`.
    pub fn apply(&self, scores: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, q, k] = scores.dims();
        scores.mask_fill(self.allowed.clone().bool_not().expand([b, h, q, k]), f32::NEG_INFINITY)
    }

    /// The mask as nested vectors `[batch][q][k]`, for tests and debugging.
    pub fn to_vec(&self) -> Vec<Vec<Vec<bool>>> {
        let [b, _, tq, tk] = self.allowed.dims();
        let flat: Vec<bool> = self
            .allowed
            .clone()
            .into_data()
            .to_vec()
            .expect("a bool tensor reads as bools");
        (0..b)
            .map(|i| {
                (0..tq)
                    .map(|q| flat[(i * tq + q) * tk..(i * tq + q + 1) * tk].to_vec())
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;

    #[test]
    fn segments_are_causal_and_isolated() {
        let device = Default::default();
        let seg = Tensor::<TestBackend, 2, Int>::from_ints([[0, 0, 1, 1, 1]], &device);
        let m = AttentionMask::segments(seg).to_vec();
        let expect = [
            [true, false, false, false, false],
            [true, true, false, false, false],
            [false, false, true, false, false],
            [false, false, true, true, false],
            [false, false, true, true, true],
        ];
        for q in 0..5 {
            assert_eq!(m[0][q], expect[q].to_vec(), "query {q}");
        }
    }

    #[test]
    fn a_sliding_window_keeps_the_last_keys_of_each_query() {
        let device = Default::default();
        let seg = Tensor::<TestBackend, 2, Int>::from_ints([[0, 0, 0, 0, 1]], &device);
        let m = AttentionMask::segments(seg).windowed(2).to_vec();
        let expect = [
            [true, false, false, false, false],
            [true, true, false, false, false],
            [false, true, true, false, false],
            [false, false, true, true, false],
            [false, false, false, false, true],
        ];
        for q in 0..5 {
            assert_eq!(m[0][q], expect[q].to_vec(), "query {q}");
        }
        // With a cache: the one new query sits at the last key.
        let valid = Tensor::<TestBackend, 2, Bool>::from_bool(
            burn::tensor::TensorData::from([[true, true, true, true]]),
            &device,
        );
        let m = AttentionMask::padded_causal(valid, 1).windowed(3).to_vec();
        assert_eq!(m[0][0], vec![false, true, true, true]);
    }

    #[test]
    fn padded_causal_hides_padding_and_future() {
        let device = Default::default();
        // Row 0 is left-padded by two; two new queries over four keys.
        let valid = Tensor::<TestBackend, 2, Bool>::from_bool(
            burn::tensor::TensorData::from([[false, false, true, true], [true, true, true, true]]),
            &device,
        );
        let m = AttentionMask::padded_causal(valid.clone(), 2).to_vec();
        assert_eq!(
            m[0],
            vec![vec![false, false, true, false], vec![false, false, true, true]]
        );
        assert_eq!(m[1], vec![vec![true, true, true, false], vec![true, true, true, true]]);
        // Prefill: a padding query sees only itself.
        let m = AttentionMask::padded_causal(valid, 4).to_vec();
        assert_eq!(m[0][0], vec![true, false, false, false]);
        assert_eq!(m[0][1], vec![false, true, false, false]);
        assert_eq!(m[0][3], vec![false, false, true, true]);
    }
}
