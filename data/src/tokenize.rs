//! `firebrand data tokenize`: text datasets into the `tokens` rows trainers read.
//!
//! Each row is rendered through a chat template with its loss mask (`template.rs`), tokenized in
//! parallel, cut to `max_len` (truncated or dropped, by option), and written one document per row or
//! packed (`packing.rs`). Choices: a document with no trained token (no assistant turn, or none left
//! after truncation) is dropped and counted, because a step over it would train on nothing; inputs
//! are read and written in chunks, so memory is bounded by the chunk, not the dataset.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::kind::DatasetKind;
use crate::packing::{Doc, Structure, pack, single};
use crate::records::{ChatRow, CompletionRow, Message, Role};
use crate::store::{Dataset, DatasetWriter, WriteMode};
use crate::template::{MaskMode, Template, encode};
use crate::tokenizer::Tokenizer;

/// What to do with a document longer than `max_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Keep its first `max_len` tokens.
    Truncate,
    /// Leave it out.
    Drop,
}

/// Options of one tokenize run.
#[derive(Debug, Clone)]
pub struct TokenizeOptions {
    /// Chat template.
    pub template: Template,
    /// Which tokens are trained on.
    pub mask: MaskMode,
    /// Row length in tokens.
    pub max_len: usize,
    /// Pack several documents per row.
    pub pack: bool,
    /// Documents longer than `max_len`.
    pub overflow: Overflow,
    /// Documents read, tokenized and packed together.
    pub chunk: usize,
    /// What to do when the output exists.
    pub mode: WriteMode,
    /// Encode Multiverse structure (segments, parents, positions) from the control tags; a
    /// `multiverse` dataset is then rendered from its parallel trace, otherwise from its
    /// sequential one (the autoregressive baseline).
    pub multiverse: bool,
}

/// What a tokenize run did.
#[derive(Debug, Clone, Default)]
pub struct TokenizeReport {
    /// Input rows read.
    pub rows_in: usize,
    /// Documents written.
    pub docs: usize,
    /// Output rows.
    pub rows_out: usize,
    /// Tokens written.
    pub tokens: usize,
    /// Trained tokens written.
    pub loss_tokens: usize,
    /// Documents cut to `max_len`.
    pub truncated: usize,
    /// Documents left out, by reason.
    pub dropped: BTreeMap<&'static str, usize>,
}

impl TokenizeReport {
    /// Fraction of the row capacity holding tokens (1.0 is perfect packing).
    pub fn fill(&self, max_len: usize) -> f64 {
        if self.rows_out == 0 {
            0.0
        } else {
            self.tokens as f64 / (self.rows_out * max_len) as f64
        }
    }
}

/// The instruction the reference appends to a Multiverse question
/// (`data/tokenization_multiverse.py`), and the sequential one of its autoregressive baseline.
pub const MULTIVERSE_INSTRUCTION: &str = " Think step by step and in parallel before answering.";
/// See [`MULTIVERSE_INSTRUCTION`].
pub const SEQUENTIAL_INSTRUCTION: &str = " Think step by step before answering.";

/// The conversations of one chunk of input, with their ids.
fn conversations(
    ds: &Dataset,
    batch: &arrow_array::RecordBatch,
    multiverse: bool,
) -> Result<Vec<(String, Vec<Message>)>> {
    use crate::records::Record;
    Ok(match ds.kind() {
        // As the reference trains it: the question with the instruction; the thinking, a blank
        // line, `Answer: ` and the answer. The sequential trace is wrapped in <Think> as s1K is.
        DatasetKind::Multiverse => crate::records::MultiverseRow::from_batch(batch)?
            .into_iter()
            .map(|r| {
                let (instruction, thinking) = if multiverse {
                    (MULTIVERSE_INSTRUCTION, r.parallel_trace)
                } else {
                    (
                        SEQUENTIAL_INSTRUCTION,
                        format!("<Think>\n{}\n</Think>", r.sequential_trace),
                    )
                };
                (
                    r.id,
                    vec![
                        Message::new(Role::User, format!("{}{instruction}", r.question)),
                        Message::new(Role::Assistant, format!("{thinking}\n\nAnswer: {}", r.answer)),
                    ],
                )
            })
            .collect(),
        DatasetKind::Chat => ChatRow::from_batch(batch)?
            .into_iter()
            .map(|r| (r.id, r.messages))
            .collect(),
        DatasetKind::Completion => CompletionRow::from_batch(batch)?
            .into_iter()
            .map(|r| {
                (
                    r.id,
                    vec![
                        Message::new(Role::User, r.prompt),
                        Message::new(Role::Assistant, r.completion),
                    ],
                )
            })
            .collect(),
        other => {
            return Err(DataError::Invalid(format!(
                "{}: `data tokenize` reads chat, completion or multiverse datasets, this one is `{other}`",
                ds.path().display()
            )));
        }
    })
}

