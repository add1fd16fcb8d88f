//! The fast path: SFT steps of the decoder on our own CUDA kernels and cuBLASLt, with mixed
//! precision, instead of burn's autodiff graph.
//!
//! Why a second implementation of the step: burn 0.21's CUDA backend reaches about 12% of cuBLAS
//! on a bf16 matmul, materialises the `T × T` attention scores, has no mixed precision, and spends
//! host time per operation building the autodiff graph; measured at 0.06× `torch.compile` on the
//! reference 125M configuration (BENCHMARKS.md). The fast path is the step written out by hand,
//! as llm.c does for GPT-2: a fixed sequence of cuBLASLt matmuls and fused kernels over
//! preallocated buffers, with the backward pass written next to the forward (`engine.rs`).
//!
//! - `ops.rs` — the kernel set, one trait; `cpu.rs` — its reference implementation in plain Rust;
//!   `cuda/` — NVRTC-compiled kernels (`kernels.cu`: RMSNorm, RoPE, SwiGLU, FlashAttention-2-style
//!   attention forward and backward with the packing/Multiverse segment mask, chunked
//!   cross-entropy, AdamW) and cuBLASLt.
//! - `batch.rs` — a micro-batch prepared on the host (padding, mask tiles, counted rows).
//! - `engine.rs` — forward, loss, backward and AdamW over [`ops::Ops`].
//! - `interop.rs` — weights and AdamW moments to and from burn, so checkpoints are the burn
//!   path's (`model.mpk`, `optim.mpk`) and either path resumes the other's.
//! - `check.rs` — `firebrand bench kernels`: every CUDA kernel against the reference, the whole
//!   step against burn's autodiff, and timings.
//!
//! The shared loop (`trainer/run.rs`) stays the one loop. [`choose`] decides, before burn's backend
//! is picked, whether the fast path runs this recipe; [`select`] starts it from the loaded model;
//! the loop then hands it the micro-batches, the clip and the step. Data order, schedules,
//! evaluation, metrics and checkpoints are the loop's. `train.kernels` chooses (see
//! `recipe::Kernels`).

pub mod batch;
pub mod check;
pub mod cpu;
pub mod cuda;
pub mod engine;
pub mod interop;
pub mod ops;

use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::backend::AutodiffBackend;
use firebrand_data::TokensRow;

use crate::device::DeviceSpec;
use crate::error::TrainError;
use crate::model::{Decoder, ModelConfig};
use crate::recipe::{Kernels, Method, Recipe};
use crate::trainer::optim::AdamW;
use batch::HostBatch;
use engine::{AdamWConfig, Engine};

/// Why the fast path cannot train `recipe` with `config`, if it cannot.
pub fn unsupported(recipe: &Recipe, config: &ModelConfig) -> Option<String> {
    let t = &recipe.train;
    if !matches!(recipe.method, Method::Sft {}) {
        return Some("the fast path trains SFT only".into());
    }
    if recipe.localist.is_some() {
        return Some("[localist] needs attention weights".into());
    }
    if t.kernels == Kernels::Reference {
        return None; // the CPU reference takes any shape
    }
    if !cuda::HEAD_DIMS.contains(&config.head_dim) {
        return Some(format!(
            "head_dim {} (the attention kernels have {:?})",
            config.head_dim,
            cuda::HEAD_DIMS
        ));
    }
    if !config.hidden_size.is_multiple_of(8) || !config.intermediate_size.is_multiple_of(8) {
        return Some("hidden_size and intermediate_size must be multiples of 8".into());
    }
    None
}

/// A burn model with its AdamW state.
pub type BurnState<B> = (Decoder<B>, OptimizerAdaptor<AdamW, Decoder<B>, B>);

/// The fast path of a run.
pub struct FastRun {
    /// The engine, holding the weights and AdamW state between checkpoints.
    pub engine: Engine,
}

/// The kernels a run will use, decided and the device opened by [`choose`] before burn's backend
/// is picked: on the fast path burn holds the model between checkpoints in f32 (the fp32 master
/// weights and moments are saved as they are), otherwise in `train.dtype`. Deciding first means a
/// fast path that cannot start falls back to burn in the recipe's precision, not in f32.
pub struct Choice {
    ops: Option<Box<dyn ops::Ops>>,
    /// `kernels: fast (NVIDIA H200, sm_90, ...)` or why burn runs.
    pub note: String,
}

impl Choice {
    /// Whether the fast path's engine runs the steps (burn's model is then f32).
    pub fn is_fast(&self) -> bool {
        self.ops.is_some()
    }

    /// The choice of a run that burn's kernels train, for the reason `why`.
    pub fn burn(why: &str) -> Self {
        Self {
            ops: None,
            note: format!("kernels: burn ({why})"),
        }
    }
}

