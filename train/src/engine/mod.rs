//! Engines: what runs the model for every training method.
//!
//! Every loss here is a function of the per-target log-probabilities (DESIGN.md, "Engines and
//! methods"): SFT is their masked mean, DPO compares sequence sums with a reference's, GRPO takes
//! per-token ratios to the old policy and a KL to the reference, and localist attention adds a
//! penalty Ω on attention mass. So an [`Engine`] gives log p of each counted target of a
//! micro-batch (plus each target's entropy and each layer's attention statistics when asked) and
//! takes ∂loss/∂log p (and ∂loss/∂Ω) back; the method (`crate::trainer::method`) turns the one into the
//! other on the host, in a few microseconds per micro-batch.
//!
//! Two engines:
//! - the **kernel engine** (`kernel/`): the step written out over the `Ops` kernel set, on CUDA
//!   (our NVRTC kernels and cuBLASLt, bf16 matmuls with fp32 master weights) or on its plain-Rust
//!   CPU reference (what CI runs);
//! - the **burn engine** (`autodiff.rs`): burn's autodiff on any backend (CPU through ndarray,
//!   CUDA through cubecl), portable and slower.
//!
//! Both hold weights and AdamW moments and report them under Hugging Face names
//! (`state.rs`), so checkpoints are engine-neutral: either engine resumes the other's run.
//!
//! Adding an engine: implement [`Engine`] (a forward that reports log p in the order of
//! [`Micro::target_row`], a backward that takes [`Grad`], the norm, AdamW, and the state under HF
//! names), add a [`Kind`] and teach [`choose()`] when to pick it, and run the agreement tests in
//! `trainer/method/agreement.rs` against it. The loop and the methods need no change.
//!
//! Which engine runs is decided in one place, [`choose()`] (`choose.rs`), before burn's backend is
//! picked (the kernel engine keeps burn only for initialisation and the sampler, in f32); the
//! run's first line is [`Choice::note`].
//!
//! - `api.rs` — [`Micro`], [`Want`], [`Forward`], [`Grad`] and the [`Engine`] trait;
//! - `choose.rs` — which engine runs a recipe;
//! - `autodiff.rs` — the burn engine; `kernel/` — the kernel engine;
//! - `optim.rs` — AdamW's hyper-parameters, clipping, and burn's AdamW;
//! - `state.rs` — weights and moments under HF names, checkpoint files, burn conversions.

pub mod api;
pub mod autodiff;
pub mod choose;
pub mod kernel;
pub mod optim;
pub mod state;

pub use api::{Engine, Forward, Grad, Micro, Want, check_row, counted_targets};
pub use choose::{Choice, Kind, choose};
pub use state::{EngineState, Moments, Tensors};
