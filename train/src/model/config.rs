//! The model configuration, mirroring `config.json` of the `transformers` decoders that share
//! Llama's shape (RMSNorm, RoPE, SwiGLU, grouped-query attention): `llama` (with Llama 3.1's and
//! every other RoPE scaling), `qwen2`, `qwen3`, `mistral` and `phi3`, so a folder written by one
//! loads in the other.
//!
//! What sets the families apart, and where it is handled: Qwen2's q/k/v biases
//! (`attention_bias`); Qwen3's per-head RMSNorm of queries and keys before RoPE
//! ([`ModelConfig::qk_norm`]); sliding-window attention (Mistral, Phi-3, Qwen with
//! `use_sliding_window`: [`SlidingWindow`]); Phi-3's fused `qkv_proj` and `gate_up_proj` in the
//! files ([`ModelConfig::fused_tensors`]; in memory every family has separate projections);
//! RoPE scaling (`rope.rs`).
//!
//! Choices: fields absent from a `config.json` take the `transformers` defaults of the named
//! `model_type` (Qwen2 has q/k/v biases, Llama none; Qwen3's `head_dim` is 128, Mistral's window
//! 4096); otherwise `head_dim` defaults to `hidden_size / num_attention_heads`. Settings that
//! change the computation and that we do not implement (another activation, partial rotary
//! embeddings, MLP biases) are refused by name rather than ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rope::{Rope, RopeScaling};
use crate::error::TrainError;

/// Which `transformers` architecture a model is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// `LlamaForCausalLM`.
    Llama,
    /// `Qwen2ForCausalLM`.
    Qwen2,
    /// `Qwen3ForCausalLM`: q/k norms, no biases.
    Qwen3,
    /// `MistralForCausalLM`: Llama with a sliding window.
    Mistral,
    /// `Phi3ForCausalLM`: fused projections in the files, LongRoPE.
    Phi3,
    /// `Gemma2ForCausalLM`: GeGLU, norms around attention and MLP, soft-capping.
    Gemma2,
    /// `Gemma3ForCausalLM` (`gemma3_text`): Gemma 2's layout with q/k norms and a RoPE base of its
    /// own on the sliding layers.
    #[serde(rename = "gemma3_text")]
    Gemma3,
}

impl ModelType {
    /// The `architectures` entry of `config.json`.
    pub fn architecture(self) -> &'static str {
        match self {
            ModelType::Llama => "LlamaForCausalLM",
            ModelType::Qwen2 => "Qwen2ForCausalLM",
            ModelType::Qwen3 => "Qwen3ForCausalLM",
            ModelType::Mistral => "MistralForCausalLM",
            ModelType::Phi3 => "Phi3ForCausalLM",
            ModelType::Gemma2 => "Gemma2ForCausalLM",
            ModelType::Gemma3 => "Gemma3ForCausalLM",
        }
    }

    /// The `model_type` of `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            ModelType::Llama => "llama",
            ModelType::Qwen2 => "qwen2",
            ModelType::Qwen3 => "qwen3",
            ModelType::Mistral => "mistral",
            ModelType::Phi3 => "phi3",
            ModelType::Gemma2 => "gemma2",
            ModelType::Gemma3 => "gemma3_text",
        }
    }

    /// Every family, for messages.
    pub const ALL: [ModelType; 7] = [
        ModelType::Llama,
        ModelType::Qwen2,
        ModelType::Qwen3,
        ModelType::Mistral,
        ModelType::Phi3,
        ModelType::Gemma2,
        ModelType::Gemma3,
    ];

    /// Gemma 2 or 3.
    pub fn is_gemma(self) -> bool {
        matches!(self, ModelType::Gemma2 | ModelType::Gemma3)
    }
}

/// Sliding-window attention: on the layers marked, query `i` sees keys `j` with
/// `i - size < j <= i` (`transformers`' `sliding_window_overlay`), by index in the row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlidingWindow {
    /// Keys each query sees, itself included.
    pub size: usize,
    /// Per layer, whether it slides (`layer_types[i] == "sliding_attention"`).
    pub layers: Vec<bool>,
}

