//! Recipes: the TOML files `firebrand train` reads, with dotted command-line overrides.
//!
//! Two layers, as STYLE.md asks: `Recipe` mirrors the TOML (`deny_unknown_fields` everywhere, so a
//! misspelt key is an error that names the nearest known key), and [`Recipe::resolve`] checks ranges
//! and builds the model configuration before any device is touched. `[method]` is a tagged enum
//! (`kind = "sft"`), so a key of another method is an error too. Overrides (`train.lr=1e-4`) are
//! applied to the TOML tree before it is read, so they get the same checks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use firebrand_data::WriteMode;
use firebrand_data::template::Template;
use firebrand_data::tokenize::{Overflow, TokenizeOptions};

use crate::error::TrainError;
use crate::model::{ModelConfig, ModelType};

/// A whole recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// What model to train.
    pub model: ModelSection,
    /// What data to train on.
    pub data: DataSection,
    /// The loop's settings.
    pub train: TrainSection,
    /// The training method.
    #[serde(default)]
    pub method: Method,
    /// The localist attention dial (none: plain attention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localist: Option<crate::localist::LocalistConfig>,
    /// Where outputs go.
    #[serde(default)]
    pub output: OutputSection,
    /// `[[stage]]`: stages run in order, each from the previous stage's final checkpoint with its
    /// own data and learning rate (PA-RAG's DPO stages); none for a single run.
    #[serde(default, rename = "stage", skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Stage>,
}

/// One `[[stage]]` of a staged recipe: what it changes in the recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// The stage's name: its run folder is `RUN/NAME`.
    pub name: String,
    /// The stage's dataset (replaces data.dataset and data.query).
    pub dataset: Option<PathBuf>,
    /// Or the stage's query.
    pub query: Option<String>,
    /// The stage's learning rate.
    pub lr: Option<f64>,
    /// The stage's number of steps.
    pub max_steps: Option<usize>,
}

impl Recipe {
    /// The recipe of stage `stage` starting from the model at `init` (the previous stage's final
    /// checkpoint, or the recipe's model.init for the first): the stage's data, learning rate and
    /// steps, no stages of its own. A DPO stage without an explicit method.reference takes its own
    /// starting model as reference.
    ///
    /// # Errors
    /// When the stage gives both a dataset and a query, or has an empty name.
    pub fn for_stage(&self, stage: &Stage, init: Option<PathBuf>) -> Result<Recipe, TrainError> {
        if stage.name.trim().is_empty() || stage.name.contains(['/', '\\']) || stage.name.starts_with('.') {
            return Err(TrainError::Config(format!(
                "stage name `{}`: give a plain folder name",
                stage.name
            )));
        }
        let mut r = self.clone();
        r.stages.clear();
        match (&stage.dataset, &stage.query) {
            (Some(_), Some(_)) => {
                return Err(TrainError::Config(format!(
                    "stage `{}`: give dataset or query, not both",
                    stage.name
                )));
            }
            (Some(d), None) => {
                r.data.dataset = Some(d.clone());
                r.data.query = None;
            }
            (None, Some(q)) => {
                r.data.query = Some(q.clone());
                r.data.dataset = None;
            }
            (None, None) => {}
        }
        if let Some(lr) = stage.lr {
            r.train.lr = lr;
        }
        if let Some(steps) = stage.max_steps {
            r.train.max_steps = steps;
        }
        r.model.init = init;
        Ok(r)
    }
}

/// `[model]`: a Hugging Face folder to start from (`init`), or a configuration to start from scratch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A folder with `config.json` and safetensors weights.
    pub init: Option<PathBuf>,
    /// `llama`, `qwen2`, `qwen3`, `mistral`, `phi3`, `gemma2` or `gemma3_text` (from scratch: the
    /// family's layout and names).
    pub model_type: Option<ModelType>,
    /// Residual width.
    pub hidden_size: Option<usize>,
    /// MLP width.
    pub intermediate_size: Option<usize>,
    /// Query heads.
    pub num_attention_heads: Option<usize>,
    /// Key/value heads (default: the query heads).
    pub num_key_value_heads: Option<usize>,
    /// Layers.
    pub num_hidden_layers: Option<usize>,
    /// Vocabulary (default: the tokenizer's size when `data.tokenizer` is given).
    pub vocab_size: Option<usize>,
    /// RoPE base (default 10000).
    pub rope_theta: Option<f64>,
    /// RMSNorm epsilon (default 1e-6).
    pub rms_norm_eps: Option<f64>,
    /// Tie the output projection to the embeddings (default true).
    pub tie_word_embeddings: Option<bool>,
    /// Longest sequence (default 2048).
    pub max_position_embeddings: Option<usize>,
}

/// `[data]`: a pre-tokenized `tokens` dataset, or a `chat`/`completion` dataset (a path or a SQL
/// query over datasets) tokenized into the run folder when the run starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// A `tokens` dataset (`firebrand data tokenize` writes one).
    pub tokens: Option<PathBuf>,
    /// A `chat` or `completion` dataset to tokenize.
    pub dataset: Option<PathBuf>,
    /// A SQL query over datasets (quoted `.lance` paths) whose result is a `chat` or `completion`
    /// dataset to tokenize, e.g. `SELECT * FROM 'chat.lance' WHERE score > 0.5`.
    pub query: Option<String>,
    /// The tokenizer; sizes the vocabulary, is copied into exports, and tokenizes `dataset`/`query`.
    pub tokenizer: Option<PathBuf>,
    /// Chat template (chatml, llama3, plain, or `model`: the Jinja `chat_template` in the folder of
    /// `data.tokenizer`; the default when that folder has one, else chatml): how `dataset`/`query`
    /// rows are rendered, and what
    /// `firebrand generate` and exports use. Default chatml.
    pub template: Option<String>,
    /// Loss mask for `dataset`/`query`: assistant (default), completion or all.
    pub mask: Option<String>,
    /// Row length in tokens for `dataset`/`query` (default 2048).
    pub max_len: Option<usize>,
    /// Pack several documents per row for `dataset`/`query` (default true).
    pub pack: Option<bool>,
    /// Encode Multiverse attention from the control tags for `dataset`/`query` (default false).
    pub multiverse: Option<bool>,
    /// Rows held out for evaluation (chosen by seed, never trained on).
    #[serde(default)]
    pub eval_rows: usize,
}

