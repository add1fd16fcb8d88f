//! `firebrand eval ...`: `follow` scores instruction following as IFEval does (strict and loose,
//! prompt- and instruction-level, per instruction id), from a `prompts` dataset or from IFEval's
//! own file convention; `attention` lands with issue 11.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use firebrand_data::records::{ChatRow, PromptsRow, Role};
use firebrand_data::{Dataset, DatasetKind};
use firebrand_verify::score::{Detail, IfEvalInput, Judged, Report};
use firebrand_verify::{Verifier, kinds, parse_verifiers};
use serde_json::Value;

use firebrand_train::localist::{BlockSource, LocalistConfig, LocalistRun, Schedule, TargetRule};

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Instruction following, IFEval-style: firebrand eval follow PROMPTS.lance --responses R,
    /// or firebrand eval follow --input input_data.jsonl --responses responses.jsonl
    Follow(FollowArgs),
    /// Localist metrics of a model at any λ: attention entropy (bits) and pointer fidelity per
    /// layer, perplexity and next-token accuracy: firebrand eval attention RUN data.tokens.lance --lambda 0.6
    Attention(AttentionArgs),
}

#[derive(Debug, Args)]
pub struct FollowArgs {
    /// A `prompts` dataset whose `verifiers` say what to check (or use --input).
    prompts: Option<PathBuf>,
    /// IFEval-convention prompts: JSONL rows {key, prompt, instruction_id_list, kwargs}.
    #[arg(long, conflicts_with = "prompts")]
    input: Option<PathBuf>,
    /// Responses: JSONL rows {prompt, response} (matched by prompt text) or {id, response}
    /// (matched by id), or a `chat` dataset (matched by id, last assistant message).
    #[arg(long)]
    responses: Option<PathBuf>,
    /// Write one JSONL row per prompt with its per-instruction strict and loose verdicts.
    #[arg(long)]
    details: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Score prompts without a response as failing every instruction, instead of an error.
    #[arg(long)]
    allow_missing: bool,
    /// List the known instruction ids and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(cmd: EvalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EvalCommand::Follow(a) => follow(&a),
        EvalCommand::Attention(a) => attention(&a),
    }
}

