//! Agreement of the two engines, per method: on small models in f32 (the kernel engine on its exact
//! CPU reference), the burn engine and the kernel engine give the same log-probs, entropies,
//! losses and gradients for SFT (fused), DPO (each loss) and GRPO (each aggregation, with old and
//! reference log-probs and a temperature), and the same weights and moments after AdamW steps.
//! The losses are the methods' own functions (`trainer::method`); the CUDA kernels are held to the
//! same comparisons in bf16 by `firebrand bench kernels` on the GPU machine.

use burn::backend::{Autodiff, NdArray};
use firebrand_data::TokensRow;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::dpo::{pairs, pairs_loss};
use super::grpo::{GrpoOptions, Terms, grpo_loss};
use crate::engine::api::{Engine, Forward, Grad, Micro, Want};
use crate::engine::autodiff::BurnEngine;
use crate::engine::choose::Choice;
use crate::engine::kernel::KernelEngine;
use crate::engine::kernel::check::{CheckGrad, model_check, random_rows, random_weights, rel_err};
use crate::engine::kernel::cpu::CpuOps;
use crate::engine::optim::AdamW;
use crate::engine::state::{EngineState, Tensors};
use crate::model::config::tiny_for_tests;
use crate::model::{Decoder, ModelConfig};
use crate::recipe::{DpoLoss, DpoOptions, LossType};

type B = Autodiff<NdArray<f32>>;

/// The two engines on the same random weights.
fn engines(config: &ModelConfig, seed: u64) -> [Box<dyn Engine<B>>; 2] {
    let device = Default::default();
    // A generator of our own: burn's is shared by the tests running in parallel.
    let state = EngineState {
        weights: random_weights(config, seed, config.initializer_range),
        moments: None,
    };
    let adamw = Some(AdamW {
        weight_decay: 0.1,
        ..AdamW::default()
    });
    [
        Box::new(BurnEngine::<B>::new(config, &state, adamw, None, &device).unwrap()),
        Box::new(KernelEngine::new(Box::new(CpuOps::exact()), config, &state, adamw).unwrap()),
    ]
}

/// The worst per-tensor relative difference of two sets of gradients, and its name.
fn worst(a: &Tensors, b: &Tensors) -> (String, f64) {
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(name, x)| (name.clone(), rel_err(x, &b[name])))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap_or_default()
}

fn multiverse_rows() -> Vec<TokensRow> {
    // prefix, two paths of it, a conclusion of both; then a second document; the first token of
    // each path is trained across the boundary (its segment has parents).
    let seg = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4];
    let pos = [0, 1, 2, 3, 4, 5, 6, 3, 4, 5, 7, 8, 9, 0, 1, 2];
    vec![TokensRow {
        input_ids: (0..16).map(|i| (i * 5 + 3) % 64).collect(),
        loss_mask: vec![true; 16],
        position_ids: pos.to_vec(),
        segment_ids: seg.to_vec(),
        segment_parents: vec![vec![], vec![0], vec![0], vec![1, 2], vec![]],
        source_ids: vec![],
    }]
}

/// SFT's fused pass and the split pass (a random gradient sent after the forward, at a
/// temperature, with entropies) agree between the engines for GQA, biases, tied and untied
/// heads, packed documents with loss masks, and Multiverse segment graphs.
#[test]
fn sft_and_the_split_pass_agree_between_engines() {
    let device = Default::default();
    for (bias, tied, multiverse) in [(false, false, false), (true, true, false), (false, false, true)] {
        let mut c = tiny_for_tests();
        c.attention_bias = bias;
        c.tie_word_embeddings = tied;
        let rows = if multiverse {
            multiverse_rows()
        } else {
            random_rows(7, 3, 40, c.vocab_size, true)
        };
        for how in [CheckGrad::Sft, CheckGrad::Split { temperature: 0.7 }] {
            let r = model_check::<B>(Box::new(CpuOps::exact()), &c, &rows, &device, 11, how).unwrap();
            let case = format!("bias {bias}, tied {tied}, multiverse {multiverse}, {how:?}");
            assert!(r.loss_rel() < 1e-5, "{case}: loss {} vs {}", r.kernel_loss, r.burn_loss);
            assert!(r.logp < 1e-5 && r.entropy < 1e-5, "{case}: {r:?}");
            assert_eq!(r.grads.len(), c.hf_shapes().len(), "{case}");
            let (name, worst) = r.worst();
            assert!(worst < 1e-4, "{case}: gradient of {name} off by {worst}");
        }
    }
}

