//! `firebrand data ...`: import, export, query, show, stats, debug, tokenize.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use firebrand_data::import::{ImportOptions, export_jsonl, import_jsonl};
use firebrand_data::sql::{Query, query_to_dataset};
use firebrand_data::stats::stats;
use firebrand_data::template::{MaskMode, Template};
use firebrand_data::tokenize::{Overflow, TokenizeOptions, tokenize_dataset};
use firebrand_data::{Dataset, DatasetKind, TokensRow, WriteMode, tokenizer};

use super::progress;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Import a JSONL file (OpenAI messages, ShareGPT, Alpaca, TRL layouts, IFEval inputs).
    Import(ImportArgs),
    /// Export a dataset as JSONL (to stdout unless --out).
    Export(ExportArgs),
    /// Run SQL over datasets named by their quoted paths: SELECT * FROM 'a.lance' ...
    Query(QueryArgs),
    /// Print rows of a dataset.
    Show(ShowArgs),
    /// Print row counts, a length histogram and label counts.
    Stats(StatsArgs),
    /// Print tokenized rows with the loss mask made visible.
    Debug(DebugArgs),
    /// Render, tokenize and (optionally) pack a chat or completion dataset into a `tokens` dataset.
    Tokenize(TokenizeArgs),
}

/// Flags shared by every command that writes a dataset.
#[derive(Debug, Args)]
pub struct OutputMode {
    /// Replace the output if it exists (Lance keeps older versions).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Append to the output if it exists.
    #[arg(long)]
    resume: bool,
}

impl OutputMode {
    pub fn mode(&self) -> WriteMode {
        if self.overwrite {
            WriteMode::Overwrite
        } else if self.resume {
            WriteMode::Append
        } else {
            WriteMode::Create
        }
    }
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The JSONL file.
    file: PathBuf,
    /// Dataset kind to write; inferred from the first record when omitted.
    #[arg(long, value_parser = parse_kind)]
    kind: Option<DatasetKind>,
    /// Output dataset (a `.lance` folder).
    #[arg(long)]
    out: PathBuf,
    /// Count malformed lines and report them instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// `source` of rows that do not name one (default: the file name).
    #[arg(long)]
    source: Option<String>,
    #[command(flatten)]
    output: OutputMode,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The dataset.
    dataset: PathBuf,
    /// Write JSON lines (the only format so far; accepted for clarity).
    #[arg(long, default_value_t = true)]
    jsonl: bool,
    /// Output file (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL; datasets are quoted paths ending in `.lance`.
    sql: String,
    /// Write the result as a dataset instead of printing it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Kind of the written result (default: the kind whose columns it has).
    #[arg(long, value_parser = parse_kind, requires = "out")]
    kind: Option<DatasetKind>,
    /// Most rows to print (printing only).
    #[arg(long, default_value_t = 50)]
    max_rows: usize,
    #[command(flatten)]
    output: OutputMode,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The dataset.
    dataset: PathBuf,
    /// Rows to print.
    #[arg(long, short = 'n', default_value_t = 5)]
    rows: usize,
    /// First row to print.
    #[arg(long, default_value_t = 0)]
    offset: u64,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The dataset.
    dataset: PathBuf,
    /// Labels and sources to list (most frequent first).
    #[arg(long, default_value_t = 20)]
    top: usize,
}

