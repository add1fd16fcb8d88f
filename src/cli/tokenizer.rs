//! `firebrand tokenizer train`: byte-level BPE from datasets.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use firebrand_data::Dataset;
use firebrand_data::tokenizer::{SPECIAL_TOKENS, TrainOptions, dataset_texts, save, train_bpe};

use super::progress;

#[derive(Debug, Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer on the text of datasets.
    Train(TrainArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Datasets to read text from.
    #[arg(required = true)]
    datasets: Vec<PathBuf>,
    /// Vocabulary size, special tokens and the 256 bytes included.
    #[arg(long)]
    vocab_size: usize,
    /// Pairs seen fewer times are not merged.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// Output tokenizer.json (or a folder to write it into).
    #[arg(long)]
    out: PathBuf,
    /// Also add the 12 Multiverse control tags (<Think>, <Parallel>, <Path>, ...) as special tokens.
    #[arg(long)]
    multiverse: bool,
}

pub fn run(cmd: TokenizerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenizerCommand::Train(a) => train(a)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    let datasets = a.datasets.iter().map(Dataset::open).collect::<Result<Vec<_>, _>>()?;
    let pb = progress::spinner("reading text");
    let texts = dataset_texts(&datasets);
    pb.set_message("training BPE");
    let result = texts.and_then(|t| {
        let tok = train_bpe(
            &t,
            &TrainOptions {
                vocab_size: a.vocab_size,
                min_frequency: a.min_frequency,
                extra_special: if a.multiverse {
                    firebrand_data::multiverse::TAGS.iter().map(|t| t.to_string()).collect()
                } else {
                    Vec::new()
                },
            },
        )?;
        Ok((t.len(), tok))
    });
    pb.finish_and_clear();
    let (n, tok) = result.context("training the tokenizer")?;
    let file = save(&tok, &a.out)?;
    println!(
        "trained a byte-level BPE tokenizer of {} tokens (at most {}; {} special) on {n} texts: {}",
        tok.get_vocab_size(true),
        a.vocab_size,
        SPECIAL_TOKENS.len()
            + if a.multiverse {
                firebrand_data::multiverse::TAGS.len()
            } else {
                0
            },
        file.display()
    );
    Ok(())
}
