//! GRPO (DeepSeekMath, arXiv 2402.03300 §4.1; the variants as TRL's `GRPOTrainer` names them,
//! huggingface/trl `grpo_trainer.py`) on a `prompts` dataset: every μ optimizer steps a generation
//! batch is sampled from the current policy (`rollout.rs`: G completions per prompt, rewards,
//! group-normalised advantages); each step's window is that batch in micro-batches of
//! `train.micro_batch_size` completions. Held-out prompts are evaluated by greedy decoding.
//!
//! - Per token: ℓ = −min(ρA, clip(ρ, 1 − ε_low, 1 + ε_high)·A) + β·k3, ρ = exp(log π − log π_old),
//!   k3 = exp(ref − log π) − (ref − log π) − 1. Its derivative by log π, formed here on the host
//!   and taken back by the engine, is −ρA where the unclipped term is the smaller (0 where the
//!   clip holds it), plus β(1 − exp(ref − log π)).
//! - Aggregation over a micro-batch's completion tokens: `grpo` mean over sequences of each
//!   sequence's token mean; `bnpo` token mean; `dr_grpo` token sum over rows ·
//!   max_completion_length; `dapo` token sum over the active tokens of the whole generation batch.
//!   Over the window, TRL averages the micro-batches' grpo, bnpo and dr_grpo losses and sums
//!   dapo's; so do we.
//! - Log-probs are of the logits divided by the sampling temperature, for the policy and the
//!   reference. With μ = 1 the old log-probs are the current ones (the ratio is exactly 1); with
//!   μ > 1 the first iteration's log-probs are kept as π_old for the later ones (so the first
//!   ratio is 1 whatever the precision; the sampler's own log-probs only feed
//!   `sampler_logp_diff`). The reference's log-probs (β > 0) are computed once per generation
//!   batch by a scoring engine of the run's kind; none is loaded when β = 0.
//! - Sampling seeds are a hash of the run's seed and the generation batch's index, and `max_steps`
//!   and `checkpoint_every` are multiples of μ, so a resumed run samples what the uninterrupted
//!   one did.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use firebrand_data::tokenizer::Tokenizer;
use firebrand_verify::reward::{RewardSpec, Weighted};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::engine::api::{Engine, Forward, Grad, Micro, Want};
use crate::engine::choose::Choice;
use crate::error::TrainError;
use crate::generate::SamplingParams;
use crate::recipe::{GrpoMethod, LossType, ScaleRewards};
use crate::trainer::method::api::{
    Evaluation, LoggedSample, Loss, Method, MethodMetrics, Note, Window, metrics_of, text_and_tokenizer,
};
use crate::trainer::method::rollout::{Prompts, Rollout, RolloutMetrics, RolloutSpec, rollout, sample_rows};
use crate::trainer::order::Cursor;
use crate::trainer::plan::RunPlan;

/// GRPO's loss options (TRL's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoOptions {
    /// ε_low (0.2).
    pub epsilon_low: f64,
    /// ε_high (0.2; DAPO's clip-higher uses 0.28).
    pub epsilon_high: f64,
    /// KL weight β (0: no reference model is needed).
    pub beta: f64,
    /// The aggregation.
    pub loss_type: LossType,
    /// Completion length limit, `dr_grpo`'s constant.
    pub max_completion_length: usize,
}

impl Default for GrpoOptions {
    fn default() -> Self {
        GrpoOptions {
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.0,
            loss_type: LossType::Dapo,
            max_completion_length: 512,
        }
    }
}

impl GrpoOptions {
    /// The options of a recipe's `[method]`.
    pub fn of(m: &GrpoMethod) -> Self {
        GrpoOptions {
            epsilon_low: m.epsilon,
            epsilon_high: m.epsilon_high.unwrap_or(m.epsilon),
            beta: m.beta,
            loss_type: m.loss_type,
            max_completion_length: m.max_completion_length,
        }
    }
}

