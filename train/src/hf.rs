//! Hugging Face layout: reading and writing `config.json` + safetensors weights (single file, or
//! shards with `model.safetensors.index.json`), so `transformers`' `from_pretrained` loads what we
//! write and we load what it writes.
//!
//! Names are the `state_dict` names of `LlamaForCausalLM` and its kin; linear weights are
//! stored `[out, in]` as PyTorch does and transposed to burn's `[in, out]` on load (and back on
//! save). Weights a family keeps fused in its files (Phi-3's `qkv_proj`, `gate_up_proj`) are split
//! into the separate projections on load and stacked again on save ([`to_file_layout`],
//! [`from_file_layout`]), so everything in memory has one set of names. Weights are read as f32, f16 or bf16 and held as f32. Loading fails on a missing tensor or
//! a shape mismatch, naming it, and on tensors the model does not use (except `lm_head.weight` of a
//! tied model and RoPE `inv_freq` buffers, which some checkpoints carry), so a wrong architecture
//! never loads silently.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::TrainError;
use crate::model::config::Fused;
use crate::model::{Decoder, ModelConfig, TensorSource};

/// The file of a single-file checkpoint.
pub const WEIGHTS: &str = "model.safetensors";
/// The index of a sharded checkpoint.
pub const INDEX: &str = "model.safetensors.index.json";

/// Tensors read from a folder's safetensors files, by name.
pub struct SafetensorsSource<'a, B: Backend> {
    dir: PathBuf,
    files: Vec<Vec<u8>>,
    /// tensor name -> index into `files`
    location: HashMap<String, usize>,
    used: HashSet<String>,
    /// part name -> (name in the files, first row, rows of the fused tensor): the fused weights
    /// of the model.
    fused: HashMap<String, (String, usize, usize)>,
    device: &'a B::Device,
}

