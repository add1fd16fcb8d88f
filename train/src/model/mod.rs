//! The decoder: a Llama-style transformer (RMSNorm, RoPE, SwiGLU, grouped-query attention,
//! optional q/k/v biases, q/k norms, sliding windows and tied embeddings), generic over burn
//! backends; every family `config.rs` reads.
//!
//! Follows `transformers`' `modeling_llama.py`, `modeling_qwen2.py`, `modeling_qwen3.py`
//! (`q_norm`/`k_norm` over each head before RoPE), `modeling_mistral.py` and `modeling_phi3.py`
//! (its fused projections are split on load, `hf.rs`), `modeling_gemma2.py` and
//! `modeling_gemma3.py` (see [`config::GemmaSettings`]). Field names are the `state_dict` names
//! (`embed_tokens`, `layers.{i}.self_attn.q_proj`, `mlp.gate_proj`, `input_layernorm`, `norm`,
//! `lm_head`), so loading weights is a transpose and a `model.` prefix (see `hf.rs`). Choices:
//! RMSNorm computes in the activation dtype (HF upcasts to fp32; on CPU both are fp32); RoPE angles
//! are computed from `position_ids` on every forward, so positions need no table and may restart
//! per segment (packing, Multiverse); sliding windows count by index in the row, as
//! `transformers`' masks do.

pub mod config;
pub mod rope;

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor};

pub use config::{ModelConfig, ModelType};

use crate::attention::AttentionMask;
use rope::Rope;

/// Root-mean-square layer norm with a learned scale, `x / sqrt(mean(x²) + eps) * weight`
/// (`* (1 + weight)` for Gemma, whose files store the scale minus one).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel scale (`weight` in HF).
    pub weight: Param<Tensor<B, 1>>,
    eps: f64,
    /// Whether the scale is `1 + weight`.
    #[module(skip)]
    unit_offset: bool,
}

impl<B: Backend> RmsNorm<B> {
    /// A norm of width `size` with unit scale.
    pub fn new(size: usize, eps: f64, device: &B::Device) -> Self {
        RmsNorm {
            weight: Param::from_tensor(Tensor::ones([size], device)),
            eps,
            unit_offset: false,
        }
    }

    /// # Shapes
    /// `x`: `[batch, seq, size]`; returns the same shape.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let rms = x.clone().square().mean_dim(2).add_scalar(self.eps).sqrt();
        let scale = match self.unit_offset {
            true => self.weight.val().add_scalar(1.0),
            false => self.weight.val(),
        };
        (x / rms) * scale.unsqueeze::<3>()
    }

    /// The norm over the last dimension of a 4-D tensor (per head: Qwen3's q/k norms).
    pub fn forward4(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [a, b, c, d] = x.dims();
        self.forward(x.reshape([a, b * c, d])).reshape([a, b, c, d])
    }
}

/// Grouped-query self-attention with RoPE; mirrors `LlamaAttention`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection.
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub o_proj: Linear<B>,
    /// Per-head RMSNorm of the queries before RoPE (Qwen3).
    pub q_norm: Option<RmsNorm<B>>,
    /// Per-head RMSNorm of the keys before RoPE (Qwen3).
    pub k_norm: Option<RmsNorm<B>>,
    /// Scale of q·k (`head_dim^-½`, Gemma's `query_pre_attn_scalar^-½`).
    #[module(skip)]
    scale: f64,
    /// Gemma's soft-capping of the scores, `cap · tanh(s / cap)`.
    #[module(skip)]
    softcap: Option<f64>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

/// Keys and values of one layer for the positions seen so far, `[batch, kv_heads, seq, head_dim]`
/// each, after RoPE and before the grouped-query repeat.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
}

