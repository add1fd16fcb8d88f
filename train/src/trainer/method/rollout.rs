//! GRPO's rollouts: the run's prompts, `G` sampled completions per prompt, their rewards and
//! advantages, and the training rows built from them.
//!
//! A generation batch is one call of the sampler (`crate::generate`: left-padded prefill, then one
//! token per step with the KV cache; rows leave the batch when they stop), with every prompt
//! repeated `G` times; each row has its own random stream, so the copies differ. The sampler
//! records the log-probability of each token it drew under the temperature-scaled distribution:
//! those are the "old" log-probs of the clipped ratio when μ > 1 (TRL recomputes them with a
//! forward pass; the sampler already has them). A completion ends with its stop token, which is
//! trained on, as in TRL's completion mask. Rewards see the decoded text without the stop token.
//!
//! Prompts are rendered with the recipe's chat template (`generation_prompt`), tokenized once
//! when the run starts, and those longer than `data.max_len − max_completion_length` are left out
//! and counted.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;
use firebrand_data::template::Template;
use firebrand_data::tokenizer::Tokenizer;
use firebrand_data::{Dataset, DatasetKind, PromptsRow, TokensRow};
use firebrand_verify::reward::{RewardStats, Weighted};

use crate::error::TrainError;
use crate::generate::{Completion, Finish, SamplingParams, generate};
use crate::model::Decoder;
use crate::recipe::ScaleRewards;

/// The prompts a GRPO run samples from, tokenized.
pub struct Prompts {
    /// The rows (kept for the rewards: verifiers, answer).
    pub rows: Vec<PromptsRow>,
    /// Each row's generation prompt as token ids.
    pub ids: Vec<Vec<u32>>,
    /// Rows left out because their prompt leaves no room for a completion.
    pub too_long: usize,
    /// Rows left out because their prompt renders to no token.
    pub empty: usize,
}

impl Prompts {
    /// Reads a `prompts` dataset and tokenizes each row's generation prompt.
    ///
    /// # Errors
    /// When the dataset is not of kind `prompts`, a prompt does not tokenize, or no prompt fits.
    pub fn load(
        path: &Path,
        tokenizer: &Tokenizer,
        template: &Template,
        max_prompt_len: usize,
    ) -> Result<Prompts, TrainError> {
        let ds = Dataset::open_kind(path, DatasetKind::Prompts)?;
        let (mut rows, mut ids, mut too_long, mut empty) = (Vec::new(), Vec::new(), 0, 0);
        for (i, row) in ds.rows::<PromptsRow>(4096)?.enumerate() {
            let row = row?;
            let text = template
                .generation_prompt(&row.prompt)
                .map_err(|e| TrainError::Config(format!("{}: row {i}: {e}", path.display())))?;
            let encoded = tokenizer
                .encode(text.as_str(), false)
                .map_err(|e| TrainError::Config(format!("{}: row {i}: tokenizing the prompt: {e}", path.display())))?;
            let tokens = encoded.get_ids().to_vec();
            if tokens.is_empty() {
                empty += 1;
                continue;
            }
            if tokens.len() > max_prompt_len {
                too_long += 1;
                continue;
            }
            rows.push(row);
            ids.push(tokens);
        }
        if rows.is_empty() {
            return Err(TrainError::Config(format!(
                "{}: no prompt to sample from ({too_long} longer than data.max_len − method.max_completion_length = {max_prompt_len} tokens)",
                path.display()
            )));
        }
        Ok(Prompts {
            rows,
            ids,
            too_long,
            empty,
        })
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The text of a row's last message (what logs show as the prompt).
    pub fn text(&self, i: usize) -> &str {
        self.rows[i].prompt.last().map_or("", |m| m.content.as_str())
    }
}

/// One completion of a generation batch.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Index of its prompt in [`Prompts`].
    pub prompt: usize,
    /// What the sampler produced (tokens, their log-probs, text, why it stopped).
    pub completion: Completion,
    /// Its total reward (`None`: no reward applied).
    pub reward: Option<f64>,
    /// Its advantage.
    pub advantage: f64,
}

/// A scored generation batch: groups of `G` consecutive samples share a prompt.
pub struct Rollout {
    /// The samples.
    pub samples: Vec<Sample>,
    /// Each reward's statistics over the batch.
    pub rewards: Vec<RewardStats>,
    /// Seconds spent sampling (rewards excluded).
    pub sampling_s: f64,
    /// Seconds spent scoring.
    pub scoring_s: f64,
    /// Generated tokens.
    pub generated: usize,
    /// Group size.
    pub group: usize,
}

/// How to sample and score.
pub struct RolloutSpec<'a> {
    /// Decodes completions for the rewards and stop strings.
    pub tokenizer: &'a Tokenizer,
    /// The sampler's settings (the seed is the batch's).
    pub sampling: SamplingParams,
    /// Completions per prompt.
    pub group: usize,
    /// Advantage scaling.
    pub scale: ScaleRewards,
    /// The rewards.
    pub rewards: &'a Weighted,
    /// Most rows per sampler call (whole groups; the chunk index varies the seed).
    pub max_rows: usize,
}

