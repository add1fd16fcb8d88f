//! The kernel engine: the decoder's step on our own kernels, with mixed precision, instead of
//! burn's autodiff graph.
//!
//! Why a second implementation of the step: burn 0.21's CUDA backend reaches about 12% of cuBLAS
//! on a bf16 matmul, materialises the `T × T` attention scores, has no mixed precision, and spends
//! host time per operation building the autodiff graph; measured at 0.06× `torch.compile` on the
//! reference 125M configuration (BENCHMARKS.md). The kernel engine is the step written out by
//! hand, as llm.c does for GPT-2: a fixed sequence of cuBLASLt matmuls and fused kernels over
//! preallocated buffers, with the backward pass written next to the forward (`step.rs`).
//!
//! - `ops.rs` — the kernel set, one trait; `cpu.rs` — its reference implementation in plain Rust
//!   (what CI runs the engine on); `cuda/` — NVRTC-compiled kernels (`kernels.cu`: RMSNorm, RoPE,
//!   SwiGLU, FlashAttention-2-style attention forward and backward with the packing/Multiverse
//!   segment mask, chunked log-probabilities with their gradient, AdamW) and cuBLASLt.
//! - `batch.rs` — a micro-batch prepared on the host (padding, mask tiles, counted rows).
//! - `step.rs` — forward, log-probs, backward and AdamW over [`ops::Ops`].
//! - `check.rs` — `firebrand bench kernels`: every CUDA kernel against the reference, the whole
//!   step against burn's autodiff, and timings.
//!
//! Localist attention runs here with anchor or segment blocks and the off-target penalty (the
//! bias, the per-query fidelity and entropy and the penalty's gradient inside the attention
//! kernels). Not yet here (`train.kernels = "auto"` falls back to the burn engine and says so;
//! `"fast"` and `"reference"` refuse, naming it): adaptive blocks, the group-lasso penalty, head
//! dimensions other than 64 and 128 on CUDA.

pub mod batch;
pub mod check;
pub mod cpu;
pub mod cuda;
pub mod ops;
pub mod step;

use burn::tensor::backend::AutodiffBackend;
use firebrand_data::TokensRow;

use crate::engine::api::{Engine, Forward, Grad, Micro, Want};
use crate::engine::state::{EngineState, Tensors};
use crate::error::TrainError;
use crate::model::Decoder;
use batch::HostBatch;
pub use step::KernelEngine;

/// `coef = −∂loss/∂log p`, what the log-prob kernel takes.
fn coef(grad: &Grad) -> Vec<f32> {
    grad.dlogp.iter().map(|g| -g).collect()
}

impl KernelEngine {
    /// The host batch of `rows`, with the localist dial's blocks when the engine has one.
    fn host_batch(&self, rows: &[TokensRow]) -> Result<HostBatch, TrainError> {
        let hb = HostBatch::new(rows)?;
        match self.localist() {
            Some(run) => hb.with_localist(rows, run),
            None => Ok(hb),
        }
    }
}

impl<B: AutodiffBackend> Engine<B> for KernelEngine {
    fn prepare(&self, rows: Vec<TokensRow>) -> Result<Micro, TrainError> {
        let micro = Micro::new(rows)?;
        let hb = self.host_batch(&micro.rows)?;
        Ok(micro.with_prepared(hb))
    }

    fn forward(&mut self, micro: &Micro, want: Want, fixed: Option<&Grad>) -> Result<(), TrainError> {
        let built;
        let hb = match micro.prepared::<HostBatch>() {
            Some(hb) => hb,
            None => {
                built = self.host_batch(&micro.rows)?;
                &built
            }
        };
        if !(want.temperature > 0.0 && want.temperature.is_finite()) {
            return Err(TrainError::Config(format!(
                "a forward at temperature {} (it must be > 0)",
                want.temperature
            )));
        }
        let fixed = fixed.map(|g| (coef(g), g.domega.clone()));
        let fixed = fixed.as_ref().map(|(c, d)| (c.as_slice(), d.as_slice()));
        self.run_forward(hb, 1.0 / want.temperature, want.entropy, want.grad, fixed)
    }

    fn collect(&mut self) -> Result<Forward, TrainError> {
        self.outputs()
    }

    fn backward(&mut self, grad: &Grad) -> Result<(), TrainError> {
        self.run_backward(&coef(grad), &grad.domega)
    }

    fn grad_norm(&mut self) -> Result<f64, TrainError> {
        KernelEngine::grad_norm(self)
    }

    fn step(&mut self, lr: f64, norm: f64, max_norm: Option<f64>) -> Result<(), TrainError> {
        self.apply(lr, crate::engine::optim::clip_factor(norm, max_norm))
    }

    fn state(&mut self) -> Result<EngineState, TrainError> {
        KernelEngine::state(self)
    }

    fn gradients(&mut self) -> Result<Tensors, TrainError> {
        KernelEngine::gradients(self)
    }

    fn sampler(&mut self, device: &B::Device) -> Result<Decoder<B::InnerBackend>, TrainError> {
        crate::engine::state::decoder_from(&self.config(), &self.weights()?, device)
    }
}
