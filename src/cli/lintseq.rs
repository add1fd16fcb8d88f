//! `firebrand synth lintseq`: programs → a `lintseq` dataset of insertion-only edit sequences, and
//! optionally the SFT dataset of their training texts (`--emit-sft`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use firebrand_data::{CompletionRow, Dataset, DatasetKind, DatasetWriter, LintseqRow, Provenance, WriteMode};
use firebrand_synth::lintseq::{self, LintseqOptions, input};
use firebrand_synth::runner::{JobOptions, run_job_many};

use super::progress;

#[derive(Debug, Args)]
pub struct LintseqArgs {
    /// A folder of source files, a JSONL file of instruction + response pairs, or a `chat` or
    /// `completion` dataset (code is taken from the response's fenced blocks).
    input: PathBuf,
    /// Output `lintseq` dataset.
    #[arg(long, required_unless_present_any = ["lint", "verify"])]
    out: Option<PathBuf>,
    /// Independent edit sequences per program (the paper's experiments used 5).
    #[arg(long, default_value_t = 5)]
    samples_per_program: usize,
    /// Seed; each sequence's seed also hashes the program id and the sample index.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Language of JSONL and dataset code, and the only one read from a folder (default: every
    /// language by extension in a folder, python otherwise).
    #[arg(long)]
    language: Option<String>,
    /// Most edits per sequence; a program that needs more is dropped (`cap reached`).
    #[arg(long, default_value_t = 512)]
    max_edits: usize,
    /// Programs with more lines are dropped (`too large`); 0 for no limit.
    #[arg(long, default_value_t = 5000)]
    max_lines: usize,
    /// JSONL field with the instruction.
    #[arg(long, default_value = "instruction")]
    instruction_field: String,
    /// JSONL field with the response holding the code.
    #[arg(long, default_value = "response")]
    code_field: String,
    /// Also write the SFT dataset (`completion`: the instruction, then the `<|diff|>`-separated
    /// edits, as the reference trains on) to this path, rebuilt from the whole output.
    #[arg(long)]
    emit_sft: Option<PathBuf>,
    /// Programs per chunk (one parallel pass and one commit each).
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// Write nothing: print what the checker flags in each program as it stands (`file:line: rule`
    /// and the line), then the count per rule. Programs with flags lose those lines in their
    /// last edit; a syntax error drops the program.
    #[arg(long, conflicts_with = "verify")]
    lint: bool,
    /// Write nothing: INPUT is a `lintseq` dataset; check that every sequence rebuilds its
    /// program, inserts only, and passes the checker after every edit but the last.
    #[arg(long)]
    verify: bool,
    /// Replace existing outputs.
    #[arg(long)]
    overwrite: bool,
    /// Append to an existing output, skipping programs it already holds.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
}

/// Stack of each worker: the checkers walk syntax trees recursively, and generated or deeply
/// nested code makes deep trees (programs nested deeper than [`lintseq::MAX_DEPTH`] are dropped).
const WORKER_STACK: usize = 64 << 20;

pub fn run(a: &LintseqArgs) -> anyhow::Result<ExitCode> {
    let pool = rayon::ThreadPoolBuilder::new()
        .stack_size(WORKER_STACK)
        .build()
        .context("starting worker threads")?;
    pool.install(|| run_in_pool(a))
}

