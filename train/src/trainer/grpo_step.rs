//! GRPO's part of the shared loop (`run.rs`): every μ optimizer steps a new generation batch is
//! sampled from the current policy (`rollout.rs`); each step's window is that batch split into
//! micro-batches of `train.micro_batch_size` completions, whose losses (`grpo.rs`) are
//! back-propagated and accumulated. Held-out prompts are evaluated by greedy decoding.
//!
//! Settings follow TRL's `GRPOTrainer` (huggingface/trl `grpo_trainer.py`): the logits are divided
//! by the sampling temperature when the policy and the reference score tokens; with μ = 1 the old
//! log-probs are the current ones detached (the ratio is exactly 1); with μ > 1 the first
//! iteration's log-probs are kept, detached, as π_old for the later ones (so the first ratio is 1
//! whatever the precision; the sampler's own log-probs only feed `sampler_logp_diff`); no
//! reference model is loaded when β = 0. Sampling seeds are a hash of the run's seed and the
//! generation batch's index, and `max_steps` and `checkpoint_every` are multiples of μ, so a
//! resumed run samples what the uninterrupted one did.

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use firebrand_data::tokenizer::Tokenizer;
use firebrand_synth::reward::{RewardSpec, Weighted};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::grpo::{GrpoMetrics, GrpoOptions, GrpoStepMetrics, LossType, TokenTerms, grpo_loss};
use super::rollout::{Prompts, Rollout, RolloutSpec, Sample, collate_samples, rollout};
use super::run::RunPlan;
use super::sft::{gather_targets, log_probs};
use crate::error::TrainError;
use crate::generate::SamplingParams;
use crate::model::Decoder;
use crate::recipe::{GrpoMethod, TrainSection};

/// A GRPO run's state beyond the model: prompts, rewards, the reference, the current batch.
pub struct GrpoFlow<B: AutodiffBackend> {
    method: GrpoMethod,
    options: GrpoOptions,
    /// The prompts sampled from.
    pub prompts: Prompts,
    tokenizer: Tokenizer,
    stop_token_ids: Vec<u32>,
    rewards: Weighted,
    reference: Option<Decoder<B::InnerBackend>>,
    current: Option<Rollout>,
    /// π_old per micro-batch of the current generation batch (μ > 1), from its first iteration.
    old_logp: Vec<Tensor<B::InnerBackend, 2>>,
    log: std::fs::File,
    log_path: PathBuf,
}

/// One completion as `RUN/completions.jsonl` records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoggedSample {
    /// The step that sampled it.
    pub step: usize,
    /// The prompt's last message.
    pub prompt: String,
    /// The completion's text.
    pub completion: String,
    /// Its total reward.
    pub reward: Option<f64>,
    /// Its advantage.
    pub advantage: f64,
    /// Its length in tokens.
    pub tokens: usize,
}