/// One micro-batch of completions, per counted target (completion token) in the engine's order.
#[derive(Debug, Clone, Copy)]
pub struct Terms<'a> {
    /// log π of each sampled token.
    pub logp: &'a [f32],
    /// log π_old (μ > 1, later iterations); `None`: π_old is π (ρ = 1).
    pub old: Option<&'a [f32]>,
    /// log π_ref (β > 0).
    pub reference: Option<&'a [f32]>,
    /// The row of each target.
    pub row: &'a [u32],
    /// Each row's advantage.
    pub advantages: &'a [f64],
}

/// What a step is debugged with, over a micro-batch's completion tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TokenMetrics {
    /// Mean k3 KL to the reference (0 without one).
    pub kl: f64,
    /// Share of tokens clipped below (ρ < 1 − ε_low with A < 0).
    pub clip_low: f64,
    /// Share clipped above (ρ > 1 + ε_high with A > 0).
    pub clip_high: f64,
}

/// The aggregated loss of a micro-batch, `∂loss/∂log π` of each target, and the metrics.
/// `active` is DAPO's normaliser: the completion tokens of the whole generation batch.
///
/// # Errors
/// When β > 0 without reference log-probs, or the slices disagree in length.
pub fn grpo_loss(o: &GrpoOptions, t: &Terms, active: usize) -> Result<(f64, Vec<f32>, TokenMetrics), TrainError> {
    let n = t.logp.len();
    let lengths_agree = t.row.len() == n
        && t.old.is_none_or(|x| x.len() == n)
        && t.reference.is_none_or(|x| x.len() == n)
        && t.row.iter().all(|&r| (r as usize) < t.advantages.len());
    if !lengths_agree {
        return Err(TrainError::Batch(
            "grpo: log-probs, rows and advantages disagree".into(),
        ));
    }
    if o.beta > 0.0 && t.reference.is_none() {
        return Err(TrainError::Batch(
            "grpo beta > 0 needs the reference's log-probs".into(),
        ));
    }
    let rows = t.advantages.len();
    let mut per_row = vec![0usize; rows];
    for &r in t.row {
        per_row[r as usize] += 1;
    }
    let weight = |r: usize| -> f64 {
        match o.loss_type {
            LossType::Grpo => 1.0 / (rows as f64 * per_row[r].max(1) as f64),
            LossType::Bnpo => 1.0 / n.max(1) as f64,
            LossType::DrGrpo => 1.0 / (rows * o.max_completion_length).max(1) as f64,
            LossType::Dapo => 1.0 / active.max(1) as f64,
        }
    };
    let (mut loss, mut grad, mut m) = (0.0, Vec::with_capacity(n), TokenMetrics::default());
    for j in 0..n {
        let r = t.row[j] as usize;
        let (lp, a) = (f64::from(t.logp[j]), t.advantages[r]);
        let rho = t.old.map_or(1.0, |old| (lp - f64::from(old[j])).exp());
        let clipped = rho.clamp(1.0 - o.epsilon_low, 1.0 + o.epsilon_high);
        let (unclipped_term, clipped_term) = (rho * a, clipped * a);
        let mut l = -unclipped_term.min(clipped_term);
        let mut d = if unclipped_term <= clipped_term { -rho * a } else { 0.0 };
        if let Some(reference) = t.reference
            && o.beta > 0.0
        {
            let diff = f64::from(reference[j]) - lp;
            let k3 = diff.exp() - diff - 1.0;
            l += o.beta * k3;
            d += o.beta * (1.0 - diff.exp());
            m.kl += k3;
        }
        m.clip_low += f64::from(u8::from(rho < 1.0 - o.epsilon_low && a < 0.0));
        m.clip_high += f64::from(u8::from(rho > 1.0 + o.epsilon_high && a > 0.0));
        let w = weight(r);
        loss += w * l;
        grad.push((w * d) as f32);
    }
    let tokens = n.max(1) as f64;
    m.kl /= tokens;
    m.clip_low /= tokens;
    m.clip_high /= tokens;
    Ok((loss, grad, m))
}

