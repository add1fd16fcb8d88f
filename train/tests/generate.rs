//! The sampler against the model run without a cache: greedy decoding with the KV cache gives the
//! tokens a full recomputation gives, a prompt gives the same output alone or in a padded batch,
//! and stop tokens, stop strings and seeds behave as documented.

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use firebrand_data::tokenizer::{Tokenizer, TrainOptions, train_bpe};
use firebrand_train::generate::{Finish, SamplingParams, generate};
use firebrand_train::model::TensorSource;
use firebrand_train::{Decoder, ModelConfig, ModelType, TrainError};
use rand::{Rng, SeedableRng};

type B = NdArray<f32>;

/// Weights drawn from a seeded generator: the same model in every run (burn's own random
/// initialisation shares one generator between the tests running in parallel).
struct Seeded(rand::rngs::StdRng);

impl TensorSource<B> for Seeded {
    fn matrix(&mut self, _name: &str, [r, c]: [usize; 2]) -> Result<Tensor<B, 2>, TrainError> {
        let v: Vec<f32> = (0..r * c).map(|_| self.0.random_range(-0.5..0.5)).collect();
        Ok(Tensor::from_data(TensorData::new(v, [r, c]), &Default::default()))
    }

    fn vector(&mut self, _name: &str, len: usize, ones: bool) -> Result<Tensor<B, 1>, TrainError> {
        let v: Vec<f32> = (0..len)
            .map(|_| if ones { 1.0 } else { self.0.random_range(-0.1..0.1) })
            .collect();
        Ok(Tensor::from_data(TensorData::new(v, [len]), &Default::default()))
    }
}

fn setup() -> (Decoder<B>, Tokenizer) {
    let texts: Vec<String> = (0..200)
        .map(|i| format!("the quick brown fox {i} jumps over the lazy dog number {}", i * 7))
        .collect();
    let tok = train_bpe(
        &texts,
        &TrainOptions {
            vocab_size: 320,
            min_frequency: 2,
            extra_special: Vec::new(),
        },
    )
    .unwrap();
    let config = ModelConfig {
        model_type: ModelType::Qwen2,
        hidden_size: 32,
        intermediate_size: 64,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        num_hidden_layers: 2,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: Default::default(),
        sliding_window: None,
        gemma: None,
        vocab_size: tok.get_vocab_size(true),
        max_position_embeddings: 256,
        tie_word_embeddings: false,
        attention_bias: true,
        head_dim: 8,
        initializer_range: 0.3,
        bos_token_id: None,
        eos_token_id: None,
        extra: Default::default(),
    };
    let mut weights = Seeded(rand::rngs::StdRng::seed_from_u64(7));
    (Decoder::from_source(&config, &mut weights).unwrap(), tok)
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams {
        max_new_tokens: n,
        temperature: 0.0,
        ..Default::default()
    }
}

/// Greedy decoding by running the whole sequence through the model at every step.
fn greedy_without_cache(model: &Decoder<B>, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut seq: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let mut out = Vec::new();
    let device = Default::default();
    for _ in 0..n {
        let t = seq.len();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(seq.clone(), [1, t]), &device);
        let pos = Tensor::<B, 2, Int>::from_data(TensorData::new((0..t as i64).collect::<Vec<_>>(), [1, t]), &device);
        let seg = Tensor::<B, 2, Int>::zeros([1, t], &device);
        let logits: Vec<f32> = model.forward(ids, pos, seg).into_data().to_vec().unwrap();
        let v = model.vocab_size();
        let last = &logits[(t - 1) * v..t * v];
        let best = (0..v).fold(0, |b, i| if last[i] > last[b] { i } else { b });
        out.push(best as u32);
        seq.push(best as i64);
    }
    out
}

fn encode(tok: &Tokenizer, s: &str) -> Vec<u32> {
    tok.encode(s, false).unwrap().get_ids().to_vec()
}

#[test]
fn cached_greedy_equals_full_recomputation() {
    let (model, tok) = setup();
    let prompt = encode(&tok, "the quick brown fox");
    let out = generate(&model, &tok, std::slice::from_ref(&prompt), &greedy(12)).unwrap();
    assert_eq!(out[0].tokens, greedy_without_cache(&model, &prompt, 12));
    assert_eq!(out[0].finish, Finish::Length);
    assert_eq!(out[0].logprobs.len(), 12);
    assert!(out[0].logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()));
}

#[test]
fn a_prompt_gives_the_same_output_alone_and_left_padded_in_a_batch() {
    let (model, tok) = setup();
    let prompts = vec![
        encode(&tok, "jumps"),
        encode(&tok, "the quick brown fox 12 jumps over the lazy dog"),
        encode(&tok, "lazy dog number 7"),
    ];
    let batch = generate(&model, &tok, &prompts, &greedy(8)).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate(&model, &tok, std::slice::from_ref(p), &greedy(8)).unwrap();
        assert_eq!(batch[i].tokens, alone[0].tokens, "prompt {i}");
        for (a, b) in batch[i].logprobs.iter().zip(&alone[0].logprobs) {
            assert!((a - b).abs() < 1e-4, "prompt {i}: {a} vs {b}");
        }
    }
}

