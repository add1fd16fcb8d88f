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
//! Not yet here (the run falls back to the burn engine and says so): localist attention, head
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

/// Refuses a gradient of the attention penalty, which this engine does not compute.
fn no_omega(grad: &Grad) -> Result<(), TrainError> {
    if grad.domega.iter().any(|&g| g != 0.0) {
        return Err(TrainError::Config(
            "the kernel engine has no localist attention penalty: set train.kernels = \"burn\"".into(),
        ));
    }
    Ok(())
}

impl<B: AutodiffBackend> Engine<B> for KernelEngine {
    fn prepare(&self, rows: Vec<TokensRow>) -> Result<Micro, TrainError> {
        let micro = Micro::new(rows)?;
        let hb = HostBatch::new(&micro.rows)?;
        Ok(micro.with_prepared(hb))
    }

    fn forward(&mut self, micro: &Micro, want: Want, fixed: Option<&Grad>) -> Result<(), TrainError> {
        let built;
        let hb = match micro.prepared::<HostBatch>() {
            Some(hb) => hb,
            None => {
                built = HostBatch::new(&micro.rows)?;
                &built
            }
        };
        if !(want.temperature > 0.0 && want.temperature.is_finite()) {
            return Err(TrainError::Config(format!(
                "a forward at temperature {} (it must be > 0)",
                want.temperature
            )));
        }
        let fixed = match fixed {
            Some(g) => {
                no_omega(g)?;
                Some(coef(g))
            }
            None => None,
        };
        self.run_forward(hb, 1.0 / want.temperature, want.entropy, want.grad, fixed.as_deref())
    }

    fn collect(&mut self) -> Result<Forward, TrainError> {
        let (logp, entropy) = self.outputs()?;
        Ok(Forward {
            logp,
            entropy,
            attention: Vec::new(),
            omega: Vec::new(),
        })
    }

    fn backward(&mut self, grad: &Grad) -> Result<(), TrainError> {
        no_omega(grad)?;
        self.run_backward(&coef(grad))
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
