//! `firebrand bench step` (and `bench sft`): the training step of SFT, DPO and GRPO on the kernel
//! engine at the reference shapes, through the loop's own [`step_window`] and the methods' own
//! losses (`method::dpo::pairs_loss`, `method::grpo::grpo_loss`), on random full rows, so the
//! methods' steps are timed on the same rows and compared with PyTorch's
//! (`benches/gpu/torch_methods.py`).
//!
//! Rows: `batch` rows of `seq` random tokens. SFT trains every position (as `torch_llama_sft.py`
//! does), with or without the localist dial; DPO reads them as `batch / 2` pairs, chosen rows first, whose replies are the second half
//! of each row (the loss counts half the positions); GRPO reads them as completions of
//! `3·seq/4` tokens after `seq/4`-token prompts, with random advantages, at temperature 1 with
//! entropies, μ = 1 (TRL's defaults) and, with `beta > 0`, a reference scoring engine's forward per
//! step. As the loop does, SFT's and DPO's next micro-batches are prepared on the host while the
//! device runs the current step, and GRPO's (with the reference's forward) at the start of its
//! step. Tokens per second count every token of the rows, padding aside.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use firebrand_data::TokensRow;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::method::dpo::{pairs, pairs_loss};
use super::method::grpo::{GrpoOptions, Terms, grpo_loss};
use super::method::reference::ReferenceLogps;
use super::method::{Evaluation, Loss, Method, MethodMetrics, Window};
use super::order::Cursor;
use super::run::step_window;
use crate::engine::api::{Engine, Forward, Grad, Micro, Want};
use crate::engine::kernel::KernelEngine;
use crate::engine::kernel::check::{Profiler, random_rows, random_weights};
use crate::engine::kernel::ops::Ops;
use crate::engine::optim::AdamW;
use crate::engine::state::EngineState;
use crate::error::TrainError;
use crate::localist::{BlockSource, LocalistConfig, LocalistRun, Penalty, Schedule, TargetRule};
use crate::model::ModelConfig;
use crate::recipe::{DpoOptions, LossType};

/// Which method's step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BenchMethod {
    /// SFT: every position trained, the gradient fused into the forward; with `localist = Some(λ)`,
    /// the localist dial at λ in every layer (Δ 8, off-target penalty with γ 1, blocks ending at
    /// anchor tokens, one token id in 20).
    Sft {
        /// The dial's λ.
        localist: Option<f64>,
    },
    /// DPO (sigmoid, β = 0.1) on pairs.
    Dpo,
    /// GRPO (dapo, ε 0.2) on completions; `beta > 0` adds the reference's forward.
    Grpo {
        /// The KL weight.
        beta: f64,
    },
}

/// Timings of training steps.
#[derive(Debug, Clone)]
pub struct StepTimes {
    /// Seconds of each measured step (window preparation, forward, loss, backward, clip and AdamW,
    /// host work included).
    pub steps: Vec<f64>,
    /// Tokens per step.
    pub tokens: usize,
    /// Counted targets per step.
    pub targets: usize,
    /// Loss of each measured step.
    pub losses: Vec<f64>,
    /// Seconds and calls per operation over one profiled step (empty without profiling).
    pub profile: BTreeMap<&'static str, (f64, usize)>,
}

/// The benchmark's method: synthetic rows, the real losses.
struct Synthetic<B: AutodiffBackend> {
    method: BenchMethod,
    rows: Vec<TokensRow>,
    reference_logps: ReferenceLogps,
    advantages: Vec<f64>,
    reference: Option<Box<dyn Engine<B>>>,
    reference_out: Vec<f32>,
    layers: usize,
}

impl<B: AutodiffBackend> Method<B> for Synthetic<B> {
    fn units(&self) -> u64 {
        self.rows.len() as u64
    }

    fn source(&self) -> PathBuf {
        PathBuf::from("random rows")
    }

    fn want(&self) -> Want {
        match self.method {
            BenchMethod::Grpo { .. } => Want {
                temperature: 1.0,
                entropy: true,
                grad: true,
            },
            _ => Want::default(),
        }
    }

