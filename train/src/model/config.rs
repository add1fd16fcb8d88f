//! The model configuration, mirroring `config.json` of `transformers`' `LlamaForCausalLM` and
//! `Qwen2ForCausalLM`, so a folder written by one loads in the other.
//!
//! Choices: fields absent from a `config.json` take the `transformers` defaults of the named
//! `model_type` (Qwen2 has q/k/v biases; Llama has none); `head_dim` defaults to
//! `hidden_size / num_attention_heads`.

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Which `transformers` architecture a model is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// `LlamaForCausalLM`.
    Llama,
    /// `Qwen2ForCausalLM`.
    Qwen2,
}

impl ModelType {
    /// The `architectures` entry of `config.json`.
    pub fn architecture(self) -> &'static str {
        match self {
            ModelType::Llama => "LlamaForCausalLM",
            ModelType::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// A decoder's hyper-parameters under their `config.json` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `llama` or `qwen2`.
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
}

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
    rope_scaling: Option<serde_json::Value>,
    /// transformers 5 writes `rope_parameters: {rope_theta, rope_type}` instead of `rope_theta`.
    rope_parameters: Option<serde_json::Value>,
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
    /// When it does not parse, names another architecture, or uses RoPE scaling (not supported).
    pub fn from_hf_json(text: &str) -> Result<Self, TrainError> {
        let hf: HfConfig = serde_json::from_str(text).map_err(|e| TrainError::Config(format!("config.json: {e}")))?;
        let model_type = match hf.model_type.as_deref() {
            Some("llama") => ModelType::Llama,
            Some("qwen2") => ModelType::Qwen2,
            other => {
                let arch = hf.architectures.unwrap_or_default().join(", ");
                return Err(TrainError::Config(format!(
                    "config.json: model_type {other:?} ({arch}) is not supported; firebrand reads llama and qwen2"
                )));
            }
        };
        if hf.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(TrainError::Config(
                "config.json: rope_scaling is not supported yet".into(),
            ));
        }
        let rope = hf.rope_parameters.unwrap_or(serde_json::Value::Null);
        if let Some(kind) = rope
            .get("rope_type")
            .and_then(|t| t.as_str())
            .filter(|t| *t != "default")
        {
            return Err(TrainError::Config(format!(
                "config.json: rope_type {kind:?} is not supported yet (only default RoPE)"
            )));
        }
        let rope_theta = hf
            .rope_theta
            .or_else(|| rope.get("rope_theta").and_then(|t| t.as_f64()));
        let config = ModelConfig {
            model_type,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            num_hidden_layers: hf.num_hidden_layers,
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(10_000.0),
            vocab_size: hf.vocab_size,
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            attention_bias: hf.attention_bias.unwrap_or(model_type == ModelType::Qwen2),
            head_dim: hf.head_dim.unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            initializer_range: hf.initializer_range.unwrap_or(0.02),
            bos_token_id: first_id(hf.bos_token_id),
            eos_token_id: first_id(hf.eos_token_id),
        };
        config.validate()?;
        Ok(config)
    }

    /// The `config.json` text `transformers` reads back into the same model.
    pub fn to_hf_json(&self) -> String {
        let mut v = serde_json::json!({
            "architectures": [self.model_type.architecture()],
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            // transformers 5 reads this; 4.x reads `rope_theta`.
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"},
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "initializer_range": self.initializer_range,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        let obj = v.as_object_mut().expect("a JSON object literal");
        match self.model_type {
            ModelType::Llama => {
                obj.insert("attention_bias".into(), self.attention_bias.into());
                obj.insert("mlp_bias".into(), false.into());
                obj.insert("head_dim".into(), self.head_dim.into());
            }
            ModelType::Qwen2 => {
                // Qwen2 always has q/k/v biases and derives head_dim.
                obj.insert("use_sliding_window".into(), false.into());
            }
        }
        if let Some(id) = self.bos_token_id {
            obj.insert("bos_token_id".into(), id.into());
        }
        if let Some(id) = self.eos_token_id {
            obj.insert("eos_token_id".into(), id.into());
        }
        serde_json::to_string_pretty(&v).expect("JSON values serialize")
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
        Ok(())
    }

    /// Number of parameters (embedding counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let attn = h * q + 2 * h * kv + q * h + bias;
        let layer = attn + 3 * h * i + 2 * h;
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
        max_position_embeddings: 128,
        tie_word_embeddings: false,
        attention_bias: false,
        initializer_range: 0.5,
        bos_token_id: None,
        eos_token_id: None,
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
            vocab_size: 32_000,
            max_position_embeddings: 2048,
            tie_word_embeddings: true,
            attention_bias: false,
            head_dim: 64,
            initializer_range: 0.02,
            bos_token_id: None,
            eos_token_id: None,
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