/// Where a run's text comes from before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum TextSource {
    /// A dataset path.
    Dataset(PathBuf),
    /// A SQL query.
    Query(String),
}

impl DataSection {
    /// The chat template: `data.template`, or the tokenizer folder's own, or chatml.
    ///
    /// # Errors
    /// An unknown template name, or `model` where the tokenizer's folder has no template.
    pub fn template(&self) -> Result<Template, TrainError> {
        Template::resolve(self.template.as_deref(), self.tokenizer.as_deref())
            .map_err(|e| TrainError::Config(format!("data.template: {e}")))
    }

    /// The text to tokenize when the run starts, if the data is not pre-tokenized.
    pub fn text_source(&self) -> Option<TextSource> {
        match (&self.dataset, &self.query) {
            (Some(p), _) => Some(TextSource::Dataset(p.clone())),
            (None, Some(q)) => Some(TextSource::Query(q.clone())),
            (None, None) => None,
        }
    }

    /// How `dataset`/`query` rows are tokenized.
    ///
    /// # Errors
    /// An unknown template or mask name.
    pub fn tokenize_options(&self) -> Result<TokenizeOptions, TrainError> {
        Ok(TokenizeOptions {
            template: self.template()?,
            mask: self
                .mask
                .as_deref()
                .unwrap_or("assistant")
                .parse()
                .map_err(|e: String| TrainError::Config(format!("data.mask: {e}")))?,
            max_len: self.max_len.unwrap_or(2048),
            pack: self.pack.unwrap_or(true),
            overflow: Overflow::Truncate,
            chunk: 8192,
            mode: WriteMode::Overwrite,
            multiverse: self.multiverse.unwrap_or(false),
        })
    }

    fn check(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Config(m.to_string()));
        let sources = [self.tokens.is_some(), self.dataset.is_some(), self.query.is_some()];
        match sources.iter().filter(|&&x| x).count() {
            0 => return bad("[data] needs one of data.tokens (pre-tokenized), data.dataset or data.query"),
            1 => {}
            _ => return bad("[data] takes one of data.tokens, data.dataset and data.query, not several"),
        }
        if self.tokens.is_some() {
            let text_only = [
                ("data.mask", self.mask.is_some()),
                ("data.max_len", self.max_len.is_some()),
                ("data.pack", self.pack.is_some()),
                ("data.multiverse", self.multiverse.is_some()),
            ];
            if let Some((key, _)) = text_only.iter().find(|(_, set)| *set) {
                return Err(TrainError::Config(format!(
                    "{key} applies to data.dataset or data.query; data.tokens is already tokenized\n  hint: re-tokenize with `firebrand data tokenize`, or name the chat dataset as data.dataset"
                )));
            }
        } else if self.tokenizer.is_none() {
            return bad("data.dataset and data.query need data.tokenizer to tokenize with");
        }
        let opts = self.tokenize_options()?;
        if opts.max_len < 2 {
            return bad("data.max_len must be at least 2");
        }
        Ok(())
    }
}

fn default_one() -> usize {
    1
}
fn default_schedule() -> Schedule {
    Schedule::Cosine
}
fn default_min_lr_ratio() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_eps() -> f64 {
    1e-8
}
fn default_clip() -> Option<f64> {
    Some(1.0)
}
fn default_keep() -> usize {
    2
}
fn default_device() -> String {
    "cpu".into()
}
fn default_dtype() -> String {
    "f32".into()
}

/// `[train]`: the shared loop's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Optimizer steps to run.
    pub max_steps: usize,
    /// Rows per micro-batch.
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step.
    #[serde(default = "default_one")]
    pub grad_accum_steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps.
    #[serde(default)]
    pub warmup_steps: usize,
    /// Decay after warmup: cosine, linear or constant.
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Final learning rate as a fraction of `lr`.
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Decoupled weight decay of matrices (never norms or biases).
    #[serde(default)]
    pub weight_decay: f64,
    /// AdamW beta1.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// AdamW beta2.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// AdamW epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Clip the global gradient norm to this (none when absent or 0).
    #[serde(default = "default_clip")]
    pub grad_clip: Option<f64>,
    /// Seed of initialisation and data order.
    #[serde(default)]
    pub seed: u64,
    /// Evaluate every N steps (0: never).
    #[serde(default)]
    pub eval_every: usize,
    /// Also evaluate before the first step (a fresh run's step 0).
    #[serde(default)]
    pub eval_on_start: bool,
    /// Checkpoint every N steps (0: only at the end).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Step checkpoints to keep.
    #[serde(default = "default_keep")]
    pub keep_last: usize,
    /// `cpu` or `cuda[:N]`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Float type of the run: `f32` (default), or `bf16` on CUDA. On the kernel engine
    /// (`kernels`), `bf16` is mixed precision: bf16 matmuls with fp32 master weights, gradients
    /// and AdamW moments. On the burn engine, which has no mixed precision, `bf16` keeps weights,
    /// gradients and moments in bf16 too (an update smaller than ~0.4% of a weight rounds away).
    /// Checkpoints are written in f32 either way.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Which implementation runs the training step (see [`Kernels`]).
    #[serde(default)]
    pub kernels: Kernels,
    /// Peak dense TFLOP/s of the device for MFU (default: a table by device; none on CPU).
    pub peak_tflops: Option<f64>,
}

