//! `firebrand synth vifrag`: queries (+ passages) → `prompts` rows with composed, verifiable
//! instructions; with `--generate`, answers them with a model (an OpenAI-compatible endpoint or a
//! local checkpoint) and keeps the responses that pass all their verifiers as a `chat` dataset.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context, bail};
use clap::Args;
use firebrand_data::records::{ChatRow, PromptsRow, Role};
use firebrand_data::{DataError, Dataset, DatasetKind};
use firebrand_synth::runner::{JobOptions, run_job, run_job_batched};
use firebrand_synth::vifrag::compose::{ComposeOptions, default_pool};
use firebrand_synth::vifrag::keep::{KeepStats, answer_and_keep};
use firebrand_synth::vifrag::mix::{Query, make_prompt};
use firebrand_verify::{Context as QueryContext, Kind, Origin, Passage, kind, kinds};

use super::local_model::ModelArgs;
use super::progress;

/// Embedded queries (ours: short factual questions with passages and answers, and two without).
const VIFRAG_SAMPLE: &str = include_str!("../../assets/vifrag_queries.jsonl");

#[derive(Debug, Args)]
pub struct VifragArgs {
    /// Queries: JSONL (query/question, passages, answer, id) or a `prompts` or `chat` dataset.
    input: Option<PathBuf>,
    /// Use the embedded sample queries instead of an input.
    #[arg(long)]
    sample: bool,
    /// Output `prompts` dataset.
    #[arg(long)]
    out: PathBuf,
    /// Prompts drawn per query (each with its own instructions).
    #[arg(long, default_value_t = 1)]
    per_query: usize,
    /// Fewest instructions per prompt.
    #[arg(long, default_value_t = 1)]
    min_instructions: usize,
    /// Most instructions per prompt.
    #[arg(long, default_value_t = 4)]
    max_instructions: usize,
    /// Instruction kinds: `default` (FollowRAG's 22 IFEval types and firebrand's RAG types),
    /// `all`, `ifeval`, `rag`, or a comma-separated list of ids.
    #[arg(long, default_value = "default")]
    kinds: String,
    /// Seed of the draws (each row's seed also depends on its query id).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also answer the prompts and keep passing responses in this `chat` dataset.
    #[arg(long, value_name = "CHAT")]
    generate: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Replace existing outputs.
    #[arg(long)]
    overwrite: bool,
    /// Append to existing outputs, skipping ids they already hold.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
}