/// Every family and RoPE scaling the kernel engine takes gives what the burn engine gives: Llama
/// 3.1's scaling, YaRN and LongRoPE (their attention factor scales the softmax), a sliding window
/// longer than the rows; rows past a window are refused by the kernel engine by name.
#[test]
fn families_and_rope_scalings_agree_between_engines() {
    use crate::model::ModelType;
    use crate::model::config::SlidingWindow;
    use crate::model::rope::RopeScaling;
    let device = Default::default();
    let rows = random_rows(5, 3, 40, 64, true);
    let window = |size| {
        Some(SlidingWindow {
            size,
            layers: vec![true, true],
        })
    };
    let cases = [
        (
            ModelType::Llama,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 16,
            },
            None,
        ),
        (
            ModelType::Qwen2,
            RopeScaling::Yarn {
                factor: 4.0,
                original_max_position_embeddings: 32,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: None,
                mscale: None,
                mscale_all_dim: None,
                truncate: true,
            },
            None,
        ),
        (
            ModelType::Phi3,
            RopeScaling::Longrope {
                short_factor: vec![1.0, 1.5, 2.0, 4.0],
                long_factor: vec![2.0, 3.0, 4.0, 8.0],
                original_max_position_embeddings: 64,
                factor: None,
                attention_factor: None,
            },
            None,
        ),
        (ModelType::Mistral, RopeScaling::Default, window(64)),
    ];
    for (family, scaling, sliding_window) in cases {
        let mut c = tiny_for_tests();
        c.model_type = family;
        c.attention_bias = family == ModelType::Qwen2;
        c.head_dim = 8;
        (c.rope_scaling, c.sliding_window) = (scaling, sliding_window);
        let r = model_check::<B>(Box::new(CpuOps::exact()), &c, &rows, &device, 3, CheckGrad::Sft).unwrap();
        let case = format!("{family:?} {}", c.rope_scaling.name());
        assert!(r.loss_rel() < 1e-5, "{case}: loss {} vs {}", r.kernel_loss, r.burn_loss);
        let (name, worst) = r.worst();
        assert!(worst < 1e-4, "{case}: gradient of {name} off by {worst}");
    }
    // A window shorter than the rows: the burn engine slides, the kernel engine refuses.
    let mut c = tiny_for_tests();
    c.sliding_window = window(8);
    let [mut burn, mut kernel] = engines(&c, 4);
    let micro = burn.prepare(rows.clone()).unwrap();
    burn.forward(&micro, Want::default(), None).unwrap();
    let micro = kernel.prepare(rows).unwrap();
    let err = kernel.forward(&micro, Want::default(), None).unwrap_err().to_string();
    assert!(
        err.contains("past the sliding window") && err.contains("train.kernels = \"burn\""),
        "{err}"
    );
}

