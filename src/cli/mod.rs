//! Command-line parsing and dispatch: one module per subcommand, each parsing, resolving and
//! calling a library crate.

mod bench;
mod data;
mod eval;
mod export;
mod generate;
mod lintseq;
mod local_model;
mod mig;
mod plot;
mod prefs;
mod progress;
mod quickstart;
mod synth;
mod tokenizer;
mod train;
mod vifrag;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// firebrand: synthesize training data and fine-tune language models on it.
#[derive(Debug, Parser)]
#[command(name = "firebrand", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import, export, query, inspect and tokenize datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train or inspect tokenizers.
    #[command(subcommand)]
    Tokenizer(tokenizer::TokenizerCommand),
    /// Synthesize datasets: lintseq, multiverse (validate, convert), vifrag, mig, prefs.
    #[command(subcommand)]
    Synth(synth::SynthCommand),
    /// Embed labels (or lines) with a sentence-transformers model into a vector table:
    /// firebrand embed data.lance --model all-MiniLM-L6-v2 --out labels.lance
    Embed(mig::EmbedArgs),
    /// Train a model from a TOML recipe: firebrand train recipes/sft-tiny.toml train.lr=1e-4
    Train(train::TrainArgs),
    /// Generate text from a checkpoint, run or Hugging Face folder: firebrand generate RUN --prompt "Hi"
    Generate(generate::GenerateArgs),
    /// Export a checkpoint to the Hugging Face layout.
    Export(export::ExportArgs),
    /// Evaluate: instruction following (IFEval-style, strict and loose).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Plot runs' loss, lr, grad norm and tokens/s to PNG: firebrand plot checkpoints/sft-tiny
    Plot(plot::PlotArgs),
    /// Micro-benchmarks of the backend: firebrand bench matmul --device cuda --dtype bf16
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the main job on the embedded sample: import, train a tokenizer, tokenize and pack, stats.
    Quickstart(quickstart::QuickstartArgs),
}

/// Logs go to stderr, filtered by `FIREBRAND_LOG` (e.g. `FIREBRAND_LOG=debug`), warnings by default.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FIREBRAND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Tokenizer(cmd) => tokenizer::run(cmd),
        Command::Quickstart(args) => quickstart::run(args),
        Command::Synth(c) => synth::run(c),
        Command::Embed(a) => mig::embed(a).map(|()| ExitCode::SUCCESS),
        Command::Train(a) => train::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Export(a) => export::run(a),
        Command::Eval(c) => eval::run(c),
        Command::Plot(a) => plot::run(a),
        Command::Bench(c) => bench::run(c),
    }
}