/// What Gemma 2 and 3 compute differently from Llama (`modeling_gemma2.py`, `modeling_gemma3.py`):
/// embeddings scaled by `sqrt(hidden_size)`, RMSNorm scales stored as `w - 1` (`x̂ · (1 + w)`), a
/// norm after attention and around the MLP (`pre_feedforward_layernorm`,
/// `post_feedforward_layernorm`), GeGLU with the tanh GELU, q·k scaled by
/// `query_pre_attn_scalar^-½`, `tanh` soft-capping of attention scores and of the logits (Gemma 2),
/// and (Gemma 3) q/k norms and a RoPE base of their own on the sliding layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmaSettings {
    /// q·k is scaled by `query_pre_attn_scalar^-½` (not `head_dim^-½`).
    pub query_pre_attn_scalar: f64,
    /// Attention scores become `cap · tanh(s / cap)`.
    pub attn_logit_softcapping: Option<f64>,
    /// Logits become `cap · tanh(l / cap)`.
    pub final_logit_softcapping: Option<f64>,
    /// Gemma 3: the RoPE base of the sliding layers (`rope_local_base_freq`), plain RoPE; the
    /// global layers use `rope_theta` and the scaling.
    #[serde(default)]
    pub local_rope_theta: Option<f64>,
}

/// A weight the files hold as one tensor and the model as several: `parts` (name, rows) stacked
/// along the output dimension, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    /// The name in the files.
    pub file: String,
    /// The names in memory and their row counts.
    pub parts: Vec<(String, usize)>,
}

/// A decoder's hyper-parameters under their `config.json` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The family.
    pub model_type: ModelType,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU inner layer.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling (`rope_scaling` / `rope_parameters`).
    #[serde(default)]
    pub rope_scaling: RopeScaling,
    /// Sliding-window attention, if any layer has it.
    #[serde(default)]
    pub sliding_window: Option<SlidingWindow>,
    /// Gemma's departures from Llama (`gemma2` and `gemma3_text` only).
    #[serde(default)]
    pub gemma: Option<GemmaSettings>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence the model is meant for (RoPE itself has no limit here).
    pub max_position_embeddings: usize,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Biases on q, k and v projections (Qwen2).
    pub attention_bias: bool,
    /// Per-head width.
    pub head_dim: usize,
    /// Standard deviation of the normal initialisation.
    pub initializer_range: f64,
    /// Beginning-of-sequence token id, if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id, if any.
    pub eos_token_id: Option<u32>,
    /// Keys of the source `config.json` that the fields above do not decide (`pad_token_id`,
    /// dropout rates, `transformers_version`, and `bos_token_id`/`eos_token_id` when they are
    /// lists, as Llama 3.1's end-of-turn ids are), written back unchanged so an export keeps them.
    #[serde(default)]
    pub extra: serde_json::Map<String, Value>,
}

/// The `config.json` keys that [`ModelConfig::to_hf_json`] decides; every other key of a source
/// file goes to [`ModelConfig::extra`].
const DECIDED: &[&str] = &[
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "num_hidden_layers",
    "rms_norm_eps",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "partial_rotary_factor",
    "original_max_position_embeddings",
    "vocab_size",
    "max_position_embeddings",
    "tie_word_embeddings",
    "hidden_act",
    "initializer_range",
    "torch_dtype",
    "dtype",
    "use_cache",
    "head_dim",
    "attention_bias",
    "mlp_bias",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
    "bos_token_id",
    "eos_token_id",
    "hidden_activation",
    "query_pre_attn_scalar",
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "rope_local_base_freq",
    "sliding_window_pattern",
];

/// `config.json` as written by `transformers`, with optional fields.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    hidden_size: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    num_hidden_layers: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    vocab_size: usize,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    head_dim: Option<usize>,
    initializer_range: Option<f64>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
    rope_scaling: Option<Value>,
    /// transformers 5 writes `rope_parameters: {rope_theta, rope_type, ...}` instead of
    /// `rope_theta` and `rope_scaling`.
    rope_parameters: Option<Value>,
    /// Phi-3 keeps the pre-training length beside `rope_scaling`.
    original_max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    mlp_bias: Option<bool>,
    partial_rotary_factor: Option<f64>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
    hidden_activation: Option<String>,
    query_pre_attn_scalar: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
    rope_local_base_freq: Option<f64>,
    sliding_window_pattern: Option<usize>,
    use_bidirectional_attention: Option<bool>,
}

fn first_id(v: Option<serde_json::Value>) -> Option<u32> {
    match v? {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
        serde_json::Value::Array(a) => a.first().and_then(|n| n.as_u64()).map(|n| n as u32),
        _ => None,
    }
}