/// With bf16 storage emulated (what the GPU keeps), log-probs and gradients stay near f32.
/// Weights start at std 0.2: at transformers' 0.02 this 32-wide model's attention is nearly
/// uniform and the q/k gradients are second-order small, so bf16 rounding noise is 15% of them
/// (seen: 1–3% at 0.2, 4–16% at 0.02), which says nothing about the kernels.
#[test]
fn the_kernel_engine_in_bf16_stays_near_f32() {
    let device = Default::default();
    let mut c = tiny_for_tests();
    c.initializer_range = 0.2;
    let rows = random_rows(8, 2, 64, c.vocab_size, true);
    for how in [CheckGrad::Sft, CheckGrad::Split { temperature: 1.3 }] {
        let r = model_check::<B>(Box::new(CpuOps::new()), &c, &rows, &device, 5, how).unwrap();
        assert!(
            r.loss_rel() < 1e-2,
            "{how:?}: loss {} vs {}",
            r.kernel_loss,
            r.burn_loss
        );
        let (name, worst) = r.worst();
        assert!(worst < 0.06, "{how:?}: gradient of {name} off by {worst}");
    }
}

/// Pairs whose prompt is shared and whose replies differ, chosen rows first; the loss mask covers
/// the reply (as the preference template renders it).
fn pair_rows(rng: &mut StdRng, pairs: usize, vocab: i32) -> Vec<TokensRow> {
    let mut chosen = Vec::new();
    let mut rejected = Vec::new();
    for k in 0..pairs {
        let prompt: Vec<i32> = (0..rng.random_range(3..8))
            .map(|_| rng.random_range(0..vocab))
            .collect();
        for out in [&mut chosen, &mut rejected] {
            let reply: Vec<i32> = (0..rng.random_range(2..9))
                .map(|_| rng.random_range(0..vocab))
                .collect();
            let ids: Vec<i32> = prompt.iter().chain(&reply).copied().collect();
            let n = ids.len();
            out.push(TokensRow {
                loss_mask: (0..n).map(|i| i >= prompt.len()).collect(),
                position_ids: (0..n as i32).collect(),
                segment_ids: vec![0; n],
                input_ids: ids,
                segment_parents: vec![],
                source_ids: vec![format!("pair-{k}")],
            });
        }
    }
    chosen.into_iter().chain(rejected).collect()
}

/// One micro-batch through both engines with the method's loss: log-probs, loss and gradients.
fn through_both(
    config: &ModelConfig,
    rows: &[TokensRow],
    want: Want,
    mut loss: impl FnMut(&Micro, &Forward) -> (f64, Grad),
) -> Vec<(Forward, f64, Tensors)> {
    let mut out = Vec::new();
    for mut engine in engines(config, 3) {
        let micro = engine.prepare(rows.to_vec()).unwrap();
        engine.forward(&micro, want, None).unwrap();
        let f = engine.collect().unwrap();
        let (value, grad) = loss(&micro, &f);
        engine.backward(&grad).unwrap();
        out.push((f, value, engine.gradients().unwrap()));
    }
    out
}

fn assert_agree(case: &str, both: &[(Forward, f64, Tensors)]) {
    let [(fa, la, ga), (fb, lb, gb)] = both else {
        panic!("two engines")
    };
    assert!(rel_err(&fb.logp, &fa.logp) < 1e-5, "{case}: log-probs");
    assert!(rel_err(&fb.entropy, &fa.entropy) < 1e-5, "{case}: entropies");
    // Relative to the loss, or to 1 where it is smaller: GRPO's loss is a mean of terms of order
    // one (ratio times a normalised advantage) that nearly cancel, so its error is that of the
    // terms, not a fraction of the mean.
    assert!((la - lb).abs() <= 1e-5 * la.abs().max(1.0), "{case}: loss {la} vs {lb}");
    let (name, w) = worst(gb, ga);
    assert!(w < 1e-4, "{case}: gradient of {name} off by {w}");
}

