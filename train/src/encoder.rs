//! A BERT-style sentence encoder that loads a sentence-transformers folder (MIG's label
//! embeddings; `firebrand embed`).
//!
//! What is read, as sentence-transformers reads it: `config.json` (a `BertModel`), the weights
//! (`model.safetensors`, names without the `bert.` prefix as sentence-transformers saves them, or
//! with it as `BertForMaskedLM`-style checkpoints have), `tokenizer.json`, `sentence_bert_config.json`
//! (`max_seq_length`, which overrides the tokenizer's own truncation), `1_Pooling/config.json` (mean,
//! CLS or max pooling) and `modules.json` (a `Normalize` module normalises the output).
//!
//! The forward pass is BERT's (Devlin et al.; `transformers`' `modeling_bert.py`): the sum of word,
//! position and token-type embeddings, LayerNorm, then post-norm layers of self-attention and a GELU
//! (erf) feed-forward, each added to its input and normalised. Padding is masked out of attention and of
//! pooling. Inference only, f32.

use std::path::{Path, PathBuf};

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use tokenizers::{PaddingParams, PaddingStrategy, TruncationParams};

use crate::error::TrainError;
use crate::hf::SafetensorsSource;
use crate::model::TensorSource;

/// Where `scripts/models.sh` puts all-MiniLM-L6-v2, the default label embedder:
/// `$FIREBRAND_MINILM`, else `~/.cache/firebrand/models/all-MiniLM-L6-v2`.
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("FIREBRAND_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
            home.join(".cache/firebrand/models/all-MiniLM-L6-v2")
        })
}

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the non-padding tokens.
    Mean,
    /// The first token (`[CLS]`).
    Cls,
    /// Element-wise maximum over the non-padding tokens.
    Max,
}

/// The `config.json` fields BERT needs.
#[derive(Debug, Clone, serde::Deserialize)]
struct BertConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "two")]
    type_vocab_size: usize,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    #[serde(default = "gelu_name")]
    hidden_act: String,
    #[serde(default)]
    model_type: String,
}

fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}
fn gelu_name() -> String {
    "gelu".into()
}

struct Norm<B: Backend> {
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
}

impl<B: Backend> Norm<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let mean = x.clone().mean_dim(2);
        let centred = x - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(2);
        let normed = centred / var.add_scalar(self.eps).sqrt();
        normed * self.weight.clone().unsqueeze::<3>() + self.bias.clone().unsqueeze::<3>()
    }
}

struct Dense<B: Backend> {
    /// `[in, out]`
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
}

impl<B: Backend> Dense<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x.matmul(self.weight.clone().unsqueeze::<3>()) + self.bias.clone().unsqueeze::<3>()
    }
}

struct Layer<B: Backend> {
    query: Dense<B>,
    key: Dense<B>,
    value: Dense<B>,
    attn_out: Dense<B>,
    attn_norm: Norm<B>,
    inter: Dense<B>,
    out: Dense<B>,
    out_norm: Norm<B>,
}

/// A sentence-transformers model: BERT, pooling and optional normalisation.
pub struct SentenceEncoder<B: Backend> {
    word: Tensor<B, 2>,
    position: Tensor<B, 2>,
    token_type: Tensor<B, 2>,
    embed_norm: Norm<B>,
    layers: Vec<Layer<B>>,
    heads: usize,
    tokenizer: tokenizers::Tokenizer,
    pooling: Pooling,
    normalize: bool,
    lower_case: bool,
    device: B::Device,
    dir: PathBuf,
}

fn bad(path: &Path, problem: impl Into<String>) -> TrainError {
    TrainError::Weights {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| bad(path, e.to_string()))
}