/// One GRPO step's line in `metrics.jsonl`, next to the loop's own fields (TRL's names).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GrpoStepMetrics {
    /// The generation batch: rewards, advantages, lengths.
    #[serde(flatten)]
    pub rollout: RolloutMetrics,
    /// Mean k3 KL to the reference (0 without one).
    pub kl: f64,
    /// Share of completion tokens clipped below.
    #[serde(rename = "clip_ratio/low_mean")]
    pub clip_low: f64,
    /// Share clipped above.
    #[serde(rename = "clip_ratio/high_mean")]
    pub clip_high: f64,
    /// Share clipped either way.
    #[serde(rename = "clip_ratio/region_mean")]
    pub clip_region: f64,
    /// Mean entropy (nats) of the policy over completion tokens.
    pub entropy: f64,
    /// Which of the μ iterations over this generation batch the step was (0 for the first).
    pub iteration: usize,
    /// On the first iteration: mean |log π − log π_sampler| over completion tokens, the gap
    /// between the training forward and the sampler's KV-cached forward (~1e-6 when both run in
    /// f32; the kernel engine's bf16 matmuls against the sampler's f32 give ~1e-3 to 1e-2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampler_logp_diff: Option<f64>,
    /// Seconds spent on this step's generation batch (0 on later iterations): the sampler's copy of
    /// the weights, sampling and scoring.
    pub rollout_s: f64,
    /// The rest of the step: the micro-batches' preparation, the reference's forward when β > 0,
    /// forward and backward, clipping and the optimizer step; MFU is computed over it.
    pub train_s: f64,
    /// Generated tokens per second of sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_tokens_per_s: Option<f64>,
    /// Trained tokens (prompt and completion) per second of training.
    pub train_tokens_per_s: f64,
}

/// A sampled generation batch in micro-batches, with what its steps need per micro-batch.
struct Generation {
    micros: Vec<Micro>,
    /// Each row's advantage.
    advantages: Vec<Vec<f64>>,
    /// The sampler's log-prob of each target.
    sampler: Vec<Vec<f32>>,
    /// The reference's (β > 0).
    reference: Vec<Vec<f32>>,
    /// π_old of each target, from the first iteration (μ > 1).
    old: Vec<Vec<f32>>,
    /// Completion tokens of the whole batch (DAPO's normaliser).
    active: usize,
    metrics: RolloutMetrics,
    generated: usize,
    sampling_s: f64,
}

/// What the window's micro-batches add up to.
#[derive(Debug, Clone, Copy, Default)]
struct Accum {
    tokens: TokenMetrics,
    entropy: f64,
    sampler_diff: f64,
}

/// A GRPO run's state beyond the policy: prompts, rewards, the reference, the current generation
/// batch.
pub struct Grpo<B: AutodiffBackend> {
    method: GrpoMethod,
    options: GrpoOptions,
    prompts: Prompts,
    source: PathBuf,
    tokenizer: Tokenizer,
    stop_token_ids: Vec<u32>,
    rewards: Weighted,
    reference: Option<Box<dyn Engine<B>>>,
    generation: Option<Generation>,
    iteration: usize,
    accum: Accum,
    micro_batch: usize,
    per_step: usize,
    seed: u64,
    device: B::Device,
    log: std::fs::File,
    log_path: PathBuf,
    notes: Vec<Note>,
}

