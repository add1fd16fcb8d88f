//! `firebrand synth prefs`: preference pairs from a `prompts` dataset (PA-RAG style: answers
//! sampled with golden, partial and noisy passages, paired per perspective).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use firebrand_data::records::{PreferenceRow, PromptsRow};
use firebrand_data::{Dataset, DatasetKind};
use firebrand_synth::prefs::{Perspective, PrefsOptions, build_pairs};
use firebrand_synth::runner::{JobOptions, run_job_batched};

use super::local_model::ModelArgs;
use super::progress;

#[derive(Debug, Args)]
pub struct PrefsArgs {
    /// A `prompts` dataset written by `synth vifrag` (passages and instruction phrasings in meta).
    input: PathBuf,
    /// Output `preference` dataset.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Perspectives, comma-separated: informativeness, robustness, instruction.
    #[arg(long, default_value = "informativeness,robustness,instruction")]
    perspectives: String,
    /// Seed of the passage subsets, noise positions and generation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace an existing output.
    #[arg(long)]
    overwrite: bool,
    /// Append to an existing output, skipping (prompt, perspective) pairs it already holds.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
}

pub fn run(a: &PrefsArgs) -> anyhow::Result<ExitCode> {
    let mut perspectives = Vec::new();
    for name in a.perspectives.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match Perspective::parse(name) {
            Some(p) if !perspectives.contains(&p) => perspectives.push(p),
            Some(_) => {}
            None => bail!("--perspectives: unknown `{name}` (informativeness, robustness, instruction)"),
        }
    }
    if perspectives.is_empty() {
        bail!("--perspectives: none given");
    }
    let generator = a.model.generator("synth prefs")?;
    let prompts = Dataset::open_kind(&a.input, DatasetKind::Prompts)?;
    let total = prompts.len()?;
    let options = PrefsOptions {
        perspectives: perspectives.clone(),
        params: a.model.params(a.seed),
    };
    // One input per (prompt, perspective), ids as the pairs' ids, so --resume skips built pairs;
    // a chunk holds whole prompts, so each prompt's answers are sampled once.
    let inputs = prompts.rows::<PromptsRow>(256)?.flat_map(move |r| {
        let items: Vec<_> = match r {
            Ok(row) => perspectives
                .iter()
                .map(|p| Ok((format!("{}:{}", row.id, p.name()), (row.clone(), *p))))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        items
    });
    let per_prompt = options.perspectives.len();
    let pb = progress::bar(total as u64, "pairing", false);
    let seed = a.seed;
    let report = run_job_batched(
        inputs,
        &a.out,
        JobOptions {
            chunk: 16 * per_prompt,
            resume: a.resume,
            overwrite: a.overwrite,
        },
        |r: &PreferenceRow| &r.id,
        |chunk| {
            let inputs: Vec<(PromptsRow, Perspective)> = chunk.into_iter().map(|(_, x)| x).collect();
            build_pairs(generator.as_ref(), &inputs, &options, seed)
        },
        |r| pb.set_position((r.read / per_prompt) as u64),
    );
    pb.finish_and_clear();
    let report = report?;
    let out = Dataset::open_kind(&a.out, DatasetKind::Preference)?;
    println!(
        "wrote {} pairs from {total} prompts into {}{}",
        report.written,
        a.out.display(),
        report.already_note()
    );
    let mut per = std::collections::BTreeMap::<String, usize>::new();
    for row in out.rows::<PreferenceRow>(1024)? {
        let row = row?;
        if let Some(l) = row.provenance.labels.iter().find(|l| l.starts_with("perspective:")) {
            *per.entry(l["perspective:".len()..].to_string()).or_default() += 1;
        }
    }
    println!("pairs per perspective (whole output):");
    for p in Perspective::ALL {
        println!("  {:16} {}", p.name(), per.get(p.name()).copied().unwrap_or(0));
    }
    report.print_drops();
    if report.all_generation_failed() {
        eprintln!("every generation request failed; see the reasons above");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
