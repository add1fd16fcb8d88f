//! firebrand's training stack: the decoder model (`model/`, on burn), attention masks, Hugging
//! Face import and export (`hf.rs`), the engines that run the model (`engine/`: the kernel engine
//! on our CUDA kernels or their CPU reference, and the burn engine), the one training loop and its
//! methods (`trainer/`: SFT, DPO, GRPO), checkpoints, the sampler (`generate/`) and devices.
//!
//! One binary runs on CPU (burn's ndarray backend, the kernels' CPU reference) and CUDA (burn-cuda
//! and our kernels, which load the driver, NVRTC and cuBLASLt at run time, so this crate builds on
//! machines without CUDA).
#![warn(missing_docs)]

pub mod attention;
pub mod checkpoint;
pub mod device;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod generate;
pub mod hf;
pub mod localist;
pub mod model;
pub mod recipe;
pub mod trained;
pub mod trainer;

pub use error::TrainError;
pub use model::{Decoder, ModelConfig, ModelType};

/// The backend of unit tests: CPU.
#[cfg(test)]
pub type TestBackend = burn::backend::NdArray<f32>;