/// Which engine runs a training step (`crate::engine::choose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// The kernel engine when it can run the recipe (CUDA of compute capability 8.0+ with NVRTC
    /// and cuBLASLt, `dtype = "bf16"`, no `[localist]`, head_dim 64 or 128, hidden and
    /// intermediate sizes multiples of 8, kernels that fit the card's shared memory), else burn.
    #[default]
    Auto,
    /// The kernel engine on CUDA (our kernels and cuBLASLt), or an error saying why not.
    Fast,
    /// The burn engine (`Autodiff<Cuda>` or `Autodiff<NdArray>`).
    Burn,
    /// The kernel engine on its CPU reference kernels: slow, for checking the engine
    /// (`dtype = "bf16"` rounds as the GPU stores, `f32` does not).
    Reference,
}

impl Kernels {
    /// The recipe's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Auto => "auto",
            Kernels::Fast => "fast",
            Kernels::Burn => "burn",
            Kernels::Reference => "reference",
        }
    }
}

/// The learning rate's decay after warmup (`trainer::schedule::lr_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Half a cosine from `lr` down to the floor.
    Cosine,
    /// A straight line from `lr` down to the floor.
    Linear,
    /// `lr` throughout (after warmup).
    Constant,
}

/// Which DPO loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DpoLoss {
    /// −log σ(βΔ), the paper's.
    #[default]
    Sigmoid,
    /// max(0, 1 − βΔ).
    Hinge,
    /// (Δ̄ − 1/(2β))² on per-token averaged log-ratios.
    Ipo,
}

/// DPO's options (TRL's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpoOptions {
    /// β (default 0.1).
    pub beta: f64,
    /// The loss.
    pub loss: DpoLoss,
    /// ε of cDPO label smoothing, sigmoid only (default 0).
    pub label_smoothing: f64,
}

impl Default for DpoOptions {
    fn default() -> Self {
        DpoOptions {
            beta: 0.1,
            loss: DpoLoss::Sigmoid,
            label_smoothing: 0.0,
        }
    }
}

impl DpoOptions {
    /// Checks the ranges.
    ///
    /// # Errors
    /// β ≤ 0, ε outside [0, 0.5), or label smoothing with a loss other than sigmoid.
    pub fn validate(&self) -> Result<(), TrainError> {
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return Err(TrainError::Config(format!("dpo beta must be > 0 (got {})", self.beta)));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return Err(TrainError::Config(format!(
                "dpo label_smoothing must lie in [0, 0.5) (got {})",
                self.label_smoothing
            )));
        }
        if self.label_smoothing > 0.0 && self.loss != DpoLoss::Sigmoid {
            return Err(TrainError::Config(
                "dpo label_smoothing applies to the sigmoid loss only".into(),
            ));
        }
        Ok(())
    }
}

/// How GRPO's advantages are scaled after centring on the group mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleRewards {
    /// By the group's std (TRL's default, DeepSeekMath's).
    #[default]
    Group,
    /// By the std of the whole batch.
    Batch,
    /// Not scaled (Dr. GRPO).
    None,
}

/// How GRPO's per-token losses are reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over sequences of each sequence's token mean (DeepSeekMath).
    Grpo,
    /// Token mean over the micro-batch.
    Bnpo,
    /// Token sum over rows × max completion length (Dr. GRPO).
    DrGrpo,
    /// Token sum over the active tokens of the whole generation batch (DAPO; TRL's default).
    #[default]
    Dapo,
}

/// `[method]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Method {
    /// Supervised fine-tuning on the loss-masked tokens. (A struct variant, so that keys of other
    /// methods are rejected rather than ignored.)
    Sft {},
    /// DPO on a `preference` dataset (`data.dataset` or `data.query`), against a frozen reference
    /// whose log-probabilities are computed once and cached in the dataset.
    Dpo {
        /// β (TRL's default 0.1).
        #[serde(default = "default_dpo_beta")]
        beta: f64,
        /// sigmoid (default), hinge or ipo.
        #[serde(default)]
        loss: DpoLoss,
        /// cDPO label smoothing ε (sigmoid only).
        #[serde(default)]
        label_smoothing: f64,
        /// The reference: a Hugging Face folder, a run or a checkpoint (default: `model.init`).
        #[serde(default)]
        reference: Option<PathBuf>,
        /// A bad pair (identical or empty replies, too long) stops the run instead of being
        /// left out and counted.
        #[serde(default)]
        strict: bool,
    },
    /// GRPO on a `prompts` dataset (`data.dataset` or `data.query`): each step samples
    /// `num_generations` completions per prompt with the built-in sampler, scores them with
    /// `rewards` and trains on group-normalised advantages (`trainer::method::grpo`). A step's generation
    /// batch is `train.micro_batch_size × train.grad_accum_steps` completions, so it holds that
    /// many / `num_generations` prompts (TRL's accounting).
    Grpo(Box<GrpoMethod>),
}