#[derive(Debug, Args)]
pub struct DebugArgs {
    /// A `tokens` dataset.
    dataset: PathBuf,
    /// The tokenizer that made it (tokenizer.json or a model folder).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Rows to print.
    #[arg(long, short = 'n', default_value_t = 2)]
    rows: usize,
    /// First row to print.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Colour trained tokens (auto: when stdout is a terminal); otherwise they are [[bracketed]].
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// A chat or completion dataset.
    input: PathBuf,
    /// tokenizer.json, or a model folder that has one.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Chat template: chatml, llama3, plain, or model (the tokenizer folder's own Jinja
    /// `chat_template`; the default when the folder has one, else chatml).
    #[arg(long)]
    template: Option<String>,
    /// Tokens trained on: assistant (every assistant turn), completion (the last one), all.
    #[arg(long, default_value = "assistant")]
    mask: MaskMode,
    /// Tokens per row.
    #[arg(long)]
    max_len: usize,
    /// Pack several documents per row (best-fit decreasing; attention stays within each).
    #[arg(long)]
    pack: bool,
    /// Encode Multiverse attention from the control tags (segments, parents, positions); a
    /// multiverse dataset is then rendered from its parallel trace (from its sequential trace
    /// without this flag, the autoregressive baseline).
    #[arg(long)]
    multiverse: bool,
    /// Documents longer than --max-len: truncate or drop.
    #[arg(long, value_enum, default_value_t = OverflowChoice::Truncate)]
    overflow: OverflowChoice,
    /// Documents tokenized and packed together (bounds memory).
    #[arg(long, default_value_t = 8192)]
    chunk: usize,
    /// Output `tokens` dataset.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    output: OutputMode,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OverflowChoice {
    Truncate,
    Drop,
}

fn parse_kind(s: &str) -> Result<DatasetKind, String> {
    s.parse()
}

pub fn run(cmd: DataCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DataCommand::Import(a) => import(a),
        DataCommand::Export(a) => export(a),
        DataCommand::Query(a) => query(a),
        DataCommand::Show(a) => show(a),
        DataCommand::Stats(a) => print_stats(a),
        DataCommand::Debug(a) => debug(a),
        DataCommand::Tokenize(a) => tokenize(a),
    }?;
    Ok(ExitCode::SUCCESS)
}

pub fn import(a: ImportArgs) -> anyhow::Result<()> {
    let size = std::fs::metadata(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?
        .len();
    let pb = progress::bar(size, "importing", true);
    let opts = ImportOptions {
        kind: a.kind,
        skip_bad: a.skip_bad,
        mode: a.output.mode(),
        source: a.source,
    };
    let report = import_jsonl(&a.file, &a.out, &opts, |done| pb.set_position(done));
    pb.finish_and_clear();
    let report = report.with_context(|| format!("importing {} into {}", a.file.display(), a.out.display()))?;
    let kind = report.kind.map(|k| k.name()).unwrap_or("?");
    let layouts: Vec<String> = report.layouts.iter().map(|(l, n)| format!("{l}: {n}")).collect();
    println!(
        "imported {} rows into {} ({kind}; layouts {})",
        report.rows,
        a.out.display(),
        layouts.join(", ")
    );
    if !report.skipped.is_empty() {
        let total: usize = report.skipped.values().sum();
        println!("skipped {total} malformed lines:");
        for (reason, n) in &report.skipped {
            println!("  {n:>7}  {reason}");
        }
        for e in &report.examples {
            println!("  e.g. {}", e.replace('\n', "\n       "));
        }
    }
    Ok(())
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    let ds = Dataset::open(&a.dataset)?;
    match &a.out {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let pb = progress::bar(ds.len()? as u64, "exporting", false);
            let n = export_jsonl(&ds, &mut w, |done| pb.set_position(done as u64));
            pb.finish_and_clear();
            let n = n?;
            w.flush().with_context(|| format!("writing {}", path.display()))?;
            eprintln!("exported {n} rows to {}", path.display());
        }
        None => {
            // The rows go to stdout; the bar (stderr) is left out so pipes stay quiet.
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            export_jsonl(&ds, &mut w, |_| {})?;
            w.flush()?;
        }
    }
    Ok(())
}

