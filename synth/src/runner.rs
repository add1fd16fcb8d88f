//! The one job runner every synthesizer uses: streaming input in chunks, rayon over each chunk,
//! a commit after each chunk (so a killed job loses at most one chunk), `--resume` that skips
//! inputs whose ids are already in the output, and a report of dropped inputs by reason.
//!
//! Output order follows input order within a chunk (rayon's indexed collect), so a job's output is
//! the same however many threads ran it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use firebrand_data::records::Record;
use firebrand_data::{Dataset, DatasetWriter, WriteMode};
use rayon::prelude::*;

/// What one input became.
#[derive(Debug)]
pub enum Outcome<R> {
    /// A row to write.
    Keep(R),
    /// Left out, with the reason counted in the report.
    Drop(String),
}

/// What a job did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobReport {
    /// Inputs read.
    pub read: usize,
    /// Rows written by this run.
    pub written: usize,
    /// Inputs skipped because `--resume` found them in the output.
    pub already_done: usize,
    /// Inputs left out, by reason.
    pub dropped: BTreeMap<String, usize>,
}

impl JobReport {
    /// ` (N already there)` when `--resume` skipped inputs, else nothing: for report lines.
    pub fn already_note(&self) -> String {
        if self.already_done > 0 {
            format!(" ({} already there)", self.already_done)
        } else {
            String::new()
        }
    }

    /// Whether every input this run asked a generator about was dropped because generation
    /// failed (drop reasons starting `generation failed`): the endpoint or model is unusable.
    pub fn all_generation_failed(&self) -> bool {
        let asked = self.read - self.already_done;
        let failed: usize = self
            .dropped
            .iter()
            .filter(|(why, _)| why.starts_with("generation failed"))
            .map(|(_, n)| n)
            .sum();
        asked > 0 && failed == asked
    }

    /// Prints the drop counts under `left out:`, if any.
    pub fn print_drops(&self) {
        if !self.dropped.is_empty() {
            println!("left out:");
            for line in self.drop_lines() {
                println!("{line}");
            }
        }
    }

    /// The drop counts as `reason: n` lines, most frequent first.
    pub fn drop_lines(&self) -> Vec<String> {
        let mut v: Vec<(&String, &usize)> = self.dropped.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.into_iter().map(|(r, n)| format!("{n:>8}  {r}")).collect()
    }
}

/// Options of a job.
#[derive(Debug, Clone, Copy)]
pub struct JobOptions {
    /// Inputs per chunk (one rayon pass and one commit each).
    pub chunk: usize,
    /// Append to an existing output, skipping inputs whose ids it holds; otherwise the output must
    /// not exist unless `overwrite`.
    pub resume: bool,
    /// Replace an existing output.
    pub overwrite: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            chunk: 1024,
            resume: false,
            overwrite: false,
        }
    }
}

/// Runs `work` over `inputs` (each with its id), in parallel within each chunk, and writes the
/// kept rows to `out`. `row_id` gives a written row's input id (for `--resume`); `progress` sees
/// the report after every chunk.
///
/// # Errors
/// When the output cannot be opened or written, or an input fails to read. Chunks committed
/// before the failure stay in the output (resume with `resume`).
pub fn run_job<I, R, W>(
    inputs: impl Iterator<Item = firebrand_data::Result<(String, I)>>,
    out: &Path,
    opts: JobOptions,
    row_id: fn(&R) -> &str,
    work: W,
    progress: impl FnMut(&JobReport),
) -> firebrand_data::Result<JobReport>
where
    I: Send,
    R: Record + Send,
    W: Fn(&str, I) -> Outcome<R> + Sync,
{
    run_job_batched(
        inputs,
        out,
        opts,
        row_id,
        |chunk: Vec<(String, I)>| chunk.into_par_iter().map(|(id, input)| work(&id, input)).collect(),
        progress,
    )
}