fn weights_err(path: &Path, problem: impl Into<String>) -> TrainError {
    TrainError::Weights {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

impl<'a, B: Backend> SafetensorsSource<'a, B> {
    /// Opens the weights of `dir`: `model.safetensors`, or the shards its index names.
    ///
    /// # Errors
    /// When neither file exists or one does not parse.
    pub fn open(dir: &Path, device: &'a B::Device) -> Result<Self, TrainError> {
        let single = dir.join(WEIGHTS);
        let index = dir.join(INDEX);
        let file_names: Vec<String> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| TrainError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| weights_err(&index, e.to_string()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| weights_err(&index, "no `weight_map` object"))?;
            let mut names: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
            names.sort();
            names.dedup();
            names
        } else if single.exists() {
            vec![WEIGHTS.to_string()]
        } else {
            return Err(weights_err(dir, format!("neither {WEIGHTS} nor {INDEX} is here")));
        };
        let mut files = Vec::new();
        let mut location = HashMap::new();
        for (i, name) in file_names.iter().enumerate() {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
            let st = SafeTensors::deserialize(&bytes).map_err(|e| weights_err(&path, e.to_string()))?;
            for t in st.names() {
                location.insert(t.to_string(), i);
            }
            files.push(bytes);
        }
        Ok(SafetensorsSource {
            dir: dir.to_path_buf(),
            files,
            location,
            used: HashSet::new(),
            fused: HashMap::new(),
            device,
        })
    }

    /// Reads the parts of `fused` weights out of the fused tensors the files hold, when they hold
    /// no separate ones.
    pub fn with_fused(mut self, fused: &[Fused]) -> Self {
        for f in fused {
            let total = f.parts.iter().map(|(_, rows)| rows).sum();
            let mut row = 0;
            for (part, rows) in &f.parts {
                self.fused.insert(part.clone(), (f.file.clone(), row, total));
                row += rows;
            }
        }
        self
    }

    fn read(&mut self, name: &str, shape: &[usize]) -> Result<TensorData, TrainError> {
        if !self.location.contains_key(name)
            && let Some((file, first, total)) = self.fused.get(name).cloned()
        {
            return self.read_rows(&file, first, total, shape);
        }
        self.read_whole(name, shape)
    }

    /// Rows `first..first + shape[0]` of the 2-D tensor `file` of `total` rows.
    fn read_rows(&mut self, file: &str, first: usize, total: usize, shape: &[usize]) -> Result<TensorData, TrainError> {
        let (rows, cols) = (shape[0], shape[1]);
        let all = self.read_whole(file, &[total, cols])?;
        let values: Vec<f32> = all
            .to_vec()
            .map_err(|e| weights_err(&self.dir, format!("`{file}`: {e:?}")))?;
        Ok(TensorData::new(
            values[first * cols..(first + rows) * cols].to_vec(),
            shape.to_vec(),
        ))
    }

    fn read_whole(&mut self, name: &str, shape: &[usize]) -> Result<TensorData, TrainError> {
        let file = *self
            .location
            .get(name)
            .ok_or_else(|| weights_err(&self.dir, format!("missing tensor `{name}`")))?;
        let st = SafeTensors::deserialize(&self.files[file]).expect("parsed when opened");
        let view = st
            .tensor(name)
            .map_err(|e| weights_err(&self.dir, format!("`{name}`: {e}")))?;
        if view.shape() != shape {
            return Err(weights_err(
                &self.dir,
                format!("`{name}` has shape {:?}, the config says {shape:?}", view.shape()),
            ));
        }
        let values = decode(&view).map_err(|e| weights_err(&self.dir, format!("`{name}` {e}")))?;
        self.used.insert(name.to_string());
        Ok(TensorData::new(values, shape.to_vec()))
    }

    /// Whether the files hold a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// Names in the files that the model did not read.
    pub fn unused(&self, config: &ModelConfig) -> Vec<String> {
        let mut left: Vec<String> = self
            .location
            .keys()
            .filter(|n| !self.used.contains(*n))
            .filter(|n| !n.ends_with("rotary_emb.inv_freq"))
            .filter(|n| !(config.tie_word_embeddings && n.as_str() == "lm_head.weight"))
            .cloned()
            .collect();
        left.sort();
        left
    }
}

/// A tensor's values as f32 (from f32, f16 or bf16 storage).
fn decode(view: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f32>, String> {
    let bytes = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(format!("is {other:?}; f32, f16 and bf16 are read")),
    })
}

/// Tensors as f32 values by name, and a file's metadata.
pub type TensorFile = (BTreeMap<String, Vec<f32>>, HashMap<String, String>);

