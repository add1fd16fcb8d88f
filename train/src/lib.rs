//! firebrand's training stack on burn: devices now; the decoder model, the shared training loop
//! (SFT, DPO, GRPO), the sampler, checkpoints and HF import/export land with their issues.
//!
//! One binary runs on CPU (burn's ndarray backend) and CUDA (burn-cuda, which loads the driver at
//! run time, so this crate builds on machines without CUDA).
#![warn(missing_docs)]

pub mod device;
