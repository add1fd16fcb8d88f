//! The sampler: batched autoregressive generation with a KV cache, as a library API that
//! `firebrand generate`, GRPO rollouts and synthesis with a local model share.
//!
//! One call takes a batch of prompts (token ids), left-pads them to one width, runs one prefill
//! forward over the whole batch, then one single-token forward per step, with each layer's keys and
//! values kept in a [`KvCache`]. Padding is hidden by [`AttentionMask::padded_causal`] and position
//! ids restart at each row's first real token, so a prompt gives the same logits alone or in a batch.
//!
//! Choices where the references differ or are silent:
//! - Sampling follows transformers' order: logits / temperature, then top-k, then top-p (the smallest
//!   set of tokens, by probability, whose mass reaches `top_p`), then a draw. `temperature = 0` is
//!   greedy. Each row has its own RNG seeded from `(seed, row)`, so a row's sample does not depend on
//!   the other rows' draws.
//! - `logprobs` are under the temperature-scaled distribution before top-k/top-p truncation, which is
//!   what TRL's GRPO trainer recomputes for the old policy.
//! - A stop token ends its row and is kept in `tokens` (a policy must learn to emit it) but not in
//!   `text`. A stop string ends its row when the decoded text contains it; `text` is cut before it,
//!   `tokens` keep everything generated up to and including the token that completed it (as vLLM).
//! - A row that finishes leaves the batch: its cache rows are dropped ([`KvCache::keep_rows`]), so
//!   later steps run on the rows still generating only.

pub mod parallel;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::attention::AttentionMask;
use crate::error::TrainError;
use crate::model::{Decoder, KvCache};
use firebrand_data::tokenizer::Tokenizer;

/// How to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Most tokens generated per row.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 keeps every token.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps every token.
    pub top_k: usize,
    /// Texts that end a row when they appear in its output.
    pub stop: Vec<String>,
    /// Tokens that end a row (end of turn, end of text).
    pub stop_token_ids: Vec<u32>,
    /// Seed of the per-row random generators.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 128,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            seed: 0,
        }
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// It produced one of the stop tokens.
    StopToken(u32),
    /// Its text came to contain one of the stop strings.
    StopString(String),
    /// It reached `max_new_tokens`.
    Length,
}

/// One row's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated token ids (with the stop token, if one ended the row).
    pub tokens: Vec<u32>,
    /// Log-probability of each generated token under the temperature-scaled distribution.
    pub logprobs: Vec<f32>,
    /// Decoded text, without the stop token and cut before a stop string.
    pub text: String,
    /// Why the row stopped.
    pub finish: Finish,
}