/// `[method] kind = "grpo"`: TRL's `GRPOConfig` names and defaults where it has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoMethod {
    /// Completions per prompt, G (TRL's default 8).
    #[serde(default = "default_generations")]
    pub num_generations: usize,
    /// Optimizer steps per generation batch, μ (1: strictly on-policy, the ratio is 1).
    #[serde(default = "default_one")]
    pub num_iterations: usize,
    /// Most tokens per completion (TRL's default 256).
    #[serde(default = "default_completion_length")]
    pub max_completion_length: usize,
    /// Sampling temperature (also divides the logits of the training log-probs, as TRL does).
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Nucleus mass of the sampler.
    #[serde(default = "default_top_p")]
    pub top_p: f32,
    /// Top-k of the sampler (0: all).
    #[serde(default)]
    pub top_k: usize,
    /// ε_low of the clipped ratio.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// ε_high (default: ε; DAPO's clip-higher uses 0.28).
    #[serde(default)]
    pub epsilon_high: Option<f64>,
    /// KL weight β (0, TRL's default: no reference model is loaded).
    #[serde(default)]
    pub beta: f64,
    /// The KL's reference: a Hugging Face folder, a run or a checkpoint (default: `model.init`).
    #[serde(default)]
    pub reference: Option<PathBuf>,
    /// grpo, bnpo, dr_grpo or dapo (TRL's default).
    #[serde(default)]
    pub loss_type: LossType,
    /// Advantage scaling: group (default), batch or none.
    #[serde(default)]
    pub scale_rewards: ScaleRewards,
    /// Write the first group's completions to `RUN/completions.jsonl` every N steps (0: never).
    #[serde(default = "default_log_completions")]
    pub log_completions_every: usize,
    /// The rewards, summed with their weights: `[[method.rewards]]` tables.
    pub rewards: Vec<firebrand_verify::reward::RewardSpec>,
}

fn default_generations() -> usize {
    8
}
fn default_completion_length() -> usize {
    256
}
fn default_temperature() -> f32 {
    1.0
}
fn default_top_p() -> f32 {
    1.0
}
fn default_epsilon() -> f64 {
    0.2
}
fn default_log_completions() -> usize {
    10
}

impl GrpoMethod {
    fn check(&self, recipe: &Recipe) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        let t = &recipe.train;
        if self.num_generations < 2 {
            return bad(format!(
                "method.num_generations must be at least 2 (a group of one has no baseline), got {}",
                self.num_generations
            ));
        }
        let batch = t.micro_batch_size * t.grad_accum_steps;
        if !batch.is_multiple_of(self.num_generations) {
            return bad(format!(
                "a step's generation batch (train.micro_batch_size × train.grad_accum_steps = {batch} completions) must hold whole groups of method.num_generations = {}",
                self.num_generations
            ));
        }
        if self.num_iterations == 0 {
            return bad("method.num_iterations must be at least 1".into());
        }
        if !t.max_steps.is_multiple_of(self.num_iterations) {
            return bad(format!(
                "train.max_steps ({}) must be a multiple of method.num_iterations ({}): the run would end inside a generation batch",
                t.max_steps, self.num_iterations
            ));
        }
        if t.checkpoint_every > 0 && !t.checkpoint_every.is_multiple_of(self.num_iterations) {
            return bad(format!(
                "train.checkpoint_every ({}) must be a multiple of method.num_iterations ({}): a checkpoint falls between generation batches",
                t.checkpoint_every, self.num_iterations
            ));
        }
        if self.max_completion_length == 0 {
            return bad("method.max_completion_length must be at least 1".into());
        }
        let max_len = recipe.data.max_len.unwrap_or(2048);
        if self.max_completion_length >= max_len {
            return bad(format!(
                "method.max_completion_length ({}) leaves no room for a prompt in data.max_len ({max_len})",
                self.max_completion_length
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "method.temperature must be > 0 (greedy decoding gives a group identical completions), got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("method.top_p must be in (0, 1], got {}", self.top_p));
        }
        let high = self.epsilon_high.unwrap_or(self.epsilon);
        if !(self.epsilon > 0.0 && self.epsilon < 1.0 && high > 0.0 && high.is_finite()) {
            return bad(format!(
                "method.epsilon must be in (0, 1) and method.epsilon_high > 0, got {} and {high}",
                self.epsilon
            ));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return bad(format!("method.beta must be ≥ 0, got {}", self.beta));
        }
        if self.beta > 0.0 && self.reference.is_none() && recipe.model.init.is_none() {
            return bad("method.beta > 0 needs a reference: set method.reference or model.init".into());
        }
        firebrand_verify::reward::RewardSpec::build(&self.rewards).map_err(TrainError::Config)?;
        Ok(())
    }
}

fn default_dpo_beta() -> f64 {
    0.1
}

impl Method {
    /// DPO's options, when the method is DPO.
    pub fn dpo(&self) -> Option<DpoOptions> {
        match self {
            Method::Dpo {
                beta,
                loss,
                label_smoothing,
                ..
            } => Some(DpoOptions {
                beta: *beta,
                loss: *loss,
                label_smoothing: *label_smoothing,
            }),
            Method::Sft {} | Method::Grpo(_) => None,
        }
    }

    /// GRPO's settings, when the method is GRPO.
    pub fn grpo(&self) -> Option<&GrpoMethod> {
        match self {
            Method::Grpo(g) => Some(g),
            _ => None,
        }
    }
}

impl Default for Method {
    fn default() -> Self {
        Method::Sft {}
    }
}

/// `[output]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Folder of runs.
    #[serde(default = "default_output_dir")]
    pub dir: PathBuf,
    /// This run's name (default: the recipe's file name).
    pub run: Option<String>,
}

fn default_output_dir() -> PathBuf {
    PathBuf::from("checkpoints")
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            dir: default_output_dir(),
            run: None,
        }
    }
}