/// As [`run_job`], but `work` takes a whole chunk at once (for batched generation with a model);
/// it returns one outcome per input, in order.
///
/// # Errors
/// As [`run_job`], and when `work` returns a different number of outcomes than inputs.
pub fn run_job_batched<I, R, W>(
    inputs: impl Iterator<Item = firebrand_data::Result<(String, I)>>,
    out: &Path,
    opts: JobOptions,
    row_id: fn(&R) -> &str,
    work: W,
    progress: impl FnMut(&JobReport),
) -> firebrand_data::Result<JobReport>
where
    R: Record,
    W: Fn(Vec<(String, I)>) -> Vec<Outcome<R>>,
{
    let work = |chunk| {
        work(chunk)
            .into_iter()
            .map(|o| match o {
                Outcome::Keep(r) => Ok(vec![r]),
                Outcome::Drop(reason) => Err(reason),
            })
            .collect()
    };
    write_job(inputs, out, opts, row_id, work, progress)
}

/// As [`run_job`], for a synthesizer that makes several rows of one input (LintSeq's trajectories):
/// `work` returns the input's rows, or the reason it is dropped. `row_id` gives the input id of a
/// row, so `--resume` skips inputs whose rows are in the output.
///
/// # Errors
/// As [`run_job`].
pub fn run_job_many<I, R, W>(
    inputs: impl Iterator<Item = firebrand_data::Result<(String, I)>>,
    out: &Path,
    opts: JobOptions,
    row_id: fn(&R) -> &str,
    work: W,
    progress: impl FnMut(&JobReport),
) -> firebrand_data::Result<JobReport>
where
    I: Send,
    R: Record + Send,
    W: Fn(&str, I) -> Result<Vec<R>, String> + Sync,
{
    let work = |chunk: Vec<(String, I)>| chunk.into_par_iter().map(|(id, input)| work(&id, input)).collect();
    write_job(inputs, out, opts, row_id, work, progress)
}

/// The loop every job runs: read a chunk, skip what is done, `work` it (one result per input),
/// write and commit the rows, count the drops.
fn write_job<I, R, W>(
    inputs: impl Iterator<Item = firebrand_data::Result<(String, I)>>,
    out: &Path,
    opts: JobOptions,
    row_id: fn(&R) -> &str,
    work: W,
    mut progress: impl FnMut(&JobReport),
) -> firebrand_data::Result<JobReport>
where
    R: Record,
    W: Fn(Vec<(String, I)>) -> Vec<Result<Vec<R>, String>>,
{
    let mut done: HashSet<String> = HashSet::new();
    if opts.resume && out.exists() {
        let existing = Dataset::open_kind(out, R::KIND)?;
        for row in existing.rows::<R>(4096)? {
            done.insert(row_id(&row?).to_string());
        }
    }
    let mode = match (opts.resume, opts.overwrite) {
        (true, _) => WriteMode::Append,
        (false, true) => WriteMode::Overwrite,
        (false, false) => WriteMode::Create,
    };
    let mut writer = DatasetWriter::create(out, R::KIND, mode)?;
    let mut report = JobReport::default();
    let mut inputs = inputs.peekable();
    while inputs.peek().is_some() {
        let mut chunk = Vec::with_capacity(opts.chunk);
        for item in inputs.by_ref().take(opts.chunk.max(1)) {
            let (id, input) = item?;
            report.read += 1;
            if done.contains(&id) {
                report.already_done += 1;
                continue;
            }
            chunk.push((id, input));
        }
        let n = chunk.len();
        let outcomes = work(chunk);
        if outcomes.len() != n {
            return Err(firebrand_data::DataError::Invalid(format!(
                "a synthesizer returned {} outcomes for {n} inputs",
                outcomes.len()
            )));
        }
        let mut rows = Vec::new();
        for o in outcomes {
            match o {
                Ok(rs) => rows.extend(rs),
                Err(reason) => *report.dropped.entry(reason).or_default() += 1,
            }
        }
        report.written += rows.len();
        writer.write(&rows)?;
        writer.flush()?;
        progress(&report);
    }
    writer.commit()?;
    Ok(report)
}