#[derive(Debug, Args)]
pub struct AttentionArgs {
    /// A checkpoint or run (its recipe's `[localist]` is the default setting).
    model: PathBuf,
    /// A `tokens` dataset to measure on.
    data: PathBuf,
    /// The dial λ (the bias is applied at inference; default: the recipe's, else 0).
    #[arg(long)]
    lambda: Option<f64>,
    /// Bias strength Δ (default: the recipe's, else 8).
    #[arg(long)]
    delta: Option<f64>,
    /// λ per layer: uniform, or polynomial with --beta.
    #[arg(long)]
    schedule: Option<String>,
    /// Exponent of the polynomial schedule.
    #[arg(long)]
    beta: Option<f64>,
    /// Blocks: anchors (sentence punctuation and newlines), segments or adaptive.
    #[arg(long)]
    blocks: Option<String>,
    /// Target block of each query: own or previous.
    #[arg(long)]
    target: Option<String>,
    /// Rows to measure (from the start of the dataset).
    #[arg(long, default_value_t = 64)]
    rows: usize,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn attention(a: &AttentionArgs) -> anyhow::Result<ExitCode> {
    type B = burn::backend::NdArray<f32>;
    let trained = firebrand_train::trained::load_trained::<B>(&a.model, &Default::default())?;
    let mut config = trained
        .recipe
        .as_ref()
        .and_then(|r| r.localist.clone())
        .unwrap_or_else(default_localist);
    if let Some(l) = a.lambda {
        config.lambda = l;
    }
    if let Some(d) = a.delta {
        config.delta = d;
    }
    if let Some(b) = a.beta {
        config.beta = b;
    }
    if let Some(s) = &a.schedule {
        config.schedule = match s.as_str() {
            "uniform" => Schedule::Uniform,
            "polynomial" => Schedule::Polynomial,
            other => bail!("--schedule: `{other}` is not uniform or polynomial"),
        };
    }
    if let Some(b) = &a.blocks {
        config.blocks = match b.as_str() {
            "anchors" => BlockSource::Anchors,
            "segments" => BlockSource::Segments,
            "adaptive" => BlockSource::Adaptive,
            other => bail!("--blocks: `{other}` is not anchors, segments or adaptive"),
        };
    }
    if let Some(t) = &a.target {
        config.target = match t.as_str() {
            "own" => TargetRule::Own,
            "previous" => TargetRule::Previous,
            other => bail!("--target: `{other}` is not own or previous"),
        };
    }
    let tokenizer = match &trained.tokenizer {
        Some(p) => Some(firebrand_data::tokenizer::load(p)?),
        None => None,
    };
    let run = LocalistRun::new(&config, trained.config.num_hidden_layers, tokenizer.as_ref())?;
    let ds = Dataset::open_kind(&a.data, DatasetKind::Tokens)?;
    let n = ds.len()?.min(a.rows);
    let rows: Vec<firebrand_data::TokensRow> = ds.take(&(0..n as u64).collect::<Vec<_>>())?;
    let report = firebrand_train::engine::autodiff::attention_report(&trained.model, &rows, &run, a.batch_size)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} targets in {n} rows, λ = {} ({:?}), Δ = {}: perplexity {:.3}, next-token accuracy {:.4}",
        report.targets, config.lambda, config.schedule, config.delta, report.perplexity, report.accuracy
    );
    println!("{:>5} {:>8} {:>14} {:>9}", "layer", "λ", "entropy (bits)", "fidelity");
    for (i, (l, m)) in report.lambdas.iter().zip(&report.layers).enumerate() {
        println!("{i:>5} {l:>8.3} {:>14.3} {:>9.4}", m.entropy_bits, m.fidelity);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `[localist]` defaults with λ = 0.
fn default_localist() -> LocalistConfig {
    serde_json::from_str(r#"{"lambda": 0.0}"#).expect("the defaults parse")
}

/// One prompt to judge.
struct Item {
    key: Value,
    id: String,
    prompt: String,
    verifiers: Vec<Verifier>,
}

fn follow(a: &FollowArgs) -> anyhow::Result<ExitCode> {
    if a.list {
        for k in kinds() {
            let aliases = if k.aliases.is_empty() {
                String::new()
            } else {
                format!("  (also {})", k.aliases.join(", "))
            };
            println!("{}{aliases}", k.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let items = match (&a.prompts, &a.input) {
        (Some(p), None) => dataset_items(p)?,
        (None, Some(p)) => ifeval_items(p)?,
        _ => bail!("give a `prompts` dataset or --input input_data.jsonl"),
    };
    let Some(responses_path) = &a.responses else {
        bail!("--responses is required: a JSONL of {{prompt, response}} or {{id, response}}, or a `chat` dataset");
    };
    let responses = read_responses(responses_path)?;
    let mut report = Report::default();
    let mut details = Vec::new();
    let mut missing = Vec::new();
    for item in &items {
        let response = responses
            .by_id
            .get(&item.id)
            .or_else(|| responses.by_prompt.get(&item.prompt));
        let response = match response {
            Some(r) => r.clone(),
            None => {
                missing.push(item.id.clone());
                String::new()
            }
        };
        let judged = Judged::new(&item.verifiers, &response);
        // Aliases (FollowRAG's names) are reported under the canonical id and its category.
        let ids: Vec<String> = item.verifiers.iter().map(|v| v.kind.id.to_string()).collect();
        report.add(&ids, &judged);
        if a.details.is_some() {
            details.push(Detail::new(
                item.key.clone(),
                item.prompt.clone(),
                response,
                ids,
                judged,
            ));
        }
    }
    if !missing.is_empty() && !a.allow_missing {
        bail!(
            "{} of {} prompts have no response (first: {})\n  hint: responses match by `id` or by exact prompt text; --allow-missing scores them as failures",
            missing.len(),
            items.len(),
            missing[0]
        );
    }
    if let Some(path) = &a.details {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for d in &details {
            serde_json::to_writer(&mut f, d)?;
            writeln!(f)?;
        }
        f.flush()?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
        if !missing.is_empty() {
            println!("{} prompts had no response and count as failures", missing.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dataset_items(path: &Path) -> anyhow::Result<Vec<Item>> {
    let ds = Dataset::open_kind(path, DatasetKind::Prompts)?;
    let mut out = Vec::new();
    for row in ds.rows::<PromptsRow>(1024)? {
        let row = row?;
        let verifiers = parse_verifiers(&row.verifiers)
            .with_context(|| format!("{}: row {}: field `verifiers`", path.display(), row.id))?;
        let prompt = row
            .prompt
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        out.push(Item {
            key: Value::String(row.id.clone()),
            id: row.id,
            prompt,
            verifiers,
        });
    }
    Ok(out)
}

fn ifeval_items(path: &Path) -> anyhow::Result<Vec<Item>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let place = || format!("{}: line {}", path.display(), i + 1);
        let input: IfEvalInput = serde_json::from_str(line).with_context(|| {
            format!(
                "{}\n  hint: rows need key, prompt, instruction_id_list and kwargs",
                place()
            )
        })?;
        if input.kwargs.len() != input.instruction_id_list.len() {
            bail!(
                "{}: {} instruction ids but {} kwargs objects",
                place(),
                input.instruction_id_list.len(),
                input.kwargs.len()
            );
        }
        let verifiers = input
            .instruction_id_list
            .iter()
            .zip(input.kwargs.iter())
            .map(|(id, kw)| Verifier::new(id, kw.clone()))
            .collect::<Result<Vec<_>, _>>()
            .with_context(place)?;
        out.push(Item {
            id: match &input.key {
                Value::String(s) => s.clone(),
                Value::Null => format!("line-{}", i + 1),
                other => other.to_string(),
            },
            key: input.key,
            prompt: input.prompt,
            verifiers,
        });
    }
    Ok(out)
}

#[derive(Default)]
struct Responses {
    by_id: HashMap<String, String>,
    by_prompt: HashMap<String, String>,
}

fn read_responses(path: &Path) -> anyhow::Result<Responses> {
    let mut out = Responses::default();
    if path.is_dir() {
        let ds = Dataset::open_kind(path, DatasetKind::Chat)?;
        for row in ds.rows::<ChatRow>(1024)? {
            let row = row?;
            if let Some(m) = row.messages.iter().rev().find(|m| m.role == Role::Assistant) {
                out.by_id.insert(row.id.clone(), m.content.clone());
            }
        }
        return Ok(out);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("{}: line {}: not JSON", path.display(), i + 1))?;
        let Some(response) = v.get("response").and_then(Value::as_str) else {
            bail!("{}: line {}: no `response` string", path.display(), i + 1);
        };
        // As IFEval, a later row for the same prompt wins.
        if let Some(p) = v.get("prompt").and_then(Value::as_str) {
            out.by_prompt.insert(p.to_string(), response.to_string());
        }
        match v.get("id").or_else(|| v.get("key")) {
            Some(Value::String(s)) => {
                out.by_id.insert(s.clone(), response.to_string());
            }
            Some(other) if !other.is_null() => {
                out.by_id.insert(other.to_string(), response.to_string());
            }
            _ => {}
        }
    }
    Ok(out)
}