/// A window's result.
pub struct GrpoWindow<B: AutodiffBackend> {
    /// The window's loss.
    pub loss: f64,
    /// Its accumulated gradients.
    pub grads: GradientsParams,
    /// Tokens trained on (prompts and completions).
    pub tokens: usize,
    /// Completion tokens.
    pub count: usize,
    /// Longest row.
    pub seq_len: usize,
    /// Metrics (the caller fills in the training time).
    pub metrics: GrpoStepMetrics,
    /// The completions logged this step.
    pub logged: Vec<LoggedSample>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> GrpoFlow<B> {
    /// Loads the prompts, the rewards and (with β > 0) the reference model.
    ///
    /// # Errors
    /// When the prompts, tokenizer or reference do not load, or the rewards do not build.
    pub fn new(plan: &RunPlan, method: &GrpoMethod, start_step: usize, device: &B::Device) -> Result<Self, TrainError> {
        let recipe = &plan.recipe;
        let path = super::data::text_path(recipe, &plan.run_dir)
            .ok_or_else(|| TrainError::Config("method grpo reads data.dataset or data.query".into()))?;
        let tok_path = recipe
            .data
            .tokenizer
            .as_ref()
            .ok_or_else(|| TrainError::Config("method grpo needs data.tokenizer".into()))?;
        let tokenizer = firebrand_data::tokenizer::load(tok_path)?;
        let template = recipe.data.template()?;
        let max_len = recipe.data.max_len.unwrap_or(2048);
        let prompts = Prompts::load(
            &path,
            &tokenizer,
            template,
            max_len.saturating_sub(method.max_completion_length),
        )?;
        let vocab = plan.config.vocab_size;
        if let Some((i, bad)) = prompts
            .ids
            .iter()
            .enumerate()
            .find_map(|(i, ids)| ids.iter().find(|&&t| t as usize >= vocab).map(|t| (i, *t)))
        {
            return Err(TrainError::Config(format!(
                "{}: prompt `{}` has token id {bad}, outside the model's vocabulary of {vocab}\n  hint: data.tokenizer must be the model's tokenizer",
                path.display(),
                prompts.rows[i].id
            )));
        }
        let stop_token_ids: Vec<u32> = super::checkpoint::stop_token_ids(&plan.config, Some(template), &tokenizer)
            .into_iter()
            .filter(|&t| (t as usize) < vocab)
            .collect();
        if stop_token_ids.is_empty() {
            return Err(TrainError::Config(format!(
                "{}: the tokenizer has no end-of-turn token for template {}; completions could never stop",
                tok_path.display(),
                template.name()
            )));
        }
        let rewards = RewardSpec::build(&method.rewards).map_err(TrainError::Config)?;
        let reference = if method.beta > 0.0 {
            let dir = method
                .reference
                .clone()
                .or_else(|| recipe.model.init.clone())
                .ok_or_else(|| TrainError::Config("method.beta > 0 needs method.reference or model.init".into()))?;
            let model = super::checkpoint::load_trained::<B::InnerBackend>(&dir, device)?.model;
            if model.vocab_size() != vocab {
                return Err(TrainError::Config(format!(
                    "{}: the reference's vocabulary ({}) is not the policy's ({vocab})",
                    dir.display(),
                    model.vocab_size()
                )));
            }
            Some(model)
        } else {
            None
        };
        let log_path = plan.run_dir.join("completions.jsonl");
        let log = super::run::open_metrics(&log_path, plan.resume.then_some(start_step))?;
        Ok(GrpoFlow {
            options: method.options(),
            method: method.clone(),
            prompts,
            tokenizer,
            stop_token_ids,
            rewards,
            reference,
            current: None,
            old_logp: Vec::new(),
            log,
            log_path,
        })
    }

    /// Prompts per generation batch.
    pub fn prompts_per_step(&self, t: &TrainSection) -> usize {
        t.micro_batch_size * t.grad_accum_steps / self.method.num_generations
    }

    /// The window of the step after `step`: samples a new generation batch when `step` opens
    /// one (taking its prompts from `picks`), then accumulates the micro-batches' gradients.
    ///
    /// # Errors
    /// When sampling fails or a batch does not build.
    pub fn window(
        &mut self,
        model: &Decoder<B>,
        step: usize,
        picks: impl FnOnce(usize) -> Vec<u64>,
        t: &TrainSection,
        device: &B::Device,
    ) -> Result<GrpoWindow<B>, TrainError> {
        let mu = self.method.num_iterations;
        let iteration = step % mu;
        let mut rollout_s = 0.0;
        let mut logged = Vec::new();
        if iteration == 0 || self.current.is_none() {
            let idx: Vec<usize> = picks(self.prompts_per_step(t))
                .into_iter()
                .map(|i| i as usize)
                .collect();
            // A hash of (seed, batch): rows then xor their index in, so batch r's row i and batch
            // i's row r do not share a stream.
            let round = (step / mu) as u64 + 1;
            let seed = StdRng::seed_from_u64(t.seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64();
            let spec = RolloutSpec {
                tokenizer: &self.tokenizer,
                sampling: SamplingParams {
                    max_new_tokens: self.method.max_completion_length,
                    temperature: self.method.temperature,
                    top_p: self.method.top_p,
                    top_k: self.method.top_k,
                    stop: Vec::new(),
                    stop_token_ids: self.stop_token_ids.clone(),
                    seed,
                },
                group: self.method.num_generations,
                scale: self.method.scale_rewards,
                rewards: &self.rewards,
                max_rows: usize::MAX,
            };
            let r = rollout(&model.valid(), &self.prompts, &idx, &spec)?;
            rollout_s = r.sampling_s + r.scoring_s;
            // Logged when a multiple of log_completions_every falls among this batch's steps.
            let every = self.method.log_completions_every;
            if every > 0 && step.div_ceil(every) * every < step + mu {
                logged = self.log_group(&r, step + 1)?;
            }
            self.current = Some(r);
            self.old_logp.clear();
        }
        let r = self.current.as_ref().expect("a generation batch was sampled above");
        let temperature = f64::from(self.method.temperature);
        // DAPO's normaliser: the completion tokens of the whole generation batch.
        let active: usize = r.samples.iter().map(|s| s.completion.tokens.len()).sum();
        let chunks: Vec<&[Sample]> = r.samples.chunks(t.micro_batch_size.max(1)).collect();
        // TRL sums dapo's micro-batch losses (each already divided by the batch's tokens) and
        // averages the others over the accumulation window.
        let weight = match self.options.loss_type {
            LossType::Dapo => 1.0,
            _ => 1.0 / chunks.len() as f64,
        };
        let mut accumulator = GradientsAccumulator::<Decoder<B>>::new();
        let (mut loss_sum, mut tokens, mut seq_len) = (0.0, 0usize, 0usize);
        let (mut entropy_sum, mut diff_sum) = (0.0, 0.0);
        let mut metrics = GrpoMetrics::default();
        for (c, chunk) in chunks.into_iter().enumerate() {
            let sb = collate_samples::<B>(&self.prompts, chunk, device)?;
            let b = &sb.batch;
            tokens += b.tokens;
            seq_len = seq_len.max(b.input_ids.dims()[1]);
            let lp = log_probs(model, b, temperature);
            let detached = lp.clone().detach();
            let [rows, width, _] = detached.dims();
            let entropy = (detached.clone().exp() * detached)
                .sum_dim(2)
                .neg()
                .reshape([rows, width]);
            entropy_sum += (entropy * b.weights.clone()).sum().into_scalar().elem::<f64>();
            let logp = gather_targets(lp, b);
            if iteration == 0 {
                diff_sum += ((logp.clone().detach() - sb.sampler_logp.clone()).abs() * b.weights.clone())
                    .sum()
                    .into_scalar()
                    .elem::<f64>();
            }
            let ref_logp = match &self.reference {
                None => None,
                Some(reference) => {
                    let rb = collate_samples::<B::InnerBackend>(&self.prompts, chunk, device)?;
                    let lp = gather_targets(log_probs(reference, &rb.batch, temperature), &rb.batch);
                    Some(Tensor::from_inner(lp))
                }
            };
            let old_logp = match (mu > 1, iteration) {
                (false, _) => None,
                (true, 0) => {
                    self.old_logp.push(logp.clone().detach().inner());
                    None
                }
                (true, _) => Some(Tensor::from_inner(self.old_logp[c].clone())),
            };
            let terms = TokenTerms {
                logp,
                old_logp,
                ref_logp,
                mask: b.weights.clone(),
                advantages: sb.advantages.clone(),
            };
            let (loss, m) = grpo_loss(&self.options, &terms, active)?;
            metrics.add_weighted(&m, b.count as f64 / active.max(1) as f64);
            loss_sum += weight * loss.clone().into_scalar().elem::<f64>();
            let grads = loss.mul_scalar(weight).backward();
            accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
        }
        let n = active.max(1) as f64;
        let metrics = GrpoStepMetrics {
            rollout: r.metrics(),
            kl: metrics.kl,
            clip_low: metrics.clip_low,
            clip_high: metrics.clip_high,
            clip_region: metrics.clip_low + metrics.clip_high,
            entropy: entropy_sum / n,
            iteration,
            sampler_logp_diff: (iteration == 0).then_some(diff_sum / n),
            rollout_s,
            train_s: 0.0,
            rollout_tokens_per_s: (iteration == 0).then(|| r.generated as f64 / r.sampling_s.max(1e-9)),
            train_tokens_per_s: 0.0,
        };
        Ok(GrpoWindow {
            loss: loss_sum,
            grads: accumulator.grads(),
            tokens,
            count: active,
            seq_len,
            metrics,
            logged,
            _backend: std::marker::PhantomData,
        })
    }

    /// Writes the first group of `r` to `RUN/completions.jsonl`.
    fn log_group(&mut self, r: &Rollout, step: usize) -> Result<Vec<LoggedSample>, TrainError> {
        let group: Vec<LoggedSample> = r.samples[..r.group.min(r.samples.len())]
            .iter()
            .map(|s| LoggedSample {
                step,
                prompt: self.prompts.text(s.prompt).to_string(),
                completion: s.completion.text.clone(),
                reward: s.reward,
                advantage: s.advantage,
                tokens: s.completion.tokens.len(),
            })
            .collect();
        for g in &group {
            let line = serde_json::to_value(g).expect("logged samples serialize");
            super::run::write_line(&mut self.log, &self.log_path, &line)?;
        }
        Ok(group)
    }

    /// Mean reward of greedy completions of the held-out prompts `rows` (sampled `batch` at a
    /// time), and the `metrics.jsonl` line with each reward's mean.
    ///
    /// # Errors
    /// When sampling fails.
    pub fn evaluate(
        &self,
        model: &Decoder<B>,
        rows: &[u64],
        batch: usize,
        step: usize,
    ) -> Result<(f64, serde_json::Value), TrainError> {
        let idx: Vec<usize> = rows.iter().map(|&i| i as usize).collect();
        let spec = RolloutSpec {
            tokenizer: &self.tokenizer,
            sampling: SamplingParams {
                max_new_tokens: self.method.max_completion_length,
                temperature: 0.0,
                stop_token_ids: self.stop_token_ids.clone(),
                ..SamplingParams::default()
            },
            group: 1,
            scale: super::grpo::ScaleRewards::None,
            rewards: &self.rewards,
            max_rows: batch,
        };
        let r = rollout(&model.valid(), &self.prompts, &idx, &spec)?;
        let m = r.metrics();
        let mut line = serde_json::json!({
            "step": step,
            "eval/reward": m.reward,
            "eval/completions/mean_length": m.mean_length,
        });
        if let Some(obj) = line.as_object_mut() {
            for stats in &r.rewards {
                obj.insert(format!("eval/rewards/{}/mean", stats.name), stats.mean.into());
            }
        }
        Ok((m.reward, line))
    }
}
