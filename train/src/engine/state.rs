//! An engine's state under Hugging Face names: the weights and AdamW's moments as they go into a
//! checkpoint, and their conversions to and from burn (`Decoder`, `OptimizerAdaptor<AdamW>`).
//!
//! Checkpoints hold `model.safetensors` (every weight under its `transformers` name, HF layout,
//! f32: with the checkpoint's `config.json` the folder opens in `from_pretrained`) and
//! `optimizer.safetensors` (`NAME.exp_avg` and `NAME.exp_avg_sq` per weight, the step count in the
//! metadata), so either engine resumes the other's run and export is a copy. Checkpoints written
//! before this format (burn's `model.mpk` and `optim.mpk`) are still read.
//!
//! burn stores linear weights transposed (`[in, out]`), HF as `[out, in]`; moments follow their
//! weight.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::optim::Optimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::engine::optim::{AdamW, AdamWState};
use crate::error::TrainError;
use crate::model::{Decoder, ModelConfig, TensorSource};

/// Tensors by Hugging Face name, in Hugging Face layout.
pub type Tensors = BTreeMap<String, Vec<f32>>;

/// AdamW's moments by Hugging Face name, and the updates taken (the bias correction's `t`).
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    /// First moments.
    pub m: Tensors,
    /// Second moments.
    pub v: Tensors,
    /// Updates applied so far.
    pub steps: usize,
}

/// What an engine holds of a model: its weights and, once it has stepped, AdamW's moments.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineState {
    /// Weights.
    pub weights: Tensors,
    /// Moments (`None` before the first step, or for a model that is only scored).
    pub moments: Option<Moments>,
}

/// The checkpoint file of the weights.
pub const MODEL_FILE: &str = "model.safetensors";
/// The checkpoint file of the optimizer state.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

impl EngineState {
    /// The state of a burn model and its optimizer.
    ///
    /// # Errors
    /// When the optimizer's state is inconsistent (see [`moments_of`]).
    pub fn of_burn<B: AutodiffBackend>(
        model: &Decoder<B>,
        optimizer: &OptimizerAdaptor<AdamW, Decoder<B>, B>,
    ) -> Result<Self, TrainError> {
        Ok(EngineState {
            weights: weights_of(model),
            moments: moments_of(model, optimizer)?.map(|(m, v, steps)| Moments { m, v, steps }),
        })
    }

    /// The state of a model that has not stepped.
    pub fn fresh<B: Backend>(model: &Decoder<B>) -> Self {
        EngineState {
            weights: weights_of(model),
            moments: None,
        }
    }

    /// Writes [`MODEL_FILE`] and (with moments) [`OPTIMIZER_FILE`] into `dir`.
    ///
    /// # Errors
    /// When a tensor is missing or a file cannot be written.
    pub fn save(&self, dir: &Path, config: &ModelConfig) -> Result<(), TrainError> {
        let shapes = config.hf_shapes();
        let get = |map: &Tensors, name: &str| -> Result<Vec<f32>, TrainError> {
            map.get(name)
                .cloned()
                .ok_or_else(|| TrainError::Config(format!("checkpoint: no values for `{name}`")))
        };
        // The model file in the family's file layout (Phi-3's fused projections), so the folder
        // opens in `transformers` as it is.
        let mut weights = BTreeMap::new();
        for (name, shape) in &shapes {
            weights.insert(name.clone(), (shape.clone(), get(&self.weights, name)?));
        }
        let weights = crate::hf::to_file_layout(config, weights, |parts| {
            let rows = parts.iter().map(|(shape, _)| shape[0]).sum();
            let values = parts.iter().flat_map(|(_, v)| v.iter().copied()).collect();
            (vec![rows, parts[0].0[1]], values)
        });
        let weights: Vec<(String, Vec<usize>, Vec<f32>)> = weights
            .into_iter()
            .map(|(name, (shape, values))| (name, shape, values))
            .collect();
        crate::hf::write_tensors(&dir.join(MODEL_FILE), &weights, &[("format", "pt")])?;
        if let Some(m) = &self.moments {
            let mut moments = Vec::with_capacity(2 * shapes.len());
            for (name, shape) in &shapes {
                moments.push((format!("{name}.exp_avg"), shape.clone(), get(&m.m, name)?));
                moments.push((format!("{name}.exp_avg_sq"), shape.clone(), get(&m.v, name)?));
            }
            let steps = m.steps.to_string();
            crate::hf::write_tensors(&dir.join(OPTIMIZER_FILE), &moments, &[("step", steps.as_str())])?;
        }
        Ok(())
    }