/// Decides which kernels run `recipe`, opening the CUDA device and loading (or compiling) the
/// fast path's kernels when it is a candidate.
///
/// # Errors
/// With `train.kernels = "fast"` or `"reference"`, when the fast path cannot run the recipe here.
pub fn choose(recipe: &Recipe, config: &ModelConfig) -> Result<Choice, TrainError> {
    let t = &recipe.train;
    match t.kernels {
        Kernels::Burn => return Ok(Choice::burn("train.kernels = \"burn\"")),
        Kernels::Auto if t.dtype != "bf16" => {
            return Ok(Choice::burn(&format!(
                "train.dtype = \"{}\"; the fast path runs bf16",
                t.dtype
            )));
        }
        _ => {}
    }
    let device: DeviceSpec = t.device.parse().map_err(TrainError::Config)?;
    if let Some(why) = unsupported(recipe, config) {
        return match t.kernels {
            Kernels::Auto => Ok(Choice::burn(&why)),
            _ => Err(TrainError::Config(format!("train.kernels = \"fast\": {why}"))),
        };
    }
    let (ops, note): (Box<dyn ops::Ops>, String) = match (t.kernels, device) {
        (Kernels::Reference, _) => (
            Box::new(if t.dtype == "bf16" {
                cpu::CpuOps::new()
            } else {
                cpu::CpuOps::exact()
            }),
            format!(
                "kernels: reference (the fast path's engine on CPU reference kernels, {})",
                t.dtype
            ),
        ),
        (_, DeviceSpec::Cuda(i)) => match cuda::CudaOps::new(i) {
            Ok(ops) => {
                if let Some(why) = ops.fits(config) {
                    return match t.kernels {
                        Kernels::Auto => Ok(Choice::burn(&why)),
                        _ => Err(TrainError::Config(format!(
                            "train.kernels = \"fast\": {why}; set train.kernels = \"auto\" or \"burn\""
                        ))),
                    };
                }
                let note = format!(
                    "kernels: fast ({}, sm_{}{}, kernels {}; bf16 matmuls, fp32 master weights)",
                    ops.name,
                    ops.cc.0,
                    ops.cc.1,
                    if ops.cached { "from the cache" } else { "compiled" }
                );
                (Box::new(ops), note)
            }
            Err(e) if t.kernels == Kernels::Auto => {
                return Ok(Choice::burn(&format!("the fast path could not start: {e}")));
            }
            Err(e) => return Err(e),
        },
        (_, DeviceSpec::Cpu) => return Ok(Choice::burn("train.device = \"cpu\"")),
    };
    Ok(Choice { ops: Some(ops), note })
}

/// What [`select`] decided, and a line saying so.
pub struct Selection {
    /// The fast path, or `None` for burn.
    pub fast: Option<FastRun>,
    /// `kernels: fast (NVIDIA H200, sm_90, ...)` or why burn runs.
    pub note: String,
}

/// Starts the fast path when `choice` took it, with the weights and AdamW moments of `model` and
/// `optimizer` (fresh or resumed).
///
/// # Errors
/// When the weights cannot be moved.
pub fn select<B: AutodiffBackend>(
    choice: Choice,
    recipe: &Recipe,
    config: &ModelConfig,
    model: &Decoder<B>,
    optimizer: &OptimizerAdaptor<AdamW, Decoder<B>, B>,
) -> Result<Selection, TrainError> {
    let Choice { ops, note } = choice;
    let Some(ops) = ops else {
        return Ok(Selection { fast: None, note });
    };
    let t = &recipe.train;
    let adamw = AdamWConfig {
        beta1: t.beta1,
        beta2: t.beta2,
        eps: t.eps,
        weight_decay: t.weight_decay,
    };
    let mut engine = Engine::new(ops, config, adamw)?;
    engine.load_weights(&interop::weights_of(model))?;
    if let Some((m, v, steps)) = interop::moments_of(model, optimizer)? {
        engine.load_moments(&m, &v, steps)?;
    }
    Ok(Selection {
        fast: Some(FastRun { engine }),
        note,
    })
}

impl FastRun {
    /// Forward and backward of one micro-batch whose gradient weighs `1 / window_count`; returns
    /// its summed loss.
    ///
    /// # Errors
    /// On a device failure.
    pub fn train_micro_batch(&mut self, batch: &HostBatch, window_count: usize) -> Result<f64, TrainError> {
        Ok(self
            .engine
            .micro_batch(batch, Some(1.0 / window_count as f32))?
            .loss_sum)
    }

    /// [`FastRun::train_micro_batch`] without waiting: the host may prepare the next batch, then
    /// [`FastRun::finish`] returns the summed loss.
    ///
    /// # Errors
    /// On bad token ids or a device failure.
    pub fn queue_micro_batch(&mut self, batch: &HostBatch, window_count: usize) -> Result<engine::Queued, TrainError> {
        self.engine.queue(batch, Some(1.0 / window_count as f32))
    }

    /// The summed loss of a queued micro-batch.
    ///
    /// # Errors
    /// On a device failure.
    pub fn finish(&mut self, q: engine::Queued) -> Result<f64, TrainError> {
        Ok(self.engine.finish(q)?.loss_sum)
    }