/// DPO's every loss: the same sequence log-probs, loss and gradients on both engines.
#[test]
fn dpo_agrees_between_engines_for_each_loss() {
    let c = tiny_for_tests();
    let mut rng = StdRng::seed_from_u64(9);
    let rows = pair_rows(&mut rng, 3, c.vocab_size as i32);
    let reference: std::collections::HashMap<String, (f64, f64)> = (0..3)
        .map(|k| (format!("pair-{k}"), (-20.0 - k as f64, -21.0 + k as f64)))
        .collect();
    for (loss, label_smoothing) in [
        (DpoLoss::Sigmoid, 0.0),
        (DpoLoss::Sigmoid, 0.2),
        (DpoLoss::Hinge, 0.0),
        (DpoLoss::Ipo, 0.0),
    ] {
        let o = DpoOptions {
            beta: 0.3,
            loss,
            label_smoothing,
        };
        let both = through_both(&c, &rows, Want::default(), |micro, f| {
            let p = pairs(micro, f, &reference).unwrap();
            pairs_loss(&o, micro, &p, 1.0 / p.len() as f64)
        });
        assert_agree(&format!("{o:?}"), &both);
        // The gradient is not a multiple of SFT's: rows get different weights.
        assert!(both[0].2.values().any(|g| g.iter().any(|x| *x != 0.0)));
    }
}

/// Completions after prompts, the completion counted (GRPO's rows).
fn completion_rows(rng: &mut StdRng, rows: usize, vocab: i32) -> Vec<TokensRow> {
    (0..rows)
        .map(|_| {
            let (p, c) = (rng.random_range(2..6), rng.random_range(1..8));
            let ids: Vec<i32> = (0..p + c).map(|_| rng.random_range(0..vocab)).collect();
            TokensRow {
                loss_mask: (0..p + c).map(|i| i >= p).collect(),
                position_ids: (0..(p + c) as i32).collect(),
                segment_ids: vec![0; p + c],
                input_ids: ids,
                segment_parents: vec![],
                source_ids: vec![],
            }
        })
        .collect()
}

/// GRPO's every aggregation with μ > 1 (old log-probs off the current ones) and β > 0 (a
/// reference), at a temperature with entropies: the same on both engines.
#[test]
fn grpo_agrees_between_engines_for_each_loss_type() {
    let c = tiny_for_tests();
    let mut rng = StdRng::seed_from_u64(4);
    let rows = completion_rows(&mut rng, 4, c.vocab_size as i32);
    let advantages = [0.9, -0.4, 1.3, -1.1];
    let want = Want {
        temperature: 0.8,
        entropy: true,
        grad: true,
    };
    for loss_type in [LossType::Grpo, LossType::Bnpo, LossType::DrGrpo, LossType::Dapo] {
        let o = GrpoOptions {
            epsilon_low: 0.2,
            epsilon_high: 0.28,
            beta: 0.04,
            loss_type,
            max_completion_length: 8,
        };
        let mut noise = StdRng::seed_from_u64(1);
        let (mut old, mut reference) = (Vec::new(), Vec::new());
        let both = through_both(&c, &rows, want, |micro, f| {
            if old.is_empty() {
                // Old and reference log-probs near the policy's, some ratios past the clip.
                old = f.logp.iter().map(|x| x + noise.random_range(-0.4..0.4)).collect();
                reference = f.logp.iter().map(|x| x + noise.random_range(-0.5..0.5)).collect();
            }
            let terms = Terms {
                logp: &f.logp,
                old: Some(&old),
                reference: Some(&reference),
                row: &micro.target_row,
                advantages: &advantages,
            };
            let (value, dlogp, _) = grpo_loss(&o, &terms, 30).unwrap();
            (
                value,
                Grad {
                    dlogp,
                    domega: Vec::new(),
                },
            )
        });
        assert!(!both[0].0.entropy.is_empty());
        assert_agree(&format!("{loss_type:?}"), &both);
    }
}