    /// Reads the state a checkpoint folder holds: [`MODEL_FILE`] and [`OPTIMIZER_FILE`], or the
    /// `model.mpk` and `optim.mpk` of checkpoints written before (read through burn on `device`).
    ///
    /// # Errors
    /// When the files are missing, do not parse, or do not match `config`.
    pub fn load<B: AutodiffBackend>(dir: &Path, config: &ModelConfig, device: &B::Device) -> Result<Self, TrainError> {
        let model_file = dir.join(MODEL_FILE);
        if !model_file.exists() && dir.join("model.mpk").exists() {
            return Self::load_mpk::<B>(dir, config, device);
        }
        let (weights, _) = crate::hf::read_tensors(&model_file)?;
        let weights = crate::hf::from_file_layout(config, weights, &model_file)?;
        let shapes = config.hf_shapes();
        for (name, shape) in &shapes {
            let len: usize = shape.iter().product();
            match weights.get(name) {
                Some(v) if v.len() == len => {}
                Some(v) => {
                    return Err(TrainError::Weights {
                        path: model_file,
                        problem: format!("`{name}` has {} values, the config says {shape:?}", v.len()),
                    });
                }
                None => {
                    return Err(TrainError::Weights {
                        path: model_file,
                        problem: format!("missing tensor `{name}`"),
                    });
                }
            }
        }
        let opt_file = dir.join(OPTIMIZER_FILE);
        let moments = if opt_file.exists() {
            let (mut all, meta) = crate::hf::read_tensors(&opt_file)?;
            let steps = meta
                .get("step")
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| TrainError::Weights {
                    path: opt_file.clone(),
                    problem: "no `step` in the metadata".into(),
                })?;
            let (mut m, mut v) = (Tensors::new(), Tensors::new());
            for (name, shape) in &shapes {
                let len: usize = shape.iter().product();
                let mut take = |suffix: &str| {
                    let t = all
                        .remove(&format!("{name}.{suffix}"))
                        .ok_or_else(|| TrainError::Weights {
                            path: opt_file.clone(),
                            problem: format!("no `{name}.{suffix}`"),
                        })?;
                    if t.len() != len {
                        return Err(TrainError::Weights {
                            path: opt_file.clone(),
                            problem: format!("`{name}.{suffix}` has {} values, the config says {shape:?}", t.len()),
                        });
                    }
                    Ok(t)
                };
                m.insert(name.clone(), take("exp_avg")?);
                v.insert(name.clone(), take("exp_avg_sq")?);
            }
            Some(Moments { m, v, steps })
        } else {
            None
        };
        Ok(EngineState { weights, moments })
    }

    /// [`EngineState::load`] of a checkpoint in burn's format (`model.mpk`, `optim.mpk`).
    fn load_mpk<B: AutodiffBackend>(dir: &Path, config: &ModelConfig, device: &B::Device) -> Result<Self, TrainError> {
        use burn::module::Module;
        use burn::record::Recorder;
        let err = |file: &str, e: &dyn std::fmt::Display| TrainError::Weights {
            path: dir.join(file),
            problem: e.to_string(),
        };
        let recorder = burn::record::NamedMpkFileRecorder::<burn::record::FullPrecisionSettings>::new();
        let model = Decoder::<B>::init(config, device)?
            .load_file(dir.join("model"), &recorder, device)
            .map_err(|e| err("model.mpk", &e))?;
        let mut optimizer = OptimizerAdaptor::<AdamW, Decoder<B>, B>::from(AdamW::default());
        if dir.join("optim.mpk").exists() {
            let record = recorder
                .load(dir.join("optim"), device)
                .map_err(|e| err("optim.mpk", &e))?;
            optimizer = optimizer.load_record(record);
        }
        Self::of_burn(&model, &optimizer)
    }
}

/// One parameter of the decoder.
#[derive(Debug, Clone)]
pub struct Named {
    /// burn's id (what optimizer records and gradients are keyed by).
    pub id: ParamId,
    /// Hugging Face name.
    pub name: String,
    /// Whether burn stores it transposed (`[in, out]` linear weights).
    pub transposed: bool,
    /// Rank (1 or 2).
    pub rank: usize,
}

