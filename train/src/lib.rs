//! firebrand's training stack on burn: the decoder model, attention masks, Hugging Face import and
//! export, and devices; the shared training loop (SFT, DPO, GRPO), the sampler and checkpoints land
//! with their issues.
//!
//! One binary runs on CPU (burn's ndarray backend) and CUDA (burn-cuda, which loads the driver at
//! run time, so this crate builds on machines without CUDA).
#![warn(missing_docs)]

pub mod attention;
pub mod device;
pub mod encoder;
pub mod error;
pub mod fast;
pub mod generate;
pub mod hf;
pub mod localist;
pub mod model;
pub mod recipe;
pub mod trainer;

pub use error::TrainError;
pub use model::{Decoder, ModelConfig, ModelType};

/// The backend of unit tests: CPU.
#[cfg(test)]
pub type TestBackend = burn::backend::NdArray<f32>;