/// Tokenizes `input` into a new `tokens` dataset at `out`; `progress` gets the input rows done.
///
/// # Errors
/// When the tokenizer lacks the template's special tokens, the input is of another kind, or
/// reading or writing fails. A failed run leaves no dataset at `out`.
pub fn tokenize_dataset(
    input: &Dataset,
    tokenizer: &Tokenizer,
    out: &Path,
    opts: &TokenizeOptions,
    mut progress: impl FnMut(usize),
) -> Result<TokenizeReport> {
    if opts.max_len < 2 {
        return Err(DataError::Invalid(format!(
            "--max-len {} is too small (at least 2)",
            opts.max_len
        )));
    }
    opts.template.check(tokenizer)?;
    if opts.multiverse {
        let missing: Vec<&str> = crate::multiverse::TAGS
            .into_iter()
            .filter(|t| tokenizer.token_to_id(t).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(DataError::Invalid(format!(
                "the tokenizer lacks the Multiverse control tags as tokens: {}\n  hint: train one with `firebrand tokenizer train ... --multiverse`, which adds the 12 tags as special tokens",
                missing.join(" ")
            )));
        }
    }
    if !matches!(
        input.kind(),
        DatasetKind::Chat | DatasetKind::Completion | DatasetKind::Multiverse
    ) {
        conversations(input, &arrow_array::RecordBatch::new_empty(input.schema()), false)?;
    }
    let mut writer = DatasetWriter::create(out, DatasetKind::Tokens, opts.mode)?;
    let mut report = TokenizeReport::default();
    for batch in input.scan(None, opts.chunk.max(1))? {
        let batch = batch?;
        let convos = conversations(input, &batch, opts.multiverse)?;
        report.rows_in += convos.len();
        // `None` structure: the Multiverse tags of the row do not nest.
        type Item = (String, crate::template::Encoded, Option<Option<Structure>>);
        let encoded: Vec<Result<Item>> = convos
            .into_par_iter()
            .map(|(id, messages)| {
                let rendered = opts
                    .template
                    .render(&messages, opts.mask)
                    .map_err(|e| DataError::Invalid(format!("row {id}: {e}")))?;
                let enc = encode(tokenizer, &rendered)?;
                // A row whose tags do not nest is dropped and counted, not fatal.
                let structure = if opts.multiverse {
                    crate::multiverse::segment(&rendered.text).ok().map(|segs| {
                        let segments: Vec<u32> = enc.starts.iter().map(|&b| segs.at(b)).collect();
                        let positions = crate::multiverse::positions(&segments, &segs.parents);
                        Some(Structure {
                            segments,
                            parents: segs.parents,
                            positions,
                        })
                    })
                } else {
                    Some(None)
                };
                Ok((id, enc, structure))
            })
            .collect();
        let mut docs = Vec::with_capacity(encoded.len());
        for item in encoded {
            let (id, enc, structure) = item?;
            let Some(structure) = structure else {
                *report
                    .dropped
                    .entry("Multiverse tags that do not nest (check with `firebrand synth multiverse validate`)")
                    .or_default() += 1;
                continue;
            };
            if !enc.mask.iter().any(|&m| m) {
                *report
                    .dropped
                    .entry("no trained token (no assistant turn)")
                    .or_default() += 1;
                continue;
            }
            let mut doc = Doc {
                ids: enc.ids.into_iter().map(|i| i as i32).collect(),
                mask: enc.mask,
                source_id: id,
                structure,
            };
            if doc.ids.len() > opts.max_len {
                match opts.overflow {
                    Overflow::Drop => {
                        *report.dropped.entry("longer than max_len").or_default() += 1;
                        continue;
                    }
                    Overflow::Truncate => {
                        doc.truncate(opts.max_len);
                        if !doc.mask.iter().any(|&m| m) {
                            *report
                                .dropped
                                .entry("no trained token left after truncation")
                                .or_default() += 1;
                            continue;
                        }
                        report.truncated += 1;
                    }
                }
            }
            report.tokens += doc.ids.len();
            report.loss_tokens += doc.mask.iter().filter(|&&m| m).count();
            docs.push(doc);
        }
        report.docs += docs.len();
        let rows = if opts.pack {
            pack(docs, opts.max_len, usize::MAX)
        } else {
            docs.into_iter().map(single).collect()
        };
        report.rows_out += rows.len();
        writer.write(&rows)?;
        progress(report.rows_in);
    }
    writer.commit()?;
    Ok(report)
}
