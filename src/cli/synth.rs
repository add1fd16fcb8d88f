//! `firebrand synth ...`: the synthesizers: `lintseq`, `multiverse validate|convert`, `vifrag`, `mig`,
//! `prefs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use firebrand_data::DataError;
use firebrand_synth::generator::GenParams;
use firebrand_synth::multiverse::llm::convert_with;
use firebrand_synth::multiverse::{self, ConvertOptions, SequentialTrace, format};
use firebrand_synth::runner::{JobOptions, run_job, run_job_batched};

use super::local_model::local_generator;
use super::progress;

/// The embedded sequential traces the offline converter runs on (written by us; each states its
/// cases explicitly, one has none and is reported as such).
const MULTIVERSE_SAMPLE: &str = include_str!("../../assets/multiverse_sample.jsonl");

#[derive(Debug, Subcommand)]
pub enum SynthCommand {
    /// Multiverse parallel-reasoning data: validate tagged traces, convert sequential ones.
    #[command(subcommand)]
    Multiverse(MultiverseCommand),
    /// VIF-RAG: queries + passages → prompts with verifiable instructions; --generate answers
    /// them and keeps responses that pass every verifier.
    Vifrag(super::vifrag::VifragArgs),
    /// MIG: select N records maximising information gain over the label graph (labels + score
    /// columns; label vectors from `firebrand embed`).
    Mig(super::mig::MigArgs),
    /// Preference pairs from a `prompts` dataset: answers sampled with golden, partial and noisy
    /// passages (PA-RAG), paired per perspective (informativeness, robustness, instruction).
    Prefs(super::prefs::PrefsArgs),
    /// LintSeq: programs (a folder, instruction + response JSONL, or a chat/completion dataset)
    /// → insertion-only edit sequences whose every intermediate program passes the checker.
    Lintseq(super::lintseq::LintseqArgs),
}

#[derive(Debug, Subcommand)]
pub enum MultiverseCommand {
    /// Check tagged traces against the grammar: one trace per file, or JSONL with `parallel_trace`.
    Validate(ValidateArgs),
    /// Convert sequential traces (JSONL: question, trace, answer; s1K-1.1 field names accepted)
    /// into a `multiverse` dataset, checking grammar and content: with the offline converter
    /// (explicit cases), or with --model (the plan and rewrite prompts through a local model).
    Convert(ConvertArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input JSONL (omit with --sample).
    input: Option<PathBuf>,
    /// Convert the embedded sample instead of a file.
    #[arg(long)]
    sample: bool,
    /// Output `multiverse` dataset.
    #[arg(long)]
    out: PathBuf,
    /// Largest normalised edit distance between the de-tagged and the original trace.
    #[arg(long, default_value_t = multiverse::check::DEFAULT_MAX_DISTANCE)]
    max_distance: f32,
    /// Replace an existing output.
    #[arg(long)]
    overwrite: bool,
    /// Append to an existing output, skipping ids it already holds.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Convert with this model (checkpoint, run or Hugging Face folder) through the sampler,
    /// instead of the offline converter.
    #[arg(long)]
    model: Option<PathBuf>,
    /// With --model: rewrites tried per trace before it is reported as failed.
    #[arg(long, default_value_t = 3)]
    tries: usize,
    /// With --model: most new tokens per answer.
    #[arg(long, default_value_t = 4096)]
    max_new_tokens: usize,
    /// With --model: sampling temperature (retries differ only when it is above 0).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// With --model: cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(cmd: SynthCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SynthCommand::Multiverse(MultiverseCommand::Validate(a)) => validate(&a),
        SynthCommand::Multiverse(MultiverseCommand::Convert(a)) => convert(&a),
        SynthCommand::Vifrag(a) => super::vifrag::run(&a),
        SynthCommand::Mig(a) => super::mig::run(a).map(|()| ExitCode::SUCCESS),
        SynthCommand::Prefs(a) => super::prefs::run(&a),
        SynthCommand::Lintseq(a) => super::lintseq::run(&a),
    }
}

