//! `firebrand quickstart`: the main job on the embedded sample, as the commands a user would type.
//!
//! Today: import the bundled chat data, train a tokenizer on it, tokenize and pack it, print
//! statistics and one tokenized row with its loss mask, train `recipes/sft-tiny.toml` on CPU,
//! export the result as a Hugging Face folder, generate answers from the export, and run the
//! VIF-RAG loop with it (embedded queries → prompts with verifiable instructions → sampled answers
//! → the ones that pass every verifier), then embed the prompts' instruction labels and let MIG pick
//! the 8 prompts that cover them best. Each step is run through the same command line parser,
//! and printed, so the output doubles as a tour.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser};

/// The bundled chat dataset: 160 conversations we wrote (questions about firebrand, facts,
/// arithmetic), in OpenAI `messages` layout.
const SAMPLE_CHAT: &str = include_str!("../../assets/quickstart_chat.jsonl");

/// The recipe the quickstart trains, written next to its data.
const SFT_TINY: &str = include_str!("../../recipes/sft-tiny.toml");

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Folder for everything the quickstart writes (replaced on each run).
    #[arg(long, default_value = "quickstart")]
    dir: PathBuf,
    /// Train this many steps instead of the recipe's (a quicker, less trained look).
    #[arg(long)]
    train_steps: Option<usize>,
}

pub fn run(a: QuickstartArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let dir = a.dir.display().to_string();
    let input = a.dir.join("chat.jsonl");
    std::fs::write(&input, SAMPLE_CHAT).with_context(|| format!("writing {}", input.display()))?;
    println!("wrote the embedded sample to {}\n", input.display());
    let recipe = a.dir.join("sft-tiny.toml");
    std::fs::write(&recipe, SFT_TINY).with_context(|| format!("writing {}", recipe.display()))?;
    // A previous quickstart's run would make `train` refuse to start over.
    let run_dir = a.dir.join("checkpoints").join("sft-tiny");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).with_context(|| format!("removing {}", run_dir.display()))?;
    }
    let steps: Vec<String> = vec![
        format!("data import {dir}/chat.jsonl --kind chat --out {dir}/chat.lance --overwrite"),
        format!("data stats {dir}/chat.lance"),
        format!("tokenizer train {dir}/chat.lance --vocab-size 1024 --out {dir}/tokenizer.json"),
        format!(
            "data tokenize {dir}/chat.lance --tokenizer {dir}/tokenizer.json --template chatml --max-len 256 --pack --out {dir}/tokens.lance --overwrite"
        ),
        format!("data stats {dir}/tokens.lance"),
        format!("data debug {dir}/tokens.lance --tokenizer {dir}/tokenizer.json --rows 1"),
        format!(
            "train {dir}/sft-tiny.toml data.tokens={dir}/tokens.lance data.tokenizer={dir}/tokenizer.json output.dir={dir}/checkpoints{}",
            a.train_steps
                .map(|n| format!(" train.max_steps={n}"))
                .unwrap_or_default()
        ),
        format!("export {dir}/checkpoints/sft-tiny --out {dir}/export"),
        format!("plot {dir}/checkpoints/sft-tiny"),
        format!(
            "generate {dir}/export --prompt \"What does firebrand do?\" --prompt \"What is the capital of Japan?\" --temperature 0 --max-new-tokens 48"
        ),
        format!(
            "synth vifrag --sample --out {dir}/vifrag.lance --generate {dir}/vifrag_chat.lance --model {dir}/export --n 2 --max-tokens 48 --overwrite"
        ),
        format!("embed {dir}/vifrag.lance --out {dir}/vifrag_labels.lance --overwrite"),
        format!(
            "synth mig {dir}/vifrag.lance --n 8 --constant-score --embeddings {dir}/vifrag_labels.lance --out {dir}/vifrag_mig.lance --overwrite"
        ),
    ];
    for step in steps {
        println!("$ firebrand {step}");
        let words = std::iter::once("firebrand".to_string()).chain(split_words(&step));
        let cli = super::Cli::try_parse_from(words).expect("quickstart commands parse");
        let code = super::run(cli).with_context(|| format!("quickstart step `firebrand {step}`"))?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
        println!();
    }
    println!(
        "done: packed data in {dir}/tokens.lance, the run in {dir}/checkpoints/sft-tiny (curves in metrics.png), the model in {dir}/export, VIF-RAG prompts in {dir}/vifrag.lance, the answers that passed in {dir}/vifrag_chat.lance, and the 8 prompts MIG picks for instruction coverage in {dir}/vifrag_mig.lance"
    );
    Ok(ExitCode::SUCCESS)
}

/// Splits a command line at spaces outside double quotes, dropping the quotes.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}