/// Every tensor of one safetensors file as f32 values by name, and the file's metadata.
///
/// # Errors
/// When the file cannot be read or parsed, or holds a type other than f32, f16 or bf16.
pub fn read_tensors(path: &Path) -> Result<TensorFile, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| weights_err(path, e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| weights_err(path, e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let v = decode(&view).map_err(|e| weights_err(path, format!("`{name}` {e}")))?;
        out.insert(name, v);
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Writes f32 tensors `(name, shape, values)` to one safetensors file with `metadata`, through a
/// temporary file renamed into place (a killed write never leaves a truncated file).
///
/// # Errors
/// When a shape does not match its values, or the file cannot be written.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &[(&str, &str)],
) -> Result<(), TrainError> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b)
            .map_err(|e| weights_err(path, format!("`{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = safetensors::serialize(views, Some(meta)).map_err(|e| weights_err(path, e.to_string()))?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, out).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

impl<B: Backend> TensorSource<B> for SafetensorsSource<'_, B> {
    fn matrix(&mut self, name: &str, shape: [usize; 2]) -> Result<Tensor<B, 2>, TrainError> {
        Ok(Tensor::from_data(self.read(name, &shape)?, self.device))
    }

    fn vector(&mut self, name: &str, len: usize, _ones: bool) -> Result<Tensor<B, 1>, TrainError> {
        Ok(Tensor::from_data(self.read(name, &[len])?, self.device))
    }
}

/// Reads `config.json` of a model folder.
///
/// # Errors
/// When the file is missing or unsupported.
pub fn read_config(dir: &Path) -> Result<ModelConfig, TrainError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    ModelConfig::from_hf_json(&text).map_err(|e| match e {
        TrainError::Config(m) => TrainError::Config(format!("{}: {m}", dir.display())),
        other => other,
    })
}

/// Loads a model folder (`config.json` and safetensors, single or sharded).
///
/// # Errors
/// When a file is missing, a tensor is missing or misshapen, or the files hold tensors the model
/// does not use.
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<(ModelConfig, Decoder<B>), TrainError> {
    let config = read_config(dir)?;
    let mut source = SafetensorsSource::<B>::open(dir, device)?.with_fused(&config.fused_tensors());
    let model = Decoder::from_source(&config, &mut source)?;
    let unused = source.unused(&config);
    if !unused.is_empty() {
        let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
        return Err(weights_err(
            dir,
            format!(
                "{} tensors are not used by a {:?} model of this config (e.g. {}); is config.json right?",
                unused.len(),
                config.model_type,
                shown.join(", ")
            ),
        ));
    }
    Ok((config, model))
}

/// `tensors` (by in-memory name) in the files' layout of `config`: the parts of each fused weight
/// replaced by one tensor that `stack` makes of them (in order, along the output dimension).
pub fn to_file_layout<T>(
    config: &ModelConfig,
    mut tensors: BTreeMap<String, T>,
    stack: impl Fn(&[T]) -> T,
) -> BTreeMap<String, T> {
    for f in config.fused_tensors() {
        let parts: Vec<T> = f.parts.iter().filter_map(|(name, _)| tensors.remove(name)).collect();
        if parts.len() == f.parts.len() {
            tensors.insert(f.file, stack(&parts));
        }
    }
    tensors
}

/// Flat f32 tensors (by name, row-major) read from files of `config`'s layout, with each fused
/// weight split into its parts; the inverse of [`to_file_layout`].
///
/// # Errors
/// When a fused tensor has the wrong number of values.
pub fn from_file_layout(
    config: &ModelConfig,
    mut tensors: BTreeMap<String, Vec<f32>>,
    path: &Path,
) -> Result<BTreeMap<String, Vec<f32>>, TrainError> {
    // Every fused weight projects the residual stream: its input width is `hidden_size`.
    let cols = config.hidden_size;
    for f in config.fused_tensors() {
        let Some(all) = tensors.remove(&f.file) else {
            continue;
        };
        let rows: usize = f.parts.iter().map(|(_, r)| r).sum();
        if all.len() != rows * cols {
            return Err(weights_err(
                path,
                format!(
                    "`{}` has {} values, the config says [{rows}, {cols}]",
                    f.file,
                    all.len()
                ),
            ));
        }
        let mut at = 0;
        for (name, r) in f.parts {
            tensors.insert(name, all[at..at + r * cols].to_vec());
            at += r * cols;
        }
    }
    Ok(tensors)
}

/// Every tensor of a model under its HF name, in HF layout, as f32.
pub fn state_dict<B: Backend>(model: &Decoder<B>) -> BTreeMap<String, TensorData> {
    let mut out = BTreeMap::new();
    let mut put2 = |name: String, t: Tensor<B, 2>, transpose: bool| {
        let t = if transpose { t.transpose() } else { t };
        out.insert(name, t.into_data().convert::<f32>());
    };
    put2(
        "model.embed_tokens.weight".into(),
        model.embed_tokens.weight.val(),
        false,
    );
    if let Some(head) = &model.lm_head {
        put2("lm_head.weight".into(), head.weight.val(), true);
    }
    let mut vectors: Vec<(String, Tensor<B, 1>)> = vec![("model.norm.weight".into(), model.norm.weight.val())];
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let a = &layer.self_attn;
        for (name, lin) in [
            ("q_proj", &a.q_proj),
            ("k_proj", &a.k_proj),
            ("v_proj", &a.v_proj),
            ("o_proj", &a.o_proj),
        ] {
            put2(format!("{p}.self_attn.{name}.weight"), lin.weight.val(), true);
            if let Some(b) = &lin.bias {
                vectors.push((format!("{p}.self_attn.{name}.bias"), b.val()));
            }
        }
        for (name, norm) in [("q_norm", &a.q_norm), ("k_norm", &a.k_norm)] {
            if let Some(n) = norm {
                vectors.push((format!("{p}.self_attn.{name}.weight"), n.weight.val()));
            }
        }
        let m = &layer.mlp;
        for (name, lin) in [
            ("gate_proj", &m.gate_proj),
            ("up_proj", &m.up_proj),
            ("down_proj", &m.down_proj),
        ] {
            put2(format!("{p}.mlp.{name}.weight"), lin.weight.val(), true);
        }
        vectors.push((
            format!("{p}.input_layernorm.weight"),
            layer.input_layernorm.weight.val(),
        ));
        vectors.push((
            format!("{p}.post_attention_layernorm.weight"),
            layer.post_attention_layernorm.weight.val(),
        ));
        for (name, norm) in [
            ("pre_feedforward_layernorm", &layer.pre_feedforward_layernorm),
            ("post_feedforward_layernorm", &layer.post_feedforward_layernorm),
        ] {
            if let Some(n) = norm {
                vectors.push((format!("{p}.{name}.weight"), n.weight.val()));
            }
        }
    }
    for (name, t) in vectors {
        out.insert(name, t.into_data().convert::<f32>());
    }
    out
}