fn validate(a: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    let mut checked = 0;
    for file in &a.files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let traces: Vec<(String, String)> = if file.extension().is_some_and(|e| e == "jsonl") {
            jsonl_traces(file, &text)?
        } else {
            vec![(file.display().to_string(), text)]
        };
        for (place, trace) in traces {
            checked += 1;
            match format::parse(&trace) {
                Ok(t) => println!("{place}: ok ({} parallel block(s))", t.blocks()),
                Err(e) => {
                    failed += 1;
                    println!("{place}: {e}");
                }
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {checked} trace(s) break the grammar");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `(place, trace)` of each record of a JSONL file with a `parallel_trace` field.
fn jsonl_traces(file: &Path, text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: line {}: not JSON", file.display(), i + 1))?;
        let Some(trace) = v.get("parallel_trace").and_then(|t| t.as_str()) else {
            bail!(
                "{}: line {}: no `parallel_trace` string field\n  hint: validate reads tagged traces; convert sequential ones with `firebrand synth multiverse convert`",
                file.display(),
                i + 1
            );
        };
        let id = v
            .get("id")
            .and_then(|t| t.as_str())
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        out.push((
            format!("{}: record on line {}{id}", file.display(), i + 1),
            trace.to_string(),
        ));
    }
    Ok(out)
}

fn convert(a: &ConvertArgs) -> anyhow::Result<ExitCode> {
    let (name, text) = match (&a.input, a.sample) {
        (Some(p), false) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        (None, true) => ("<embedded sample>".to_string(), MULTIVERSE_SAMPLE.to_string()),
        _ => bail!("give an input JSONL or --sample (not both)"),
    };
    let total = text.lines().filter(|l| !l.trim().is_empty()).count();
    let inputs = BufReader::new(text.as_bytes())
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(i, line)| {
            let line = line.map_err(|e| DataError::Invalid(format!("{name}: line {}: {e}", i + 1)))?;
            let t: SequentialTrace = serde_json::from_str(&line).map_err(|e| {
                DataError::Invalid(format!(
                    "{name}: line {}: {e}\n  hint: each line needs `question`, `trace` (or `deepseek_thinking_trajectory`) and `answer` (or `deepseek_attempt`)",
                    i + 1
                ))
            })?;
            let id = t.id.clone().unwrap_or_else(|| format!("line-{}", i + 1));
            Ok((id, t))
        });
    let opts = ConvertOptions {
        max_distance: a.max_distance,
    };
    let job = JobOptions {
        chunk: if a.model.is_some() { 32 } else { 256 },
        resume: a.resume,
        overwrite: a.overwrite,
    };
    let pb = progress::bar(total as u64, "converting", false);
    let report = match &a.model {
        None => run_job(
            inputs,
            &a.out,
            job,
            multiverse_row_id,
            |id, t: SequentialTrace| multiverse::convert_explicit(id, &t, &opts),
            |r| pb.set_position(r.read as u64),
        ),
        Some(path) => {
            let generator = local_generator(path, &a.device)?;
            let params = GenParams {
                max_tokens: a.max_new_tokens,
                temperature: a.temperature,
                top_p: 0.95,
                ..Default::default()
            };
            run_job_batched(
                inputs,
                &a.out,
                job,
                multiverse_row_id,
                |chunk| convert_with(generator.as_ref(), &chunk, &opts, &params, a.tries),
                |r| pb.set_position(r.read as u64),
            )
        }
    };
    pb.finish_and_clear();
    let report = report?;
    println!(
        "converted {} of {} traces from {name} into {}{}",
        report.written,
        report.read,
        a.out.display(),
        report.already_note()
    );
    report.print_drops();
    Ok(ExitCode::SUCCESS)
}

fn multiverse_row_id(r: &firebrand_data::MultiverseRow) -> &str {
    &r.id
}