    fn window(&mut self, engine: &mut dyn Engine<B>, _cursor: &mut Cursor, _step: usize) -> Result<Window, TrainError> {
        let micro = engine.prepare(self.rows.clone())?;
        if let Some(reference) = self.reference.as_mut() {
            reference.forward(&micro, Want::no_grad(), None)?;
            self.reference_out = reference.collect()?.logp;
        }
        Ok(Window::new(vec![micro], 0, 0))
    }

    fn fixed(&self, micro: &Micro, window: &Window) -> Option<Grad> {
        let BenchMethod::Sft { localist } = self.method else {
            return None;
        };
        let w = window.count as f32;
        Some(Grad {
            dlogp: vec![-1.0 / w; micro.count()],
            // SFT's penalty gradient: λ·γ·count/W per layer.
            domega: match localist {
                Some(l) => vec![l as f32 * micro.count() as f32 / w; self.layers],
                None => Vec::new(),
            },
        })
    }

    fn loss(&mut self, _i: usize, micro: &Micro, forward: &Forward, window: &Window) -> Result<Loss, TrainError> {
        let (value, grad) = match self.method {
            BenchMethod::Sft { .. } => (
                -forward.logp.iter().map(|&x| f64::from(x)).sum::<f64>() / window.count as f64,
                Grad::default(),
            ),
            BenchMethod::Dpo => {
                let p = pairs(micro, forward, &self.reference_logps)?;
                pairs_loss(&DpoOptions::default(), micro, &p, 1.0 / p.len() as f64)
            }
            BenchMethod::Grpo { beta } => {
                let o = GrpoOptions {
                    beta,
                    loss_type: LossType::Dapo,
                    ..GrpoOptions::default()
                };
                let terms = Terms {
                    logp: &forward.logp,
                    old: None,
                    reference: (beta > 0.0).then_some(self.reference_out.as_slice()),
                    row: &micro.target_row,
                    advantages: &self.advantages,
                };
                let (value, dlogp, _) = grpo_loss(&o, &terms, window.count)?;
                (
                    value,
                    Grad {
                        dlogp,
                        domega: Vec::new(),
                    },
                )
            }
        };
        Ok(Loss { value, grad })
    }

    fn finish(&mut self, _window: &Window, _seconds: f64) -> MethodMetrics {
        MethodMetrics::new()
    }

    fn read_ahead(&self) -> bool {
        !matches!(self.method, BenchMethod::Grpo { .. })
    }

    fn evaluate(
        &mut self,
        _engine: &mut dyn Engine<B>,
        _units: &[u64],
        _batch: usize,
        _step: usize,
    ) -> Result<(Evaluation, serde_json::Value), TrainError> {
        Err(TrainError::Config("the step benchmark has no held-out data".into()))
    }
}

/// The rows of `method`'s step (see the module doc).
fn bench_rows(method: BenchMethod, batch: usize, seq: usize, vocab: usize) -> Vec<TokensRow> {
    let mut rows = random_rows(1, batch, seq, vocab, false);
    let prompt = match method {
        BenchMethod::Sft { .. } => 0,
        BenchMethod::Dpo => seq / 2,
        BenchMethod::Grpo { .. } => seq / 4,
    };
    let pairs = batch / 2;
    for (i, r) in rows.iter_mut().enumerate() {
        r.loss_mask = (0..seq).map(|t| t >= prompt).collect();
        r.source_ids = vec![format!("pair-{}", i % pairs.max(1))];
    }
    if method == BenchMethod::Dpo {
        // A pair's replies follow one prompt.
        for i in 0..pairs {
            let shared: Vec<i32> = rows[i].input_ids[..prompt].to_vec();
            rows[pairs + i].input_ids[..prompt].copy_from_slice(&shared);
        }
    }
    rows
}

