//! Rotary position embeddings as `transformers` computes them for Llama and Qwen2:
//! `inv_freq[i] = theta^(-2i/d)`, angles `pos * inv_freq` repeated twice along the head dimension,
//! and `x * cos + rotate_half(x) * sin` with `rotate_half(x) = [-x2, x1]`.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Cosines and sines of the rotary angles of every position.
///
/// # Shapes
/// `position_ids`: `[batch, seq]`; returns two `[batch, 1, seq, head_dim]` tensors.
pub fn angles<B: Backend>(
    position_ids: Tensor<B, 2, Int>,
    head_dim: usize,
    theta: f64,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let device = position_ids.device();
    let [b, t] = position_ids.dims();
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32)
        .collect();
    let inv_freq = Tensor::<B, 1>::from_floats(inv_freq.as_slice(), &device).reshape([1, 1, half]);
    let pos = position_ids.float().reshape([b, t, 1]);
    let freqs = pos * inv_freq; // [b, t, half]
    let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([b, 1, t, head_dim]);
    (emb.clone().cos(), emb.sin())
}

/// Rotates queries or keys.
///
/// # Shapes
/// `x`: `[batch, heads, seq, head_dim]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`.
pub fn apply<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, t, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}
