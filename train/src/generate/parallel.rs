//! Multiverse parallel generation, as the Multiverse engine does it (Yang et al., arXiv
//! 2506.09991; the engine is a modified SGLang, `managers/schedule_batch.py` and `scheduler.py`,
//! as described in `shared/research/multiverse.md` §4):
//!
//! - **Fork.** Decoding is sequential until the text ends with `</Goal>`. The `<Outline> N:` labels
//!   of that goal name the paths; each path starts from the shared prefix's KV cache (copied rows,
//!   [`KvCache::fork`]) with the text `"\n<Path>\n{label}:"`, at the position right after the goal:
//!   every path restarts there, as in training.
//! - **Paths** decode as one batch, each until its text ends with `</Path>` (that token is fed, so
//!   it is in the cache) or the budget runs out. Rows that finish early feed padding that nobody
//!   attends to.
//! - **Join.** The caches are concatenated, prefix then each path's real positions in order
//!   ([`KvCache::join`]), with no recomputation; `"\n<Conclusion>\n"` is prefilled at the position
//!   after the longest path, and decoding continues sequentially.
//!
//! The budget (`max_new_tokens`) counts the critical path, as the engine's `right_most_pos` does:
//! prefix tokens plus the longest path of each fork. Choices where the engine differs or is
//! silent: forks nest one level (a `<Parallel>` inside a path is decoded sequentially within that
//! path); a goal with fewer than two labels, more than `max_paths`, or within 30 tokens of the
//! budget does not fork (as the engine, which also skips forks near the budget).

use std::sync::LazyLock;

use burn::tensor::backend::Backend;
use firebrand_data::tokenizer::Tokenizer;
use rand::SeedableRng;
use rand::rngs::StdRng;
use regex::Regex;

use super::{Finish, SamplingParams, check, decode, int_tensor, sample, step};
use crate::error::TrainError;
use crate::model::{Decoder, KvCache};

/// How to generate in parallel.
#[derive(Debug, Clone)]
pub struct ParallelParams {
    /// Sampling, stop tokens and the critical-path budget (`max_new_tokens`).
    pub sampling: SamplingParams,
    /// Most paths per fork.
    pub max_paths: usize,
}

/// One fork: where it happened and what its paths produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Fork {
    /// Generated tokens before the fork (after the prompt).
    pub at: usize,
    /// Position of the first path token.
    pub position: usize,
    /// Per path: its tokens (the `"\n<Path>\n{label}:"` prefix, then what it generated).
    pub paths: Vec<Vec<u32>>,
}

/// What parallel generation produced.
#[derive(Debug, Clone)]
pub struct ParallelCompletion {
    /// The merged sequence after the prompt: prefix, every path in order, conclusion, rest.
    pub tokens: Vec<u32>,
    /// Its text.
    pub text: String,
    /// Why generation stopped.
    pub finish: Finish,
    /// The forks, in order.
    pub forks: Vec<Fork>,
    /// Tokens on the critical path (the budget's measure).
    pub critical_path: usize,
    /// Forward passes run (prefills and decode steps).
    pub forward_passes: usize,
}

static OUTLINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<Outline>\s*([0-9]+(?:\.[0-9]+)*)\s*:").expect("static regex"));

/// The outline labels of the last `<Goal>` in `text`.
pub fn outline_labels(text: &str) -> Vec<String> {
    let goal = text.rfind("<Goal>").map_or(text, |i| &text[i..]);
    OUTLINE.captures_iter(goal).map(|c| c[1].to_string()).collect()
}

fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, TrainError> {
    tokenizer
        .encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| TrainError::Generate(format!("tokenizing {text:?}: {e}")))
}

fn tail_ends_with(tokenizer: &Tokenizer, tokens: &[u32], tag: &str) -> Result<bool, TrainError> {
    let from = tokens.len().saturating_sub(12);
    Ok(decode(tokenizer, &tokens[from..])?.ends_with(tag))
}

/// Sequence state: the cache, which cache slots are real, the next position, the last logits.
struct Seq<B: Backend> {
    cache: KvCache<B>,
    valid: Vec<bool>,
    next_pos: i64,
    logits: Vec<f32>,
}

