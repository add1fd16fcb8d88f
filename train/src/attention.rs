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
        let [b, _, t, _] = self.allowed.dims();
        let flat: Vec<bool> = self
            .allowed
            .clone()
            .into_data()
            .to_vec()
            .expect("a bool tensor reads as bools");
        (0..b)
            .map(|i| {
                (0..t)
                    .map(|q| flat[(i * t + q) * t..(i * t + q + 1) * t].to_vec())
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
}