#[test]
fn stop_tokens_and_stop_strings_end_a_row() {
    let (model, tok) = setup();
    let prompt = vec![encode(&tok, "the quick")];
    let free = generate(&model, &tok, &prompt, &greedy(10)).unwrap().remove(0);
    // Stop at the token produced third.
    let stop_id = free.tokens[2];
    let first = free.tokens.iter().position(|&t| t == stop_id).unwrap();
    let stopped = generate(
        &model,
        &tok,
        &prompt,
        &SamplingParams {
            stop_token_ids: vec![stop_id],
            ..greedy(10)
        },
    )
    .unwrap()
    .remove(0);
    assert_eq!(stopped.finish, Finish::StopToken(stop_id));
    assert_eq!(stopped.tokens, free.tokens[..=first]);
    assert_eq!(stopped.text, tok.decode(&free.tokens[..first], false).unwrap());

    // Stop at the text of the fourth and fifth tokens.
    let text = tok.decode(&free.tokens, false).unwrap();
    let before = tok.decode(&free.tokens[..3], false).unwrap();
    let stop = text[before.len()..].chars().take(3).collect::<String>();
    assert!(
        !stop.is_empty(),
        "the free run produced text after three tokens: {text:?}"
    );
    let cut = generate(
        &model,
        &tok,
        &prompt,
        &SamplingParams {
            stop: vec![stop.clone()],
            ..greedy(10)
        },
    )
    .unwrap()
    .remove(0);
    assert_eq!(cut.finish, Finish::StopString(stop.clone()));
    assert!(!cut.text.contains(&stop));
    assert!(
        text.starts_with(&format!("{}{stop}", cut.text)),
        "{:?} then {stop:?} vs {text:?}",
        cut.text
    );
    assert!(cut.tokens.len() < free.tokens.len());
}

#[test]
fn sampling_is_reproducible_per_seed_and_rejects_bad_parameters() {
    let (model, tok) = setup();
    let prompts = vec![encode(&tok, "fox"), encode(&tok, "dog number")];
    let params = |seed| SamplingParams {
        max_new_tokens: 16,
        temperature: 1.0,
        top_p: 0.95,
        seed,
        ..Default::default()
    };
    let a = generate(&model, &tok, &prompts, &params(7)).unwrap();
    let b = generate(&model, &tok, &prompts, &params(7)).unwrap();
    let c = generate(&model, &tok, &prompts, &params(8)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a[0].tokens, c[0].tokens);
    // A row's draws do not depend on the other rows.
    let alone = generate(&model, &tok, &prompts[..1], &params(7)).unwrap();
    assert_eq!(alone[0].tokens, a[0].tokens);

    let bad = SamplingParams {
        top_p: 0.0,
        ..Default::default()
    };
    let err = generate(&model, &tok, &prompts, &bad).unwrap_err().to_string();
    assert!(err.contains("top_p"), "{err}");
    let err = generate(&model, &tok, &[vec![]], &greedy(4)).unwrap_err().to_string();
    assert!(err.contains("prompt 0 has no tokens"), "{err}");
}

#[test]
fn rows_that_stop_early_leave_the_batch_without_changing_the_others() {
    let (model, tok) = setup();
    let prompts = vec![
        encode(&tok, "the quick brown fox"),
        encode(&tok, "lazy dog number 7"),
        encode(&tok, "jumps over"),
        encode(&tok, "fox 3"),
    ];
    // Stop on the second token row 0 produces: row 0 (and any row that emits it) leaves early.
    let free = generate(&model, &tok, &prompts[..1], &greedy(12)).unwrap();
    let stop = free[0].tokens[1];
    let params = SamplingParams {
        stop_token_ids: vec![stop],
        ..greedy(12)
    };
    let batch = generate(&model, &tok, &prompts, &params).unwrap();
    assert_eq!(batch[0].finish, Finish::StopToken(stop));
    let lengths: Vec<usize> = batch.iter().map(|c| c.tokens.len()).collect();
    assert!(lengths.contains(&12), "some row runs to the end: {lengths:?}");
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate(&model, &tok, std::slice::from_ref(p), &params).unwrap();
        assert_eq!(batch[i].tokens, alone[0].tokens, "prompt {i}");
        assert_eq!(batch[i].finish, alone[0].finish, "prompt {i}");
    }
    // Sampled rows keep their own random streams when others leave.
    let sampled = SamplingParams {
        temperature: 1.0,
        seed: 3,
        ..params
    };
    let batch = generate(&model, &tok, &prompts, &sampled).unwrap();
    let alone = generate(&model, &tok, &prompts[..1], &sampled).unwrap();
    assert_eq!(batch[0].tokens, alone[0].tokens);
    assert_eq!(generate(&model, &tok, &prompts, &sampled).unwrap(), batch);
}