impl<B: AutodiffBackend> Grpo<B> {
    /// Loads the prompts, the rewards and (with β > 0) the reference, on a scoring engine of
    /// `choice`.
    ///
    /// # Errors
    /// When the prompts, tokenizer or reference do not load, or the rewards do not build.
    pub fn open(
        plan: &RunPlan,
        method: &GrpoMethod,
        choice: &mut Choice,
        start_step: usize,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let recipe = &plan.recipe;
        let (path, tok_path) = text_and_tokenizer(recipe, &plan.run_dir, "grpo")?;
        let tokenizer = firebrand_data::tokenizer::load(&tok_path)?;
        let template = recipe.data.template()?;
        let max_len = recipe.data.max_len.unwrap_or(2048);
        let prompts = Prompts::load(
            &path,
            &tokenizer,
            &template,
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
        let stop_token_ids: Vec<u32> = crate::trained::stop_token_ids(&plan.config, Some(&template), &tokenizer)
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
            let (config, state) = crate::trained::load_state::<B>(&dir, device)?;
            crate::trainer::method::dpo::check_vocab(&dir, config.vocab_size, vocab)?;
            Some(choice.open::<B>(&config, &state, None, None, device)?)
        } else {
            None
        };
        let log_path = plan.run_dir.join("completions.jsonl");
        let log = crate::trainer::log::open(&log_path, plan.resume.then_some(start_step))?;
        let t = &recipe.train;
        let notes = vec![Note::Prompts {
            kept: prompts.len(),
            too_long: prompts.too_long,
            empty: prompts.empty,
        }];
        Ok(Grpo {
            options: GrpoOptions::of(method),
            method: method.clone(),
            prompts,
            source: path,
            tokenizer,
            stop_token_ids,
            rewards,
            reference,
            generation: None,
            iteration: 0,
            accum: Accum::default(),
            micro_batch: t.micro_batch_size,
            per_step: t.micro_batch_size * t.grad_accum_steps / method.num_generations,
            seed: t.seed,
            device: device.clone(),
            log,
            log_path,
            notes,
        })
    }

    /// Samples a generation batch from `engine`'s weights for the prompts `picks`, for the window
    /// of step `step`, and prepares its micro-batches (with the reference's log-probs).
    fn sample(&mut self, engine: &mut dyn Engine<B>, picks: &[usize], step: usize) -> Result<f64, TrainError> {
        let mu = self.method.num_iterations;
        // A hash of (seed, batch): rows then xor their index in, so batch r's row i and batch i's
        // row r do not share a stream.
        let round = (step / mu) as u64 + 1;
        let seed = StdRng::seed_from_u64(self.seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64();
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
        // The sampler's copy of the weights (a download on the kernel engine) counts as rollout.
        let copied = std::time::Instant::now();
        let policy = engine.sampler(&self.device)?;
        let copy_s = copied.elapsed().as_secs_f64();
        let r = rollout(&policy, &self.prompts, picks, &spec)?;
        drop(policy);
        // Logged when a multiple of log_completions_every falls among this batch's steps.
        let every = self.method.log_completions_every;
        if every > 0 && step.div_ceil(every) * every < step + mu {
            let logged = self.log_group(&r, step + 1)?;
            self.notes.push(Note::Completions(logged));
        }
        let mut g = Generation {
            micros: Vec::new(),
            advantages: Vec::new(),
            sampler: Vec::new(),
            reference: Vec::new(),
            old: Vec::new(),
            active: r.samples.iter().map(|s| s.completion.tokens.len()).sum(),
            metrics: r.metrics(),
            generated: r.generated,
            sampling_s: r.sampling_s,
        };
        let temperature = self.method.temperature;
        for chunk in r.samples.chunks(self.micro_batch.max(1)) {
            let micro = engine.prepare(sample_rows(&self.prompts, chunk))?;
            let sampler: Vec<f32> = chunk
                .iter()
                .flat_map(|s| s.completion.logprobs.iter().copied())
                .collect();
            if sampler.len() != micro.count() {
                return Err(TrainError::Batch(format!(
                    "grpo: {} sampled tokens but {} trained targets",
                    sampler.len(),
                    micro.count()
                )));
            }
            if let Some(reference) = self.reference.as_mut() {
                let want = Want {
                    temperature,
                    ..Want::no_grad()
                };
                reference.forward(&micro, want, None)?;
                g.reference.push(reference.collect()?.logp);
            }
            g.advantages.push(chunk.iter().map(|s| s.advantage).collect());
            g.sampler.push(sampler);
            g.micros.push(micro);
        }
        self.generation = Some(g);
        Ok(copy_s + r.sampling_s + r.scoring_s)
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
            crate::trainer::log::write_line(&mut self.log, &self.log_path, &line)?;
        }
        Ok(group)
    }
}