    /// Summed loss and count of counted targets of `rows` (no gradient).
    ///
    /// # Errors
    /// On bad rows or a device failure.
    pub fn eval_rows(&mut self, rows: &[TokensRow]) -> Result<(f64, usize), TrainError> {
        let b = HostBatch::new(rows)?;
        let r = self.engine.micro_batch(&b, None)?;
        Ok((r.loss_sum, r.count))
    }

    /// The global gradient norm; clipping and the step happen in [`FastRun::step`].
    ///
    /// # Errors
    /// On a device failure.
    pub fn grad_norm(&mut self) -> Result<f64, TrainError> {
        self.engine.grad_norm()
    }

    /// AdamW at `lr`, the gradients first scaled to `max_norm` when their norm `norm` exceeds it
    /// (`torch.nn.utils.clip_grad_norm_`, as `trainer::optim::clip_global_norm`).
    ///
    /// # Errors
    /// On a device failure.
    pub fn step(&mut self, lr: f64, norm: f64, max_norm: Option<f64>) -> Result<(), TrainError> {
        let scale = match max_norm {
            Some(max) if norm > max && norm.is_finite() => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.engine.apply(lr, scale)
    }

    /// The weights and AdamW state as burn's model and optimizer (for checkpoints).
    ///
    /// # Errors
    /// When the device cannot be read.
    pub fn to_burn<B: AutodiffBackend>(
        &mut self,
        config: &ModelConfig,
        optimizer: OptimizerAdaptor<AdamW, Decoder<B>, B>,
        device: &B::Device,
    ) -> Result<BurnState<B>, TrainError> {
        let model = interop::decoder_from::<B>(config, &self.engine.weights()?, device)?;
        let optimizer = if self.engine.steps > 0 {
            let (m, v) = self.engine.moments()?;
            interop::load_moments(&model, optimizer, &m, &v, self.engine.steps, device)?
        } else {
            optimizer
        };
        Ok((model, optimizer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unit-test recipe with head_dim 64 (one the attention kernels have), then `overrides`.
    fn recipe(overrides: &[&str]) -> (Recipe, ModelConfig) {
        let shape = [
            "model.hidden_size=64",
            "model.intermediate_size=128",
            "model.num_attention_heads=1",
        ];
        let overrides: Vec<String> = shape.iter().chain(overrides).map(|s| s.to_string()).collect();
        let r = Recipe::parse(crate::recipe::TEST_RECIPE, "r.toml", &overrides).unwrap();
        let c = r.model_config(None).unwrap();
        (r, c)
    }

    /// A fast path that cannot open its device (no CUDA here, or no device 99 on a GPU machine):
    /// `auto` falls back to burn, which the CLI then runs in the recipe's bf16 (not f32, as it
    /// did when the backend was chosen before the device was opened); `fast` is an error.
    #[test]
    fn a_fast_path_that_cannot_start_falls_back_to_burn_in_the_recipes_dtype() {
        let cuda = ["train.device=\"cuda:99\"", "train.dtype=\"bf16\""];
        let (r, c) = recipe(&cuda);
        assert_eq!(unsupported(&r, &c), None, "the recipe itself suits the fast path");
        let k = choose(&r, &c).unwrap();
        assert!(!k.is_fast());
        assert!(
            k.note.starts_with("kernels: burn (the fast path could not start: "),
            "{}",
            k.note
        );
        assert!(!k.note.contains("f32"), "{}", k.note);

        let (r, c) = recipe(&[cuda[0], cuda[1], "train.kernels=\"fast\""]);
        assert!(matches!(choose(&r, &c), Err(TrainError::Device(_))));
    }

    #[test]
    fn the_choice_follows_the_recipe() {
        let (r, c) = recipe(&[]);
        let k = choose(&r, &c).unwrap();
        assert!(!k.is_fast(), "{}", k.note);
        let (r, c) = recipe(&["train.kernels=\"reference\"", "train.dtype=\"bf16\""]);
        let k = choose(&r, &c).unwrap();
        assert!(k.is_fast());
        assert_eq!(
            k.note,
            "kernels: reference (the fast path's engine on CPU reference kernels, bf16)"
        );
        let (r, c) = recipe(&[
            "train.device=\"cuda\"",
            "train.dtype=\"bf16\"",
            "train.kernels=\"burn\"",
        ]);
        assert_eq!(choose(&r, &c).unwrap().note, "kernels: burn (train.kernels = \"burn\")");
        // head_dim 32 has no attention kernel: auto runs burn, fast is refused before any device.
        let (r, c) = recipe(&[
            "train.device=\"cuda\"",
            "train.dtype=\"bf16\"",
            "model.num_attention_heads=2",
        ]);
        assert!(choose(&r, &c).unwrap().note.contains("head_dim 32"));
        let (r, c) = recipe(&[
            "train.device=\"cuda\"",
            "train.dtype=\"bf16\"",
            "model.num_attention_heads=2",
            "train.kernels=\"fast\"",
        ]);
        assert!(matches!(choose(&r, &c), Err(TrainError::Config(_))));
    }
}