/// The KV cache of a whole model: one [`LayerCache`] per layer, empty until the first forward.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<LayerCache<B>>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `model`.
    pub fn new(model: &Decoder<B>) -> Self {
        KvCache {
            layers: vec![None; model.layers.len()],
        }
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |c| c.k.dims()[2])
    }

    /// True before the first forward.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` copies of batch row 0: the branches of a fork share the prefix's keys and values.
    pub fn fork(&mut self, n: usize) {
        self.keep_rows(&vec![0; n]);
    }

    /// One sequence (batch 1) from a fork's branches: the first `prefix` positions of row 0, then,
    /// for each row in order, the positions `slots[row]` of that row. Keys keep the rotary
    /// positions they were computed with, so branches that restarted their positions stay so.
    ///
    /// # Panics
    /// When `slots` has more rows than the cache, or a slot is past its end (callers build the
    /// slots from what they fed).
    pub fn join(&self, prefix: usize, slots: &[Vec<usize>]) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref().map(|c| {
                    let device = c.k.device();
                    let pick = |t: &Tensor<B, 4>| {
                        let [_, h, _, d] = t.dims();
                        let mut parts = vec![t.clone().slice([0..1, 0..h, 0..prefix, 0..d])];
                        for (row, s) in slots.iter().enumerate() {
                            if s.is_empty() {
                                continue;
                            }
                            let idx: Vec<i64> = s.iter().map(|&i| i as i64).collect();
                            let idx =
                                Tensor::<B, 1, Int>::from_data(burn::tensor::TensorData::new(idx, [s.len()]), &device);
                            parts.push(
                                t.clone()
                                    .slice([row..row + 1, 0..h, 0..t.dims()[2], 0..d])
                                    .select(2, idx),
                            );
                        }
                        Tensor::cat(parts, 2)
                    };
                    LayerCache {
                        k: pick(&c.k),
                        v: pick(&c.v),
                    }
                })
            })
            .collect();
        KvCache { layers }
    }

    /// Keeps only the batch rows `rows` (in that order), e.g. when finished sequences leave.
    pub fn keep_rows(&mut self, rows: &[usize]) {
        let Some(device) = self.layers.iter().flatten().next().map(|c| c.k.device()) else {
            return;
        };
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(burn::tensor::TensorData::new(idx, [rows.len()]), &device);
        for c in self.layers.iter_mut().flatten() {
            c.k = c.k.clone().select(0, idx.clone());
            c.v = c.v.clone().select(0, idx.clone());
        }
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// `x`: `[batch, seq, hidden]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        self.forward_cached(x, cos, sin, mask, None)
    }

    /// As [`Attention::forward`], but keys and values of earlier positions come from `cache`, and
    /// this call's are appended to it. The mask is `[batch, 1, seq, cached + seq]`.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        mask: &AttentionMask<B>,
        cache: Option<&mut Option<LayerCache<B>>>,
    ) -> Tensor<B, 3> {
        let (q, mut k, mut v) = self.qkv(x, cos, sin);
        if let Some(slot) = cache {
            if let Some(past) = slot.take() {
                k = Tensor::cat(vec![past.k, k], 2);
                v = Tensor::cat(vec![past.v, v], 2);
            }
            *slot = Some(LayerCache {
                k: k.clone(),
                v: v.clone(),
            });
        }
        self.attend(q, k, v, mask, None).0
    }

    /// Rotated queries and keys and the values of `x`, `[batch, heads, seq, head_dim]` (keys and
    /// values with the key/value heads).
    fn qkv(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, t, _] = x.dims();
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |y: Tensor<B, 3>, n: usize, norm: Option<&RmsNorm<B>>| {
            let y = y.reshape([b, t, n, d]);
            let y = match norm {
                Some(norm) => norm.forward4(y),
                None => y,
            };
            y.swap_dims(1, 2)
        };
        let q = rope::apply(heads(self.q_proj.forward(x.clone()), h, self.q_norm.as_ref()), cos, sin);
        let k = rope::apply(
            heads(self.k_proj.forward(x.clone()), kv, self.k_norm.as_ref()),
            cos,
            sin,
        );
        let v = heads(self.v_proj.forward(x), kv, None);
        (q, k, v)
    }

    /// Attention of rotated queries over keys and values (`[batch, heads, seq, head_dim]`, keys
    /// and values before the grouped-query repeat), with an optional additive score bias
    /// (`[batch, 1, seq_q, seq_k]`, e.g. the localist dial); returns the output projection and
    /// the attention weights `[batch, heads, seq_q, seq_k]`.
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: &AttentionMask<B>,
        bias: Option<&Tensor<B, 4>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let [b, h, t, d] = q.dims();
        let kv = k.dims()[1];
        let (k, v) = (repeat_kv(k, h / kv), repeat_kv(v, h / kv));
        let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(self.scale);
        if let Some(cap) = self.softcap {
            scores = scores.div_scalar(cap).tanh().mul_scalar(cap);
        }
        if let Some(bias) = bias {
            let [_, _, tq, tk] = scores.dims();
            scores = scores + bias.clone().expand([b, h, tq, tk]);
        }
        let probs = softmax(mask.apply(scores), 3);
        let out = probs.clone().matmul(v);
        (self.o_proj.forward(out.swap_dims(1, 2).reshape([b, t, h * d])), probs)
    }

    /// As [`Attention::forward`] (no cache), with an additive score bias, returning the weights.
    pub fn forward_with_weights(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        mask: &AttentionMask<B>,
        bias: Option<&Tensor<B, 4>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let (q, k, v) = self.qkv(x, cos, sin);
        self.attend(q, k, v, mask, bias)
    }
}