/// Generates from `prompt` (token ids), forking at each `</Goal>` (module docs).
///
/// # Errors
/// Invalid sampling parameters, an empty prompt, or a tokenizer failure.
pub fn generate_parallel<B: Backend>(
    model: &Decoder<B>,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &ParallelParams,
) -> Result<ParallelCompletion, TrainError> {
    let sp = &params.sampling;
    check(sp)?;
    if prompt.is_empty() {
        return Err(TrainError::Generate("the prompt has no tokens".into()));
    }
    let device = model.device();
    let p = prompt.len();
    let mut cache = KvCache::new(model);
    let valid = vec![true; p];
    let logits = step(
        model,
        &mut cache,
        int_tensor(prompt.iter().map(|&t| t as i64).collect(), [1, p], &device),
        int_tensor((0..p as i64).collect(), [1, p], &device),
        &valid,
        p,
    );
    let mut seq = Seq {
        cache,
        valid,
        next_pos: p as i64,
        logits,
    };
    let mut rng = StdRng::seed_from_u64(sp.seed);
    let mut out: Vec<u32> = Vec::new();
    let mut forks = Vec::new();
    let mut critical = 0usize;
    let mut passes = 1usize;
    // A prompt that ends its goal forks at once.
    let mut at_goal = tail_ends_with(tokenizer, prompt, "</Goal>")?;
    let finish = loop {
        if at_goal {
            at_goal = false;
            let context: Vec<u32> = prompt.iter().chain(out.iter()).copied().collect();
            let text = decode(tokenizer, &context)?;
            let labels = outline_labels(&text);
            if labels.len() >= 2 && labels.len() <= params.max_paths && critical + 30 < sp.max_new_tokens {
                let budget = sp.max_new_tokens - critical;
                let (fork, longest, fork_passes, stopped) =
                    run_paths(model, tokenizer, &mut seq, &labels, budget, sp, forks.len() as u64)?;
                passes += fork_passes;
                critical += longest;
                let at = out.len();
                out.extend(fork.paths.iter().flatten());
                forks.push(Fork { at, ..fork });
                if let Some(Finish::StopToken(t)) = stopped {
                    // The stop token ends the merged sequence (it is not part of any path).
                    out.push(t);
                    break Finish::StopToken(t);
                }
                // The conclusion opens at the position after the longest path, if it fits.
                let conclusion = encode(tokenizer, "\n<Conclusion>\n")?;
                if critical + conclusion.len() > sp.max_new_tokens {
                    break Finish::Length;
                }
                prefill(model, &mut seq, &conclusion);
                passes += 1;
                critical += conclusion.len();
                out.extend(&conclusion);
                continue;
            }
        }
        if critical >= sp.max_new_tokens {
            break Finish::Length;
        }
        let (token, _) = sample(&seq.logits, sp, &mut rng);
        out.push(token);
        critical += 1;
        if sp.stop_token_ids.contains(&token) {
            break Finish::StopToken(token);
        }
        prefill(model, &mut seq, &[token]);
        passes += 1;
        at_goal = tail_ends_with(tokenizer, &out, "</Goal>")?;
    };
    let text_tokens = match finish {
        Finish::StopToken(_) => &out[..out.len() - 1],
        _ => &out[..],
    };
    Ok(ParallelCompletion {
        text: decode(tokenizer, text_tokens)?,
        tokens: out,
        finish,
        forks,
        critical_path: critical,
        forward_passes: passes,
    })
}

/// Feeds `tokens` to a batch-1 sequence at its next positions.
fn prefill<B: Backend>(model: &Decoder<B>, seq: &mut Seq<B>, tokens: &[u32]) {
    let device = model.device();
    let n = tokens.len();
    seq.valid.extend(std::iter::repeat_n(true, n));
    seq.logits = step(
        model,
        &mut seq.cache,
        int_tensor(tokens.iter().map(|&t| t as i64).collect(), [1, n], &device),
        int_tensor((seq.next_pos..seq.next_pos + n as i64).collect(), [1, n], &device),
        &seq.valid,
        n,
    );
    seq.next_pos += n as i64;
}

