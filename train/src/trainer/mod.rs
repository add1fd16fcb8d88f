//! The one training loop every method shares, and what methods plug into it.
//!
//! `run.rs` reads like torchtune's `train()`: micro-batches, summed losses and their counts,
//! backward, gradients divided by the window's count of loss tokens, clip, step, schedule, log,
//! evaluate, checkpoint, NaN guard. `sft.rs` is the first method: a batch type and a loss.

pub mod checkpoint;
pub mod data;
pub mod dpo;
pub mod grpo;
pub mod optim;
pub mod reference;
pub mod run;
pub mod schedule;
pub mod sft;