/// Repeats each key/value head `n` times so grouped-query heads line up with query heads.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n: usize) -> Tensor<B, 4> {
    if n == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, n, t, d])
        .reshape([b, kv * n, t, d])
}

/// SwiGLU feed-forward, `down(silu(gate(x)) * up(x))`; mirrors `LlamaMLP` (GeGLU with the tanh
/// GELU for Gemma).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection.
    pub gate_proj: Linear<B>,
    /// Up projection.
    pub up_proj: Linear<B>,
    /// Down projection.
    pub down_proj: Linear<B>,
    /// GELU (tanh approximation, `gelu_pytorch_tanh`) instead of SiLU.
    #[module(skip)]
    gelu: bool,
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// `x`: `[batch, seq, hidden]`; returns the same shape.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = self.gate_proj.forward(x.clone());
        let gate = match self.gelu {
            // 0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))
            true => {
                let inner = (gate.clone() + gate.clone().powi_scalar(3).mul_scalar(0.044715))
                    .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
                gate.mul(inner.tanh().add_scalar(1.0)).mul_scalar(0.5)
            }
            false => silu(gate),
        };
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

/// One pre-norm decoder layer; mirrors `LlamaDecoderLayer`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Self-attention.
    pub self_attn: Attention<B>,
    /// Norm before the MLP (Llama); norm of the attention's output (Gemma).
    pub post_attention_layernorm: RmsNorm<B>,
    /// Feed-forward.
    pub mlp: Mlp<B>,
    /// Gemma's norm before the MLP.
    pub pre_feedforward_layernorm: Option<RmsNorm<B>>,
    /// Gemma's norm of the MLP's output.
    pub post_feedforward_layernorm: Option<RmsNorm<B>>,
}

impl<B: Backend> DecoderLayer<B> {
    /// The residual stream after the attention's output `a`.
    fn add_attention(&self, x: Tensor<B, 3>, a: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.pre_feedforward_layernorm {
            Some(_) => x + self.post_attention_layernorm.forward(a),
            None => x + a,
        }
    }

    /// The residual stream after the MLP.
    fn add_mlp(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match (&self.pre_feedforward_layernorm, &self.post_feedforward_layernorm) {
            (Some(pre), Some(post)) => x.clone() + post.forward(self.mlp.forward(pre.forward(x))),
            _ => x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x)),
        }
    }
}

/// The whole causal language model; mirrors `LlamaForCausalLM`.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// Token embeddings (`model.embed_tokens`).
    pub embed_tokens: Embedding<B>,
    /// The layers (`model.layers`).
    pub layers: Vec<DecoderLayer<B>>,
    /// Final norm (`model.norm`).
    pub norm: RmsNorm<B>,
    /// Output projection; `None` when tied to the embeddings.
    pub lm_head: Option<Linear<B>>,
    /// RoPE (its frequencies are computed per forward).
    #[module(skip)]
    rope: Rope,
    /// Gemma 3's RoPE of the sliding layers.
    #[module(skip)]
    local_rope: Option<Rope>,
    /// Per layer, its sliding window.
    #[module(skip)]
    windows: Vec<Option<usize>>,
    /// Gemma's embedding scale, `sqrt(hidden_size)`.
    #[module(skip)]
    embed_scale: Option<f64>,
    /// Gemma's soft-capping of the logits.
    #[module(skip)]
    final_softcap: Option<f64>,
}

