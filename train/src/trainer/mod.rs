//! The one training loop every method shares, and what methods plug into it.
//!
//! `run.rs` reads like torchtune's `train()`: micro-batches, summed losses and their counts,
//! backward, gradients divided by the window's count of loss tokens, clip, step, schedule, log,
//! evaluate, checkpoint, NaN guard. Methods: `sft.rs` (a batch type and a loss), `dpo.rs` with
//! `reference.rs` (cached reference log-probs), `grpo.rs` with `rollout.rs` (sampled completions,
//! rewards, advantages).

pub mod checkpoint;
pub mod data;
pub mod dpo;
pub mod grpo;
pub mod grpo_step;
pub mod optim;
pub mod reference;
pub mod rollout;
pub mod run;
pub mod schedule;
pub mod sft;
