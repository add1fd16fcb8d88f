//! Methods: what a training objective adds to the one loop (`trainer/run.rs`) on top of the one
//! engine interface (`crate::engine`).
//!
//! A method builds each step's window of micro-batches from the units the loop hands it (SFT:
//! rows; DPO: pairs, collated as `[chosen..., rejected...]`; GRPO: prompts, whose completions it
//! samples here), and turns each micro-batch's forward (log p of every counted target, and what
//! else it asked for) into its share of the window's loss and the gradient `∂loss/∂log p` the
//! engine takes back. The losses are plain arithmetic on the host (`sft.rs`, `dpo.rs`, `grpo.rs`),
//! so they are the same for every engine, and tested against hand-computed values and finite
//! differences.
//!
//! Adding a method: a `[method]` variant in `recipe.rs`, a type implementing [`Method`]
//! (`api.rs`), a case in [`open`], and its agreement test per engine (`agreement.rs`). The loop
//! does not change.

#[cfg(test)]
mod agreement;
pub mod api;
pub mod dpo;
pub mod grpo;
pub mod reference;
pub mod rollout;
pub mod sft;

use burn::tensor::backend::AutodiffBackend;

use crate::engine::choose::Choice;
use crate::error::TrainError;
use crate::trainer::plan::RunPlan;
pub use api::{Evaluation, LoggedSample, Loss, Method, MethodMetrics, Note, Window};

/// The method of `plan`'s recipe, with its data, rewards and references (DPO's reference
/// log-probs and GRPO's reference model load here, before the policy, through `choice`).
///
/// # Errors
/// When the data, tokenizer, rewards or reference do not load.
pub fn open<B: AutodiffBackend>(
    plan: &RunPlan,
    choice: &mut Choice,
    start_step: usize,
    device: &B::Device,
) -> Result<Box<dyn Method<B>>, TrainError> {
    use crate::recipe::Method as Kind;
    Ok(match &plan.recipe.method {
        Kind::Sft {} => Box::new(sft::Sft::open(plan)?),
        Kind::Dpo { .. } => Box::new(dpo::Dpo::open::<B>(plan, choice, device)?),
        Kind::Grpo(g) => Box::new(grpo::Grpo::<B>::open(plan, g, choice, start_step, device)?),
    })
}