/// Generates a completion for every prompt, in one batch.
///
/// # Errors
/// An empty prompt, invalid parameters, or a token id outside the vocabulary.
pub fn generate<B: Backend>(
    model: &Decoder<B>,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
) -> Result<Vec<Completion>, TrainError> {
    check(params)?;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let vocab = model.vocab_size();
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(TrainError::Generate(format!("prompt {i} has no tokens")));
        }
        if let Some(bad) = p.iter().find(|&&t| t as usize >= vocab) {
            return Err(TrainError::Generate(format!(
                "prompt {i} has token id {bad}, outside the model's vocabulary of {vocab}"
            )));
        }
    }
    let device = model.device();
    let b = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pad = params.stop_token_ids.first().copied().unwrap_or(0);

    // Prefill: left-padded prompts, positions from each row's first real token.
    let mut ids = Vec::with_capacity(b * width);
    let mut pos = Vec::with_capacity(b * width);
    let mut valid = Vec::with_capacity(b * width);
    let mut next_pos = Vec::with_capacity(b);
    for p in prompts {
        let padding = width - p.len();
        ids.extend(std::iter::repeat_n(pad as i64, padding).chain(p.iter().map(|&t| t as i64)));
        pos.extend((0..width).map(|j| j.saturating_sub(padding) as i64));
        valid.extend((0..width).map(|j| j >= padding));
        next_pos.push(p.len() as i64);
    }
    let mut cache = KvCache::new(model);
    let mut valid_so_far = valid;
    let mut logits = step(
        model,
        &mut cache,
        int_tensor(ids, [b, width], &device),
        int_tensor(pos, [b, width], &device),
        &valid_so_far,
        width,
    );

    let mut rows: Vec<Row> = (0..b)
        .map(|i| Row {
            rng: StdRng::seed_from_u64(params.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            tokens: Vec::new(),
            logprobs: Vec::new(),
            finish: None,
            text_end: None,
        })
        .collect();
    // Rows still generating, in batch order: finished rows leave the batch (their cache rows
    // are dropped), so long rollouts do not pay for rows that stopped early.
    let mut active: Vec<usize> = (0..b).collect();
    for step_index in 0..params.max_new_tokens {
        // Each active row draws from its own logits with its own generator, in parallel: the
        // vocabulary-wide softmax per row is the sampler's host-side cost.
        let mut slot_of = vec![None; b];
        for (slot, &r) in active.iter().enumerate() {
            slot_of[r] = Some(slot);
        }
        let draws: Vec<Option<(u32, f32)>> = rows
            .par_iter_mut()
            .zip(&slot_of)
            .map(|(row, slot)| slot.map(|s| sample(&logits[s * vocab..(s + 1) * vocab], params, &mut row.rng)))
            .collect();
        let mut still = Vec::with_capacity(active.len());
        for (slot, &r) in active.iter().enumerate() {
            let row = &mut rows[r];
            let (token, logprob) = draws[r].expect("every active row drew");
            row.tokens.push(token);
            row.logprobs.push(logprob);
            if params.stop_token_ids.contains(&token) {
                row.finish = Some(Finish::StopToken(token));
                row.text_end = Some(row.tokens.len() - 1);
            } else if !params.stop.is_empty() {
                let text = decode(tokenizer, &row.tokens)?;
                if let Some(s) = params.stop.iter().find(|s| text.contains(s.as_str())) {
                    row.finish = Some(Finish::StopString(s.clone()));
                }
            }
            if row.finish.is_none() {
                still.push(slot);
            }
        }
        // No forward after the last token: nothing would read its logits.
        if still.is_empty() || step_index + 1 == params.max_new_tokens {
            break;
        }
        let seq = valid_so_far.len() / active.len();
        if still.len() < active.len() {
            cache.keep_rows(&still);
            valid_so_far = still
                .iter()
                .flat_map(|&slot| valid_so_far[slot * seq..(slot + 1) * seq].iter().copied())
                .collect();
            next_pos = still.iter().map(|&slot| next_pos[slot]).collect();
            active = still.iter().map(|&slot| active[slot]).collect();
        }
        let n = active.len();
        let mut step_valid = Vec::with_capacity(valid_so_far.len() + n);
        for slot in 0..n {
            step_valid.extend_from_slice(&valid_so_far[slot * seq..(slot + 1) * seq]);
            step_valid.push(true);
        }
        valid_so_far = step_valid;
        let new_ids: Vec<i64> = active
            .iter()
            .map(|&r| *rows[r].tokens.last().expect("sampled") as i64)
            .collect();
        let positions: Vec<i64> = next_pos.clone();
        for p in &mut next_pos {
            *p += 1;
        }
        logits = step(
            model,
            &mut cache,
            int_tensor(new_ids, [n, 1], &device),
            int_tensor(positions, [n, 1], &device),
            &valid_so_far,
            1,
        );
    }

    rows.into_iter()
        .map(|row| {
            let kept = &row.tokens[..row.text_end.unwrap_or(row.tokens.len())];
            let mut text = decode(tokenizer, kept)?;
            let finish = match row.finish {
                Some(Finish::StopString(s)) => {
                    if let Some(at) = text.find(&s) {
                        text.truncate(at);
                    }
                    Finish::StopString(s)
                }
                Some(f) => f,
                None => Finish::Length,
            };
            Ok(Completion {
                tokens: row.tokens,
                logprobs: row.logprobs,
                text,
                finish,
            })
        })
        .collect()
}