impl ModelConfig {
    /// Reads a `config.json` text.
    ///
    /// # Errors
    /// When it does not parse, names another architecture, or asks for something the model code
    /// does not compute (named, with the value).
    pub fn from_hf_json(text: &str) -> Result<Self, TrainError> {
        let bad = |m: String| TrainError::Config(format!("config.json: {m}"));
        let raw: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut hf: HfConfig = serde_json::from_value(raw.clone()).map_err(|e| bad(e.to_string()))?;
        let model_type = ModelType::ALL
            .into_iter()
            .find(|t| hf.model_type.as_deref() == Some(t.name()))
            .ok_or_else(|| {
                let arch = hf.architectures.clone().unwrap_or_default().join(", ");
                let known: Vec<&str> = ModelType::ALL.iter().map(|t| t.name()).collect();
                bad(format!(
                    "model_type {:?} ({arch}) is not supported; firebrand reads {}",
                    hf.model_type,
                    known.join(", ")
                ))
            })?;
        let gemma = model_type.is_gemma();
        if hf.use_bidirectional_attention == Some(true) {
            return Err(bad(
                "use_bidirectional_attention = true (an embedding model): the decoder is causal".into(),
            ));
        }
        // Gemma 3 in transformers 5 nests RoPE by layer type: the global layers' parameters are
        // the model's RoPE, the sliding layers' base is Gemma's local one.
        let mut local_rope_theta = hf.rope_local_base_freq;
        if let Some(nested) = hf.rope_parameters.clone().filter(|r| r.get("full_attention").is_some()) {
            let local = &nested["sliding_attention"];
            if local
                .get("rope_type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "default")
            {
                return Err(bad(
                    "rope_parameters.sliding_attention: only default RoPE on the sliding layers".into(),
                ));
            }
            local_rope_theta = local.get("rope_theta").and_then(Value::as_f64).or(local_rope_theta);
            hf.rope_parameters = Some(nested["full_attention"].clone());
        }
        // Gemma names its activation `hidden_activation` (and may keep a stale `hidden_act`).
        let (act, expected) = match gemma {
            true => (hf.hidden_activation.as_deref(), "gelu_pytorch_tanh"),
            false => (hf.hidden_act.as_deref(), "silu"),
        };
        if let Some(act) = act.filter(|a| *a != expected && !(gemma && *a == "gelu_tanh")) {
            return Err(bad(format!(
                "hidden activation {act:?}: the {} MLP computes {expected} only",
                model_type.name()
            )));
        }
        if hf.mlp_bias == Some(true) {
            return Err(bad("mlp_bias = true: the MLP has no biases here".into()));
        }
        // transformers 5 moves rope_theta and the scaling into `rope_parameters`; 4.x writes
        // `rope_theta` and `rope_scaling`. Either may be null.
        let rope = hf
            .rope_scaling
            .clone()
            .filter(|v| !v.is_null())
            .or_else(|| hf.rope_parameters.clone().filter(|v| !v.is_null()))
            .unwrap_or(Value::Null);
        let partial = hf
            .partial_rotary_factor
            .or_else(|| rope.get("partial_rotary_factor").and_then(Value::as_f64))
            .unwrap_or(1.0);
        if partial != 1.0 {
            return Err(bad(format!(
                "partial_rotary_factor {partial}: RoPE here rotates the whole head"
            )));
        }
        let rope_theta = hf
            .rope_theta
            .or_else(|| {
                hf.rope_parameters
                    .as_ref()
                    .and_then(|r| r.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .or_else(|| rope.get("rope_theta").and_then(Value::as_f64))
            .unwrap_or(if model_type == ModelType::Gemma3 {
                1_000_000.0
            } else {
                10_000.0
            });
        let max_position_embeddings = hf.max_position_embeddings.unwrap_or(match model_type {
            ModelType::Mistral => 131_072,
            ModelType::Phi3 => 4096,
            _ => 2048,
        });
        let mut rope_obj = rope;
        if model_type == ModelType::Phi3 {
            // Phi-3 reads "su" and "yarn" as LongRoPE (`Phi3Config.convert_rope_params_to_dict`).
            if let Some(m) = rope_obj.as_object_mut() {
                let kind = m.get("rope_type").or_else(|| m.get("type")).and_then(Value::as_str);
                if matches!(kind, Some("su" | "yarn")) {
                    m.insert("rope_type".into(), "longrope".into());
                }
            }
        }
        let top_original = match model_type {
            ModelType::Phi3 => Some(hf.original_max_position_embeddings.unwrap_or(4096)),
            _ => hf.original_max_position_embeddings,
        };
        let rope_scaling = RopeScaling::from_hf(&rope_obj, max_position_embeddings, top_original).map_err(bad)?;
        let layers = hf.num_hidden_layers;
        let window = match model_type {
            ModelType::Llama => None,
            // Qwen keeps `sliding_window` in the file but uses it only with `use_sliding_window`.
            ModelType::Qwen2 | ModelType::Qwen3 => hf.sliding_window.filter(|_| hf.use_sliding_window == Some(true)),
            // An absent key is transformers' default of 4096; null turns the window off.
            ModelType::Mistral if raw.get("sliding_window").is_none() => Some(4096),
            ModelType::Mistral | ModelType::Phi3 => hf.sliding_window,
            ModelType::Gemma2 | ModelType::Gemma3 if raw.get("sliding_window").is_none() => Some(4096),
            ModelType::Gemma2 | ModelType::Gemma3 => hf.sliding_window,
        };
        let sliding_window = window.map(|size| {
            let layers = match (&hf.layer_types, model_type) {
                (Some(types), _) => types.iter().map(|t| t == "sliding_attention").collect(),
                (None, ModelType::Qwen2 | ModelType::Qwen3) => {
                    let first = hf.max_window_layers.unwrap_or(layers);
                    (0..layers).map(|i| i >= first).collect()
                }
                // Gemma 2 alternates, the first layer sliding.
                (None, ModelType::Gemma2) => (0..layers).map(|i| i % 2 == 0).collect(),
                // Gemma 3: every `sliding_window_pattern`-th layer (6) attends in full.
                (None, ModelType::Gemma3) => {
                    let pattern = hf.sliding_window_pattern.unwrap_or(6).max(1);
                    (0..layers).map(|i| (i + 1) % pattern != 0).collect()
                }
                (None, _) => vec![true; layers],
            };
            SlidingWindow { size, layers }
        });
        let sliding_window = sliding_window.filter(|w| w.layers.iter().any(|&s| s));
        let config = ModelConfig {
            model_type,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            num_hidden_layers: layers,
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(match model_type {
                ModelType::Phi3 => 1e-5,
                _ => 1e-6,
            }),
            rope_theta,
            rope_scaling,
            sliding_window,
            // An absent cap is transformers' default; null turns it off.
            // Gemma 2's default caps are 50 and 30, Gemma 3's none.
            gemma: gemma.then(|| {
                let two = model_type == ModelType::Gemma2;
                GemmaSettings {
                    query_pre_attn_scalar: hf.query_pre_attn_scalar.unwrap_or(256.0),
                    attn_logit_softcapping: match raw.get("attn_logit_softcapping") {
                        None => two.then_some(50.0),
                        Some(_) => hf.attn_logit_softcapping,
                    },
                    final_logit_softcapping: match raw.get("final_logit_softcapping") {
                        None => two.then_some(30.0),
                        Some(_) => hf.final_logit_softcapping,
                    },
                    local_rope_theta: (!two).then(|| local_rope_theta.unwrap_or(10_000.0)),
                }
            }),
            vocab_size: hf.vocab_size,
            max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(gemma),
            attention_bias: hf.attention_bias.unwrap_or(model_type == ModelType::Qwen2),
            head_dim: hf.head_dim.unwrap_or(match model_type {
                ModelType::Qwen3 => 128,
                ModelType::Gemma2 | ModelType::Gemma3 => 256,
                _ => hf.hidden_size / hf.num_attention_heads.max(1),
            }),
            initializer_range: hf.initializer_range.unwrap_or(0.02),
            bos_token_id: first_id(hf.bos_token_id),
            eos_token_id: first_id(hf.eos_token_id),
            extra: raw
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| {
                    let list_id = matches!(k.as_str(), "bos_token_id" | "eos_token_id") && v.is_array();
                    list_id || !DECIDED.contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        config.validate()?;
        Ok(config)
    }

    /// The `config.json` text `transformers` (4.x and 5) reads back into the same model.
    pub fn to_hf_json(&self) -> String {
        let rope = self.rope_scaling.to_hf(self.rope_theta);
        let mut v = serde_json::json!({
            "architectures": [self.model_type.architecture()],
            "model_type": self.model_type.name(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            // transformers 5 reads this; 4.x reads `rope_theta` and `rope_scaling`.
            "rope_parameters": rope.clone(),
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "initializer_range": self.initializer_range,
            "torch_dtype": "float32",
            "dtype": "float32",
            "use_cache": true,
            "head_dim": self.head_dim,
        });
        let obj = v.as_object_mut().expect("a JSON object literal");
        if self.rope_scaling != RopeScaling::Default {
            obj.insert("rope_scaling".into(), rope);
        }
        let window = self.sliding_window.as_ref();
        match self.model_type {
            ModelType::Llama => {
                obj.insert("attention_bias".into(), self.attention_bias.into());
                obj.insert("mlp_bias".into(), false.into());
            }
            ModelType::Qwen2 | ModelType::Qwen3 => {
                // Qwen2 always has q/k/v biases and Qwen3 none; the window needs the switch.
                if self.model_type == ModelType::Qwen3 {
                    obj.insert("attention_bias".into(), false.into());
                }
                obj.insert("use_sliding_window".into(), window.is_some().into());
                if let Some(w) = window {
                    let first = w.layers.iter().position(|&s| s).unwrap_or(0);
                    obj.insert("max_window_layers".into(), first.into());
                }
            }
            ModelType::Phi3 => {
                let original = match &self.rope_scaling {
                    RopeScaling::Longrope {
                        original_max_position_embeddings,
                        ..
                    } => *original_max_position_embeddings,
                    _ => self.max_position_embeddings,
                };
                obj.insert("original_max_position_embeddings".into(), original.into());
            }
            ModelType::Mistral => {}
            ModelType::Gemma2 | ModelType::Gemma3 => {
                let g = self.gemma.as_ref();
                if let Some(local) = g.and_then(|g| g.local_rope_theta) {
                    obj.insert("rope_local_base_freq".into(), local.into());
                    // transformers 5 reads RoPE by layer type.
                    let global = obj["rope_parameters"].clone();
                    let nested = serde_json::json!({
                        "full_attention": global,
                        "sliding_attention": {"rope_type": "default", "rope_theta": local},
                    });
                    obj.insert("rope_parameters".into(), nested);
                }
                obj.remove("hidden_act");
                obj.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
                obj.insert("attention_bias".into(), false.into());
                // An integer in transformers 5's strict config.
                let scalar = g.map_or(self.head_dim as f64, |g| g.query_pre_attn_scalar);
                let scalar: Value = match scalar.fract() == 0.0 {
                    true => (scalar as u64).into(),
                    false => scalar.into(),
                };
                obj.insert("query_pre_attn_scalar".into(), scalar);
                let caps = [
                    ("attn_logit_softcapping", g.and_then(|g| g.attn_logit_softcapping)),
                    ("final_logit_softcapping", g.and_then(|g| g.final_logit_softcapping)),
                ];
                for (key, cap) in caps {
                    obj.insert(key.into(), cap.into());
                }
            }
        }
        if self.model_type != ModelType::Llama {
            obj.insert("sliding_window".into(), window.map(|w| w.size).into());
        }
        if let Some(w) = window.filter(|w| w.layers.iter().any(|&s| !s)) {
            // Only where some layers attend in full (Qwen, Gemma 2): elsewhere every layer slides,
            // which `sliding_window` alone says.
            let types: Vec<&str> = w
                .layers
                .iter()
                .map(|&s| if s { "sliding_attention" } else { "full_attention" })
                .collect();
            obj.insert("layer_types".into(), types.into());
        }
        if let Some(id) = self.bos_token_id {
            obj.insert("bos_token_id".into(), id.into());
        }
        if let Some(id) = self.eos_token_id {
            obj.insert("eos_token_id".into(), id.into());
        }
        for (k, v) in &self.extra {
            obj.insert(k.clone(), v.clone());
        }
        serde_json::to_string_pretty(&v).expect("JSON values serialize")
    }

    /// Every end-of-sequence id: the list `config.json` gave (Llama 3.1 ends turns with three), or
    /// `eos_token_id`.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        match self.extra.get("eos_token_id").and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(|v| v.as_u64().map(|n| n as u32)).collect(),
            None => self.eos_token_id.into_iter().collect(),
        }
    }

    /// The model's RoPE.
    pub fn rope(&self) -> Rope {
        Rope {
            head_dim: self.head_dim,
            theta: self.rope_theta,
            scaling: self.rope_scaling.clone(),
            max_position_embeddings: self.max_position_embeddings,
        }
    }

    /// The longest row that attends as plain causal attention with the short-sequence RoPE table,
    /// and what changes past it: a sliding window, or a RoPE scaling that depends on the length.
    /// Engines without either feature compute such rows exactly.
    pub fn plain_length(&self) -> Option<(usize, &'static str)> {
        let window = self.sliding_window.as_ref().map(|w| (w.size, "the sliding window"));
        let rope = self
            .rope()
            .length_limit()
            .map(|n| (n, "the length where RoPE scaling changes"));
        match (window, rope) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Whether queries and keys pass a per-head RMSNorm (`q_norm`, `k_norm`) before RoPE.
    pub fn qk_norm(&self) -> bool {
        matches!(self.model_type, ModelType::Qwen3 | ModelType::Gemma3)
    }

    /// The window of layer `layer`, if it slides.
    pub fn window(&self, layer: usize) -> Option<usize> {
        let w = self.sliding_window.as_ref()?;
        w.layers.get(layer).copied().unwrap_or(false).then_some(w.size)
    }

    /// The weights the files hold fused (Phi-3's `qkv_proj` and `gate_up_proj`).
    pub fn fused_tensors(&self) -> Vec<Fused> {
        if self.model_type != ModelType::Phi3 {
            return Vec::new();
        }
        let (q, kv) = (
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        );
        let i = self.intermediate_size;
        let mut out = Vec::new();
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let part = |name: &str, rows: usize| (format!("{p}.{name}.weight"), rows);
            out.push(Fused {
                file: format!("{p}.self_attn.qkv_proj.weight"),
                parts: vec![
                    part("self_attn.q_proj", q),
                    part("self_attn.k_proj", kv),
                    part("self_attn.v_proj", kv),
                ],
            });
            out.push(Fused {
                file: format!("{p}.mlp.gate_up_proj.weight"),
                parts: vec![part("mlp.gate_proj", i), part("mlp.up_proj", i)],
            });
        }
        out
    }

    /// Checks that the shapes are consistent.
    ///
    /// # Errors
    /// Naming the first inconsistent field.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.num_hidden_layers == 0 || self.vocab_size == 0
        {
            return bad("hidden_size, num_attention_heads, num_hidden_layers and vocab_size must be positive".into());
        }
        if self.num_key_value_heads == 0 || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim ({}) must be even for RoPE", self.head_dim));
        }
        if self.model_type == ModelType::Qwen2 && !self.attention_bias {
            return bad("qwen2 models have q/k/v biases: attention_bias must be true".into());
        }
        if self.model_type == ModelType::Qwen2 && self.head_dim * self.num_attention_heads != self.hidden_size {
            return bad("qwen2 derives head_dim = hidden_size / num_attention_heads".into());
        }
        if self.model_type.is_gemma() != self.gemma.is_some() {
            return bad("gemma models, and only they, have the gemma settings".into());
        }
        if matches!(
            self.model_type,
            ModelType::Qwen3 | ModelType::Phi3 | ModelType::Gemma2 | ModelType::Gemma3
        ) && self.attention_bias
        {
            return bad(format!("{} models have no q/k/v biases", self.model_type.name()));
        }
        if let Some(w) = &self.sliding_window
            && (w.size == 0 || w.layers.len() != self.num_hidden_layers)
        {
            return bad(format!(
                "sliding window of {} over {} layer types for {} layers",
                w.size,
                w.layers.len(),
                self.num_hidden_layers
            ));
        }
        if let RopeScaling::Longrope {
            short_factor,
            long_factor,
            ..
        } = &self.rope_scaling
        {
            let half = self.head_dim / 2;
            if short_factor.len() != half || long_factor.len() != half {
                return bad(format!(
                    "longrope needs head_dim / 2 = {half} short and long factors (has {} and {})",
                    short_factor.len(),
                    long_factor.len()
                ));
            }
        }
        Ok(())
    }

    /// Number of parameters (embedding counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let norms = if self.qk_norm() { 2 * self.head_dim } else { 0 };
        let attn = h * q + 2 * h * kv + q * h + bias + norms;
        let norms = if self.gemma.is_some() { 4 * h } else { 2 * h };
        let layer = attn + 3 * h * i + norms;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers * layer + h + head
    }

    /// Every tensor of the model under its `transformers` name, with its shape in HF layout
    /// (`[out, in]` for linear weights).
    pub fn hf_shapes(&self) -> std::collections::BTreeMap<String, Vec<usize>> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (q, kv) = (
            self.num_attention_heads * self.head_dim,
            self.num_key_value_heads * self.head_dim,
        );
        let mut out = std::collections::BTreeMap::new();
        out.insert("model.embed_tokens.weight".to_string(), vec![v, h]);
        out.insert("model.norm.weight".to_string(), vec![h]);
        if !self.tie_word_embeddings {
            out.insert("lm_head.weight".to_string(), vec![v, h]);
        }
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            for (name, shape) in [
                ("self_attn.q_proj.weight", vec![q, h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.o_proj.weight", vec![h, q]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
            ] {
                out.insert(format!("{p}.{name}"), shape);
            }
            if self.attention_bias {
                for (name, len) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                    out.insert(format!("{p}.self_attn.{name}.bias"), vec![len]);
                }
            }
            if self.qk_norm() {
                for name in ["q_norm", "k_norm"] {
                    out.insert(format!("{p}.self_attn.{name}.weight"), vec![self.head_dim]);
                }
            }
            if self.gemma.is_some() {
                for name in ["pre_feedforward_layernorm", "post_feedforward_layernorm"] {
                    out.insert(format!("{p}.{name}.weight"), vec![h]);
                }
            }
        }
        out
    }
}

/// A small random-initialisable configuration for unit tests (vocabulary 64, 2 layers, grouped
/// queries, untied head).
#[cfg(test)]
pub(crate) fn tiny_for_tests() -> ModelConfig {
    ModelConfig {
        model_type: ModelType::Llama,
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: RopeScaling::Default,
        sliding_window: None,
        gemma: None,
        max_position_embeddings: 128,
        tie_word_embeddings: false,
        attention_bias: false,
        initializer_range: 0.5,
        bos_token_id: None,
        eos_token_id: None,
        extra: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        ModelConfig {
            model_type: ModelType::Llama,
            hidden_size: 768,
            intermediate_size: 2048,
            num_attention_heads: 12,
            num_key_value_heads: 12,
            num_hidden_layers: 12,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::Default,
            sliding_window: None,
            gemma: None,
            vocab_size: 32_000,
            max_position_embeddings: 2048,
            tie_word_embeddings: true,
            attention_bias: false,
            head_dim: 64,
            initializer_range: 0.02,
            bos_token_id: None,
            eos_token_id: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn hf_json_round_trips() {
        let c = tiny();
        assert_eq!(ModelConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
    }

    #[test]
    fn parameter_count_of_the_reference_benchmark_model() {
        // DESIGN.md's reference: hidden 768, 12 layers, intermediate 2048, vocab 32000, tied: ~110M.
        // 32000*768 + 12*(4*768*768 + 3*768*2048 + 2*768) + 768
        assert_eq!(
            tiny().num_parameters(),
            24_576_000 + 12 * (2_359_296 + 4_718_592 + 1_536) + 768
        );
    }

    // config.json of models on the hub (transformers 4.x style), as their users start from them.
    const LLAMA31_8B: &str = r#"{"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 128256}"#;
    const QWEN3_8B: &str = r#"{"architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 12288, "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3", "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936}"#;
    const PHI3_MINI_4K: &str = r#"{"architectures": ["Phi3ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 3072, "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 4096, "model_type": "phi3", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "original_max_position_embeddings": 4096, "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0, "sliding_window": 2047, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.40.2", "use_cache": true, "attention_bias": false, "vocab_size": 32064}"#;
    const MISTRAL_7B_V03: &str = r#"{"architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.42.0.dev0", "use_cache": true, "vocab_size": 32768}"#;

    const GEMMA2_2B: &str = r#"{"architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 107], "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02, "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32", "transformers_version": "4.42.4", "use_cache": true, "vocab_size": 256000}"#;

    const GEMMA3_1B: &str = r#"{"architectures": ["Gemma3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "attn_logit_softcapping": null, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 106], "final_logit_softcapping": null, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152, "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1, "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0", "use_cache": true, "vocab_size": 262144}"#;

    #[test]
    fn hub_configs_of_each_family_read_and_write_back() {
        let llama = ModelConfig::from_hf_json(LLAMA31_8B).unwrap();
        assert!(matches!(
            llama.rope_scaling,
            RopeScaling::Llama3 {
                factor: 8.0,
                original_max_position_embeddings: 8192,
                ..
            }
        ));
        assert_eq!(llama.eos_token_id, Some(128001));
        assert_eq!(llama.eos_token_ids(), vec![128001, 128008, 128009]);
        assert_eq!(llama.num_parameters(), 8_030_261_248); // Llama 3.1 8B
        let qwen = ModelConfig::from_hf_json(QWEN3_8B).unwrap();
        assert!(qwen.qk_norm() && qwen.head_dim == 128 && qwen.sliding_window.is_none());
        let phi = ModelConfig::from_hf_json(PHI3_MINI_4K).unwrap();
        assert_eq!(phi.window(0), Some(2047));
        assert_eq!(phi.plain_length(), Some((2047, "the sliding window")));
        assert_eq!(phi.fused_tensors().len(), 2 * 32);
        assert_eq!(phi.num_parameters(), 3_821_079_552); // Phi-3-mini
        let mistral = ModelConfig::from_hf_json(MISTRAL_7B_V03).unwrap();
        assert!(mistral.sliding_window.is_none() && mistral.rms_norm_eps == 1e-5);
        let gemma = ModelConfig::from_hf_json(GEMMA2_2B).unwrap();
        assert_eq!(gemma.num_parameters(), 2_614_341_888); // gemma-2-2b
        assert!(gemma.tie_word_embeddings && gemma.head_dim == 256);
        assert_eq!((gemma.window(0), gemma.window(1)), (Some(4096), None));
        assert_eq!(gemma.gemma.as_ref().unwrap().final_logit_softcapping, Some(30.0));
        assert_eq!(gemma.eos_token_ids(), vec![1, 107]);
        let gemma3 = ModelConfig::from_hf_json(GEMMA3_1B).unwrap();
        assert_eq!(gemma3.num_parameters(), 999_885_952); // gemma-3-1b
        assert!(gemma3.qk_norm() && gemma3.rope_theta == 1e6);
        let g = gemma3.gemma.as_ref().unwrap();
        assert_eq!((g.local_rope_theta, g.final_logit_softcapping), (Some(10_000.0), None));
        let windows: Vec<_> = (0..7).map(|l| gemma3.window(l)).collect();
        assert_eq!(
            windows,
            [Some(512), Some(512), Some(512), Some(512), Some(512), None, Some(512)]
        );
        for (text, c) in [
            (LLAMA31_8B, llama),
            (QWEN3_8B, qwen),
            (PHI3_MINI_4K, phi),
            (MISTRAL_7B_V03, mistral),
            (GEMMA2_2B, gemma),
            (GEMMA3_1B, gemma3),
        ] {
            let written = c.to_hf_json();
            assert_eq!(ModelConfig::from_hf_json(&written).unwrap(), c);
            // What the fields do not decide is written back as it was.
            let (src, out): (Value, Value) = (
                serde_json::from_str(text).unwrap(),
                serde_json::from_str(&written).unwrap(),
            );
            for key in [
                "eos_token_id",
                "pad_token_id",
                "transformers_version",
                "attention_dropout",
            ] {
                if src.get(key).is_some() {
                    assert_eq!(src[key], out[key], "{key}");
                }
            }
        }
    }

    #[test]
    fn what_the_model_code_does_not_compute_is_refused_by_name() {
        let edit = |from: &str, to: &str| {
            ModelConfig::from_hf_json(&MISTRAL_7B_V03.replace(from, to))
                .unwrap_err()
                .to_string()
        };
        assert!(edit("\"silu\"", "\"gelu\"").contains("hidden activation \"gelu\""));
        let e = edit(
            "\"use_cache\": true",
            "\"use_cache\": true, \"partial_rotary_factor\": 0.75",
        );
        assert!(e.contains("partial_rotary_factor 0.75"), "{e}");
        let e = edit("\"model_type\": \"mistral\"", "\"model_type\": \"gemma3\"");
        assert!(
            e.contains("\"gemma3\"") && e.contains("llama, qwen2, qwen3, mistral, phi3, gemma2, gemma3_text"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_configs_are_refused_by_name() {
        let mut c = tiny();
        c.num_key_value_heads = 5;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("multiple of num_key_value_heads")
        );
        let err = ModelConfig::from_hf_json(r#"{"model_type": "gpt2", "hidden_size": 1, "intermediate_size": 1, "num_attention_heads": 1, "num_hidden_layers": 1, "vocab_size": 1}"#).unwrap_err();
        assert!(err.to_string().contains("\"gpt2\""), "{err}");
    }
}