/// Samples `spec.group` completions for each prompt of `picks`, scores them and computes the
/// advantages.
///
/// # Errors
/// When the sampler fails (a token outside the vocabulary).
pub fn rollout<B: Backend>(
    model: &Decoder<B>,
    prompts: &Prompts,
    picks: &[usize],
    spec: &RolloutSpec,
) -> Result<Rollout, TrainError> {
    let started = Instant::now();
    let order: Vec<usize> = picks.iter().flat_map(|&p| std::iter::repeat_n(p, spec.group)).collect();
    let ids: Vec<Vec<u32>> = order.iter().map(|&p| prompts.ids[p].clone()).collect();
    let per_call = (spec.max_rows / spec.group.max(1)).max(1) * spec.group.max(1);
    let mut completions = Vec::with_capacity(ids.len());
    for (i, chunk) in ids.chunks(per_call).enumerate() {
        let sampling = SamplingParams {
            seed: spec.sampling.seed.wrapping_add(i as u64),
            ..spec.sampling.clone()
        };
        completions.extend(generate(model, spec.tokenizer, chunk, &sampling)?);
    }
    let sampling_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let texts: Vec<(&PromptsRow, &str)> = order
        .iter()
        .zip(&completions)
        .map(|(&p, c)| (&prompts.rows[p], c.text.as_str()))
        .collect();
    let (totals, rewards) = spec.rewards.score_batch(&texts);
    let adv = advantages(&totals, spec.group, spec.scale)?;
    let scoring_s = started.elapsed().as_secs_f64();
    let generated = completions.iter().map(|c| c.tokens.len()).sum();
    let samples = order
        .into_iter()
        .zip(completions)
        .zip(totals.into_iter().zip(adv))
        .map(|((prompt, completion), (reward, advantage))| Sample {
            prompt,
            completion,
            reward,
            advantage,
        })
        .collect();
    Ok(Rollout {
        samples,
        rewards,
        sampling_s,
        scoring_s,
        generated,
        group: spec.group,
    })
}

/// What a generation batch looked like, for the step's metrics (TRL's names).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RolloutMetrics {
    /// Mean total reward over samples that have one.
    pub reward: f64,
    /// Mean over groups of the reward's (Bessel-corrected) std within the group.
    pub reward_std: f64,
    /// Share of groups whose rewards are all equal, within 1e-6 (no learning signal).
    pub frac_reward_zero_std: f64,
    /// Share of samples no reward applied to.
    pub frac_reward_none: f64,
    /// `rewards/NAME/mean` and `rewards/NAME/std` of each reward.
    #[serde(flatten)]
    pub per_reward: std::collections::BTreeMap<String, f64>,
    /// Std of the advantages.
    #[serde(rename = "advantages/std")]
    pub advantage_std: f64,
    /// Largest |advantage|.
    #[serde(rename = "advantages/abs_max")]
    pub advantage_abs_max: f64,
    /// Mean completion length in tokens (stop token included).
    #[serde(rename = "completions/mean_length")]
    pub mean_length: f64,
    /// Shortest completion.
    #[serde(rename = "completions/min_length")]
    pub min_length: usize,
    /// Longest completion.
    #[serde(rename = "completions/max_length")]
    pub max_length: usize,
    /// Share of completions cut at `max_completion_length`.
    #[serde(rename = "completions/clipped_ratio")]
    pub clipped_ratio: f64,
}

impl Rollout {
    /// The batch's metrics.
    pub fn metrics(&self) -> RolloutMetrics {
        let n = self.samples.len().max(1) as f64;
        let given: Vec<f64> = self.samples.iter().filter_map(|s| s.reward).collect();
        let reward = given.iter().sum::<f64>() / given.len().max(1) as f64;
        let groups: Vec<f64> = self
            .samples
            .chunks(self.group.max(1))
            .map(|g| unbiased_std(&g.iter().filter_map(|s| s.reward).collect::<Vec<_>>()))
            .collect();
        let adv: Vec<f64> = self.samples.iter().map(|s| s.advantage).collect();
        let lengths: Vec<usize> = self.samples.iter().map(|s| s.completion.tokens.len()).collect();
        let mut per_reward = std::collections::BTreeMap::new();
        for r in &self.rewards {
            per_reward.insert(format!("rewards/{}/mean", r.name), r.mean);
            per_reward.insert(format!("rewards/{}/std", r.name), r.std);
        }
        RolloutMetrics {
            reward,
            reward_std: groups.iter().sum::<f64>() / groups.len().max(1) as f64,
            frac_reward_zero_std: groups.iter().filter(|&&s| s < 1e-6).count() as f64 / groups.len().max(1) as f64,
            frac_reward_none: (self.samples.len() - given.len()) as f64 / n,
            per_reward,
            advantage_std: population_std(&adv),
            advantage_abs_max: adv.iter().fold(0.0, |m, a| m.max(a.abs())),
            mean_length: lengths.iter().sum::<usize>() as f64 / n,
            min_length: lengths.iter().copied().min().unwrap_or(0),
            max_length: lengths.iter().copied().max().unwrap_or(0),
            clipped_ratio: self
                .samples
                .iter()
                .filter(|s| s.completion.finish == Finish::Length)
                .count() as f64
                / n,
        }
    }
}

