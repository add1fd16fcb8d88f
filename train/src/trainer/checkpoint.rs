//! Step checkpoints: `RUN/step-000100/` holding the weights, the optimizer state, the loop state
//! (step, rows consumed, seed) and the resolved recipe, so `--resume RUN` continues exactly.
//!
//! Writes are atomic: everything goes into `RUN/.tmp-step-000100/`, which is renamed into place
//! only when complete, so a run killed mid-save leaves the previous checkpoint as the latest. Only
//! the last `keep_last` step folders are kept.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::model::{Decoder, ModelConfig};
use crate::recipe::Recipe;
use firebrand_data::template::Template;

/// The loop state saved beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps done.
    pub step: usize,
    /// Training rows consumed so far (the position in the seeded data order).
    pub rows_consumed: u64,
    /// Seed of the run.
    pub seed: u64,
}

/// The folder name of step `step`.
pub fn step_dir_name(step: usize) -> String {
    format!("step-{step:06}")
}

/// Step folders of a run, oldest first.
///
/// # Errors
/// When the run folder cannot be listed.
pub fn list(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>, TrainError> {
    let mut out = Vec::new();
    if !run_dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(run_dir).map_err(|e| TrainError::io(run_dir, e))? {
        let entry = entry.map_err(|e| TrainError::io(run_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<usize>().ok()) {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint of a run.
///
/// # Errors
/// When the run has none.
pub fn latest(run_dir: &Path) -> Result<(usize, PathBuf), TrainError> {
    list(run_dir)?.pop().ok_or_else(|| {
        TrainError::Config(format!(
            "{}: no checkpoint to resume from (no step-N folder)",
            run_dir.display()
        ))
    })
}

/// Creates the temporary folder of a checkpoint of `step`; call [`commit`] once it is filled.
///
/// # Errors
/// When the folder cannot be created.
pub fn begin(run_dir: &Path, step: usize) -> Result<PathBuf, TrainError> {
    let tmp = run_dir.join(format!(".tmp-{}", step_dir_name(step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    Ok(tmp)
}

/// Moves a filled temporary folder into place and removes checkpoints beyond the last `keep_last`.
///
/// # Errors
/// When the rename or a removal fails.
pub fn commit(run_dir: &Path, tmp: &Path, step: usize, keep_last: usize) -> Result<PathBuf, TrainError> {
    let dest = run_dir.join(step_dir_name(step));
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| TrainError::io(&dest, e))?;
    }
    std::fs::rename(tmp, &dest).map_err(|e| TrainError::io(&dest, e))?;
    let all = list(run_dir)?;
    let excess = all.len().saturating_sub(keep_last.max(1));
    for (_, old) in all.into_iter().take(excess) {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    Ok(dest)
}

/// The recorder of checkpoint weights and optimizer state (named MessagePack, full precision).
pub fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

/// A model ready to use, with what is known about how it was made.
pub struct Trained<B: Backend> {
    /// The weights.
    pub model: Decoder<B>,
    /// Its configuration.
    pub config: ModelConfig,
    /// The recipe that trained it (checkpoints only).
    pub recipe: Option<Recipe>,
    /// Its tokenizer file, when one is known: the recipe's `data.tokenizer`, or `tokenizer.json`
    /// in a Hugging Face folder.
    pub tokenizer: Option<PathBuf>,
    /// The folder the weights came from.
    pub dir: PathBuf,
}

impl<B: Backend> Trained<B> {
    /// The chat template the model was trained with: the recipe's `data.template` for checkpoints;
    /// for a Hugging Face folder, the built-in template whose Jinja equals `tokenizer_config.json`'s
    /// `chat_template` (what `firebrand export` writes), else a guess from the tokenizer's special
    /// tokens.
    ///
    /// # Errors
    /// A recipe naming an unknown template.
    pub fn template(&self, tokenizer: &firebrand_data::tokenizer::Tokenizer) -> Result<Template, TrainError> {
        if let Some(recipe) = &self.recipe {
            return recipe.data.template();
        }
        let jinja = std::fs::read_to_string(self.dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| v.get("chat_template")?.as_str().map(str::to_string));
        if let Some(t) = jinja.and_then(|j| Template::ALL.into_iter().find(|t| t.jinja() == j)) {
            return Ok(t);
        }
        Ok(if tokenizer.token_to_id("<|im_start|>").is_some() {
            Template::ChatMl
        } else if tokenizer.token_to_id("<|start_header_id|>").is_some() {
            Template::Llama3
        } else {
            Template::Plain
        })
    }

    /// Tokens that end generation: the template's end of turn (when given), the end-of-text tokens
    /// the tokenizer has, and the config's `eos_token_id`; the first is the best padding token.
    pub fn stop_token_ids(
        &self,
        template: Option<Template>,
        tokenizer: &firebrand_data::tokenizer::Tokenizer,
    ) -> Vec<u32> {
        stop_token_ids(&self.config, template, tokenizer)
    }
}

/// Tokens that end generation for a model of `config` (see [`Trained::stop_token_ids`]).
pub fn stop_token_ids(
    config: &crate::model::ModelConfig,
    template: Option<Template>,
    tokenizer: &firebrand_data::tokenizer::Tokenizer,
) -> Vec<u32> {
    let mut ids: Vec<u32> = template
        .map(|t| t.end_of_turn())
        .into_iter()
        .chain(["<|endoftext|>", "<|end_of_text|>"])
        .filter_map(|t| tokenizer.token_to_id(t))
        .collect();
    if let Some(eos) = config.eos_token_id.filter(|e| !ids.contains(e)) {
        ids.push(eos);
    }
    ids
}

/// Loads a model from a checkpoint (`RUN/step-N`), a run (its latest checkpoint) or a Hugging
/// Face folder (`config.json` with safetensors, e.g. a `firebrand export`).
///
/// # Errors
/// When the path is none of these or its files do not read.
pub fn load_trained<B: Backend>(path: &Path, device: &B::Device) -> Result<Trained<B>, TrainError> {
    if path.join("config.json").exists() && !path.join("state.json").exists() {
        let (config, model) = crate::hf::load(path, device)?;
        let tok = path.join("tokenizer.json");
        return Ok(Trained {
            model,
            config,
            recipe: None,
            tokenizer: tok.exists().then_some(tok),
            dir: path.to_path_buf(),
        });
    }
    let dir = if path.join("state.json").exists() {
        path.to_path_buf()
    } else if path.is_dir() {
        latest(path)?.1
    } else {
        return Err(TrainError::Config(format!(
            "{}: not a checkpoint, run or Hugging Face folder\n  hint: give checkpoints/RUN, checkpoints/RUN/step-N or a folder written by `firebrand export`",
            path.display()
        )));
    };
    let config = crate::hf::read_config(&dir)?;
    let recipe = Recipe::load(&dir.join("recipe.toml"), &[])?;
    let model = Decoder::<B>::init(&config, device)?
        .load_file(dir.join("model"), &recorder(), device)
        .map_err(|e| TrainError::Weights {
            path: dir.join("model.mpk"),
            problem: e.to_string(),
        })?;
    Ok(Trained {
        model,
        config,
        tokenizer: recipe.data.tokenizer.clone(),
        recipe: Some(recipe),
        dir,
    })
}