impl<B: AutodiffBackend> Method<B> for Grpo<B> {
    fn units(&self) -> u64 {
        self.prompts.len() as u64
    }

    fn source(&self) -> PathBuf {
        self.source.clone()
    }

    fn want(&self) -> Want {
        Want {
            temperature: self.method.temperature,
            entropy: true,
            grad: true,
        }
    }

    fn read_ahead(&self) -> bool {
        false
    }

    fn window(&mut self, engine: &mut dyn Engine<B>, cursor: &mut Cursor, step: usize) -> Result<Window, TrainError> {
        self.iteration = step % self.method.num_iterations;
        let start = cursor.pos;
        let mut rollout_s = 0.0;
        if step.is_multiple_of(self.method.num_iterations) || self.generation.is_none() {
            let picks: Vec<usize> = cursor.take(self.per_step).into_iter().map(|i| i as usize).collect();
            rollout_s = self.sample(engine, &picks, step)?;
        }
        let g = self.generation.as_ref().expect("a generation batch was sampled");
        let mut w = Window::new(g.micros.clone(), start, cursor.pos);
        w.rollout_s = rollout_s;
        Ok(w)
    }

    fn loss(&mut self, i: usize, micro: &Micro, forward: &Forward, window: &Window) -> Result<Loss, TrainError> {
        let mu = self.method.num_iterations;
        let g = self
            .generation
            .as_mut()
            .ok_or_else(|| TrainError::Batch("grpo: a loss without a generation batch".into()))?;
        if mu > 1 && self.iteration == 0 {
            g.old.truncate(i);
            g.old.push(forward.logp.clone());
        }
        let old = match (mu > 1 && self.iteration > 0, g.old.get(i)) {
            (false, _) => None,
            (true, Some(o)) => Some(o.as_slice()),
            (true, None) => {
                return Err(TrainError::Batch(format!(
                    "grpo: iteration {} of a generation batch whose first iteration was not trained here",
                    self.iteration
                )));
            }
        };
        let terms = Terms {
            logp: &forward.logp,
            old,
            reference: g.reference.get(i).map(Vec::as_slice),
            row: &micro.target_row,
            advantages: &g.advantages[i],
        };
        let (value, dlogp, m) = grpo_loss(&self.options, &terms, g.active)?;
        // TRL sums dapo's micro-batch losses (each already divided by the batch's tokens) and
        // averages the others over the accumulation window.
        let scale = match self.options.loss_type {
            LossType::Dapo => 1.0,
            _ => 1.0 / window.micros.len().max(1) as f64,
        };
        let share = micro.count() as f64 / g.active.max(1) as f64;
        let a = &mut self.accum;
        a.tokens.kl += share * m.kl;
        a.tokens.clip_low += share * m.clip_low;
        a.tokens.clip_high += share * m.clip_high;
        a.entropy += forward.entropy.iter().map(|&x| f64::from(x)).sum::<f64>();
        if self.iteration == 0 {
            a.sampler_diff += forward
                .logp
                .iter()
                .zip(&g.sampler[i])
                .map(|(x, y)| f64::from((x - y).abs()))
                .sum::<f64>();
        }
        Ok(Loss {
            value: scale * value,
            grad: Grad {
                dlogp: dlogp.into_iter().map(|d| d * scale as f32).collect(),
                domega: Vec::new(),
            },
        })
    }

    fn finish(&mut self, window: &Window, seconds: f64) -> MethodMetrics {
        let a = std::mem::take(&mut self.accum);
        let g = self.generation.as_ref();
        let n = g.map_or(1, |g| g.active.max(1)) as f64;
        let first = self.iteration == 0;
        let train_s = (seconds - window.rollout_s).max(1e-9);
        metrics_of(&GrpoStepMetrics {
            rollout: g.map(|g| g.metrics.clone()).unwrap_or_default(),
            kl: a.tokens.kl,
            clip_low: a.tokens.clip_low,
            clip_high: a.tokens.clip_high,
            clip_region: a.tokens.clip_low + a.tokens.clip_high,
            entropy: a.entropy / n,
            iteration: self.iteration,
            sampler_logp_diff: first.then_some(a.sampler_diff / n),
            rollout_s: window.rollout_s,
            train_s,
            rollout_tokens_per_s: g.filter(|_| first).map(|g| g.generated as f64 / g.sampling_s.max(1e-9)),
            train_tokens_per_s: window.tokens as f64 / train_s,
        })
    }

