//! AdamW with decoupled weight decay on matrices only, and global gradient-norm clipping.
//!
//! Weight decay applies to parameters of rank 2 or more (projections, embeddings) and never to
//! norms or biases (rank 1), the rule of nanoGPT and of torch recipes that split parameter groups
//! by dimension. The update follows `torch.optim.AdamW`: `p -= lr * wd * p`, then the bias-corrected
//! Adam step with `eps` added outside the square root.
//!
//! burn's own gradient clipping clips each parameter's norm separately; `clip_factor` scales all
//! gradients together by `max_norm / total_norm` as `torch.nn.utils.clip_grad_norm_` does.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, LearningRate, SimpleOptimizer};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

/// AdamW hyper-parameters (`train.beta1`, ...), and burn's optimizer; the kernel engine's AdamW
/// kernel takes the same values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay of matrices.
    pub weight_decay: f64,
}

impl Default for AdamW {
    /// `torch.optim.AdamW`'s defaults.
    fn default() -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamW {
    /// The hyper-parameters of a recipe's `[train]`.
    pub fn of(t: &crate::recipe::TrainSection) -> Self {
        AdamW {
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.eps,
            weight_decay: t.weight_decay,
        }
    }
}

/// The factor gradients of global norm `norm` are scaled by to clip them to `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (`max_norm / (norm + 1e-6)` when the norm exceeds it).
pub fn clip_factor(norm: f64, max_norm: Option<f64>) -> f64 {
    match max_norm {
        Some(max) if norm > max && norm.is_finite() => max / (norm + 1e-6),
        _ => 1.0,
    }
}

/// Per-parameter moments and step count.
#[derive(Record, Clone)]
pub struct AdamWState<B: Backend, const D: usize> {
    /// First moment.
    pub m: Tensor<B, D>,
    /// Second moment.
    pub v: Tensor<B, D>,
    /// Updates applied so far.
    pub time: usize,
}

impl<B: Backend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (m, v, time) = match state {
            Some(s) => (
                s.m.mul_scalar(self.beta1)
                    .add(grad.clone().mul_scalar(1.0 - self.beta1)),
                s.v.mul_scalar(self.beta2)
                    .add(grad.square().mul_scalar(1.0 - self.beta2)),
                s.time + 1,
            ),
            None => (
                grad.clone().mul_scalar(1.0 - self.beta1),
                grad.square().mul_scalar(1.0 - self.beta2),
                1,
            ),
        };
        let decay = if D >= 2 { self.weight_decay } else { 0.0 };
        let tensor = if decay > 0.0 {
            tensor.mul_scalar(1.0 - lr * decay)
        } else {
            tensor
        };
        let m_hat = m.clone().div_scalar(1.0 - self.beta1.powi(time as i32));
        let v_hat = v.clone().div_scalar(1.0 - self.beta2.powi(time as i32));
        let update = m_hat.div(v_hat.sqrt().add_scalar(self.eps)).mul_scalar(lr);
        (tensor - update, Some(AdamWState { m, v, time }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        AdamWState {
            m: state.m.to_device(device),
            v: state.v.to_device(device),
            time: state.time,
        }
    }
}

/// The parameter ids of a module, with their ranks.
struct ParamIds(Vec<(ParamId, usize)>);

impl<B: Backend> ModuleVisitor<B> for ParamIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push((param.id, D));
    }
}

fn grad_sq_sum<B: Backend, const D: usize>(grads: &GradientsParams, id: ParamId) -> Option<Tensor<B, 1>> {
    grads.get::<B, D>(id).map(|g| g.square().sum())
}

fn scale_grad<B: Backend, const D: usize>(grads: &mut GradientsParams, id: ParamId, factor: f64) {
    if let Some(g) = grads.remove::<B, D>(id) {
        grads.register(id, g.mul_scalar(factor));
    }
}

/// Scales the gradients of the given parameters by `factor`.
fn scale_all<B: Backend>(grads: &mut GradientsParams, ids: &[(ParamId, usize)], factor: f64) {
    for &(id, rank) in ids {
        match rank {
            1 => scale_grad::<B, 1>(grads, id, factor),
            2 => scale_grad::<B, 2>(grads, id, factor),
            3 => scale_grad::<B, 3>(grads, id, factor),
            _ => scale_grad::<B, 4>(grads, id, factor),
        }
    }
}

/// The global L2 norm of all gradients of `model` in `grads`.
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &GradientsParams) -> f64 {
    let mut ids = ParamIds(Vec::new());
    model.visit(&mut ids);
    let mut total: Option<Tensor<B::InnerBackend, 1>> = None;
    for &(id, rank) in &ids.0 {
        let sq = match rank {
            1 => grad_sq_sum::<B::InnerBackend, 1>(grads, id),
            2 => grad_sq_sum::<B::InnerBackend, 2>(grads, id),
            3 => grad_sq_sum::<B::InnerBackend, 3>(grads, id),
            _ => grad_sq_sum::<B::InnerBackend, 4>(grads, id),
        };
        if let Some(sq) = sq {
            total = Some(match total {
                Some(t) => t + sq,
                None => sq,
            });
        }
    }
    // One device-to-host sync for the whole model.
    total.map(|t| t.into_scalar().elem::<f64>().sqrt()).unwrap_or(0.0)
}

/// Scales every gradient of `model` in `grads` by `factor` (clipping).
pub fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &mut GradientsParams, factor: f64) {
    if factor != 1.0 {
        let mut ids = ParamIds(Vec::new());
        model.visit(&mut ids);
        scale_all::<B::InnerBackend>(grads, &ids.0, factor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;

    #[test]
    fn matches_torch_adamw_on_hand_computed_steps() {
        // torch.optim.AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5) on a 1x1 matrix
        // p = 1.0 with grads 0.5 then -0.25. Step 1: decay to 1 * (1 - 0.1 * 0.5) = 0.95, then
        // Adam's first step is lr * sign(g): p = 0.85.
        let opt = AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.5,
        };
        let device = Default::default();
        let p = Tensor::<TestBackend, 2>::from_floats([[1.0]], &device);
        let (p, s) = SimpleOptimizer::<TestBackend>::step(&opt, 0.1, p, Tensor::from_floats([[0.5]], &device), None);
        let v: f32 = p.clone().into_scalar();
        assert!((v - 0.85).abs() < 1e-6, "{v}");
        // step 2 by hand: m = 0.9*0.05 + 0.1*(-0.25) = 0.02, v = 0.999*0.00025 + 0.001*0.0625
        let m = 0.02f64;
        let vv = 0.999 * 0.00025 + 0.001 * 0.0625;
        let (mh, vh) = (m / (1.0 - 0.81), vv / (1.0 - 0.999f64.powi(2)));
        let expected = 0.85 * (1.0 - 0.1 * 0.5) - 0.1 * mh / (vh.sqrt() + 1e-8);
        let (p, _) = SimpleOptimizer::<TestBackend>::step(&opt, 0.1, p, Tensor::from_floats([[-0.25]], &device), s);
        let v: f32 = p.into_scalar();
        assert!((v as f64 - expected).abs() < 1e-6, "{v} vs {expected}");
        // A bias (rank 1) is not decayed.
        let b = Tensor::<TestBackend, 1>::from_floats([1.0], &device);
        let (b, _) = SimpleOptimizer::<TestBackend>::step(&opt, 0.1, b, Tensor::from_floats([0.5], &device), None);
        let v: f32 = b.into_scalar();
        assert!((v - 0.9).abs() < 1e-6, "{v}");
    }
}