fn population_std(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

fn unbiased_std(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    population_std(v) * (v.len() as f64 / (v.len() - 1) as f64).sqrt()
}

/// The training rows of `samples`: prompt then completion, the completion's tokens (its stop
/// token included) counted as targets, in the order the sampler drew them.
pub fn sample_rows(prompts: &Prompts, samples: &[Sample]) -> Vec<TokensRow> {
    samples
        .iter()
        .map(|s| {
            let prompt = &prompts.ids[s.prompt];
            let ids: Vec<i32> = prompt.iter().chain(&s.completion.tokens).map(|&t| t as i32).collect();
            let n = ids.len();
            TokensRow {
                loss_mask: (0..n).map(|i| i >= prompt.len()).collect(),
                position_ids: (0..n as i32).collect(),
                segment_ids: vec![0; n],
                input_ids: ids,
                segment_parents: Vec::new(),
                source_ids: vec![prompts.rows[s.prompt].id.clone()],
            }
        })
        .collect()
}

/// Advantages per completion, in the order of `rewards` (groups of `group` consecutive
/// completions share a prompt): A_i = r_i − mean of its group, divided by (std + 1e-4) with the
/// std (Bessel-corrected) of the group (`Group`), of the whole batch (`Batch`), or not at all
/// (`None`). A sample whose reward is `None` (no reward function applied to it) is left out of the
/// mean and std and gets advantage 0. (TRL sums reward functions with `nansum`, so such a sample
/// would count as 0 there; the issue asks for it to be left out, which is what this does.)
///
/// # Errors
/// When `rewards` is not a whole number of groups.
pub fn advantages(rewards: &[Option<f64>], group: usize, scale: ScaleRewards) -> Result<Vec<f64>, TrainError> {
    if group == 0 || !rewards.len().is_multiple_of(group) {
        return Err(TrainError::Batch(format!(
            "{} rewards do not split into groups of {group}",
            rewards.len()
        )));
    }
    let present = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<Vec<f64>>();
    let batch_std = unbiased_std(&present(rewards));
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(group) {
        let valid = present(g);
        let mean = if valid.is_empty() {
            0.0
        } else {
            valid.iter().sum::<f64>() / valid.len() as f64
        };
        let std = match scale {
            ScaleRewards::Group => Some(unbiased_std(&valid)),
            ScaleRewards::Batch => Some(batch_std),
            ScaleRewards::None => None,
        };
        out.extend(g.iter().map(|r| match r {
            None => 0.0,
            Some(r) => match std {
                Some(s) => (r - mean) / (s + 1e-4),
                None => r - mean,
            },
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_match_hand_computed_values() {
        // Group 1: rewards 1, 0, 1 and one None: mean 2/3, unbiased std √(1/3) = 0.577350.
        // Group 2: all equal: advantages 0.
        let r = [
            Some(1.0),
            Some(0.0),
            Some(1.0),
            None,
            Some(2.0),
            Some(2.0),
            Some(2.0),
            Some(2.0),
        ];
        let a = advantages(&r, 4, ScaleRewards::Group).unwrap();
        let s = (1.0f64 / 3.0).sqrt() + 1e-4;
        let want = [
            (1.0 / 3.0) / s,
            (-2.0 / 3.0) / s,
            (1.0 / 3.0) / s,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        for (x, y) in a.iter().zip(want) {
            assert!((x - y).abs() < 1e-12, "{a:?}");
        }
        // Unscaled: just centred.
        let a = advantages(&r, 4, ScaleRewards::None).unwrap();
        assert!((a[1] + 2.0 / 3.0).abs() < 1e-12 && a[3] == 0.0 && a[4] == 0.0);
        // Batch scale: the std of all seven present rewards [1, 0, 1, 2, 2, 2, 2]: mean 10/7,
        // Σ(x − mean)² = 2·(3/7)² + (10/7)² + 4·(4/7)² = 26/7 → std √((26/7)/6).
        let a = advantages(&r, 4, ScaleRewards::Batch).unwrap();
        let std = ((26.0f64 / 7.0) / 6.0).sqrt() + 1e-4;
        assert!((a[0] - (1.0 / 3.0) / std).abs() < 1e-12, "{a:?}");
        assert!(advantages(&r, 3, ScaleRewards::Group).is_err());
    }
}
