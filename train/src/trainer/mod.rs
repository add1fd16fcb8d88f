//! The one training loop every method shares, and what methods plug into it.
//!
//! `run.rs` reads like torchtune's `train()`: a window of micro-batches, each one's forward on the
//! engine, the method's loss and gradient, the engine's backward; then the global gradient norm,
//! clipping, AdamW at the scheduled learning rate, logging, evaluation, checkpoints, and a guard
//! against non-finite values. It names no method and no engine: methods are in `method/` (SFT,
//! DPO with its cached reference log-probs, GRPO with its rollouts), engines in `crate::engine`.
//!
//! - `plan.rs` — what a run is; `data.rs` — its tokens or text; `order.rs` — the seeded data
//!   order; `schedule.rs` — learning-rate schedules; `log.rs` — its JSON-lines files.

pub mod bench;
pub mod data;
pub mod log;
pub mod method;
pub mod order;
pub mod plan;
pub mod run;
pub mod schedule;
