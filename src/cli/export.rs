//! `firebrand export CKPT --out DIR`: a checkpoint as a Hugging Face model folder.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use burn::backend::NdArray;
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use clap::Args;
use firebrand_train::recipe::Recipe;
use firebrand_train::trainer::checkpoint;
use firebrand_train::{Decoder, hf};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A checkpoint folder (`checkpoints/RUN/step-N`) or a run folder (its latest checkpoint).
    checkpoint: PathBuf,
    /// Output folder: config.json, model.safetensors (or shards), generation_config.json, and
    /// tokenizer.json with tokenizer_config.json when the recipe names a tokenizer.
    #[arg(long)]
    out: PathBuf,
    /// Largest shard in MB; bigger weights are split with model.safetensors.index.json.
    #[arg(long, default_value_t = 5000)]
    max_shard_mb: usize,
}

/// End-of-turn tokens that stop generation, in the order of the built-in templates.
const STOP_TOKENS: &[&str] = &["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>"];

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let dir = if a.checkpoint.join("state.json").exists() {
        a.checkpoint.clone()
    } else {
        checkpoint::latest(&a.checkpoint)?.1
    };
    let mut config = hf::read_config(&dir)?;
    let recipe = Recipe::load(&dir.join("recipe.toml"), &[])?;
    let device = Default::default();
    let model = Decoder::<NdArray<f32>>::init(&config, &device)?
        .load_file(
            dir.join("model"),
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
            &device,
        )
        .with_context(|| format!("reading {}", dir.join("model.mpk").display()))?;
    let mut stop_ids = Vec::new();
    if let Some(tok_path) = &recipe.data.tokenizer {
        let tok = firebrand_data::tokenizer::load(tok_path)?;
        let stops: Vec<&str> = STOP_TOKENS
            .iter()
            .copied()
            .filter(|t| tok.token_to_id(t).is_some())
            .collect();
        stop_ids = stops.iter().filter_map(|t| tok.token_to_id(t)).collect();
        config.eos_token_id = stop_ids.first().copied();
        std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
        firebrand_data::tokenizer::save(&tok, &a.out.join("tokenizer.json"))?;
        // What AutoTokenizer needs besides tokenizer.json.
        let tok_config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": stops.first(),
            "model_max_length": config.max_position_embeddings,
            "clean_up_tokenization_spaces": false,
        });
        let path = a.out.join("tokenizer_config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&tok_config)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let files = hf::save(&model, &config, &a.out, a.max_shard_mb.max(1) * 1_000_000)?;
    let generation = serde_json::json!({"eos_token_id": stop_ids, "do_sample": false});
    let gen_path = a.out.join("generation_config.json");
    std::fs::write(&gen_path, serde_json::to_string_pretty(&generation)?)
        .with_context(|| format!("writing {}", gen_path.display()))?;
    println!(
        "exported {} ({} parameters) to {} in {} weight file(s){}",
        dir.display(),
        config.num_parameters(),
        a.out.display(),
        files.len(),
        if recipe.data.tokenizer.is_some() {
            ", with tokenizer.json"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}
