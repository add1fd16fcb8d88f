//! Moving a model and its AdamW state between burn (`Decoder`, `OptimizerAdaptor<AdamW>`) and the
//! fast path's flat buffers, so a run on the fast path writes the same checkpoints as the burn path
//! (`model.mpk`, `optim.mpk`) and either path resumes the other's.
//!
//! Parameters are matched by their Hugging Face name; burn stores linear weights transposed
//! (`[in, out]`), the fast path in HF layout (`[out, in]`), and moments follow their weight.

use std::collections::BTreeMap;

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::optim::Optimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::error::TrainError;
use crate::model::{Decoder, ModelConfig, TensorSource};
use crate::trainer::optim::{AdamW, AdamWState};

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
        vectors.push((layer.input_layernorm.weight.id, format!("{p}.input_layernorm.weight")));
        vectors.push((
            layer.post_attention_layernorm.weight.id,
            format!("{p}.post_attention_layernorm.weight"),
        ));
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
            .ok_or_else(|| TrainError::Config(format!("fast path: no values for `{name}`")))?;
        if v.len() != len {
            return Err(TrainError::Config(format!(
                "fast path: `{name}` has {} values, expected {len}",
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
    for p in named_params(model) {
        let get = |map: &BTreeMap<String, Vec<f32>>| {
            map.get(&p.name)
                .cloned()
                .ok_or_else(|| TrainError::Config(format!("fast path: no moments for `{}`", p.name)))
        };
        let (mm, vv) = (get(m)?, get(v)?);
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