/// `warmup + steps` steps of `method` on the kernel engine over `ops` (and `reference_ops` for
/// GRPO's reference when β > 0), then one profiled step when `profile`.
///
/// # Errors
/// On a device failure, or `batch` odd for DPO.
#[allow(clippy::too_many_arguments)]
pub fn method_bench<B: AutodiffBackend>(
    ops: Box<dyn Ops>,
    reference_ops: Option<Box<dyn Ops>>,
    config: &ModelConfig,
    method: BenchMethod,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
    profile: bool,
) -> Result<StepTimes, TrainError> {
    if method == BenchMethod::Dpo && !batch.is_multiple_of(2) {
        return Err(TrainError::Config(
            "DPO's rows are pairs: the batch must be even".into(),
        ));
    }
    let adamw = AdamW {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let state = EngineState {
        weights: random_weights(config, 0, 0.02),
        moments: None,
    };
    let localist = match method {
        BenchMethod::Sft { localist: Some(lambda) } => {
            let c = LocalistConfig {
                lambda,
                schedule: Schedule::Uniform,
                beta: 1.0,
                delta: 8.0,
                gamma: 1.0,
                penalty: Penalty::OffTarget,
                blocks: BlockSource::Anchors,
                anchors: Vec::new(),
                threshold: 0.0,
                target: TargetRule::Own,
            };
            Some(LocalistRun {
                lambdas: c.layer_lambdas(config.num_hidden_layers),
                config: c,
                anchor_ids: (0..config.vocab_size as i32).filter(|t| t % 20 == 0).collect(),
            })
        }
        _ => None,
    };
    let mut engine =
        KernelEngine::new(Box::new(Profiler::new(ops, false)), config, &state, Some(adamw))?.with_localist(localist)?;
    let reference: Option<Box<dyn Engine<B>>> = match (method, reference_ops) {
        (BenchMethod::Grpo { beta }, Some(ops)) if beta > 0.0 => {
            Some(Box::new(KernelEngine::new(ops, config, &state, None)?))
        }
        (BenchMethod::Grpo { beta }, None) if beta > 0.0 => {
            return Err(TrainError::Config(
                "GRPO with beta > 0 needs the reference's device".into(),
            ));
        }
        _ => None,
    };
    let mut rng = StdRng::seed_from_u64(5);
    let rows = bench_rows(method, batch, seq, config.vocab_size);
    let mut m = Synthetic::<B> {
        method,
        reference_logps: (0..batch / 2)
            .map(|k| (format!("pair-{k}"), (-5000.0 + rng.random_range(-50.0..50.0), -5000.0)))
            .collect(),
        advantages: (0..batch).map(|_| rng.random_range(-1.5..1.5)).collect(),
        rows,
        reference,
        reference_out: Vec::new(),
        layers: config.num_hidden_layers,
    };
    let mut order = super::order::DataOrder::new(vec![0], 0);
    let mut window = Some(m.window(&mut engine, &mut Cursor::new(&mut order, 0), 0)?);
    let first = window.as_ref().expect("just built");
    let mut times = StepTimes {
        steps: Vec::new(),
        tokens: first.tokens,
        targets: first.count,
        losses: Vec::new(),
        profile: BTreeMap::new(),
    };
    // As the loop: SFT's and DPO's next window is read while the device runs the step; GRPO's
    // (with its reference forward) is built at the start of its step.
    let read_ahead = Method::<B>::read_ahead(&m);
    for i in 0..warmup + steps + usize::from(profile) {
        let profiled = i == warmup + steps;
        let t0 = Instant::now();
        let current = match window.take() {
            Some(w) => w,
            None => m.window(&mut engine, &mut Cursor::new(&mut order, 0), i)?,
        };
        let loss = step_window::<B>(&mut engine, &mut m, &current, |engine, method| {
            if read_ahead {
                window = Some(method.window(engine, &mut Cursor::new(&mut order, 0), i + 1)?);
            }
            Ok(())
        })?;
        let norm = engine.grad_norm()?;
        Engine::<B>::step(&mut engine, 3e-5, norm, Some(1.0))?;
        engine.ops.synchronize()?;
        let dt = t0.elapsed().as_secs_f64();
        if i >= warmup && !profiled {
            times.steps.push(dt);
            times.losses.push(loss);
        }
        if i + 1 == warmup + steps && profile {
            engine.ops.profile(true);
        }
        if profiled {
            engine.ops.profile(false);
            times.profile = engine.ops.take_profile();
        }
    }
    Ok(times)
}