fn query(a: QueryArgs) -> anyhow::Result<()> {
    match &a.out {
        Some(out) => {
            let pb = progress::spinner("running query");
            let ds = query_to_dataset(&a.sql, out, a.kind, a.output.mode());
            pb.finish_and_clear();
            let ds = ds?;
            println!("wrote {} rows ({}) to {}", ds.len()?, ds.kind(), out.display());
        }
        None => {
            let q = Query::new(&a.sql)?;
            let mut shown = Vec::new();
            let mut total = 0usize;
            q.for_each_batch(|b| {
                total += b.num_rows();
                let room = a
                    .max_rows
                    .saturating_sub(shown.iter().map(|b: &arrow::array::RecordBatch| b.num_rows()).sum());
                if room > 0 {
                    shown.push(b.slice(0, room.min(b.num_rows())));
                }
                Ok(())
            })?;
            println!("{}", arrow::util::pretty::pretty_format_batches(&shown)?);
            if total > a.max_rows {
                println!(
                    "({total} rows, {} shown; --max-rows shows more, --out writes them all)",
                    a.max_rows
                );
            } else {
                println!("({total} rows)");
            }
        }
    }
    Ok(())
}

fn show(a: ShowArgs) -> anyhow::Result<()> {
    let ds = Dataset::open(&a.dataset)?;
    let len = ds.len()? as u64;
    println!(
        "{}: {} dataset, {len} rows, version {}",
        a.dataset.display(),
        ds.kind(),
        ds.version()
    );
    let end = (a.offset + a.rows as u64).min(len);
    if a.offset >= end {
        return Ok(());
    }
    let rows: Vec<u64> = (a.offset..end).collect();
    let batch = ds.take_batch(&rows, None)?;
    for (i, row) in rows.iter().enumerate() {
        let obj = firebrand_data::records::row_json(&batch, i)?;
        println!("── row {row} ──");
        println!("{}", serde_json::to_string_pretty(&obj)?);
    }
    Ok(())
}

fn print_stats(a: StatsArgs) -> anyhow::Result<()> {
    let ds = Dataset::open(&a.dataset)?;
    let pb = progress::spinner("reading");
    let s = stats(&ds);
    pb.finish_and_clear();
    let s = s?;
    println!(
        "{}: {} dataset, version {}, {} rows",
        a.dataset.display(),
        s.kind,
        s.version,
        s.rows
    );
    let unit = if s.kind == DatasetKind::Tokens {
        "tokens"
    } else {
        "characters"
    };
    println!(
        "{unit} per row: min {}, mean {:.1}, max {}, total {}",
        s.lengths.min,
        s.lengths.mean(),
        s.lengths.max,
        s.lengths.sum
    );
    for line in s.lengths.render() {
        println!("  {line}");
    }
    if s.kind == DatasetKind::Tokens {
        let frac = if s.lengths.sum == 0 {
            0.0
        } else {
            s.loss_tokens as f64 / s.lengths.sum as f64
        };
        println!("trained tokens: {} ({:.1}% of all)", s.loss_tokens, 100.0 * frac);
        println!(
            "documents per row: min {}, mean {:.2}, max {} ({} documents)",
            s.docs_per_row.min,
            s.docs_per_row.mean(),
            s.docs_per_row.max,
            s.docs_per_row.sum
        );
        if s.rows > 0 {
            println!(
                "fill against the longest row: {:.1}%",
                100.0 * s.lengths.mean() / s.lengths.max.max(1) as f64
            );
        }
        return Ok(());
    }
    for (title, counts) in [("labels", &s.labels), ("sources", &s.sources)] {
        let mut v: Vec<(&String, &usize)> = counts.iter().collect();
        v.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
        println!("{title} ({} distinct):", v.len());
        for (name, n) in v.iter().take(a.top) {
            println!("  {n:>9}  {name}");
        }
        if v.len() > a.top {
            println!("  ... {} more", v.len() - a.top);
        }
    }
    Ok(())
}