/// Every parameter of `model`, under its HF name.
pub fn named_params<B: Backend>(model: &Decoder<B>) -> Vec<Named> {
    let mut out = Vec::new();
    let mut matrix = |id: ParamId, name: String, transposed: bool| {
        out.push(Named {
            id,
            name,
            transposed,
            rank: 2,
        })
    };
    matrix(model.embed_tokens.weight.id, "model.embed_tokens.weight".into(), false);
    if let Some(head) = &model.lm_head {
        matrix(head.weight.id, "lm_head.weight".into(), true);
    }
    let mut vectors: Vec<(ParamId, String)> = vec![(model.norm.weight.id, "model.norm.weight".into())];
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let a = &layer.self_attn;
        let lin: [(&str, &Linear<B>); 7] = [
            ("self_attn.q_proj", &a.q_proj),
            ("self_attn.k_proj", &a.k_proj),
            ("self_attn.v_proj", &a.v_proj),
            ("self_attn.o_proj", &a.o_proj),
            ("mlp.gate_proj", &layer.mlp.gate_proj),
            ("mlp.up_proj", &layer.mlp.up_proj),
            ("mlp.down_proj", &layer.mlp.down_proj),
        ];
        for (name, l) in lin {
            matrix(l.weight.id, format!("{p}.{name}.weight"), true);
            if let Some(b) = &l.bias {
                vectors.push((b.id, format!("{p}.{name}.bias")));
            }
        }
        for (name, norm) in [("q_norm", &a.q_norm), ("k_norm", &a.k_norm)] {
            if let Some(n) = norm {
                vectors.push((n.weight.id, format!("{p}.self_attn.{name}.weight")));
            }
        }
        vectors.push((layer.input_layernorm.weight.id, format!("{p}.input_layernorm.weight")));
        vectors.push((
            layer.post_attention_layernorm.weight.id,
            format!("{p}.post_attention_layernorm.weight"),
        ));
        for (name, norm) in [
            ("pre_feedforward_layernorm", &layer.pre_feedforward_layernorm),
            ("post_feedforward_layernorm", &layer.post_feedforward_layernorm),
        ] {
            if let Some(n) = norm {
                vectors.push((n.weight.id, format!("{p}.{name}.weight")));
            }
        }
    }
    out.extend(vectors.into_iter().map(|(id, name)| Named {
        id,
        name,
        transposed: false,
        rank: 1,
    }));
    out
}

fn floats(data: TensorData) -> Vec<f32> {
    data.convert::<f32>().to_vec().expect("an f32 tensor reads as f32")
}

fn hf_values<B: Backend, const D: usize>(t: Tensor<B, D>, transposed: bool) -> Vec<f32> {
    if transposed && D == 2 {
        let dims = t.dims();
        let t2: Tensor<B, 2> = t.reshape([dims[0], dims[D - 1]]);
        floats(t2.transpose().into_data())
    } else {
        floats(t.into_data())
    }
}

/// The weights of `model` by HF name, HF layout.
pub fn weights_of<B: Backend>(model: &Decoder<B>) -> BTreeMap<String, Vec<f32>> {
    crate::hf::state_dict(model)
        .into_iter()
        .map(|(k, v)| (k, floats(v)))
        .collect()
}

/// The gradients in `grads` of `model`'s parameters, by HF name, HF layout (missing ones are
/// zero-length).
pub fn gradients_of<B: AutodiffBackend>(model: &Decoder<B>, grads: &GradientsParams) -> BTreeMap<String, Vec<f32>> {
    named_params(model)
        .into_iter()
        .map(|p| {
            let v = match p.rank {
                1 => grads.get::<B::InnerBackend, 1>(p.id).map(|g| hf_values(g, false)),
                _ => grads
                    .get::<B::InnerBackend, 2>(p.id)
                    .map(|g| hf_values(g, p.transposed)),
            };
            (p.name, v.unwrap_or_default())
        })
        .collect()
}