fn run_in_pool(a: &LintseqArgs) -> anyhow::Result<ExitCode> {
    let language = match &a.language {
        None => None,
        Some(name) => Some(lintseq::by_name(name).with_context(|| {
            format!(
                "--language {name}: not a LintSeq language (known: {})",
                lintseq::lang::names().join(", ")
            )
        })?),
    };
    if a.samples_per_program == 0 {
        bail!("--samples-per-program must be at least 1");
    }
    if let Some(sft) = &a.emit_sft
        && sft.exists()
        && !(a.overwrite || a.resume)
    {
        bail!(
            "{} exists\n  hint: pass --overwrite to replace it, or --resume",
            sft.display()
        );
    }
    if a.verify {
        return verify(&a.input);
    }
    let fields = input::JsonlFields {
        instruction: a.instruction_field.clone(),
        response: a.code_field.clone(),
    };
    let source = input::open(&a.input, language, &fields).with_context(|| format!("reading {}", a.input.display()))?;
    if a.lint {
        return lint(source);
    }
    let opts = LintseqOptions {
        samples: a.samples_per_program,
        seed: a.seed,
        max_edits: a.max_edits,
        max_lines: a.max_lines,
    };
    let job = JobOptions {
        chunk: a.chunk.max(1),
        resume: a.resume,
        overwrite: a.overwrite,
    };
    let Some(out_path) = &a.out else {
        bail!("--out is required")
    };
    if a.resume && out_path.exists() {
        check_resume(out_path, &opts)?;
    }
    // A repeated input id would give two programs the same row ids (and `--resume` could not
    // tell them apart): the later ones are dropped.
    let mut seen = std::collections::HashSet::new();
    let items = source.items.map(move |item| {
        item.map(|(id, program)| {
            let program = if seen.insert(id.clone()) {
                program
            } else {
                Err("duplicate id".to_string())
            };
            (id, program)
        })
    });
    let pb = progress::bar(source.total as u64, "lintseq", false);
    let start = Instant::now();
    let Some(out_path) = &a.out else {
        bail!("--out is required")
    };
    let report = run_job_many(
        items,
        out_path,
        job,
        |r: &LintseqRow| lintseq::program_id(&r.id),
        |id, program: Result<lintseq::Program, String>| {
            let program = program?;
            lintseq::rows(id, &program, &opts).map_err(|r| r.reason().to_string())
        },
        |r| pb.set_position(r.read as u64),
    );
    pb.finish_and_clear();
    let report = report?;
    let secs = start.elapsed().as_secs_f64();
    let programs = report.read - report.already_done - report.dropped.values().sum::<usize>();
    println!(
        "{} edit sequences of {programs} programs ({} read) into {} in {secs:.1} s ({:.1} programs/s){}",
        report.written,
        report.read,
        out_path.display(),
        (report.read - report.already_done) as f64 / secs.max(1e-9),
        report.already_note()
    );
    report.print_drops();
    // One streaming pass over the whole output (this run's rows and a resumed run's): its shape,
    // and the SFT dataset when asked for.
    let out = Dataset::open_kind(out_path, DatasetKind::Lintseq)?;
    let mut sft = match &a.emit_sft {
        Some(p) => Some((
            p,
            DatasetWriter::create(p, DatasetKind::Completion, WriteMode::Overwrite)?,
        )),
        None => None,
    };
    let (mut edits, mut lines) = (Vec::new(), Vec::new());
    let mut batch = Vec::new();
    for row in out.rows::<LintseqRow>(4096)? {
        let row = row?;
        edits.push(row.edits.len());
        lines.extend(
            row.edits
                .iter()
                .map(|e| e.lines().filter(|l| l.starts_with('+')).count()),
        );
        if let Some((_, w)) = &mut sft {
            batch.push(sft_row(&row));
            if batch.len() == 4096 {
                w.write(&batch)?;
                batch.clear();
            }
        }
    }
    if !edits.is_empty() {
        println!("edits per sequence: {}", describe(&mut edits));
        println!("lines per edit:     {}", describe(&mut lines));
    }
    if let Some((path, mut w)) = sft {
        w.write(&batch)?;
        w.commit()?;
        println!("{} training texts into {}", edits.len(), path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The SFT row of an edit sequence: the reference's instruction + `\n<|diff|>`-joined edits.
fn sft_row(r: &LintseqRow) -> CompletionRow {
    CompletionRow {
        id: r.id.clone(),
        prompt: r.instruction.clone(),
        completion: lintseq::training_text(&r.edits),
        provenance: Provenance {
            source: format!("lintseq:{}", r.source_file),
            labels: r.provenance.labels.clone(),
            score: None,
            meta: serde_json::json!({ "program": lintseq::program_id(&r.id), "sample": r.sample }).to_string(),
        },
    }
}

/// Refuses to resume an output sampled with another seed or another number of samples.
fn check_resume(out: &std::path::Path, opts: &LintseqOptions) -> anyhow::Result<()> {
    let ds = Dataset::open_kind(out, DatasetKind::Lintseq)?;
    let Some(first) = ds.rows::<LintseqRow>(1)?.next() else {
        return Ok(());
    };
    let first = first?;
    let meta: serde_json::Value = serde_json::from_str(&first.provenance.meta).unwrap_or_default();
    if let Some(seed) = meta.get("seed").and_then(|s| s.as_u64())
        && seed != opts.seed
    {
        bail!(
            "{}: was sampled with --seed {seed}, this run has --seed {}\n  hint: resume with the same seed, or write a new output",
            out.display(),
            opts.seed
        );
    }
    if let Some(samples) = meta.get("samples").and_then(|s| s.as_u64())
        && samples as usize != opts.samples
    {
        bail!(
            "{}: holds {samples} samples per program, this run asks for {}\n  hint: resume with the same --samples-per-program, or write a new output",
            out.display(),
            opts.samples
        );
    }
    Ok(())
}

/// `--lint`: the checker's flags on each program as it stands.
fn lint(source: input::Source) -> anyhow::Result<ExitCode> {
    let mut by_rule: std::collections::BTreeMap<&str, usize> = Default::default();
    let (mut programs, mut flagged) = (0, 0);
    for item in source.items {
        let (id, program) = item?;
        let Ok(program) = program else { continue };
        programs += 1;
        let flags = lintseq::lint(&program.code, program.language);
        flagged += usize::from(!flags.is_empty());
        let lines: Vec<&str> = program.code.split('\n').collect();
        for f in flags {
            *by_rule.entry(f.rule).or_default() += 1;
            let line = lines.get(f.row).map_or("", |l| l.trim());
            println!("{id}:{}: {}: {line}", f.row + 1, f.rule);
        }
    }
    println!("{flagged} of {programs} programs flagged");
    for (rule, n) in by_rule {
        println!("{n:>8}  {rule}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `--verify`: every row of a `lintseq` dataset against [`lintseq::verify`].
fn verify(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let ds = Dataset::open_kind(path, DatasetKind::Lintseq)?;
    let (mut rows, mut bad) = (0, 0);
    for row in ds.rows::<LintseqRow>(4096)? {
        let row = row?;
        rows += 1;
        let Some(lang) = lintseq::by_name(&row.language) else {
            bad += 1;
            println!("{}: unknown language {:?}", row.id, row.language);
            continue;
        };
        if let Err(e) = lintseq::verify(&row.program, lang, &row.edits) {
            bad += 1;
            println!("{}: {e}", row.id);
        }
    }
    println!("{} of {rows} sequences verified", rows - bad);
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Mean, median and maximum of counts.
fn describe(v: &mut [usize]) -> String {
    v.sort_unstable();
    let mean = v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    let at = |q: usize| v.get(q).copied().unwrap_or(0);
    format!(
        "mean {mean:.1}, median {}, max {}",
        at(v.len() / 2),
        at(v.len().saturating_sub(1))
    )
}