    fn evaluate(
        &mut self,
        engine: &mut dyn Engine<B>,
        units: &[u64],
        batch: usize,
        step: usize,
    ) -> Result<(Evaluation, serde_json::Value), TrainError> {
        let idx: Vec<usize> = units.iter().map(|&i| i as usize).collect();
        let spec = RolloutSpec {
            tokenizer: &self.tokenizer,
            sampling: SamplingParams {
                max_new_tokens: self.method.max_completion_length,
                temperature: 0.0,
                stop_token_ids: self.stop_token_ids.clone(),
                ..SamplingParams::default()
            },
            group: 1,
            scale: ScaleRewards::None,
            rewards: &self.rewards,
            max_rows: batch,
        };
        let policy = engine.sampler(&self.device)?;
        let r = rollout(&policy, &self.prompts, &idx, &spec)?;
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
        Ok((Evaluation::Reward(m.reward), line))
    }

    fn notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row 0 has 3 completion tokens, row 1 has 2.
    const ROWS: [u32; 5] = [0, 0, 0, 1, 1];

    #[test]
    fn on_policy_gradient_is_the_plain_policy_gradient_for_each_aggregation() {
        let lp = [-1.0f32, -2.0, -0.5, -0.3, -1.2];
        let adv = [0.7, -1.3];
        for (loss_type, norm) in [
            (LossType::Bnpo, [5.0, 5.0]),
            (LossType::Dapo, [20.0, 20.0]),
            (LossType::DrGrpo, [2.0 * 8.0, 2.0 * 8.0]),
            (LossType::Grpo, [2.0 * 3.0, 2.0 * 2.0]),
        ] {
            let options = GrpoOptions {
                loss_type,
                max_completion_length: 8,
                ..GrpoOptions::default()
            };
            let terms = Terms {
                logp: &lp,
                old: None,
                reference: None,
                row: &ROWS,
                advantages: &adv,
            };
            let (value, grad, m) = grpo_loss(&options, &terms, 20).unwrap();
            // ρ = 1, so the value is −Σ A / normaliser.
            let want_value = -(3.0 * 0.7 / norm[0] + 2.0 * -1.3 / norm[1]);
            assert!(
                (value - want_value).abs() < 1e-9,
                "{loss_type:?}: {value} vs {want_value}"
            );
            // ∂/∂log π = −A / normaliser.
            let want = [
                -0.7 / norm[0],
                -0.7 / norm[0],
                -0.7 / norm[0],
                1.3 / norm[1],
                1.3 / norm[1],
            ];
            for (x, y) in grad.iter().zip(want) {
                assert!((f64::from(*x) - y).abs() < 1e-7, "{loss_type:?}: {grad:?}");
            }
            assert_eq!((m.clip_low, m.clip_high, m.kl), (0.0, 0.0, 0.0));
        }
    }

