//! Which engine runs a recipe: decided in one place, [`choose`], before burn's backend is picked,
//! and said in the run's first line ([`Choice::note`]).

use burn::tensor::backend::AutodiffBackend;

use crate::device::DeviceSpec;
use crate::engine::api::Engine;
use crate::engine::autodiff::BurnEngine;
use crate::engine::kernel::KernelEngine;
use crate::engine::kernel::cpu::CpuOps;
use crate::engine::kernel::cuda::{CudaOps, HEAD_DIMS};
use crate::engine::kernel::ops::Ops;
use crate::engine::optim::AdamW;
use crate::engine::state::EngineState;
use crate::error::TrainError;
use crate::localist::{BlockSource, LocalistRun, Penalty};
use crate::model::ModelConfig;
use crate::recipe::{Kernels, Recipe};

/// Which engine, on which device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The burn engine, on `train.device`.
    Burn,
    /// The kernel engine on CUDA device `ordinal`.
    KernelCuda(usize),
    /// The kernel engine on its CPU reference; `exact` keeps bf16 views in f32.
    KernelReference {
        /// No bf16 rounding.
        exact: bool,
    },
}

/// The engine a run uses, decided by [`choose`].
pub struct Choice {
    /// Which.
    pub kind: Kind,
    /// The device already opened for the first kernel engine (later ones open their own).
    ops: Option<Box<dyn Ops>>,
    /// The run's first line: `engine: kernel (NVIDIA H100, sm_90, ...)` or `engine: burn (why)`.
    pub note: String,
}

impl Choice {
    /// Whether the kernel engine runs the steps (burn's model is then f32).
    pub fn is_kernel(&self) -> bool {
        self.kind != Kind::Burn
    }

    /// What computes its numbers, for caches of them (DPO's reference log-probs): the engine and,
    /// for burn, the run's float type `dtype`.
    pub fn numerics(&self, dtype: &str) -> String {
        match self.kind {
            Kind::Burn => format!("burn-{dtype}"),
            Kind::KernelCuda(_) => "kernel-cuda-bf16".into(),
            Kind::KernelReference { exact: true } => "kernel-reference-f32".into(),
            Kind::KernelReference { exact: false } => "kernel-reference-bf16".into(),
        }
    }

    /// The burn engine, for the reason `why`.
    pub fn burn(why: &str) -> Self {
        Choice {
            kind: Kind::Burn,
            ops: None,
            note: format!("engine: burn ({why})"),
        }
    }

    /// The kernel engine on its CPU reference (`exact`: no bf16 rounding).
    pub fn kernel_reference(exact: bool) -> Self {
        Choice {
            kind: Kind::KernelReference { exact },
            ops: None,
            note: format!(
                "engine: kernel on the CPU reference ({}; slow, for checking the engine)",
                if exact { "f32" } else { "bf16" }
            ),
        }
    }

    /// The kernel set of a kernel engine (the one opened by [`choose`] first, then fresh ones).
    fn ops(&mut self) -> Result<Box<dyn Ops>, TrainError> {
        if let Some(ops) = self.ops.take() {
            return Ok(ops);
        }
        Ok(match self.kind {
            Kind::KernelCuda(i) => Box::new(CudaOps::new(i)?),
            Kind::KernelReference { exact: true } => Box::new(CpuOps::exact()),
            Kind::KernelReference { exact: false } => Box::new(CpuOps::new()),
            Kind::Burn => return Err(TrainError::Config("the burn engine has no kernel set".into())),
        })
    }

    /// Opens an engine of this choice holding `state`'s weights (and moments), trained with
    /// `adamw` (`None`: scoring only, no gradients or moments are allocated), with `localist`'s
    /// attention.
    ///
    /// # Errors
    /// When the device cannot be opened or the weights do not fit the configuration.
    pub fn open<B: AutodiffBackend>(
        &mut self,
        config: &ModelConfig,
        state: &EngineState,
        adamw: Option<AdamW>,
        localist: Option<LocalistRun>,
        device: &B::Device,
    ) -> Result<Box<dyn Engine<B>>, TrainError> {
        if self.kind == Kind::Burn {
            return Ok(Box::new(BurnEngine::<B>::new(config, state, adamw, localist, device)?));
        }
        if let (Kind::KernelCuda(_), Some(why)) = (self.kind, unsupported_shape(config)) {
            // A reference model of another shape than the policy's.
            return Err(TrainError::Config(format!(
                "the kernel engine cannot run this model: {why}; set train.kernels = \"burn\""
            )));
        }
        let ops = self.ops()?;
        Ok(Box::new(
            KernelEngine::new(ops, config, state, adamw)?.with_localist(localist)?,
        ))
    }
}

