//! A trained model ready to use (sampling, export, references, evaluation): loaded from a
//! checkpoint (`RUN/step-N`), a run (its latest checkpoint) or a Hugging Face folder, with what is
//! known about how it was made (its recipe, tokenizer and chat template).

use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use firebrand_data::template::Template;

use crate::checkpoint::latest;
use crate::engine::state::{EngineState, MODEL_FILE};
use crate::error::TrainError;
use crate::model::{Decoder, ModelConfig};
use crate::recipe::Recipe;

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
    /// for a Hugging Face folder, its own `chat_template` (a built-in one when it is the built-in's
    /// Jinja, as `firebrand export` writes), else a guess from the tokenizer's special tokens.
    ///
    /// # Errors
    /// A recipe naming an unknown template, or a folder template that does not compile.
    pub fn template(&self, tokenizer: &firebrand_data::tokenizer::Tokenizer) -> Result<Template, TrainError> {
        if let Some(recipe) = &self.recipe {
            return recipe.data.template();
        }
        if let Some(t) = Template::of_folder(Some(&self.dir))? {
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
    /// the tokenizer has, and the config's `eos_token_id` (all of them where it lists several); the first is the best padding token.
    pub fn stop_token_ids(
        &self,
        template: Option<&Template>,
        tokenizer: &firebrand_data::tokenizer::Tokenizer,
    ) -> Vec<u32> {
        stop_token_ids(&self.config, template, tokenizer)
    }
}

/// Tokens that end generation for a model of `config` (see [`Trained::stop_token_ids`]).
pub fn stop_token_ids(
    config: &crate::model::ModelConfig,
    template: Option<&Template>,
    tokenizer: &firebrand_data::tokenizer::Tokenizer,
) -> Vec<u32> {
    let mut ids: Vec<u32> = template
        .and_then(|t| t.end_of_turn())
        .into_iter()
        .chain(["<|endoftext|>", "<|end_of_text|>"])
        .filter_map(|t| tokenizer.token_to_id(t))
        .collect();
    for eos in config.eos_token_ids() {
        if !ids.contains(&eos) {
            ids.push(eos);
        }
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
    let model = if dir.join(MODEL_FILE).exists() {
        crate::hf::load(&dir, device)?.1
    } else {
        // A checkpoint written before model.safetensors: burn's named MessagePack.
        use burn::module::Module;
        let recorder = burn::record::NamedMpkFileRecorder::<burn::record::FullPrecisionSettings>::new();
        Decoder::<B>::init(&config, device)?
            .load_file(dir.join("model"), &recorder, device)
            .map_err(|e| TrainError::Weights {
                path: dir.join("model.mpk"),
                problem: e.to_string(),
            })?
    };
    Ok(Trained {
        model,
        config,
        tokenizer: recipe.data.tokenizer.clone(),
        recipe: Some(recipe),
        dir,
    })
}

/// The weights of the model at `path` (as [`load_trained`] finds it) as an engine's starting state,
/// with its configuration.
///
/// # Errors
/// As [`load_trained`].
pub fn load_state<B: AutodiffBackend>(
    path: &Path,
    device: &B::Device,
) -> Result<(ModelConfig, EngineState), TrainError> {
    let t = load_trained::<B::InnerBackend>(path, device)?;
    Ok((t.config, EngineState::fresh(&t.model)))
}