/// Three AdamW steps with clipping on each engine leave the same weights and moments, and each
/// engine's state loads into the other (what resuming across engines does).
#[test]
fn steps_and_state_agree_between_engines_and_cross_over() {
    let c = tiny_for_tests();
    let rows = random_rows(3, 2, 24, c.vocab_size, true);
    let mut states = Vec::new();
    for mut engine in engines(&c, 8) {
        for step in 0..3 {
            let micro = engine.prepare(rows.clone()).unwrap();
            let g = Grad {
                dlogp: vec![-1.0 / micro.count() as f32; micro.count()],
                domega: Vec::new(),
            };
            engine.forward(&micro, Want::default(), Some(&g)).unwrap();
            engine.collect().unwrap();
            let norm = engine.grad_norm().unwrap();
            engine.step(1e-2 * (step + 1) as f64, norm, Some(0.5)).unwrap();
        }
        states.push(engine.state().unwrap());
    }
    let (burn, kernel) = (&states[0], &states[1]);
    let (name, w) = worst(&kernel.weights, &burn.weights);
    assert!(w < 1e-4, "weights: {name} off by {w}");
    let (mb, mk) = (burn.moments.as_ref().unwrap(), kernel.moments.as_ref().unwrap());
    assert_eq!((mb.steps, mk.steps), (3, 3));
    let (name, w) = worst(&mk.m, &mb.m);
    assert!(w < 1e-4, "first moments: {name} off by {w}");
    let (name, w) = worst(&mk.v, &mb.v);
    assert!(w < 1e-3, "second moments: {name} off by {w}");
    // Each state opens on the other engine and reports itself back unchanged.
    let device = Default::default();
    let adamw = Some(AdamW::default());
    let mut on_kernel = KernelEngine::new(Box::new(CpuOps::exact()), &c, burn, adamw).unwrap();
    let mut on_burn = BurnEngine::<B>::new(&c, kernel, adamw, None, &device).unwrap();
    assert_eq!(&Engine::<B>::state(&mut on_kernel).unwrap(), burn);
    assert_eq!(&on_burn.state().unwrap(), kernel);
}