/// Why the kernel engine cannot run `recipe` with `config`, if it cannot (for every device).
pub fn unsupported(recipe: &Recipe, config: &ModelConfig) -> Option<String> {
    if let Some(l) = &recipe.localist {
        if l.blocks == BlockSource::Adaptive {
            return Some(
                "localist.blocks = \"adaptive\" reads the embedding table per batch; the kernel engine takes anchors or segments"
                    .into(),
            );
        }
        if l.penalty == Penalty::GroupLasso {
            return Some(
                "localist.penalty = \"group_lasso\"; the kernel engine computes the off-target penalty".into(),
            );
        }
    }
    if config.gemma.is_some() {
        return Some(format!(
            "{} scales embeddings, norms attention and MLP outputs, soft-caps scores and logits and uses GeGLU; the kernels do not yet",
            config.model_type.name()
        ));
    }
    if config.qk_norm() {
        return Some(format!(
            "{} normalises queries and keys per head (q_norm, k_norm); the kernels do not yet",
            config.model_type.name()
        ));
    }
    if let Some((limit, what)) = config.plain_length() {
        let rows = recipe.data.max_len.unwrap_or(2048);
        if recipe.data.text_source().is_some() && rows > limit {
            return Some(format!(
                "rows of data.max_len = {rows} tokens pass {what} of this model ({limit}), which the kernels do not compute; set data.max_len to at most {limit} for the kernel engine"
            ));
        }
    }
    if recipe.train.kernels == Kernels::Reference {
        return None; // the CPU reference takes any shape
    }
    unsupported_shape(config)
}

/// Why the CUDA kernels cannot run a model of `config`, if they cannot.
fn unsupported_shape(config: &ModelConfig) -> Option<String> {
    if !HEAD_DIMS.contains(&config.head_dim) {
        return Some(format!(
            "head_dim {} (the attention kernels have {:?})",
            config.head_dim, HEAD_DIMS
        ));
    }
    if !config.hidden_size.is_multiple_of(8) || !config.intermediate_size.is_multiple_of(8) {
        return Some("hidden_size and intermediate_size must be multiples of 8".into());
    }
    None
}

/// The engine a recipe asks for, decided from the recipe and the model alone: what
/// `train --dry-run` prints, and what [`choose`] then opens (falling back to burn, with
/// `train.kernels = "auto"`, when the device cannot).
///
/// # Errors
/// With `train.kernels = "fast"` or `"reference"`, when the kernel engine cannot run the recipe,
/// naming why and the setting to change.
pub fn plan(recipe: &Recipe, config: &ModelConfig) -> Result<Choice, TrainError> {
    let t = &recipe.train;
    match t.kernels {
        Kernels::Burn => return Ok(Choice::burn("train.kernels = \"burn\"")),
        Kernels::Auto if t.dtype != "bf16" => {
            return Ok(Choice::burn(&format!(
                "train.dtype = \"{}\"; the kernel engine runs bf16",
                t.dtype
            )));
        }
        _ => {}
    }
    let device: DeviceSpec = t.device.parse().map_err(TrainError::Config)?;
    if let Some(why) = unsupported(recipe, config) {
        return match t.kernels {
            Kernels::Auto => Ok(Choice::burn(&why)),
            _ => Err(TrainError::Config(format!(
                "train.kernels = \"{}\": {why}; set train.kernels = \"auto\" or \"burn\"",
                t.kernels.name()
            ))),
        };
    }
    Ok(match (t.kernels, device) {
        (Kernels::Reference, _) => Choice::kernel_reference(t.dtype != "bf16"),
        (_, DeviceSpec::Cuda(i)) => Choice {
            kind: Kind::KernelCuda(i),
            ops: None,
            note: "engine: kernel (CUDA kernels and cuBLASLt, bf16 matmuls with fp32 master weights)".into(),
        },
        (_, DeviceSpec::Cpu) => Choice::burn("train.device = \"cpu\""),
    })
}