fn debug(a: DebugArgs) -> anyhow::Result<()> {
    let ds = Dataset::open_kind(&a.dataset, DatasetKind::Tokens)?;
    let tok = tokenizer::load(&a.tokenizer)?;
    let color = match a.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::io::stdout().is_terminal(),
    };
    let len = ds.len()? as u64;
    let end = (a.offset + a.rows as u64).min(len);
    let rows: Vec<u64> = (a.offset..end).collect();
    let legend = if color {
        "\x1b[1;32mtrained\x1b[0m, \x1b[2mnot trained\x1b[0m"
    } else {
        "[[trained]], not trained"
    };
    println!("{}: {len} rows; {legend}; segments start with ‖", a.dataset.display());
    for (row_index, row) in rows.iter().zip(ds.take::<TokensRow>(&rows)?) {
        let trained = row.loss_mask.iter().filter(|&&m| m).count();
        println!(
            "── row {row_index}: {} tokens, {trained} trained, {} segments ({}) ──",
            row.input_ids.len(),
            row.source_ids.len(),
            row.source_ids.join(", ")
        );
        print!("{}", render_masked(&tok, &row, color)?);
        println!();
    }
    Ok(())
}

/// The row's text with trained runs highlighted, decoding runs of equal mask and segment together
/// (decoding tokens one by one would break multi-byte characters).
fn render_masked(tok: &tokenizer::Tokenizer, row: &TokensRow, color: bool) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut start = 0;
    let n = row.input_ids.len();
    while start < n {
        let key = (row.loss_mask[start], row.segment_ids[start]);
        let mut end = start + 1;
        while end < n && (row.loss_mask[end], row.segment_ids[end]) == key {
            end += 1;
        }
        if start == 0 || row.segment_ids[start] != row.segment_ids[start - 1] {
            out.push('‖');
        }
        let ids: Vec<u32> = row.input_ids[start..end].iter().map(|&i| i as u32).collect();
        let text = tok
            .decode(&ids, false)
            .map_err(|e| anyhow::anyhow!("decoding tokens: {e}"))?;
        match (key.0, color) {
            (true, true) => out.push_str(&format!("\x1b[1;32m{text}\x1b[0m")),
            (true, false) => out.push_str(&format!("[[{text}]]")),
            (false, true) => out.push_str(&format!("\x1b[2m{text}\x1b[0m")),
            (false, false) => out.push_str(&text),
        }
        start = end;
    }
    Ok(out)
}

pub fn tokenize(a: TokenizeArgs) -> anyhow::Result<()> {
    let input = Dataset::open(&a.input)?;
    let tok = tokenizer::load(&a.tokenizer)?;
    let opts = TokenizeOptions {
        template: Template::resolve(a.template.as_deref(), Some(&a.tokenizer)).context("--template")?,
        mask: a.mask,
        max_len: a.max_len,
        pack: a.pack,
        overflow: match a.overflow {
            OverflowChoice::Truncate => Overflow::Truncate,
            OverflowChoice::Drop => Overflow::Drop,
        },
        chunk: a.chunk,
        mode: a.output.mode(),
        multiverse: a.multiverse,
    };
    let pb = progress::bar(input.len()? as u64, "tokenizing", false);
    let report = tokenize_dataset(&input, &tok, &a.out, &opts, |done| pb.set_position(done as u64));
    pb.finish_and_clear();
    let r = report.with_context(|| format!("tokenizing {} into {}", a.input.display(), a.out.display()))?;
    println!(
        "tokenized {} rows into {} documents in {} rows of at most {} tokens ({}): {} tokens, {} trained, fill {:.1}%",
        r.rows_in,
        r.docs,
        r.rows_out,
        a.max_len,
        if a.pack { "packed" } else { "one document per row" },
        r.tokens,
        r.loss_tokens,
        100.0 * r.fill(a.max_len)
    );
    if r.truncated > 0 {
        println!("  {:>7}  truncated to {} tokens", r.truncated, a.max_len);
    }
    for (reason, n) in &r.dropped {
        println!("  {n:>7}  dropped: {reason}");
    }
    Ok(())
}