/// Writes `config.json` and the weights into `dir`: one `model.safetensors`, or shards of at most
/// `max_shard_bytes` with an index when the weights are larger. Returns the weight files written.
///
/// # Errors
/// When a file cannot be written.
pub fn save<B: Backend>(
    model: &Decoder<B>,
    config: &ModelConfig,
    dir: &Path,
    max_shard_bytes: usize,
) -> Result<Vec<PathBuf>, TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_hf_json()).map_err(|e| TrainError::io(&config_path, e))?;
    let tensors: BTreeMap<String, TensorData> = to_file_layout(config, state_dict(model), |parts| {
        let shape = vec![parts.iter().map(|p| p.shape[0]).sum(), parts[0].shape[1]];
        let values: Vec<f32> = parts
            .iter()
            .flat_map(|p| p.to_vec::<f32>().expect("state_dict holds f32"))
            .collect();
        TensorData::new(values, shape)
    });
    // Shards in name order, each closed when the next tensor would overflow it.
    let mut shards: Vec<Vec<(String, TensorData)>> = vec![Vec::new()];
    let mut size = 0usize;
    let total: usize = tensors.values().map(|t| t.bytes.len()).sum();
    for (name, data) in tensors {
        let n = data.bytes.len();
        if size > 0 && size + n > max_shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        size += n;
        shards.last_mut().expect("never empty").push((name, data));
    }
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let count = shards.len();
    let mut written = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = if count == 1 {
            WEIGHTS.to_string()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", i + 1)
        };
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = shard
            .iter()
            .map(|(name, data)| {
                let view = safetensors::tensor::TensorView::new(Dtype::F32, data.shape.to_vec(), &data.bytes)
                    .expect("shape and byte length agree for f32 data");
                (name.clone(), view)
            })
            .collect();
        let bytes = safetensors::serialize(views, metadata.clone()).map_err(|e| weights_err(dir, e.to_string()))?;
        let path = dir.join(&file);
        std::fs::write(&path, bytes).map_err(|e| TrainError::io(&path, e))?;
        for (name, _) in shard {
            weight_map.insert(name.clone(), file.clone());
        }
        written.push(path);
    }
    let index_path = dir.join(INDEX);
    if count > 1 {
        let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        std::fs::write(
            &index_path,
            serde_json::to_string_pretty(&index).expect("JSON serializes"),
        )
        .map_err(|e| TrainError::io(&index_path, e))?;
    } else if index_path.exists() {
        // A stale index from an earlier sharded save would shadow the single file.
        std::fs::remove_file(&index_path).map_err(|e| TrainError::io(&index_path, e))?;
    }
    Ok(written)
}
