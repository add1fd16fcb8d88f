//! `firebrand export CKPT --out DIR`: a checkpoint as a Hugging Face model folder.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use burn::backend::NdArray;
use clap::Args;
use firebrand_data::template::Template;
use firebrand_train::hf;
use firebrand_train::trained::{Trained, load_trained};

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

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    if a.checkpoint.join("config.json").exists() && !a.checkpoint.join("state.json").exists() {
        bail!(
            "{} is already a Hugging Face folder\n  hint: export takes a checkpoint (checkpoints/RUN/step-N) or a run (checkpoints/RUN)",
            a.checkpoint.display()
        );
    }
    let Trained {
        model,
        mut config,
        recipe,
        tokenizer,
        dir,
    } = load_trained::<NdArray<f32>>(&a.checkpoint, &Default::default())?;
    let template = match &recipe {
        Some(r) => r.data.template()?,
        None => Template::of_folder(Some(&dir))?.unwrap_or(Template::ChatMl),
    };
    let mut stop_ids = Vec::new();
    if let Some(tok_path) = &tokenizer {
        let tok = firebrand_data::tokenizer::load(tok_path)?;
        // The template's end of turn first: it is what a chat model emits to stop.
        let stops: Vec<&str> = template
            .end_of_turn()
            .into_iter()
            .chain(["<|endoftext|>", "<|end_of_text|>"])
            .filter(|t| tok.token_to_id(t).is_some())
            .collect();
        stop_ids = stops.iter().filter_map(|t| tok.token_to_id(t)).collect();
        stop_ids.dedup();
        config.eos_token_id = stop_ids.first().copied();
        std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
        firebrand_data::tokenizer::save(&tok, &a.out.join("tokenizer.json"))?;
        // What AutoTokenizer needs besides tokenizer.json; `chat_template` makes
        // `apply_chat_template` render exactly what the model was trained on.
        let bos = match &template {
            Template::Model(t) => t.specials().bos_token.clone(),
            _ => None,
        };
        let tok_config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": bos,
            "eos_token": stops.first(),
            "model_max_length": config.max_position_embeddings,
            "clean_up_tokenization_spaces": false,
            "chat_template": template.jinja(),
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
        if tokenizer.is_some() {
            ", with tokenizer.json"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}