#[derive(Clone, Copy, PartialEq)]
enum PathState {
    Running,
    /// Its last token ends the path; it is fed once more, then the row is done.
    Closing,
    Done,
}

/// Forks `seq` into one row per label, decodes the paths as a batch and joins them back into
/// `seq`. Returns the fork (paths' tokens), the longest path's length, the forward passes run and
/// a finish reason if a path hit a stop token.
fn run_paths<B: Backend>(
    model: &Decoder<B>,
    tokenizer: &Tokenizer,
    seq: &mut Seq<B>,
    labels: &[String],
    budget: usize,
    sp: &SamplingParams,
    fork_index: u64,
) -> Result<(Fork, usize, usize, Option<Finish>), TrainError> {
    let device = model.device();
    let vocab = model.vocab_size();
    let m = labels.len();
    let base = seq.valid.len();
    let start = seq.next_pos;
    let suffixes: Vec<Vec<u32>> = labels
        .iter()
        .map(|l| encode(tokenizer, &format!("\n<Path>\n{l}:")))
        .collect::<Result<_, _>>()?;
    let width = suffixes.iter().map(Vec::len).max().unwrap_or(0);
    let pad = sp.stop_token_ids.first().copied().unwrap_or(0) as i64;

    // Fork, then prefill each path's opening, left-padded so every row's last position is real.
    seq.cache.fork(m);
    let mut valid: Vec<Vec<bool>> = vec![seq.valid.clone(); m];
    let mut slots: Vec<Vec<usize>> = vec![Vec::new(); m];
    let mut next: Vec<i64> = vec![start; m];
    let (mut ids, mut pos) = (Vec::with_capacity(m * width), Vec::with_capacity(m * width));
    for (r, s) in suffixes.iter().enumerate() {
        let padding = width - s.len();
        for j in 0..width {
            if j < padding {
                ids.push(pad);
                pos.push(start);
                valid[r].push(false);
            } else {
                ids.push(s[j - padding] as i64);
                pos.push(next[r]);
                next[r] += 1;
                valid[r].push(true);
                slots[r].push(base + j);
            }
        }
    }
    let flat: Vec<bool> = valid.iter().flatten().copied().collect();
    let mut logits = step(
        model,
        &mut seq.cache,
        int_tensor(ids, [m, width], &device),
        int_tensor(pos, [m, width], &device),
        &flat,
        width,
    );
    let mut passes = 1;
    let mut paths: Vec<Vec<u32>> = suffixes.clone();
    let mut state = vec![PathState::Running; m];
    let mut rngs: Vec<StdRng> = (0..m)
        .map(|r| StdRng::seed_from_u64(sp.seed ^ (fork_index + 1).wrapping_mul(0x9E37_79B9) ^ (r as u64) << 32))
        .collect();
    let mut stopped = None;
    let longest_path = |paths: &[Vec<u32>]| paths.iter().map(Vec::len).max().unwrap_or(0);
    loop {
        // Sample for running rows.
        for r in 0..m {
            if state[r] != PathState::Running {
                continue;
            }
            let (token, _) = sample(&logits[r * vocab..(r + 1) * vocab], sp, &mut rngs[r]);
            if sp.stop_token_ids.contains(&token) {
                // Generation ends: the token is returned after the paths, never fed.
                stopped.get_or_insert(Finish::StopToken(token));
                continue;
            }
            paths[r].push(token);
            let generated = paths[r].len() - suffixes[r].len();
            if tail_ends_with(tokenizer, &paths[r][suffixes[r].len()..], "</Path>")?
                || suffixes[r].len() + generated >= budget
            {
                state[r] = PathState::Closing;
            }
        }
        if stopped.is_some() || state.iter().all(|s| *s == PathState::Done) {
            break;
        }
        // Feed one token per row: real for running and closing rows, padding for done ones.
        let mut ids = Vec::with_capacity(m);
        let mut pos = Vec::with_capacity(m);
        for r in 0..m {
            let len = valid[r].len();
            if state[r] == PathState::Done {
                ids.push(pad);
                pos.push(next[r]);
                valid[r].push(false);
            } else {
                ids.push(*paths[r].last().expect("a sampled token") as i64);
                pos.push(next[r]);
                next[r] += 1;
                valid[r].push(true);
                slots[r].push(len);
                if state[r] == PathState::Closing {
                    state[r] = PathState::Done;
                }
            }
        }
        let flat: Vec<bool> = valid.iter().flatten().copied().collect();
        logits = step(
            model,
            &mut seq.cache,
            int_tensor(ids, [m, 1], &device),
            int_tensor(pos, [m, 1], &device),
            &flat,
            1,
        );
        passes += 1;
        if state.iter().all(|s| *s == PathState::Done) {
            break;
        }
    }
    // Join: prefix, then each path's fed positions; continue after the longest path.
    seq.cache = seq.cache.join(base, &slots);
    let total = base + slots.iter().map(Vec::len).sum::<usize>();
    seq.valid = vec![true; total];
    seq.next_pos = next.iter().copied().max().unwrap_or(start);
    seq.logits = Vec::new();
    let longest = longest_path(&paths);
    Ok((
        Fork {
            at: 0,
            position: start as usize,
            paths,
        },
        longest,
        passes,
        stopped,
    ))
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Bool, Tensor, TensorData};

    use super::*;
    use crate::attention::AttentionMask;

    type B = NdArray<f32>;

    fn tiny() -> Decoder<B> {
        let config = crate::model::config::tiny_for_tests();
        Decoder::<B>::init(&config, &Default::default()).unwrap()
    }

    #[test]
    fn labels_come_from_the_last_goal() {
        let t = "<Goal>\n<Outline>\n1: x\n</Outline>\n</Goal> ... <Goal>\n<Outline>\n2.1: a\n</Outline>\n<Outline>2.2: b</Outline>\n</Goal>";
        assert_eq!(outline_labels(t), ["2.1", "2.2"]);
    }

    /// The joined cache gives the conclusion the logits one forward pass with the Multiverse mask
    /// gives: prefix causal; each path sees the prefix and itself, positions restarting after the
    /// prefix; the conclusion sees everything, from the position after the longest path.
    #[test]
    fn fork_join_equals_one_pass_with_the_multiverse_mask() {
        let model = tiny();
        let device = Default::default();
        let prefix: Vec<u32> = vec![1, 2, 3, 4, 5];
        let path_a: Vec<u32> = vec![10, 11, 12, 13];
        let path_b: Vec<u32> = vec![20, 21];
        let conclusion: Vec<u32> = vec![30, 31, 32];
        let (p, la, lb, lc) = (prefix.len(), path_a.len(), path_b.len(), conclusion.len());

        // Fork/join through the cache.
        let mut seq = Seq {
            cache: KvCache::new(&model),
            valid: Vec::new(),
            next_pos: 0,
            logits: Vec::new(),
        };
        prefill(&model, &mut seq, &prefix);
        seq.cache.fork(2);
        // Path B is left-padded to A's length; its padding is invalid.
        let pad = la - lb;
        let ids: Vec<i64> = path_a
            .iter()
            .map(|&t| t as i64)
            .chain(std::iter::repeat_n(0, pad))
            .chain(path_b.iter().map(|&t| t as i64))
            .collect();
        let pos: Vec<i64> = (0..la as i64)
            .map(|j| p as i64 + j)
            .chain(std::iter::repeat_n(p as i64, pad))
            .chain((0..lb as i64).map(|j| p as i64 + j))
            .collect();
        let valid: Vec<bool> = std::iter::repeat_n(true, p + la)
            .chain(std::iter::repeat_n(true, p))
            .chain(std::iter::repeat_n(false, pad))
            .chain(std::iter::repeat_n(true, lb))
            .collect();
        step(
            &model,
            &mut seq.cache,
            int_tensor(ids, [2, la], &device),
            int_tensor(pos, [2, la], &device),
            &valid,
            la,
        );
        let slots = vec![(p..p + la).collect::<Vec<_>>(), (p + pad..p + la).collect()];
        seq.cache = seq.cache.join(p, &slots);
        seq.valid = vec![true; p + la + lb];
        seq.next_pos = (p + la.max(lb)) as i64;
        let mut fork_join = Vec::new();
        for &t in &conclusion {
            prefill(&model, &mut seq, &[t]);
            fork_join.extend(seq.logits.clone());
        }

        // One pass over prefix + A + B + conclusion with the Multiverse mask.
        let n = p + la + lb + lc;
        let segment = |i: usize| match i {
            i if i < p => 0,
            i if i < p + la => 1,
            i if i < p + la + lb => 2,
            _ => 3,
        };
        let sees = |q: usize, k: usize| {
            k <= q && {
                let (sq, sk) = (segment(q), segment(k));
                sq == sk || sk == 0 || sq == 3
            }
        };
        let allowed: Vec<bool> = (0..n).flat_map(|q| (0..n).map(move |k| sees(q, k))).collect();
        let positions: Vec<i64> = (0..p)
            .chain(p..p + la)
            .chain(p..p + lb)
            .chain(p + la..p + la + lc)
            .map(|x| x as i64)
            .collect();
        let all: Vec<i64> = prefix
            .iter()
            .chain(&path_a)
            .chain(&path_b)
            .chain(&conclusion)
            .map(|&t| t as i64)
            .collect();
        let mask = AttentionMask::from_dense(allowed, [1, n, n], &device);
        let hidden = model.hidden(
            int_tensor(all, [1, n], &device),
            int_tensor(positions, [1, n], &device),
            &mask,
        );
        let logits: Vec<f32> = model
            .logits(hidden)
            .slice([0..1, n - lc..n, 0..64])
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(logits.len(), fork_join.len());
        let worst = logits
            .iter()
            .zip(&fork_join)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "largest difference {worst}");
        // And the mask matters: a plain causal pass over the same tokens differs.
        let causal = AttentionMask::padded_causal(
            Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true; n], [1, n]), &device),
            n,
        );
        let plain: Vec<f32> = model
            .logits(
                model.hidden(
                    int_tensor(
                        prefix
                            .iter()
                            .chain(&path_a)
                            .chain(&path_b)
                            .chain(&conclusion)
                            .map(|&t| t as i64)
                            .collect(),
                        [1, n],
                        &device,
                    ),
                    int_tensor((0..n as i64).collect(), [1, n], &device),
                    &causal,
                ),
            )
            .slice([0..1, n - lc..n, 0..64])
            .into_data()
            .to_vec()
            .unwrap();
        assert!(plain.iter().zip(&fork_join).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    /// A BPE tokenizer with the Multiverse tags as special tokens, and a random tiny model over
    /// its vocabulary.
    fn tagged(seed: u64) -> (Tokenizer, Decoder<B>) {
        let texts: Vec<String> = (0..40)
            .map(|i| format!("Question {i}: even and odd cases of n squared modulo four, case {i}."))
            .collect();
        let tok = firebrand_data::tokenizer::train_bpe(
            &texts,
            &firebrand_data::tokenizer::TrainOptions {
                vocab_size: 320,
                min_frequency: 1,
                extra_special: firebrand_data::multiverse::TAGS.iter().map(|t| t.to_string()).collect(),
            },
        )
        .unwrap();
        let config = crate::model::ModelConfig {
            vocab_size: tok.get_vocab_size(true),
            ..crate::model::config::tiny_for_tests()
        };
        B::seed(&Default::default(), seed);
        let model = Decoder::<B>::init(&config, &Default::default()).unwrap();
        (tok, model)
    }

    /// Each path of a fork is what sequential greedy decoding gives for the prompt plus that
    /// path's opening: batching the paths over a shared, copied prefix cache changes nothing.
    #[test]
    fn forked_paths_equal_independent_sequential_decodes() {
        let (tok, model) = tagged(11);
        let prompt_text = "Question: n squared mod 4.<Think>\nLet's think in parallel.\n<Parallel>\n<Goal>\n<Outline>\n1: even n\n</Outline>\n<Outline>\n2: odd n\n</Outline>\n<Outline>\n3: zero\n</Outline>\n</Goal>";
        let prompt = encode(&tok, prompt_text).unwrap();
        let sampling = SamplingParams {
            max_new_tokens: 40,
            temperature: 0.0,
            ..Default::default()
        };
        let out = generate_parallel(
            &model,
            &tok,
            &prompt,
            &ParallelParams {
                sampling: sampling.clone(),
                max_paths: 8,
            },
        )
        .unwrap();
        assert_eq!(out.forks.len(), 1, "{:?}", out.text);
        let fork = &out.forks[0];
        assert_eq!(fork.paths.len(), 3);
        assert_eq!((fork.at, fork.position), (0, prompt.len()));
        let merged = fork.paths.concat();
        assert_eq!(
            out.tokens[..merged.len()],
            merged[..],
            "the merged tokens are the paths in order"
        );
        let conclusion = encode(&tok, "\n<Conclusion>\n").unwrap();
        let after = &out.tokens[merged.len()..];
        if !after.is_empty() {
            // Every path closed before the budget: the conclusion opens, then decoding goes on.
            assert!(fork.paths.iter().all(|p| decode(&tok, p).unwrap().ends_with("</Path>")));
            assert_eq!(after[..conclusion.len()], conclusion[..]);
        }
        assert!(out.critical_path <= 40);
        for (label, path) in ["1", "2", "3"].iter().zip(&fork.paths) {
            let opening = encode(&tok, &format!("\n<Path>\n{label}:")).unwrap();
            assert_eq!(path[..opening.len()], opening[..]);
            let generated = &path[opening.len()..];
            let alone = super::super::generate(
                &model,
                &tok,
                &[prompt.iter().chain(&opening).copied().collect()],
                &SamplingParams {
                    max_new_tokens: generated.len(),
                    ..sampling.clone()
                },
            )
            .unwrap();
            assert_eq!(alone[0].tokens, generated, "path {label}");
        }
        // Forward passes: the prompt, the openings, one per decode step of the longest path (the
        // paths ran side by side), then the conclusion and one per token after it.
        let longest = fork.paths.iter().map(Vec::len).max().unwrap();
        let opening = encode(&tok, "\n<Path>\n1:").unwrap().len();
        let tail = after.len().saturating_sub(conclusion.len());
        let bound = 2 + (longest - opening) + usize::from(!after.is_empty()) + tail;
        assert!(
            out.forward_passes <= bound,
            "{} passes, bound {bound}",
            out.forward_passes
        );
    }

    /// A stop token sampled inside a path ends generation: it closes the merged sequence, the text
    /// leaves it out, and the budget is never exceeded.
    #[test]
    fn a_stop_token_in_a_path_ends_generation() {
        let (tok, model) = tagged(5);
        let prompt = encode(
            &tok,
            "Q.<Parallel>\n<Goal>\n<Outline>\n1: a\n</Outline>\n<Outline>\n2: b\n</Outline>\n</Goal>",
        )
        .unwrap();
        let params = |stop: Vec<u32>| ParallelParams {
            sampling: SamplingParams {
                max_new_tokens: 40,
                temperature: 0.0,
                stop_token_ids: stop,
                ..Default::default()
            },
            max_paths: 4,
        };
        let free = generate_parallel(&model, &tok, &prompt, &params(vec![])).unwrap();
        assert!(free.critical_path <= 40);
        // Stop on the first token path 2 generates.
        let opening = encode(&tok, "\n<Path>\n2:").unwrap().len();
        let stop = free.forks[0].paths[1][opening];
        let out = generate_parallel(&model, &tok, &prompt, &params(vec![stop])).unwrap();
        assert_eq!(out.finish, Finish::StopToken(stop));
        assert_eq!(out.tokens.last(), Some(&stop));
        assert!(
            !out.forks[0]
                .paths
                .iter()
                .any(|p| p[p.len() - 1] == stop && p.len() > opening + 1)
        );
        assert_eq!(out.text, decode(&tok, &out.tokens[..out.tokens.len() - 1]).unwrap());
    }
}