fn pool(spec: &str) -> anyhow::Result<Vec<&'static Kind>> {
    Ok(match spec {
        "default" => default_pool(),
        "all" => kinds().collect(),
        "ifeval" => kinds().filter(|k| k.origin != Origin::Rag).collect(),
        "rag" => kinds().filter(|k| k.origin == Origin::Rag).collect(),
        list => list
            .split(',')
            .map(|id| {
                kind(id.trim()).with_context(|| {
                    format!(
                        "--kinds: unknown instruction id `{id}`\n  hint: `firebrand eval follow --list` prints them"
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
    })
}

/// The queries of `input` (or the sample), each with its id.
fn queries(a: &VifragArgs) -> anyhow::Result<(String, Vec<Query>)> {
    let (name, text) = match (&a.input, a.sample) {
        (None, true) => ("<embedded sample>".to_string(), VIFRAG_SAMPLE.to_string()),
        (Some(p), false) if p.is_dir() => return Ok((p.display().to_string(), dataset_queries(p)?)),
        (Some(p), false) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        (None, false) => {
            bail!("give an input (JSONL, or a prompts or chat dataset), or --sample for the embedded queries")
        }
        (Some(_), true) => bail!("give an input or --sample, not both"),
    };
    let source = if a.sample {
        "vifrag-sample".to_string()
    } else {
        Path::new(&name)
            .file_stem()
            .map_or(name.clone(), |s| s.to_string_lossy().to_string())
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(text.as_bytes()).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{name}: line {}: not JSON", i + 1))?;
        let q = Query::from_json(&v, &format!("line-{}", i + 1), &source)
            .map_err(|e| anyhow::anyhow!("{name}: line {}: {e}", i + 1))?;
        out.push(q);
    }
    Ok((name, out))
}

/// Queries from a `prompts` dataset (`meta.query` when a synthesizer recorded the bare question,
/// else the last user message; passages from `meta.passages` when it holds a list) or a `chat`
/// dataset (the first user message).
fn dataset_queries(path: &Path) -> anyhow::Result<Vec<Query>> {
    let ds = Dataset::open(path)?;
    let source = path
        .file_stem()
        .map_or("dataset".to_string(), |s| s.to_string_lossy().to_string());
    let mut out = Vec::new();
    match ds.kind() {
        DatasetKind::Prompts => {
            for row in ds.rows::<PromptsRow>(1024)? {
                let row = row?;
                let Some(q) = row.prompt.iter().rev().find(|m| m.role == Role::User) else {
                    bail!(
                        "{}: row {}: no user message to take the query from",
                        path.display(),
                        row.id
                    );
                };
                let meta: serde_json::Value = serde_json::from_str(&row.provenance.meta).unwrap_or_default();
                let passages: Vec<Passage> = meta
                    .get("passages")
                    .and_then(|p| serde_json::from_value(p.clone()).ok())
                    .unwrap_or_default();
                let query = meta
                    .get("query")
                    .and_then(serde_json::Value::as_str)
                    .map_or_else(|| q.content.clone(), str::to_string);
                out.push(Query {
                    id: row.id.clone(),
                    source: source.clone(),
                    context: QueryContext {
                        query,
                        passages,
                        answer: row.answer.clone(),
                    },
                });
            }
        }
        DatasetKind::Chat => {
            for row in ds.rows::<ChatRow>(1024)? {
                let row = row?;
                let Some(q) = row.messages.iter().find(|m| m.role == Role::User) else {
                    bail!(
                        "{}: row {}: no user message to take the query from",
                        path.display(),
                        row.id
                    );
                };
                out.push(Query {
                    id: row.id.clone(),
                    source: source.clone(),
                    context: QueryContext {
                        query: q.content.clone(),
                        ..Default::default()
                    },
                });
            }
        }
        other => bail!(
            "{}: a `{}` dataset has no queries\n  hint: give JSONL with `query` (and `passages`, `answer`), or a `prompts` or `chat` dataset",
            path.display(),
            other.name()
        ),
    }
    Ok(out)
}

pub fn run(a: &VifragArgs) -> anyhow::Result<ExitCode> {
    let opts = ComposeOptions {
        min: a.min_instructions.max(1),
        max: a.max_instructions.max(a.min_instructions.max(1)),
        pool: pool(&a.kinds)?,
        ..Default::default()
    };
    // Build the generator first, so a bad endpoint or model fails before any work.
    let generator = a
        .generate
        .as_ref()
        .map(|_| a.model.generator("--generate"))
        .transpose()?;
    let (name, queries) = queries(a)?;
    let job = JobOptions {
        chunk: 1024,
        resume: a.resume,
        overwrite: a.overwrite,
    };
    let draws: Vec<(String, (Query, usize))> = queries
        .into_iter()
        .flat_map(|q| (0..a.per_query.max(1)).map(move |k| (format!("{}-{k}", q.id), (q.clone(), k))))
        .collect();
    let total = draws.len();
    let pb = progress::bar(total as u64, "composing", false);
    let seed = a.seed;
    let report = run_job(
        draws.into_iter().map(Ok::<_, DataError>),
        &a.out,
        job,
        |r: &PromptsRow| &r.id,
        |_, (q, k): (Query, usize)| make_prompt(&q, k, seed, &opts),
        |r| pb.set_position(r.read as u64),
    );
    pb.finish_and_clear();
    let report = report?;
    println!(
        "wrote {} prompts from {name} into {}{}",
        report.written,
        a.out.display(),
        report.already_note()
    );
    report.print_drops();
    print_instruction_counts(&a.out)?;

    let (Some(chat), Some(generator)) = (&a.generate, generator) else {
        return Ok(ExitCode::SUCCESS);
    };
    let prompts = Dataset::open_kind(&a.out, DatasetKind::Prompts)?;
    let rows = prompts.rows::<PromptsRow>(256)?.map(|r| r.map(|r| (r.id.clone(), r)));
    let params = a.model.params(a.seed);
    let stats = Mutex::new(KeepStats::default());
    let pb = progress::bar(prompts.len()? as u64, "generating", false);
    let report = run_job_batched(
        rows,
        chat,
        JobOptions { chunk: 32, ..job },
        |r: &ChatRow| &r.id,
        |chunk| answer_and_keep(generator.as_ref(), chunk, &params, &stats),
        |r| pb.set_position(r.read as u64),
    );
    pb.finish_and_clear();
    let report = report?;
    let stats = stats.into_inner().unwrap_or_default();
    println!(
        "kept {} of {} prompts in {} ({} of {} responses passed all their instructions)",
        report.written,
        report.read - report.already_done,
        chat.display(),
        stats.passed,
        stats.responses
    );
    report.print_drops();
    if !stats.by_id.is_empty() {
        println!("pass rate per instruction (responses that follow it):");
        for line in stats.lines() {
            println!("  {line}");
        }
    }
    if a.resume && !report.dropped.is_empty() {
        println!("note: --resume asks again for prompts left out before (only kept rows are recorded)");
    }
    if report.all_generation_failed() {
        eprintln!("every generation request failed; see the reasons above");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// How many prompts of the output carry each instruction, and how many instructions per prompt.
fn print_instruction_counts(out: &Path) -> anyhow::Result<()> {
    let ds = Dataset::open_kind(out, DatasetKind::Prompts)?;
    let mut per_prompt: BTreeMap<usize, usize> = BTreeMap::new();
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for row in ds.rows::<PromptsRow>(1024)? {
        let row = row?;
        let specs: Vec<firebrand_verify::Spec> = serde_json::from_str(&row.verifiers).unwrap_or_default();
        *per_prompt.entry(specs.len()).or_default() += 1;
        for s in specs {
            *by_id.entry(s.id).or_default() += 1;
        }
    }
    let split: Vec<String> = per_prompt.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    println!("instructions per prompt: {}", split.join(", "));
    println!("{} instruction kinds used", by_id.len());
    Ok(())
}