/// Keys that may change when a run resumes; any other change is an error.
pub const RESUMABLE_KEYS: &[&str] = &[
    "train.max_steps",
    "train.lr",
    "train.eval_every",
    "train.eval_on_start",
    "train.checkpoint_every",
    "train.keep_last",
    "train.device",
    "train.peak_tflops",
    "train.kernels",
];

/// Levenshtein distance, for key suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Adds "did you mean" to serde's `unknown field `x`, expected one of `a`, `b`` messages.
fn suggest(message: &str) -> String {
    let Some(rest) = message.split("unknown field `").nth(1) else {
        return message.to_string();
    };
    let unknown = rest.split('`').next().unwrap_or("");
    let known: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
    let best = known.iter().map(|k| (distance(unknown, k), *k)).min();
    match best {
        Some((d, k)) if d <= 3.max(unknown.len() / 3) => format!("{}\n  hint: did you mean `{k}`?", message.trim_end()),
        _ => message.to_string(),
    }
}

/// Keys whose values are text: an override of one is taken as written (`output.run=nan` is the
/// name "nan", not a float).
const TEXT_KEYS: &[&str] = &[
    "model.init",
    "model.model_type",
    "data.tokens",
    "data.dataset",
    "data.query",
    "data.tokenizer",
    "data.template",
    "data.mask",
    "train.schedule",
    "train.device",
    "train.dtype",
    "train.kernels",
    "method.kind",
    "method.loss",
    "method.reference",
    "method.loss_type",
    "method.scale_rewards",
    "localist.schedule",
    "localist.penalty",
    "localist.blocks",
    "localist.target",
    "output.dir",
    "output.run",
];

/// Parses a command-line value as TOML (`1e-4`, `true`, `"x"`, `[1, 2]`), else as a bare string.
fn parse_value(path: &str, raw: &str) -> toml::Value {
    let quoted = raw.starts_with('"') || raw.starts_with('\'');
    if TEXT_KEYS.contains(&path) && !quoted {
        return toml::Value::String(raw.to_string());
    }
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Sets `path` (`train.lr`) in a TOML tree.
fn set_path(root: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), TrainError> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts
        .pop()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| TrainError::Config(format!("override `{path}`: empty key")))?;
    let mut table = root;
    for p in parts {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| TrainError::Config(format!("override `{path}`: `{p}` is not a section")))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