/// AdamW's moments held by `optimizer` for `model`, by HF name, with the step count; `None` when
/// the optimizer has no state yet (a fresh run).
///
/// # Errors
/// When some parameters have state and others not, or the step counts differ.
#[allow(clippy::type_complexity)]
pub fn moments_of<B: AutodiffBackend>(
    model: &Decoder<B>,
    optimizer: &OptimizerAdaptor<AdamW, Decoder<B>, B>,
) -> Result<Option<(BTreeMap<String, Vec<f32>>, BTreeMap<String, Vec<f32>>, usize)>, TrainError> {
    let mut record = optimizer.to_record();
    if record.is_empty() {
        return Ok(None);
    }
    let (mut m, mut v, mut time) = (BTreeMap::new(), BTreeMap::new(), None);
    for p in named_params(model) {
        let r = record
            .remove(&p.id)
            .ok_or_else(|| TrainError::Config(format!("optimizer state has no moments for `{}`", p.name)))?;
        let (mm, vv, t) = match p.rank {
            1 => {
                let s: AdamWState<B::InnerBackend, 1> = r.into_state();
                (hf_values(s.m, false), hf_values(s.v, false), s.time)
            }
            _ => {
                let s: AdamWState<B::InnerBackend, 2> = r.into_state();
                (hf_values(s.m, p.transposed), hf_values(s.v, p.transposed), s.time)
            }
        };
        if *time.get_or_insert(t) != t {
            return Err(TrainError::Config(format!(
                "optimizer state: `{}` has taken {t} steps, other parameters {}",
                p.name,
                time.unwrap_or(0)
            )));
        }
        m.insert(p.name.clone(), mm);
        v.insert(p.name, vv);
    }
    Ok(Some((m, v, time.unwrap_or(0))))
}

/// Tensors by HF name and HF shape, as a [`TensorSource`].
pub struct MapSource<'a, B: Backend> {
    /// Values by name.
    pub tensors: &'a BTreeMap<String, Vec<f32>>,
    /// Where to create tensors.
    pub device: &'a B::Device,
}

impl<B: Backend> MapSource<'_, B> {
    fn take(&self, name: &str, len: usize) -> Result<Vec<f32>, TrainError> {
        let v = self
            .tensors
            .get(name)
            .ok_or_else(|| TrainError::Config(format!("weights: no values for `{name}`")))?;
        if v.len() != len {
            return Err(TrainError::Config(format!(
                "weights: `{name}` has {} values, expected {len}",
                v.len()
            )));
        }
        Ok(v.clone())
    }
}

impl<B: Backend> TensorSource<B> for MapSource<'_, B> {
    fn matrix(&mut self, name: &str, shape: [usize; 2]) -> Result<Tensor<B, 2>, TrainError> {
        let v = self.take(name, shape[0] * shape[1])?;
        Ok(Tensor::from_data(TensorData::new(v, shape), self.device))
    }

    fn vector(&mut self, name: &str, len: usize, _ones: bool) -> Result<Tensor<B, 1>, TrainError> {
        let v = self.take(name, len)?;
        Ok(Tensor::from_data(TensorData::new(v, [len]), self.device))
    }
}

/// A burn decoder holding `weights` (HF names and layout).
///
/// # Errors
/// When a tensor is missing or mis-sized.
pub fn decoder_from<B: Backend>(
    config: &ModelConfig,
    weights: &BTreeMap<String, Vec<f32>>,
    device: &B::Device,
) -> Result<Decoder<B>, TrainError> {
    Decoder::from_source(
        config,
        &mut MapSource {
            tensors: weights,
            device,
        },
    )
}

/// Loads moments (HF names and layout) taken `steps` times into `optimizer` for `model`.
///
/// # Errors
/// When a moment is missing or mis-sized.
pub fn load_moments<B: AutodiffBackend>(
    model: &Decoder<B>,
    optimizer: OptimizerAdaptor<AdamW, Decoder<B>, B>,
    m: &BTreeMap<String, Vec<f32>>,
    v: &BTreeMap<String, Vec<f32>>,
    steps: usize,
    device: &B::Device,
) -> Result<OptimizerAdaptor<AdamW, Decoder<B>, B>, TrainError> {
    // The optimizer's own map type (burn keys records by parameter id).
    let mut record = optimizer.to_record();
    record.clear();
    let mut sizes = Sizes(std::collections::HashMap::new());
    burn::module::Module::visit(model, &mut sizes);
    for p in named_params(model) {
        let get = |map: &BTreeMap<String, Vec<f32>>| {
            map.get(&p.name)
                .cloned()
                .ok_or_else(|| TrainError::Config(format!("optimizer state: no moments for `{}`", p.name)))
        };
        let (mm, vv) = (get(m)?, get(v)?);
        let len = sizes.0.get(&p.id).copied().unwrap_or(0);
        if mm.len() != len || vv.len() != len {
            return Err(TrainError::Config(format!(
                "optimizer state: the moments of `{}` have {} and {} values, the parameter {len}",
                p.name,
                mm.len(),
                vv.len()
            )));
        }
        let r = match p.rank {
            1 => {
                let n = mm.len();
                let t = |x: Vec<f32>| Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(x, [n]), device);
                AdaptorRecord::from_state::<1>(AdamWState {
                    m: t(mm),
                    v: t(vv),
                    time: steps,
                })
            }
            _ => {
                let shape = burn_shape(model, &p);
                // HF layout is the transpose of burn's for linear weights.
                let hf = if p.transposed { [shape[1], shape[0]] } else { shape };
                let t = |x: Vec<f32>| {
                    let t = Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(x, hf), device);
                    if p.transposed { t.transpose() } else { t }
                };
                AdaptorRecord::from_state::<2>(AdamWState {
                    m: t(mm),
                    v: t(vv),
                    time: steps,
                })
            }
        };
        record.insert(p.id, r);
    }
    Ok(optimizer.load_record(record))
}