/// What the layers of one forward read (see [`Decoder::layer_inputs`]).
struct LayerInputs<B: Backend> {
    global: (Tensor<B, 4>, Tensor<B, 4>),
    local: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    windowed: Option<AttentionMask<B>>,
    windows: Vec<bool>,
}

impl<B: Backend> LayerInputs<B> {
    /// Cos, sin and mask of layer `i`: a sliding layer takes the windowed mask and, in Gemma 3,
    /// the local RoPE.
    fn of<'a>(
        &'a self,
        i: usize,
        mask: &'a AttentionMask<B>,
    ) -> (&'a Tensor<B, 4>, &'a Tensor<B, 4>, &'a AttentionMask<B>) {
        let sliding = self.windows.get(i).copied().unwrap_or(false);
        let (cos, sin) = match (&self.local, sliding) {
            (Some(local), true) => local,
            _ => &self.global,
        };
        let m = self.windowed.as_ref().filter(|_| sliding).unwrap_or(mask);
        (cos, sin, m)
    }
}

/// Builds a linear layer from HF-layout weights (`[out, in]`) and an optional bias.
pub fn linear_from<B: Backend>(weight_out_in: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(weight_out_in.transpose()),
        bias: bias.map(Param::from_tensor),
    }
}

/// Where the tensors of a model come from: random initialisation or a weight file. Names and
/// shapes are HF's (`model.layers.0.self_attn.q_proj.weight`, `[out, in]`).
pub trait TensorSource<B: Backend> {
    /// The 2-D tensor `name` of shape `shape`.
    fn matrix(&mut self, name: &str, shape: [usize; 2]) -> Result<Tensor<B, 2>, crate::error::TrainError>;
    /// The 1-D tensor `name` of length `len`; `ones` says how to initialise it when random.
    fn vector(&mut self, name: &str, len: usize, ones: bool) -> Result<Tensor<B, 1>, crate::error::TrainError>;
}

/// Random initialisation as `transformers` does it: normal(0, initializer_range) matrices, zero
/// biases, unit norms.
pub struct RandomInit<'a, B: Backend> {
    /// Standard deviation of the matrices.
    pub std: f64,
    /// Device to create tensors on.
    pub device: &'a B::Device,
}

impl<B: Backend> TensorSource<B> for RandomInit<'_, B> {
    fn matrix(&mut self, _name: &str, shape: [usize; 2]) -> Result<Tensor<B, 2>, crate::error::TrainError> {
        Ok(Tensor::random(shape, Distribution::Normal(0.0, self.std), self.device))
    }

    fn vector(&mut self, _name: &str, len: usize, ones: bool) -> Result<Tensor<B, 1>, crate::error::TrainError> {
        Ok(if ones {
            Tensor::ones([len], self.device)
        } else {
            Tensor::zeros([len], self.device)
        })
    }
}