impl<B: Backend> SentenceEncoder<B> {
    /// Loads the model folder `dir`.
    ///
    /// # Errors
    /// When a file is missing or malformed, the model is not BERT, or a tensor is missing or has
    /// the wrong shape.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        let config_path = dir.join("config.json");
        let config: BertConfig =
            serde_json::from_value(read_json(&config_path)?).map_err(|e| bad(&config_path, e.to_string()))?;
        if !config.model_type.is_empty() && config.model_type != "bert" {
            return Err(bad(
                &config_path,
                format!("model_type `{}`: only BERT encoders are supported", config.model_type),
            ));
        }
        if config.hidden_act != "gelu" {
            return Err(bad(
                &config_path,
                format!("hidden_act `{}`: only `gelu` is supported", config.hidden_act),
            ));
        }
        if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
            return Err(bad(
                &config_path,
                "hidden_size must be a multiple of num_attention_heads",
            ));
        }
        // sentence-transformers settings: sequence length, pooling, normalisation.
        let st_path = dir.join("sentence_bert_config.json");
        let st = if st_path.exists() {
            read_json(&st_path)?
        } else {
            serde_json::Value::Null
        };
        let max_len = st
            .get("max_seq_length")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        // sentence-transformers lower-cases the input itself when asked (before the tokenizer).
        let lower_case = st.get("do_lower_case").and_then(|v| v.as_bool()).unwrap_or(false);
        let pooling_path = dir.join("1_Pooling").join("config.json");
        let pooling = if pooling_path.exists() {
            let v = read_json(&pooling_path)?;
            let on = |k: &str| v.get(k).and_then(|b| b.as_bool()).unwrap_or(false);
            match (
                on("pooling_mode_mean_tokens"),
                on("pooling_mode_cls_token"),
                on("pooling_mode_max_tokens"),
            ) {
                (true, false, false) => Pooling::Mean,
                (false, true, false) => Pooling::Cls,
                (false, false, true) => Pooling::Max,
                _ => {
                    return Err(bad(
                        &pooling_path,
                        "exactly one of mean, CLS or max pooling must be on (other modes are not supported)",
                    ));
                }
            }
        } else {
            Pooling::Mean
        };
        // The module pipeline: a transformer, pooling and optional normalisation are what is
        // implemented; anything else (a Dense projection, ...) would change the vectors, so it is
        // refused rather than skipped.
        let modules_path = dir.join("modules.json");
        let mut normalize = false;
        if modules_path.exists() {
            let modules = read_json(&modules_path)?;
            for module in modules.as_array().map(Vec::as_slice).unwrap_or_default() {
                let kind = module.get("type").and_then(|t| t.as_str()).unwrap_or("");
                match kind.rsplit('.').next().unwrap_or("") {
                    "Transformer" | "Pooling" => {}
                    "Normalize" => normalize = true,
                    other => {
                        return Err(bad(
                            &modules_path,
                            format!("module `{other}` is not supported (Transformer, Pooling and Normalize are)"),
                        ));
                    }
                }
            }
        }
        let mut tokenizer = firebrand_data::tokenizer::load(dir)?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..TruncationParams::default()
            }))
            .map_err(|e| bad(dir, format!("tokenizer truncation: {e}")))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token: "[PAD]".into(),
            ..PaddingParams::default()
        }));

        let mut source = SafetensorsSource::<B>::open(dir, device)?;
        let prefix = if source.has("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let norm = |src: &mut SafetensorsSource<B>, name: &str| -> Result<Norm<B>, TrainError> {
            Ok(Norm {
                weight: src.vector(&format!("{prefix}{name}.weight"), h, true)?,
                bias: src.vector(&format!("{prefix}{name}.bias"), h, false)?,
                eps,
            })
        };
        let dense =
            |src: &mut SafetensorsSource<B>, name: &str, out: usize, inp: usize| -> Result<Dense<B>, TrainError> {
                Ok(Dense {
                    weight: src.matrix(&format!("{prefix}{name}.weight"), [out, inp])?.transpose(),
                    bias: src.vector(&format!("{prefix}{name}.bias"), out, false)?,
                })
            };
        let word = source.matrix(
            &format!("{prefix}embeddings.word_embeddings.weight"),
            [config.vocab_size, h],
        )?;
        let position = source.matrix(
            &format!("{prefix}embeddings.position_embeddings.weight"),
            [config.max_position_embeddings, h],
        )?;
        let token_type = source.matrix(
            &format!("{prefix}embeddings.token_type_embeddings.weight"),
            [config.type_vocab_size, h],
        )?;
        let embed_norm = norm(&mut source, "embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let i = config.intermediate_size;
            layers.push(Layer {
                query: dense(&mut source, &format!("{p}.attention.self.query"), h, h)?,
                key: dense(&mut source, &format!("{p}.attention.self.key"), h, h)?,
                value: dense(&mut source, &format!("{p}.attention.self.value"), h, h)?,
                attn_out: dense(&mut source, &format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: norm(&mut source, &format!("{p}.attention.output.LayerNorm"))?,
                inter: dense(&mut source, &format!("{p}.intermediate.dense"), i, h)?,
                out: dense(&mut source, &format!("{p}.output.dense"), h, i)?,
                out_norm: norm(&mut source, &format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(SentenceEncoder {
            word,
            position,
            token_type,
            embed_norm,
            layers,
            heads: config.num_attention_heads,
            tokenizer,
            pooling,
            normalize,
            lower_case,
            device: device.clone(),
            dir: dir.to_path_buf(),
        })
    }

    /// Output vector length.
    pub fn dim(&self) -> usize {
        self.word.dims()[1]
    }

    /// Whether outputs are normalised to unit length.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Encodes `texts` in batches of `batch` sentences.
    ///
    /// # Errors
    /// When tokenization fails.
    pub fn encode(&self, texts: &[String], batch: usize) -> Result<Vec<Vec<f32>>, TrainError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch.max(1)) {
            out.extend(self.encode_batch(chunk)?);
        }
        Ok(out)
    }

    fn encode_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, TrainError> {
        let lowered: Vec<String>;
        let inputs: Vec<&str> = if self.lower_case {
            lowered = texts.iter().map(|t| t.to_lowercase()).collect();
            lowered.iter().map(String::as_str).collect()
        } else {
            texts.iter().map(String::as_str).collect()
        };
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| bad(&self.dir, format!("tokenizing: {e}")))?;
        let b = encodings.len();
        let t = encodings.first().map(|e| e.len()).unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(b * t);
        let mut types = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        for e in &encodings {
            ids.extend(e.get_ids().iter().map(|&x| x as i64));
            types.extend(e.get_type_ids().iter().map(|&x| x as i64));
            mask.extend(e.get_attention_mask().iter().map(|&x| x as f32));
        }
        let device = &self.device;
        let h = self.dim();
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [b * t]), device);
        let types = Tensor::<B, 1, Int>::from_data(TensorData::new(types, [b * t]), device);
        let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [b, t]), device);
        let words = self.word.clone().select(0, ids).reshape([b, t, h]);
        let kinds = self.token_type.clone().select(0, types).reshape([b, t, h]);
        let positions = self.position.clone().slice([0..t, 0..h]).unsqueeze::<3>();
        let mut x = self.embed_norm.forward(words + kinds + positions);
        // Additive key mask: 0 where a token is real, a large negative number on padding.
        let key_bias = (mask.clone() - 1.0).mul_scalar(1e9).reshape([b, 1, 1, t]);
        let heads = self.heads;
        let dh = h / heads;
        for layer in &self.layers {
            let split = |y: Tensor<B, 3>| y.reshape([b, t, heads, dh]).swap_dims(1, 2);
            let q = split(layer.query.forward(x.clone()));
            let k = split(layer.key.forward(x.clone()));
            let v = split(layer.value.forward(x.clone()));
            let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f64).sqrt()) + key_bias.clone();
            let ctx = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, t, h]);
            let a = layer.attn_norm.forward(layer.attn_out.forward(ctx) + x);
            let f = layer.out.forward(gelu(layer.inter.forward(a.clone())));
            x = layer.out_norm.forward(f + a);
        }
        let m3 = mask.clone().reshape([b, t, 1]);
        let pooled: Tensor<B, 2> = match self.pooling {
            Pooling::Mean => {
                let sum = (x * m3.clone()).sum_dim(1).reshape([b, h]);
                let count = m3.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
                sum / count
            }
            Pooling::Cls => x.slice([0..b, 0..1, 0..h]).reshape([b, h]),
            Pooling::Max => (x + (m3 - 1.0).mul_scalar(1e9)).max_dim(1).reshape([b, h]),
        };
        let pooled = if self.normalize {
            let norm = pooled.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
            pooled / norm
        } else {
            pooled
        };
        let values: Vec<f32> = pooled
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| bad(&self.dir, format!("reading the output: {e:?}")))?;
        Ok(values.chunks(h).map(<[f32]>::to_vec).collect())
    }
}