impl Recipe {
    /// Reads a recipe from TOML text with `key=value` overrides applied; `origin` names the text in
    /// errors.
    ///
    /// # Errors
    /// On TOML syntax errors, unknown keys (with the nearest known key), wrong types, and malformed
    /// overrides.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Recipe, TrainError> {
        let mut tree: toml::Table = toml::from_str(text).map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        for o in overrides {
            let (path, raw) = o.split_once('=').ok_or_else(|| {
                TrainError::Config(format!(
                    "override `{o}`: expected section.key=value, e.g. train.lr=1e-4"
                ))
            })?;
            set_path(&mut tree, path.trim(), parse_value(path.trim(), raw.trim()))?;
        }
        let with_overrides = if overrides.is_empty() {
            String::new()
        } else {
            format!(" (with {})", overrides.join(" "))
        };
        Recipe::deserialize(toml::Value::Table(tree))
            .map_err(|e| TrainError::Config(suggest(&format!("{origin}{with_overrides}: {e}"))))
    }

    /// Reads a recipe file.
    ///
    /// # Errors
    /// As [`Recipe::parse`], and when the file cannot be read.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Recipe, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Recipe::parse(&text, &path.display().to_string(), overrides)
    }

    /// The recipe as TOML (saved in every checkpoint).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("recipes serialize")
    }

    /// The model configuration: read from `model.init`, or built from the `[model]` keys.
    ///
    /// # Errors
    /// When required keys are missing, `init` is combined with shape keys, or the shapes are
    /// inconsistent.
    pub fn model_config(&self, tokenizer_vocab: Option<usize>) -> Result<ModelConfig, TrainError> {
        let m = &self.model;
        if let Some(dir) = &m.init {
            if m.hidden_size.is_some()
                || m.num_hidden_layers.is_some()
                || m.vocab_size.is_some()
                || m.model_type.is_some()
            {
                return Err(TrainError::Config(
                    "model.init takes the architecture from the folder's config.json; remove the other [model] keys"
                        .into(),
                ));
            }
            // A Hugging Face folder or a checkpoint has config.json; a run, its latest checkpoint.
            if !dir.join("config.json").exists() && dir.is_dir() {
                let (_, latest) = crate::checkpoint::latest(dir)?;
                return crate::hf::read_config(&latest);
            }
            return crate::hf::read_config(dir);
        }
        let need = |v: Option<usize>, key: &str| {
            v.ok_or_else(|| TrainError::Config(format!("model.{key} is required when model.init is not given")))
        };
        let model_type = m.model_type.unwrap_or(ModelType::Llama);
        let hidden_size = need(m.hidden_size, "hidden_size")?;
        let num_attention_heads = need(m.num_attention_heads, "num_attention_heads")?;
        let vocab_size = m.vocab_size.or(tokenizer_vocab).ok_or_else(|| {
            TrainError::Config("model.vocab_size is required (or data.tokenizer, whose size is used)".into())
        })?;
        let config = ModelConfig {
            model_type,
            hidden_size,
            intermediate_size: need(m.intermediate_size, "intermediate_size")?,
            num_attention_heads,
            num_key_value_heads: m.num_key_value_heads.unwrap_or(num_attention_heads),
            num_hidden_layers: need(m.num_hidden_layers, "num_hidden_layers")?,
            rms_norm_eps: m.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: m.rope_theta.unwrap_or(10_000.0),
            rope_scaling: Default::default(),
            sliding_window: None,
            // From scratch, Gemma's layout without soft-capping (and Gemma 3's local RoPE base).
            gemma: model_type.is_gemma().then(|| crate::model::config::GemmaSettings {
                query_pre_attn_scalar: (hidden_size / num_attention_heads.max(1)) as f64,
                attn_logit_softcapping: None,
                final_logit_softcapping: None,
                local_rope_theta: (model_type == ModelType::Gemma3).then_some(10_000.0),
            }),
            vocab_size,
            max_position_embeddings: m.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: m.tie_word_embeddings.unwrap_or(true),
            attention_bias: model_type == ModelType::Qwen2,
            head_dim: hidden_size / num_attention_heads.max(1),
            initializer_range: 0.02,
            bos_token_id: None,
            eos_token_id: None,
            extra: Default::default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the `[train]` ranges.
    ///
    /// # Errors
    /// Naming the first key out of range.
    pub fn check(&self) -> Result<(), TrainError> {
        let t = &self.train;
        let bad = |m: &str| Err(TrainError::Config(m.to_string()));
        if t.max_steps == 0 {
            return bad("train.max_steps must be at least 1");
        }
        if t.micro_batch_size == 0 || t.grad_accum_steps == 0 {
            return bad("train.micro_batch_size and train.grad_accum_steps must be at least 1");
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad("train.lr must be a positive number");
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return bad("train.min_lr_ratio must be within [0, 1]");
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) {
            return bad("train.beta1 and train.beta2 must be within [0, 1)");
        }
        if t.keep_last == 0 {
            return bad("train.keep_last must be at least 1");
        }
        let cuda = t.device.starts_with("cuda") || t.device == "gpu";
        match t.dtype.as_str() {
            "f32" => {}
            "bf16" if cuda || t.kernels == Kernels::Reference => {}
            "bf16" => return bad("train.dtype = \"bf16\" needs train.device = \"cuda\" (burn's CPU backend runs f32)"),
            other => {
                return Err(TrainError::Config(format!(
                    "train.dtype: unknown float type `{other}` (f32, bf16)"
                )));
            }
        }
        match t.kernels {
            Kernels::Fast if !cuda => return bad("train.kernels = \"fast\" runs on CUDA: set train.device = \"cuda\""),
            Kernels::Fast if t.dtype != "bf16" => {
                return bad(
                    "train.kernels = \"fast\" computes in bf16 with fp32 master weights: set train.dtype = \"bf16\" (or train.kernels = \"burn\" for f32)",
                );
            }
            Kernels::Reference if cuda => {
                return bad(
                    "train.kernels = \"reference\" runs the kernel engine's CPU reference: set train.device = \"cpu\"",
                );
            }
            _ => {}
        }
        if let Some(dpo) = self.method.dpo() {
            dpo.validate()?;
            if self.data.tokens.is_some() || self.data.text_source().is_none() {
                return bad(
                    "method dpo reads a `preference` dataset: set data.dataset (or data.query), not data.tokens",
                );
            }
            if self.data.pack == Some(true) {
                return bad("method dpo keeps each reply in its own row: remove data.pack");
            }
            let reference = match &self.method {
                Method::Dpo { reference, .. } => reference.as_ref(),
                Method::Sft {} | Method::Grpo(_) => None,
            };
            if reference.is_none() && self.model.init.is_none() {
                return bad("method dpo needs a reference model: set method.reference or model.init");
            }
            if self.localist.is_some() {
                return bad("method dpo does not apply [localist]: remove the section");
            }
            if self.data.mask.is_some() || self.data.multiverse.is_some() {
                return bad("method dpo masks each pair's reply itself: remove data.mask and data.multiverse");
            }
        }
        if let Some(grpo) = self.method.grpo() {
            grpo.check(self)?;
            if self.data.tokens.is_some() || self.data.text_source().is_none() {
                return bad(
                    "method grpo samples from a `prompts` dataset: set data.dataset (or data.query), not data.tokens",
                );
            }
            if self.localist.is_some() {
                return bad("method grpo does not apply [localist]: remove the section");
            }
            let text_only = [
                ("data.pack", self.data.pack.is_some()),
                ("data.mask", self.data.mask.is_some()),
                ("data.multiverse", self.data.multiverse.is_some()),
            ];
            if let Some((key, _)) = text_only.iter().find(|(_, set)| *set) {
                return Err(TrainError::Config(format!(
                    "method grpo trains on its own completions, one per row: remove {key}"
                )));
            }
        }
        self.data.check()
    }

    /// Keys whose values differ between two recipes, as `section.key`.
    pub fn changed_keys(&self, other: &Recipe) -> Vec<String> {
        let a = toml::Value::try_from(self).expect("recipes serialize");
        let b = toml::Value::try_from(other).expect("recipes serialize");
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        out
    }
}

fn diff(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff(&path, va, vb, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// A minimal recipe for unit tests (a 2-layer model, head_dim 8).
#[cfg(test)]
pub(crate) const TEST_RECIPE: &str = r#"
[model]
hidden_size = 32
intermediate_size = 64
num_attention_heads = 4
num_hidden_layers = 2
vocab_size = 100

[data]
tokens = "t.lance"

[train]
max_steps = 10
micro_batch_size = 2
lr = 1e-3
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = TEST_RECIPE;

    #[test]
    fn defaults_and_overrides() {
        let r = Recipe::parse(
            BASE,
            "r.toml",
            &[
                "train.lr=5e-4".into(),
                "train.schedule=\"linear\"".into(),
                "output.run=nan".into(),
            ],
        )
        .unwrap();
        assert_eq!(r.train.lr, 5e-4);
        assert_eq!(r.train.schedule, Schedule::Linear);
        assert_eq!(r.train.grad_accum_steps, 1);
        assert_eq!(
            r.output.run.as_deref(),
            Some("nan"),
            "a text key takes the override as written"
        );
        assert_eq!(r.method, Method::Sft {});
        let c = r.model_config(None).unwrap();
        assert_eq!((c.head_dim, c.num_key_value_heads, c.tie_word_embeddings), (8, 4, true));
        // A recipe survives its own TOML.
        assert_eq!(Recipe::parse(&r.to_toml(), "again", &[]).unwrap(), r);
    }

    #[test]
    fn unknown_keys_name_the_nearest_known_key() {
        let err = Recipe::parse(&BASE.replace("lr = 1e-3", "lr = 1e-3\nwarmup_step = 3"), "r.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field `warmup_step`") && err.contains("did you mean `warmup_steps`?"),
            "{err}"
        );
        let err = Recipe::parse(BASE, "r.toml", &["train.lrr=1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("did you mean `lr`?") && err.contains("with train.lrr=1"),
            "{err}"
        );
        let err = Recipe::parse(BASE, "r.toml", &["train.lr".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected section.key=value"), "{err}");
        let err = Recipe::parse(
            &format!("{BASE}\n[method]\nkind = \"sft\"\nbeta = 0.1\n"),
            "r.toml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("beta"), "a DPO key in an SFT recipe is an error: {err}");
    }

    #[test]
    fn the_staged_dpo_recipe_resolves_into_checked_stages() {
        let r = Recipe::parse(include_str!("../../recipes/dpo-parag.toml"), "dpo-parag.toml", &[]).unwrap();
        let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["informativeness", "robustness", "instruction"]);
        let mut init = r.model.init.clone();
        for stage in &r.stages {
            let s = r.for_stage(stage, init.clone()).unwrap();
            s.check().unwrap();
            assert!(s.stages.is_empty());
            assert_eq!(s.train.lr, stage.lr.unwrap());
            assert!(
                s.data
                    .query
                    .as_deref()
                    .unwrap()
                    .contains(&format!("perspective:{}", stage.name))
            );
            assert_eq!(s.model.init, init);
            init = Some(PathBuf::from(format!(
                "checkpoints/dpo-parag/{}/step-000100",
                stage.name
            )));
        }
        let both = Stage {
            name: "x".into(),
            dataset: Some("a.lance".into()),
            query: Some("SELECT 1".into()),
            lr: None,
            max_steps: None,
        };
        assert!(r.for_stage(&both, None).is_err());
        // DPO without a reference model is refused before any work.
        let s = r.for_stage(&r.stages[0], None).unwrap();
        assert!(s.check().unwrap_err().to_string().contains("reference"));
        // The single-stage demonstration recipe is a valid DPO recipe too.
        let tiny = Recipe::parse(include_str!("../../recipes/dpo-tiny.toml"), "dpo-tiny.toml", &[]).unwrap();
        tiny.check().unwrap();
        assert_eq!(tiny.method.dpo().map(|d| d.beta), Some(0.1));
    }

    const GRPO: &str = r#"
[model]
init = "m"

[data]
dataset = "p.lance"
tokenizer = "tok.json"
max_len = 512

[train]
max_steps = 10
micro_batch_size = 8
grad_accum_steps = 2
lr = 1e-5

[method]
kind = "grpo"
num_generations = 4

[[method.rewards]]
kind = "answer"
match = "numeric"
tolerance = 0.5

[[method.rewards]]
kind = "format"
pattern = "^\\d+$"
weight = 0.5
"#;

    #[test]
    fn grpo_recipes_take_trl_defaults_and_check_their_settings() {
        let r = Recipe::parse(GRPO, "g.toml", &[]).unwrap();
        r.check().unwrap();
        let g = r.method.grpo().unwrap();
        assert_eq!(
            (g.num_iterations, g.max_completion_length, g.temperature, g.beta),
            (1, 256, 1.0, 0.0)
        );
        assert_eq!((g.epsilon, g.epsilon_high), (0.2, None));
        assert_eq!(g.loss_type, LossType::Dapo);
        assert_eq!(g.scale_rewards, ScaleRewards::Group);
        assert_eq!(g.rewards.len(), 2);
        // Round trip through the TOML a checkpoint saves.
        assert_eq!(Recipe::parse(&r.to_toml(), "saved", &[]).unwrap(), r);

        let err = |overrides: &[&str]| {
            let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
            let r = Recipe::parse(GRPO, "g.toml", &o).unwrap();
            r.check().unwrap_err().to_string()
        };
        assert!(err(&["method.num_generations=1"]).contains("at least 2"));
        assert!(err(&["method.num_generations=3"]).contains("whole groups"));
        assert!(
            err(&["method.num_iterations=2", "train.checkpoint_every=3"]).contains("multiple of method.num_iterations")
        );
        assert!(err(&["method.max_completion_length=512"]).contains("no room for a prompt"));
        assert!(err(&["method.temperature=0"]).contains("temperature"));
        assert!(err(&["data.pack=true"]).contains("remove data.pack"));
        let no_rewards = GRPO.split("[[method.rewards]]").next().unwrap().to_string();
        let e = Recipe::parse(&no_rewards, "g.toml", &[]).unwrap_err().to_string();
        assert!(e.contains("missing field `rewards`"), "{e}");
        let e = Recipe::parse(&format!("{no_rewards}rewards = []\n"), "g.toml", &[])
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("no rewards"), "{e}");
        let bad_regex = GRPO.replace(r"^\\d+$", "(");
        let e = Recipe::parse(&bad_regex, "g.toml", &[])
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("method.rewards[1]: pattern"), "{e}");
        let e = Recipe::parse(&GRPO.replace("tolerance", "tolerence"), "g.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tolerence"), "{e}");
        let tokens = GRPO.replace("dataset = \"p.lance\"", "tokens = \"t.lance\"");
        let e = Recipe::parse(&tokens, "g.toml", &[])
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(e.contains("prompts"), "{e}");
    }

    #[test]
    fn the_justgrpo_recipe_is_plain_on_policy_grpo() {
        let r = Recipe::parse(
            include_str!("../../recipes/grpo-justgrpo.toml"),
            "grpo-justgrpo.toml",
            &[],
        )
        .unwrap();
        r.check().unwrap();
        let g = r.method.grpo().unwrap();
        assert_eq!((g.num_generations, g.num_iterations, g.beta), (16, 1, 0.0));
        assert_eq!(
            r.train.micro_batch_size * r.train.grad_accum_steps / g.num_generations,
            64
        );
        assert!(matches!(
            g.rewards.as_slice(),
            [firebrand_verify::reward::RewardSpec::Answer { signed: true, .. }]
        ));
        let demo = Recipe::parse(
            include_str!("../../recipes/grpo-addition.toml"),
            "grpo-addition.toml",
            &[],
        )
        .unwrap();
        demo.check().unwrap();
        let warm_up = Recipe::parse(
            include_str!("../../recipes/sft-addition.toml"),
            "sft-addition.toml",
            &[],
        )
        .unwrap();
        warm_up.check().unwrap();
    }

    #[test]
    fn kernel_choices_are_checked() {
        let err = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            Recipe::parse(BASE, "r", &o)
                .unwrap()
                .check()
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let ok = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            Recipe::parse(BASE, "r", &o).unwrap().check().unwrap();
        };
        assert_eq!(Recipe::parse(BASE, "r", &[]).unwrap().train.kernels, Kernels::Auto);
        assert!(err(&["train.kernels=fast"]).contains("runs on CUDA"));
        assert!(err(&["train.kernels=fast", "train.device=cuda"]).contains("set train.dtype = \"bf16\""));
        ok(&["train.kernels=fast", "train.device=cuda", "train.dtype=bf16"]);
        assert!(err(&["train.kernels=reference", "train.device=cuda"]).contains("train.device = \"cpu\""));
        // The reference may emulate bf16 on the CPU; burn's CPU path may not.
        ok(&["train.kernels=reference", "train.dtype=bf16"]);
        assert!(err(&["train.dtype=bf16"]).contains("needs train.device"));
        let e = Recipe::parse(BASE, "r", &["train.kernels=fastt".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant"), "{e}");
    }

    #[test]
    fn ranges_and_conflicts_are_checked() {
        let r = Recipe::parse(BASE, "r", &["train.max_steps=0".into()]).unwrap();
        assert!(r.check().unwrap_err().to_string().contains("max_steps"));
        let r = Recipe::parse(BASE, "r", &["model.init=\"dir\"".into()]).unwrap();
        assert!(r.model_config(None).unwrap_err().to_string().contains("model.init"));
        let a = Recipe::parse(BASE, "r", &[]).unwrap();
        let b = Recipe::parse(BASE, "r", &["train.lr=1".into(), "train.seed=3".into()]).unwrap();
        assert_eq!(a.changed_keys(&b), vec!["train.lr", "train.seed"]);
    }

    #[test]
    fn data_takes_one_source_and_text_options_only_for_text() {
        let text = BASE.replace(
            "tokens = \"t.lance\"",
            "dataset = \"chat.lance\"\ntokenizer = \"tok.json\"",
        );
        let r = Recipe::parse(&text, "r", &["data.max_len=512".into(), "data.mask=completion".into()]).unwrap();
        r.check().unwrap();
        assert_eq!(r.data.text_source(), Some(TextSource::Dataset("chat.lance".into())));
        let opts = r.data.tokenize_options().unwrap();
        assert_eq!((opts.max_len, opts.pack, opts.template), (512, true, Template::ChatMl));
        assert_eq!(opts.mask, firebrand_data::template::MaskMode::Completion);

        let q = Recipe::parse(
            &text.replace("dataset = \"chat.lance\"", "query = \"SELECT * FROM 'a.lance'\""),
            "r",
            &[],
        )
        .unwrap();
        assert_eq!(
            q.data.text_source(),
            Some(TextSource::Query("SELECT * FROM 'a.lance'".into()))
        );

        let err = |r: Recipe| r.check().unwrap_err().to_string();
        let both = Recipe::parse(&text, "r", &["data.tokens=t.lance".into()]).unwrap();
        assert!(err(both).contains("not several"));
        let pack_on_tokens = Recipe::parse(BASE, "r", &["data.pack=false".into()]).unwrap();
        assert!(err(pack_on_tokens).contains("data.pack applies to data.dataset or data.query"));
        let no_tok = Recipe::parse(&text.replace("tokenizer = \"tok.json\"", ""), "r", &[]).unwrap();
        assert!(err(no_tok).contains("need data.tokenizer"));
        let bad_template = Recipe::parse(&text, "r", &["data.template=chatm".into()]).unwrap();
        assert!(err(bad_template).contains("unknown template `chatm`"));
        let none = Recipe::parse(&BASE.replace("tokens = \"t.lance\"", "eval_rows = 1"), "r", &[]).unwrap();
        assert!(err(none).contains("needs one of data.tokens"));
    }
}