impl<B: Backend> Decoder<B> {
    /// Builds the model from `source`, asking for every tensor by its HF name.
    ///
    /// # Errors
    /// When the source lacks a tensor or has one of the wrong shape.
    pub fn from_source<S: TensorSource<B>>(
        config: &ModelConfig,
        source: &mut S,
    ) -> Result<Self, crate::error::TrainError> {
        config.validate()?;
        let (h, d) = (config.hidden_size, config.head_dim);
        let (q, kv) = (config.num_attention_heads * d, config.num_key_value_heads * d);
        let eps = config.rms_norm_eps;
        let gemma = config.gemma.as_ref();
        // Gemma stores `scale - 1`: a unit norm is zeros.
        let ones = gemma.is_none();
        let norm = |weight: Tensor<B, 1>| RmsNorm {
            weight: Param::from_tensor(weight),
            eps,
            unit_offset: gemma.is_some(),
        };
        let embed = source.matrix("model.embed_tokens.weight", [config.vocab_size, h])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let qk_norm = |source: &mut S, name: &str| -> Result<Option<RmsNorm<B>>, crate::error::TrainError> {
                if !config.qk_norm() {
                    return Ok(None);
                }
                Ok(Some(norm(source.vector(
                    &format!("{p}.self_attn.{name}.weight"),
                    d,
                    ones,
                )?)))
            };
            let (q_norm, k_norm) = (qk_norm(source, "q_norm")?, qk_norm(source, "k_norm")?);
            let mut lin =
                |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear<B>, crate::error::TrainError> {
                    let w = source.matrix(&format!("{p}.{name}.weight"), [out, inp])?;
                    let b = if bias {
                        Some(source.vector(&format!("{p}.{name}.bias"), out, false)?)
                    } else {
                        None
                    };
                    Ok(linear_from(w, b))
                };
            let bias = config.attention_bias;
            let self_attn = Attention {
                q_proj: lin("self_attn.q_proj", q, h, bias)?,
                k_proj: lin("self_attn.k_proj", kv, h, bias)?,
                v_proj: lin("self_attn.v_proj", kv, h, bias)?,
                o_proj: lin("self_attn.o_proj", h, q, false)?,
                q_norm,
                k_norm,
                scale: 1.0 / gemma.map_or(d as f64, |g| g.query_pre_attn_scalar).sqrt(),
                softcap: gemma.and_then(|g| g.attn_logit_softcapping),
                num_heads: config.num_attention_heads,
                num_kv_heads: config.num_key_value_heads,
                head_dim: d,
            };
            let mlp = Mlp {
                gate_proj: lin("mlp.gate_proj", config.intermediate_size, h, false)?,
                up_proj: lin("mlp.up_proj", config.intermediate_size, h, false)?,
                down_proj: lin("mlp.down_proj", h, config.intermediate_size, false)?,
                gelu: gemma.is_some(),
            };
            let mut extra_norm = |name: &str| -> Result<Option<RmsNorm<B>>, crate::error::TrainError> {
                if gemma.is_none() {
                    return Ok(None);
                }
                Ok(Some(norm(source.vector(&format!("{p}.{name}.weight"), h, ones)?)))
            };
            let (pre_feedforward_layernorm, post_feedforward_layernorm) = (
                extra_norm("pre_feedforward_layernorm")?,
                extra_norm("post_feedforward_layernorm")?,
            );
            layers.push(DecoderLayer {
                input_layernorm: norm(source.vector(&format!("{p}.input_layernorm.weight"), h, ones)?),
                self_attn,
                post_attention_layernorm: norm(source.vector(
                    &format!("{p}.post_attention_layernorm.weight"),
                    h,
                    ones,
                )?),
                mlp,
                pre_feedforward_layernorm,
                post_feedforward_layernorm,
            });
        }
        let final_norm = norm(source.vector("model.norm.weight", h, ones)?);
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(linear_from(
                source.matrix("lm_head.weight", [config.vocab_size, h])?,
                None,
            ))
        };
        Ok(Decoder {
            embed_tokens: Embedding {
                weight: Param::from_tensor(embed),
            },
            layers,
            norm: final_norm,
            lm_head,
            rope: config.rope(),
            local_rope: gemma.and_then(|g| g.local_rope_theta).map(|theta| Rope {
                theta,
                scaling: rope::RopeScaling::Default,
                ..config.rope()
            }),
            windows: (0..config.num_hidden_layers).map(|l| config.window(l)).collect(),
            embed_scale: gemma.map(|_| (h as f64).sqrt()),
            final_softcap: gemma.and_then(|g| g.final_logit_softcapping),
        })
    }

    /// A randomly initialised model.
    pub fn init(config: &ModelConfig, device: &B::Device) -> Result<Self, crate::error::TrainError> {
        Decoder::from_source(
            config,
            &mut RandomInit {
                std: config.initializer_range,
                device,
            },
        )
    }

    /// What every layer of one forward reads: RoPE cos and sin for `position_ids` (a
    /// length-dependent scaling, `dynamic` or `longrope`, sees the batch's largest position plus
    /// one, as `transformers` does), Gemma 3's local ones, and `mask` narrowed to the sliding
    /// window (all windowed layers share it).
    fn layer_inputs(&self, position_ids: Tensor<B, 2, Int>, mask: &AttentionMask<B>) -> LayerInputs<B> {
        let seq_len = match self.rope.length_limit() {
            Some(_) => position_ids.clone().max().into_scalar().elem::<i64>().max(0) as usize + 1,
            None => 0,
        };
        let local = self
            .local_rope
            .as_ref()
            .map(|r| rope::angles(position_ids.clone(), &r.frequencies(0)));
        LayerInputs {
            global: rope::angles(position_ids, &self.rope.frequencies(seq_len)),
            local,
            windowed: self.windows.iter().flatten().next().map(|size| mask.windowed(*size)),
            windows: self.windows.iter().map(Option::is_some).collect(),
        }
    }

    /// Size of the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.embed_tokens.weight.device()
    }

    /// Final hidden states.
    ///
    /// # Shapes
    /// `input_ids`, `position_ids`: `[batch, seq]`; returns `[batch, seq, hidden]`.
    pub fn hidden(
        &self,
        input_ids: Tensor<B, 2, Int>,
        position_ids: Tensor<B, 2, Int>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        self.hidden_cached(input_ids, position_ids, mask, None)
    }

    /// Final hidden states of new positions, attending to the positions in `cache` too and
    /// appending the new ones to it; the sampler's prefill and decode steps.
    ///
    /// # Shapes
    /// `input_ids`, `position_ids`: `[batch, seq]`; `mask`: `[batch, 1, seq, cached + seq]`;
    /// returns `[batch, seq, hidden]`.
    pub fn hidden_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        position_ids: Tensor<B, 2, Int>,
        mask: &AttentionMask<B>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let inputs = self.layer_inputs(position_ids, mask);
        let mut x = self.embed(input_ids);
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let (cos, sin, m) = inputs.of(i, mask);
            let a = layer
                .self_attn
                .forward_cached(layer.input_layernorm.forward(x.clone()), cos, sin, m, slot);
            x = layer.add_mlp(layer.add_attention(x, a));
        }
        self.norm.forward(x)
    }

    /// Final hidden states with a per-layer additive attention bias (`biases[l]`, `[batch, 1, seq,
    /// seq]`, or none), and every layer's attention weights `[batch, heads, seq, seq]`: the localist
    /// dial and its metrics. Without biases it computes what [`Decoder::hidden`] computes.
    pub fn hidden_with_weights(
        &self,
        input_ids: Tensor<B, 2, Int>,
        position_ids: Tensor<B, 2, Int>,
        mask: &AttentionMask<B>,
        biases: &[Option<Tensor<B, 4>>],
    ) -> (Tensor<B, 3>, Vec<Tensor<B, 4>>) {
        let inputs = self.layer_inputs(position_ids, mask);
        let mut x = self.embed(input_ids);
        let mut weights = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let bias = biases.get(i).and_then(Option::as_ref);
            let (cos, sin, m) = inputs.of(i, mask);
            let (a, w) =
                layer
                    .self_attn
                    .forward_with_weights(layer.input_layernorm.forward(x.clone()), cos, sin, m, bias);
            weights.push(w);
            x = layer.add_mlp(layer.add_attention(x, a));
        }
        (self.norm.forward(x), weights)
    }

    /// Projects hidden states to vocabulary logits (through the embeddings when tied).
    ///
    /// # Shapes
    /// `hidden`: `[batch, seq, hidden]`; returns `[batch, seq, vocab]`.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let logits = match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let w = self.embed_tokens.weight.val(); // [vocab, hidden]
                hidden.matmul(w.transpose().unsqueeze::<3>())
            }
        };
        match self.final_softcap {
            Some(cap) => logits.div_scalar(cap).tanh().mul_scalar(cap),
            None => logits,
        }
    }

    /// Token embeddings (times Gemma's scale).
    fn embed(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = self.embed_tokens.forward(input_ids);
        match self.embed_scale {
            Some(s) => x.mul_scalar(s),
            None => x,
        }
    }

    /// Logits of every position.
    ///
    /// # Shapes
    /// `input_ids`, `position_ids`, `segment_ids`: `[batch, seq]`; returns `[batch, seq, vocab]`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        position_ids: Tensor<B, 2, Int>,
        segment_ids: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let mask = AttentionMask::segments(segment_ids);
        self.logits(self.hidden(input_ids, position_ids, &mask))
    }
}
