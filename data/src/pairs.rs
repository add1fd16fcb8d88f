//! Preference pairs into `tokens` rows for DPO: each pair becomes two rows, the prompt with the
//! chosen reply (row 2k) and with the rejected reply (row 2k + 1), rendered through the chat
//! template with the loss mask on the reply (its tokens are what the sequence log-probability sums
//! over), both carrying the pair's id.
//!
//! Bad pairs are left out and counted (or, with `strict`, refused, naming the pair): identical
//! replies (no preference to learn), an empty reply (nothing to score), and a prompt with reply
//! longer than `max_len` (dropped rather than truncated: a cut reply's log-probability is not the
//! reply's).

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::kind::DatasetKind;
use crate::packing::{Doc, single};
use crate::records::{Message, PreferenceRow, Record, Role, TokensRow};
use crate::store::{Dataset, DatasetWriter, WriteMode};
use crate::template::{MaskMode, Template, encode};
use crate::tokenizer::Tokenizer;

/// What tokenizing pairs did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairReport {
    /// Pairs read.
    pub pairs_in: usize,
    /// Pairs written (two rows each).
    pub pairs_out: usize,
    /// Tokens written.
    pub tokens: usize,
    /// Reply tokens written (what the log-probabilities sum over).
    pub loss_tokens: usize,
    /// Pairs left out, by reason.
    pub dropped: BTreeMap<&'static str, usize>,
}

/// The two rows of a pair, or why it is left out.
fn pair_rows(
    pair: &PreferenceRow,
    tokenizer: &Tokenizer,
    template: &Template,
    max_len: usize,
) -> Result<std::result::Result<[TokensRow; 2], &'static str>> {
    if pair.chosen.trim() == pair.rejected.trim() {
        return Ok(Err("identical chosen and rejected"));
    }
    if pair.chosen.trim().is_empty() || pair.rejected.trim().is_empty() {
        return Ok(Err("empty reply"));
    }
    let mut rows = Vec::with_capacity(2);
    for reply in [&pair.chosen, &pair.rejected] {
        let mut messages = pair.prompt.clone();
        messages.push(Message::new(Role::Assistant, reply.clone()));
        let rendered = template
            .render(&messages, MaskMode::Completion)
            .map_err(|e| DataError::Invalid(format!("pair {}: {e}", pair.id)))?;
        let enc = encode(tokenizer, &rendered)?;
        if enc.ids.len() > max_len {
            return Ok(Err("longer than max_len"));
        }
        rows.push(single(Doc {
            ids: enc.ids.into_iter().map(|i| i as i32).collect(),
            mask: enc.mask,
            source_id: pair.id.clone(),
            structure: None,
        }));
    }
    let rejected = rows.pop().expect("two rows");
    let chosen = rows.pop().expect("two rows");
    Ok(Ok([chosen, rejected]))
}

/// Tokenizes the `preference` dataset `input` into a `tokens` dataset at `out`.
///
/// # Errors
/// When the input is another kind, the tokenizer lacks the template's tokens, reading or writing
/// fails, or (with `strict`) a pair is bad.
pub fn tokenize_pairs(
    input: &Dataset,
    tokenizer: &Tokenizer,
    template: Template,
    max_len: usize,
    out: &Path,
    mode: WriteMode,
    strict: bool,
) -> Result<PairReport> {
    input.expect_kind(DatasetKind::Preference)?;
    template.check(tokenizer)?;
    let mut writer = DatasetWriter::create(out, DatasetKind::Tokens, mode)?;
    let mut report = PairReport::default();
    for batch in input.scan(None, 1024)? {
        let pairs = PreferenceRow::from_batch(&batch?)?;
        report.pairs_in += pairs.len();
        let done: Vec<Result<std::result::Result<[TokensRow; 2], &'static str>>> = pairs
            .par_iter()
            .map(|p| pair_rows(p, tokenizer, &template, max_len))
            .collect();
        let mut rows = Vec::with_capacity(2 * pairs.len());
        for (pair, result) in pairs.iter().zip(done) {
            match result? {
                Ok([c, r]) => {
                    report.tokens += c.input_ids.len() + r.input_ids.len();
                    report.loss_tokens += c.loss_mask.iter().chain(&r.loss_mask).filter(|&&m| m).count();
                    report.pairs_out += 1;
                    rows.push(c);
                    rows.push(r);
                }
                Err(why) if strict => {
                    return Err(DataError::Invalid(format!(
                        "{}: pair `{}`: {why}\n  hint: drop the strict setting to leave such pairs out and count them",
                        input.path().display(),
                        pair.id
                    )));
                }
                Err(why) => *report.dropped.entry(why).or_default() += 1,
            }
        }
        writer.write(&rows)?;
    }
    writer.commit()?;
    Ok(report)
}