/// A scoring engine (no optimizer) refuses a forward that asks for gradients; the kernel engine
/// refuses the group-lasso penalty by name; both refuse a penalty gradient without a penalty.
#[test]
fn engines_refuse_what_they_cannot_do() {
    let c = tiny_for_tests();
    let device = Default::default();
    let state = EngineState::fresh(&Decoder::<B>::init(&c, &device).unwrap());
    let rows = random_rows(1, 1, 16, c.vocab_size, false);
    let mut scorers: [Box<dyn Engine<B>>; 2] = [
        Box::new(BurnEngine::<B>::new(&c, &state, None, None, &device).unwrap()),
        Box::new(KernelEngine::new(Box::new(CpuOps::exact()), &c, &state, None).unwrap()),
    ];
    for e in &mut scorers {
        let micro = e.prepare(rows.clone()).unwrap();
        let err = e.forward(&micro, Want::default(), None).unwrap_err().to_string();
        assert!(err.contains("only scores"), "{err}");
        e.forward(&micro, Want::no_grad(), None).unwrap();
        assert_eq!(e.collect().unwrap().logp.len(), micro.count());
        assert!(
            e.backward(&Grad::default()).is_err(),
            "a backward after a scoring forward"
        );
    }
    let mut choice = Choice::kernel_reference(true);
    let localist: crate::localist::LocalistConfig =
        toml::from_str("lambda = 0.5\nblocks = \"segments\"\npenalty = \"group_lasso\"").unwrap();
    let run = crate::localist::LocalistRun::new(&localist, 2, None).unwrap();
    let err = match choice.open::<B>(&c, &state, Some(AdamW::default()), Some(run), &device) {
        Ok(_) => panic!("the kernel engine took the group-lasso penalty"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("group lasso") && err.contains("train.kernels = \"burn\""),
        "{err}"
    );
    // A penalty gradient for layers without a weighing penalty is refused by both engines.
    for mut e in engines(&c, 2) {
        let micro = e.prepare(rows.clone()).unwrap();
        e.forward(&micro, Want::default(), None).unwrap();
        e.collect().unwrap();
        let g = Grad {
            dlogp: vec![-1.0; micro.count()],
            domega: vec![0.5, 0.0],
        };
        assert!(e.backward(&g).is_err(), "a penalty gradient without a penalty");
    }
}

/// Localist attention (anchor blocks, the previous-block target rule, a polynomial schedule so the
/// first layer has no dial) with each penalty the kernel engine computes: the same log-probs,
/// per-layer entropy, fidelity and Ω, and gradients (with the penalty's gradient sent back) on
/// both engines.
#[test]
fn localist_agrees_between_engines_for_each_penalty() {
    use crate::localist::{BlockSource, LocalistConfig, LocalistRun, Penalty, Schedule, TargetRule};
    let c = tiny_for_tests();
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 21);
    let state = EngineState::fresh(&Decoder::<B>::init(&c, &device).unwrap());
    let rows = random_rows(6, 3, 40, c.vocab_size, true);
    for penalty in [Penalty::OffTarget, Penalty::None] {
        let config = LocalistConfig {
            lambda: 0.6,
            schedule: Schedule::Polynomial,
            beta: 1.0,
            delta: 3.0,
            gamma: 0.5,
            penalty,
            blocks: BlockSource::Anchors,
            anchors: Vec::new(),
            threshold: 0.0,
            target: TargetRule::Previous,
        };
        let run = LocalistRun {
            lambdas: config.layer_lambdas(c.num_hidden_layers),
            config,
            anchor_ids: (0..c.vocab_size as i32).filter(|t| t % 7 == 3).collect(),
        };
        let adamw = Some(AdamW::default());
        let engines: [Box<dyn Engine<B>>; 2] = [
            Box::new(BurnEngine::<B>::new(&c, &state, adamw, Some(run.clone()), &device).unwrap()),
            Box::new(
                KernelEngine::new(Box::new(CpuOps::exact()), &c, &state, adamw)
                    .unwrap()
                    .with_localist(Some(run.clone()))
                    .unwrap(),
            ),
        ];
        let mut out = Vec::new();
        for mut e in engines {
            let micro = e.prepare(rows.clone()).unwrap();
            e.forward(&micro, Want::default(), None).unwrap();
            let f = e.collect().unwrap();
            let weighs = penalty == Penalty::OffTarget;
            e.backward(&Grad {
                dlogp: vec![-1.0 / micro.count() as f32; micro.count()],
                domega: if weighs { vec![0.0, 0.7] } else { Vec::new() },
            })
            .unwrap();
            out.push((f, e.gradients().unwrap()));
        }
        let case = format!("{penalty:?}");
        let ((fb, gb), (fk, gk)) = (&out[0], &out[1]);
        assert!(rel_err(&fk.logp, &fb.logp) < 1e-5, "{case}: log-probs");
        assert_eq!(fb.attention.len(), 2);
        for (l, (a, b)) in fb.attention.iter().zip(&fk.attention).enumerate() {
            assert!(
                (a.fidelity - b.fidelity).abs() < 1e-5,
                "{case} layer {l}: fidelity {a:?} vs {b:?}"
            );
            // burn's entropy adds 1e-12 inside the log; the kernels take p log p exactly.
            assert!(
                (a.entropy_bits - b.entropy_bits).abs() < 1e-4,
                "{case} layer {l}: {a:?} vs {b:?}"
            );
        }
        assert_eq!(fb.omega.len(), fk.omega.len(), "{case}");
        for (a, b) in fb.omega.iter().zip(&fk.omega) {
            assert!((a - b).abs() < 1e-5, "{case}: Ω {:?} vs {:?}", fb.omega, fk.omega);
        }
        // The dial is on in the second layer only: it concentrates attention there.
        assert_eq!(fb.omega[0], 0.0);
        if penalty == Penalty::OffTarget {
            assert!(fb.omega[1] > 0.0);
        }
        let (name, w) = worst(gk, gb);
        assert!(w < 1e-4, "{case}: gradient of {name} off by {w}");
    }
}