/// Elements of every parameter of a module, by id.
struct Sizes(std::collections::HashMap<ParamId, usize>);

impl<B: Backend> burn::module::ModuleVisitor<B> for Sizes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.insert(param.id, param.val().shape().num_elements());
    }
}

/// burn's shape of the matrix parameter `p` of `model`.
fn burn_shape<B: Backend>(model: &Decoder<B>, p: &Named) -> [usize; 2] {
    let mut found = None;
    let mut look = |param: &Param<Tensor<B, 2>>| {
        if param.id == p.id {
            found = Some(param.val().dims());
        }
    };
    look(&model.embed_tokens.weight);
    if let Some(h) = &model.lm_head {
        look(&h.weight);
    }
    for layer in &model.layers {
        let a = &layer.self_attn;
        for l in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj] {
            look(&l.weight);
        }
        for l in [&layer.mlp.gate_proj, &layer.mlp.up_proj, &layer.mlp.down_proj] {
            look(&l.weight);
        }
    }
    found.expect("the parameter belongs to the model")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::tiny_for_tests;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Module;
    use burn::record::Recorder;

    type B = Autodiff<NdArray<f32>>;

    /// A burn model and optimizer after one AdamW step (so the optimizer has moments).
    fn stepped() -> (Decoder<B>, OptimizerAdaptor<AdamW, Decoder<B>, B>) {
        let device = Default::default();
        let config = tiny_for_tests();
        let model = Decoder::<B>::init(&config, &device).unwrap();
        let mut optimizer = OptimizerAdaptor::<AdamW, Decoder<B>, B>::from(AdamW::default());
        let ids = Tensor::<B, 2, burn::tensor::Int>::from_data(TensorData::new(vec![1i64, 5, 9, 3], [1, 4]), &device);
        let pos = Tensor::<B, 2, burn::tensor::Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [1, 4]), &device);
        let seg = Tensor::<B, 2, burn::tensor::Int>::zeros([1, 4], &device);
        let loss = model.forward(ids, pos, seg).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optimizer.step(1e-2, model, grads);
        (model, optimizer)
    }

    /// The checkpoint files round-trip the state exactly, and a checkpoint in burn's older format
    /// (`model.mpk`, `optim.mpk`) reads as the same state.
    #[test]
    fn checkpoint_files_round_trip_and_the_older_format_still_reads() {
        let config = tiny_for_tests();
        let (model, optimizer) = stepped();
        let state = EngineState::of_burn(&model, &optimizer).unwrap();
        assert_eq!(state.moments.as_ref().map(|m| m.steps), Some(1));
        let dir = tempfile::tempdir().unwrap();
        state.save(dir.path(), &config).unwrap();
        let back = EngineState::load::<B>(dir.path(), &config, &Default::default()).unwrap();
        assert_eq!(back, state);
        // The weights file is what transformers reads: every tensor under its HF name and shape.
        let (tensors, meta) = crate::hf::read_tensors(&dir.path().join(MODEL_FILE)).unwrap();
        assert_eq!(tensors.len(), config.hf_shapes().len());
        assert_eq!(meta.get("format").map(String::as_str), Some("pt"));

        let old = tempfile::tempdir().unwrap();
        let recorder = burn::record::NamedMpkFileRecorder::<burn::record::FullPrecisionSettings>::new();
        model.clone().save_file(old.path().join("model"), &recorder).unwrap();
        recorder
            .record(optimizer.to_record(), old.path().join("optim"))
            .unwrap();
        let read = EngineState::load::<B>(old.path(), &config, &Default::default()).unwrap();
        assert_eq!(read, state);
        // A mis-shaped file is named, not a panic.
        let wrong = ModelConfig {
            hidden_size: 64,
            ..config.clone()
        };
        let e = EngineState::load::<B>(dir.path(), &wrong, &Default::default()).unwrap_err();
        assert!(e.to_string().contains("model.safetensors"), "{e}");
    }
}