/// The pair id of each pair of a `tokens` dataset written by [`tokenize_pairs`] (the source id of
/// rows 2k), read from the `source_ids` column alone.
///
/// # Errors
/// When the dataset is not `tokens`, has an odd number of rows, or a read fails.
pub fn pair_ids(tokens: &Dataset) -> Result<Vec<String>> {
    use arrow_array::{Array, ListArray, StringArray};
    tokens.expect_kind(DatasetKind::Tokens)?;
    let mut ids = Vec::new();
    let mut row = 0usize;
    for batch in tokens.scan(Some(&["source_ids"]), 8192)? {
        let batch = batch?;
        let list = batch
            .column(0)
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| DataError::arrow("source_ids", "not a list"))?;
        for i in 0..batch.num_rows() {
            if row.is_multiple_of(2) {
                let v = list.value(i);
                let s = v
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| DataError::arrow("source_ids", "not strings"))?;
                ids.push(if s.is_empty() {
                    String::new()
                } else {
                    s.value(0).to_string()
                });
            }
            row += 1;
        }
    }
    if !row.is_multiple_of(2) {
        return Err(DataError::Invalid(format!(
            "{}: {row} rows, not pairs of rows",
            tokens.path().display()
        )));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Provenance;

    fn pair(id: &str, chosen: &str, rejected: &str) -> PreferenceRow {
        PreferenceRow {
            id: id.into(),
            prompt: vec![Message::new(Role::User, "Say hi")],
            chosen: chosen.into(),
            rejected: rejected.into(),
            ref_chosen_logp: None,
            ref_rejected_logp: None,
            provenance: Provenance::from_source("test"),
        }
    }

    #[test]
    fn pairs_become_two_masked_rows_and_bad_pairs_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let tok = crate::tokenizer::train_bpe(
            &["Say hi hello there goodbye".to_string()],
            &crate::tokenizer::TrainOptions {
                vocab_size: 300,
                min_frequency: 1,
                extra_special: vec![],
            },
        )
        .unwrap();
        let input = dir.path().join("p.lance");
        let mut w = DatasetWriter::create(&input, DatasetKind::Preference, WriteMode::Create).unwrap();
        w.write(&[
            pair("a", "hello there", "goodbye"),
            pair("same", "hello", "hello "),
            pair("empty", "hello", " "),
            pair("long", &"hello ".repeat(200), "bye"),
        ])
        .unwrap();
        let ds = w.commit().unwrap();
        let out = dir.path().join("t.lance");
        let report = tokenize_pairs(&ds, &tok, Template::ChatMl, 64, &out, WriteMode::Create, false).unwrap();
        assert_eq!(report.pairs_in, 4);
        assert_eq!(report.pairs_out, 1);
        assert_eq!(report.dropped.get("identical chosen and rejected"), Some(&1));
        assert_eq!(report.dropped.get("empty reply"), Some(&1));
        assert_eq!(report.dropped.get("longer than max_len"), Some(&1));
        let rows: Vec<TokensRow> = Dataset::open(&out).unwrap().read_all().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].source_ids, vec!["a".to_string()]);
        assert_eq!(rows[1].source_ids, vec!["a".to_string()]);
        assert_eq!(pair_ids(&Dataset::open(&out).unwrap()).unwrap(), vec!["a".to_string()]);
        // The mask covers the reply and its end-of-turn token only: the prompt is the same tokens
        // in both rows and untrained.
        let trained = |r: &TokensRow| -> String {
            let ids: Vec<u32> = r
                .input_ids
                .iter()
                .zip(&r.loss_mask)
                .filter(|(_, m)| **m)
                .map(|(i, _)| *i as u32)
                .collect();
            tok.decode(&ids, false).unwrap()
        };
        assert!(trained(&rows[0]).contains("hello there"), "{}", trained(&rows[0]));
        assert!(trained(&rows[0]).ends_with("<|im_end|>"));
        assert!(!trained(&rows[0]).contains("Say"));
        assert!(trained(&rows[1]).contains("goodbye"));
        // strict: the first bad pair is an error naming it.
        let err = tokenize_pairs(
            &ds,
            &tok,
            Template::ChatMl,
            64,
            &dir.path().join("s.lance"),
            WriteMode::Create,
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pair `same`"), "{err}");
    }
}