/// Decides which engine runs `recipe`: the one place that does. [`plan`], then for the kernel
/// engine on CUDA it opens the device and loads (or compiles) the kernels, so a kernel engine that
/// cannot start falls back to burn (with `train.kernels = "auto"`) before burn's backend is
/// picked.
///
/// # Errors
/// As [`plan`], and with `train.kernels = "fast"` when the device cannot run the kernel engine.
pub fn choose(recipe: &Recipe, config: &ModelConfig) -> Result<Choice, TrainError> {
    let planned = plan(recipe, config)?;
    let Kind::KernelCuda(i) = planned.kind else {
        return Ok(planned);
    };
    let auto = recipe.train.kernels == Kernels::Auto;
    match CudaOps::new(i) {
        Ok(ops) => {
            if let Some(why) = ops.fits(config) {
                return match auto {
                    true => Ok(Choice::burn(&why)),
                    false => Err(TrainError::Config(format!(
                        "train.kernels = \"fast\": {why}; set train.kernels = \"auto\" or \"burn\""
                    ))),
                };
            }
            let note = format!(
                "engine: kernel ({}, sm_{}{}, kernels {}; bf16 matmuls, fp32 master weights)",
                ops.name,
                ops.cc.0,
                ops.cc.1,
                if ops.cached { "from the cache" } else { "compiled" }
            );
            Ok(Choice {
                kind: Kind::KernelCuda(i),
                ops: Some(Box::new(ops)),
                note,
            })
        }
        Err(e) if auto => Ok(Choice::burn(&format!("the kernel engine could not start: {e}"))),
        Err(e) => Err(e),
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

    /// A kernel engine that cannot open its device (no CUDA here, or no device 99 on a GPU machine):
    /// `auto` falls back to burn, which the CLI then runs in the recipe's bf16 (not f32, as it
    /// did when the backend was chosen before the device was opened); `fast` is an error.
    #[test]
    fn a_fast_path_that_cannot_start_falls_back_to_burn_in_the_recipes_dtype() {
        let cuda = ["train.device=\"cuda:99\"", "train.dtype=\"bf16\""];
        let (r, c) = recipe(&cuda);
        assert_eq!(unsupported(&r, &c), None, "the recipe itself suits the kernel engine");
        let k = choose(&r, &c).unwrap();
        assert!(!k.is_kernel());
        assert!(
            k.note.starts_with("engine: burn (the kernel engine could not start: "),
            "{}",
            k.note
        );
        assert!(!k.note.contains("f32"), "{}", k.note);

        let (r, c) = recipe(&[cuda[0], cuda[1], "train.kernels=\"fast\""]);
        assert!(matches!(choose(&r, &c), Err(TrainError::Device(_))));
    }

    /// Families and rows the kernels do not compute fall back (auto) or are refused (fast,
    /// reference) before any work, naming why and the setting.
    #[test]
    fn what_the_kernels_do_not_compute_is_named() {
        let cuda = ["train.device=\"cuda\"", "train.dtype=\"bf16\""];
        let (r, mut c) = recipe(&cuda);
        c.model_type = crate::model::ModelType::Qwen3;
        let k = plan(&r, &c).unwrap();
        assert!(!k.is_kernel() && k.note.contains("q_norm"), "{}", k.note);
        let (r, _) = recipe(&[cuda[0], cuda[1], "train.kernels=\"reference\""]);
        let e = plan(&r, &c).err().unwrap().to_string();
        assert!(e.contains("q_norm") && e.contains("train.kernels = \"auto\""), "{e}");
        // Rows of data.max_len past a sliding window (a text dataset: its rows are that long).
        let (mut r, mut c) = recipe(&cuda);
        (r.data.tokens, r.data.dataset) = (None, Some("chat.lance".into()));
        c.sliding_window = Some(crate::model::config::SlidingWindow {
            size: 2047,
            layers: vec![true; c.num_hidden_layers],
        });
        let why = unsupported(&r, &c).unwrap_or_default();
        assert!(
            why.contains("data.max_len = 2048") && why.contains("sliding window of this model (2047)"),
            "{why}"
        );
        r.data.max_len = Some(2047);
        assert_eq!(unsupported(&r, &c), None);
    }

    #[test]
    fn the_choice_follows_the_recipe() {
        let (r, c) = recipe(&[]);
        let k = choose(&r, &c).unwrap();
        assert!(!k.is_kernel(), "{}", k.note);
        let (r, c) = recipe(&["train.kernels=\"reference\"", "train.dtype=\"bf16\""]);
        let k = choose(&r, &c).unwrap();
        assert!(k.is_kernel());
        assert_eq!(
            k.note,
            "engine: kernel on the CPU reference (bf16; slow, for checking the engine)"
        );
        let (r, c) = recipe(&[
            "train.device=\"cuda\"",
            "train.dtype=\"bf16\"",
            "train.kernels=\"burn\"",
        ]);
        assert_eq!(choose(&r, &c).unwrap().note, "engine: burn (train.kernels = \"burn\")");
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
        // DPO and GRPO run on the kernel engine, and [localist] with anchor or segment blocks and
        // the off-target penalty; adaptive blocks and the group lasso do not, and say so.
        let (r, c) = recipe(&["train.kernels=\"reference\"", "method.kind=\"dpo\""]);
        assert!(plan(&r, &c).unwrap().is_kernel());
        let (mut r, c) = recipe(&["train.kernels=\"reference\""]);
        r.localist = Some(toml::from_str("lambda = 0.5\nblocks = \"segments\"").unwrap());
        assert!(plan(&r, &c).unwrap().is_kernel());
        r.localist = Some(toml::from_str("lambda = 0.5\nblocks = \"adaptive\"").unwrap());
        let e = plan(&r, &c).err().unwrap().to_string();
        assert!(
            e.contains("localist.blocks = \"adaptive\"") && e.contains("train.kernels = \"auto\" or \"burn\""),
            "{e}"
        );
        r.train.kernels = Kernels::Auto;
        r.train.dtype = "bf16".into();
        r.train.device = "cuda".into();
        assert!(plan(&r, &c).unwrap().note.contains("adaptive"));
        r.localist = Some(toml::from_str("lambda = 0.5\npenalty = \"group_lasso\"").unwrap());
        assert!(plan(&r, &c).unwrap().note.contains("group_lasso"));
    }
}