    #[test]
    fn clipping_and_kl_match_hand_computed_values() {
        // Row 0 (A = 1): ratios e^0.5 ≈ 1.6487 (clipped at 1.2), e^0 = 1, e^-0.5 ≈ 0.6065.
        // Row 1 (A = −1): ratios e^-0.5 (clipped at 0.8), e^0.1 ≈ 1.1052.
        let lp = [0.0f32; 5];
        let old = [-0.5f32, 0.0, 0.5, 0.5, -0.1];
        let options = GrpoOptions {
            loss_type: LossType::Bnpo,
            ..GrpoOptions::default()
        };
        let terms = Terms {
            logp: &lp,
            old: Some(&old),
            reference: None,
            row: &ROWS,
            advantages: &[1.0, -1.0],
        };
        let (value, grad, m) = grpo_loss(&options, &terms, 5).unwrap();
        // ℓ = −min(ρA, clip(ρ)A): row 0: −1.2, −1, −0.60653; row 1 (A = −1): min(−0.60653, −0.8) = −0.8 → 0.8;
        // min(−1.10517, −1.10517) → 1.10517. Mean over 5 tokens.
        let want = (-1.2 - 1.0 - 0.606_531 + 0.8 + 1.105_171) / 5.0;
        assert!((value - want).abs() < 1e-6, "{value} vs {want}");
        // One token clipped above (row 0, ρ = 1.65, A > 0); one below (row 1, ρ = 0.61, A < 0).
        assert!(
            (m.clip_high - 0.2).abs() < 1e-9 && (m.clip_low - 0.2).abs() < 1e-9,
            "{m:?}"
        );
        // The clipped tokens have no gradient; the others −ρA / 5.
        let want = [0.0, -1.0 / 5.0, -0.606_531 / 5.0, 0.0, 1.105_171 / 5.0];
        for (x, y) in grad.iter().zip(want) {
            assert!((f64::from(*x) - y).abs() < 1e-6, "{grad:?}");
        }

        // k3 with β = 0.1 against a reference 0.5 below on every token: e^-0.5 + 0.5 − 1 = 0.106531.
        let reference = [-0.5f32; 5];
        let options = GrpoOptions {
            beta: 0.1,
            loss_type: LossType::Bnpo,
            ..GrpoOptions::default()
        };
        let terms = Terms {
            logp: &lp,
            old: None,
            reference: Some(&reference),
            row: &ROWS,
            advantages: &[0.0, 0.0],
        };
        let (value, grad, m) = grpo_loss(&options, &terms, 5).unwrap();
        let k3 = (-0.5f64).exp() + 0.5 - 1.0;
        assert!((m.kl - k3).abs() < 1e-7, "{m:?}");
        assert!((value - 0.1 * k3).abs() < 1e-7);
        // ∂k3/∂log π = 1 − e^(ref − log π).
        let d = 0.1 * (1.0 - (-0.5f64).exp()) / 5.0;
        assert!(grad.iter().all(|g| (f64::from(*g) - d).abs() < 1e-8), "{grad:?}");
        // β > 0 without a reference is an error.
        let terms = Terms {
            reference: None,
            ..terms
        };
        assert!(grpo_loss(&options, &terms, 5).is_err());
    }

    /// The gradient equals central finite differences of the value, for every aggregation, with
    /// old and reference log-probs, away from the clip's kinks.
    #[test]
    fn gradient_matches_finite_differences() {
        let lp = [-1.0f32, -2.0, -0.5, -0.3, -1.2];
        let old = [-1.1f32, -1.9, -0.45, -0.35, -1.25];
        let reference = [-0.8f32, -2.5, -0.6, -0.2, -1.0];
        let adv = [0.7, -1.3];
        for loss_type in [LossType::Grpo, LossType::Bnpo, LossType::DrGrpo, LossType::Dapo] {
            let options = GrpoOptions {
                loss_type,
                beta: 0.05,
                max_completion_length: 8,
                ..GrpoOptions::default()
            };
            let value = |lp: &[f32]| {
                let t = Terms {
                    logp: lp,
                    old: Some(&old),
                    reference: Some(&reference),
                    row: &ROWS,
                    advantages: &adv,
                };
                grpo_loss(&options, &t, 20).unwrap()
            };
            let (_, grad, _) = value(&lp);
            for j in 0..lp.len() {
                let h = 1e-3f32;
                let (mut up, mut down) = (lp, lp);
                up[j] += h;
                down[j] -= h;
                let numeric = (value(&up).0 - value(&down).0) / (2.0 * f64::from(h));
                assert!(
                    (numeric - f64::from(grad[j])).abs() < 1e-4,
                    "{loss_type:?} {j}: {numeric} vs {}",
                    grad[j]
                );
            }
        }
    }
}