/// Encodes `prompts` (no special tokens added: templates write their own) and generates.
///
/// # Errors
/// As [`generate`], or when a prompt cannot be tokenized.
pub fn generate_text<B: Backend>(
    model: &Decoder<B>,
    tokenizer: &Tokenizer,
    prompts: &[String],
    params: &SamplingParams,
) -> Result<Vec<Completion>, TrainError> {
    let ids = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            tokenizer
                .encode(p.as_str(), false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| TrainError::Generate(format!("tokenizing prompt {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    generate(model, tokenizer, &ids, params)
}

struct Row {
    rng: StdRng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<Finish>,
    /// Tokens that belong to the text (all but a final stop token).
    text_end: Option<usize>,
}

pub(crate) fn check(p: &SamplingParams) -> Result<(), TrainError> {
    let bad = |m: String| Err(TrainError::Generate(m));
    if !(p.temperature >= 0.0 && p.temperature.is_finite()) {
        return bad(format!("temperature must be ≥ 0, got {}", p.temperature));
    }
    if !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return bad(format!("top_p must be in (0, 1], got {}", p.top_p));
    }
    if p.stop.iter().any(String::is_empty) {
        return bad("a stop string is empty".into());
    }
    Ok(())
}

pub(crate) fn int_tensor<B: Backend>(v: Vec<i64>, shape: [usize; 2], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

pub(crate) fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String, TrainError> {
    tokenizer
        .decode(ids, false)
        .map_err(|e| TrainError::Generate(format!("decoding generated tokens: {e}")))
}

/// One forward over new positions; returns the last position's logits, `[batch × vocab]` on the host.
pub(crate) fn step<B: Backend>(
    model: &Decoder<B>,
    cache: &mut KvCache<B>,
    ids: Tensor<B, 2, Int>,
    pos: Tensor<B, 2, Int>,
    valid: &[bool],
    seq_q: usize,
) -> Vec<f32> {
    let [b, t] = ids.dims();
    let device = ids.device();
    let keys = valid.len() / b;
    let valid = Tensor::<B, 2, Bool>::from_data(TensorData::new(valid.to_vec(), [b, keys]), &device);
    let mask = AttentionMask::padded_causal(valid, seq_q);
    let hidden = model.hidden_cached(ids, pos, &mask, Some(cache));
    let [_, _, h] = hidden.dims();
    let last = hidden.slice([0..b, t - 1..t, 0..h]);
    model
        .logits(last)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 logits read back as f32")
}

/// Draws one token from `logits`; returns it with its log-probability.
pub(crate) fn sample(logits: &[f32], p: &SamplingParams, rng: &mut StdRng) -> (u32, f32) {
    let temperature = if p.temperature > 0.0 { p.temperature } else { 1.0 };
    let max = logits
        .iter()
        .map(|&l| l / temperature)
        .fold(f32::NEG_INFINITY, f32::max);
    let sum = logits.iter().map(|&l| (l / temperature - max).exp()).sum::<f32>();
    let lse = max + sum.ln();
    if p.temperature == 0.0 {
        let best = argmax(logits);
        return (best as u32, logits[best] / temperature - lse);
    }
    if p.top_k == 0 && p.top_p >= 1.0 {
        // The whole distribution: one pass over the unnormalised weights, no sort, no copies.
        let mut r = rng.random::<f32>() * sum;
        let mut choice = None;
        for (i, &l) in logits.iter().enumerate() {
            let w = (l / temperature - max).exp();
            if w > 0.0 {
                choice = Some(i);
                r -= w;
                if r <= 0.0 {
                    break;
                }
            }
        }
        let choice = choice.unwrap_or_else(|| argmax(logits));
        return (choice as u32, logits[choice] / temperature - lse);
    }
    let scaled: Vec<f32> = logits.iter().map(|&l| l / temperature).collect();
    let probs: Vec<f32> = scaled.iter().map(|&l| (l - lse).exp()).collect();
    let kept = nucleus(&probs, p.top_k, p.top_p);
    let mass: f32 = kept.iter().map(|&i| probs[i]).sum();
    let mut r = rng.random::<f32>() * mass;
    let mut choice = kept[kept.len() - 1];
    for &i in &kept {
        r -= probs[i];
        if r <= 0.0 {
            choice = i;
            break;
        }
    }
    (choice as u32, scaled[choice] - lse)
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// The indices kept by top-k then top-p, most likely first. As transformers and vLLM do it, top-p
/// applies to the distribution left by top-k, renormalised: the kept prefix is the shortest whose
/// mass reaches `top_p` × (mass of the top k).
///
/// Sorting a whole vocabulary per row per step is the sampler's host-side cost, so candidates are
/// first cut to those with probability ≥ 1e-4; when their sorted prefix already decides the answer
/// (k candidates exist, or the mass is reached), it is exactly the one a full sort gives, because
/// every token left out ranks below every candidate. Otherwise the full sort runs.
fn nucleus(probs: &[f32], top_k: usize, top_p: f32) -> Vec<usize> {
    if top_k == 0 && top_p >= 1.0 {
        return (0..probs.len()).collect();
    }
    let decide = |mut idx: Vec<usize>, complete: bool| -> Option<Vec<usize>> {
        idx.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let k = if top_k > 0 { top_k.min(probs.len()) } else { probs.len() };
        if top_k > 0 && idx.len() < k && !complete {
            return None;
        }
        idx.truncate(k);
        let mass: f32 = if top_k > 0 {
            idx.iter().map(|&i| probs[i]).sum()
        } else {
            1.0
        };
        let mut cum = 0.0f32;
        for (n, &i) in idx.iter().enumerate() {
            cum += probs[i];
            if cum >= top_p * mass {
                idx.truncate(n + 1);
                return Some(idx);
            }
        }
        complete.then_some(idx)
    };
    let candidates: Vec<usize> = (0..probs.len()).filter(|&i| probs[i] >= 1e-4).collect();
    decide(candidates, false)
        .unwrap_or_else(|| decide((0..probs.len()).collect(), true).expect("a complete sort always decides"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nucleus_keeps_the_smallest_set_reaching_the_mass() {
        let probs = [0.05, 0.5, 0.3, 0.15];
        assert_eq!(nucleus(&probs, 0, 0.5), vec![1]);
        assert_eq!(nucleus(&probs, 0, 0.8), vec![1, 2]);
        assert_eq!(nucleus(&probs, 0, 0.81), vec![1, 2, 3]);
        assert_eq!(nucleus(&probs, 2, 1.0), vec![1, 2]);
        assert_eq!(nucleus(&probs, 0, 1.0), vec![0, 1, 2, 3]);
        // Top-p applies to what top-k leaves, renormalised (0.5 / 0.8 ≥ 0.6).
        assert_eq!(nucleus(&[0.5, 0.3, 0.2], 2, 0.6), vec![0]);
        assert_eq!(nucleus(&[0.5, 0.3, 0.2], 2, 0.7), vec![0, 1]);
        // Many tiny tokens: the candidate cut cannot reach the mass, the full sort runs.
        let mut tiny = vec![1e-5f32; 70_000];
        tiny[7] = 0.3;
        let kept = nucleus(&tiny, 0, 0.9);
        assert_eq!(kept[0], 7);
        let mass: f32 = kept.iter().map(|&i| tiny[i]).sum();
        assert!(mass >= 0.9 && mass - tiny[kept[kept.len() - 1]] < 0.9);
    }

    #[test]
    fn sampling_follows_the_distribution_and_greedy_takes_the_max() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let mut rng = StdRng::seed_from_u64(1);
        let greedy = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        let (t, lp) = sample(&logits, &greedy, &mut rng);
        assert_eq!(t, 1);
        assert!((lp - 0.75f32.ln()).abs() < 1e-6);
        let p = SamplingParams::default();
        let ones = (0..4000).filter(|_| sample(&logits, &p, &mut rng).0 == 1).count();
        assert!((2850..3150).contains(&ones), "{ones} of 4000 draws took the 3:1 token");
        let nucleus_only = SamplingParams {
            top_p: 0.7,
            ..Default::default()
        };
        assert!((0..200).all(|_| sample(&logits, &nucleus_only, &mut rng).0 == 1));
    }
}
