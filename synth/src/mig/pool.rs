//! The candidate pool: per record, its labels (as graph node indices) and the value it puts on each
//! (its score, or score / number of labels with `norm`), read from any dataset with `labels` and
//! `score` columns (reference: `MIGDataPoint.from_dict` and `LabelGraph.vectorize`).
//!
//! Records without labels or without a score are left out and counted (or refused with `strict`).
//! Labels outside the vocabulary, or without a vector, are removed from their record and counted;
//! a record may be left with none, and then stays in the pool with zero information, as the
//! reference keeps it.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow_array::{Array, Float32Array, ListArray, StringArray};
use firebrand_data::Dataset;

use super::MigError;
use super::graph::quote_some;

/// How records become pool entries.
#[derive(Debug, Clone, Default)]
pub struct PoolOptions {
    /// Only these labels count (the reference's `valid_tag_path`); all when `None`.
    pub vocabulary: Option<HashSet<String>>,
    /// Divide each record's score by its number of labels (the reference's `--norm`, off by default).
    pub norm: bool,
    /// A record without labels or score is an error instead of being left out.
    pub strict: bool,
    /// Every record scores 1, whatever its `score` column says: selection by label coverage
    /// alone (the paper's constant-score ablation), for data without a quality score.
    pub constant_score: bool,
}

/// What reading the pool found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolReport {
    /// Records read.
    pub read: usize,
    /// Records left out, by reason.
    pub left_out: BTreeMap<String, usize>,
    /// Label occurrences removed, by reason.
    pub labels_removed: BTreeMap<String, usize>,
    /// Records whose labels were all removed (they stay, with zero information).
    pub emptied: usize,
}

/// The pool: records in input order.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// Record ids.
    pub ids: Vec<String>,
    /// Each record's row in the input dataset.
    pub rows: Vec<u64>,
    /// The value each record puts on each of its labels.
    pub values: Vec<f64>,
    /// The label names; `labels` index into this. Sorted (the reference's node order).
    pub names: Vec<String>,
    label_start: Vec<usize>,
    label_ids: Vec<u32>,
}

impl Pool {
    /// Builds the pool from records of (id, row, labels, score).
    ///
    /// # Errors
    /// With `strict`, on the first record without labels or score.
    pub fn from_records(
        records: impl IntoIterator<Item = (String, u64, Vec<String>, Option<f64>)>,
        options: &PoolOptions,
        report: &mut PoolReport,
    ) -> Result<Pool, MigError> {
        let mut interned: HashMap<String, u32> = HashMap::new();
        let mut pool = Pool {
            label_start: vec![0],
            ..Pool::default()
        };
        for (id, row, labels, score) in records {
            report.read += 1;
            let score = if options.constant_score { Some(1.0) } else { score };
            let reason = if labels.is_empty() {
                Some("no labels")
            } else if score.is_none() {
                Some("no score")
            } else if score.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
                Some("score is negative or not finite")
            } else {
                None
            };
            if let Some(reason) = reason {
                if options.strict {
                    return Err(MigError::Invalid(format!(
                        "record `{id}` (row {row}): {reason}\n  hint: drop --strict to leave such records out"
                    )));
                }
                *report.left_out.entry(reason.to_string()).or_default() += 1;
                continue;
            }
            let score = score.unwrap_or_default();
            let mut kept: Vec<u32> = Vec::with_capacity(labels.len());
            for label in labels {
                if options.vocabulary.as_ref().is_some_and(|v| !v.contains(&label)) {
                    *report.labels_removed.entry("not in the vocabulary".into()).or_default() += 1;
                    continue;
                }
                let next = interned.len() as u32;
                kept.push(*interned.entry(label).or_insert(next));
            }
            // The reference divides by its filtered list, duplicates included.
            let count = kept.len().max(1);
            kept.sort_unstable();
            kept.dedup();
            if kept.is_empty() {
                report.emptied += 1;
            }
            pool.ids.push(id);
            pool.rows.push(row);
            pool.values
                .push(if options.norm { score / count as f64 } else { score });
            pool.label_ids.extend(&kept);
            pool.label_start.push(pool.label_ids.len());
        }
        // Renumber the labels in sorted order, the reference's node order.
        let mut names: Vec<(String, u32)> = interned.into_iter().collect();
        names.sort_unstable();
        let mut renumber = vec![0u32; names.len()];
        for (new, (_, old)) in names.iter().enumerate() {
            renumber[*old as usize] = new as u32;
        }
        pool.names = names.into_iter().map(|(n, _)| n).collect();
        for l in &mut pool.label_ids {
            *l = renumber[*l as usize];
        }
        for i in 0..pool.len() {
            let (a, b) = (pool.label_start[i], pool.label_start[i + 1]);
            pool.label_ids[a..b].sort_unstable();
        }
        Ok(pool)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Label occurrences over all records (after de-duplication within a record).
    pub fn label_occurrences(&self) -> usize {
        self.label_ids.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The labels of record `i`, sorted, as indices into `names`.
    pub fn labels(&self, i: usize) -> &[u32] {
        &self.label_ids[self.label_start[i]..self.label_start[i + 1]]
    }

    /// Removes the labels `keep` refuses from every record, counting them under `reason`, and
    /// renumbers the rest. Returns the number of occurrences removed.
    pub fn retain_labels(&mut self, keep: impl Fn(&str) -> bool, reason: &str, report: &mut PoolReport) -> usize {
        let mut renumber: Vec<Option<u32>> = Vec::with_capacity(self.names.len());
        let mut names = Vec::new();
        for name in &self.names {
            if keep(name) {
                renumber.push(Some(names.len() as u32));
                names.push(name.clone());
            } else {
                renumber.push(None);
            }
        }
        if names.len() == self.names.len() {
            return 0;
        }
        let mut removed = 0;
        let mut start = vec![0];
        let mut ids = Vec::with_capacity(self.label_ids.len());
        for i in 0..self.len() {
            let before = ids.len();
            for &l in self.labels(i) {
                match renumber[l as usize] {
                    Some(n) => ids.push(n),
                    None => removed += 1,
                }
            }
            if ids.len() == before && !self.labels(i).is_empty() {
                report.emptied += 1;
            }
            start.push(ids.len());
        }
        self.names = names;
        self.label_ids = ids;
        self.label_start = start;
        *report.labels_removed.entry(reason.to_string()).or_default() += removed;
        removed
    }

    /// The labels missing from `known`, for error messages.
    pub fn missing_labels<'a>(&'a self, known: &HashSet<&str>) -> Vec<&'a str> {
        self.names
            .iter()
            .map(String::as_str)
            .filter(|n| !known.contains(n))
            .collect()
    }
}

/// Reads the pool from `dataset` (any kind with `id`, `labels` and `score` columns).
///
/// # Errors
/// When the dataset lacks the columns, a read fails, or (with `strict`) a record has no labels or
/// score.
pub fn read_pool(dataset: &Dataset, options: &PoolOptions, report: &mut PoolReport) -> Result<Pool, MigError> {
    let schema = dataset.schema();
    for column in ["id", "labels", "score"] {
        if schema.field_with_name(column).is_err() {
            return Err(MigError::Invalid(format!(
                "{}: no `{column}` column (a `{}` dataset)\n  hint: MIG selects from chat, completion, prompts, lintseq or multiverse datasets",
                dataset.path().display(),
                dataset.kind()
            )));
        }
    }
    let mut records = Vec::new();
    let mut row = 0u64;
    for batch in dataset.scan(Some(&["id", "labels", "score"]), 8192)? {
        let batch = batch?;
        let bad = |c: &str| {
            MigError::Invalid(format!(
                "{}: column `{c}` has an unexpected type",
                dataset.path().display()
            ))
        };
        let ids = batch
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| bad("id"))?;
        let labels = batch
            .column_by_name("labels")
            .and_then(|c| c.as_any().downcast_ref::<ListArray>())
            .ok_or_else(|| bad("labels"))?;
        let scores = batch
            .column_by_name("score")
            .and_then(|c| c.as_any().downcast_ref::<Float32Array>())
            .ok_or_else(|| bad("score"))?;
        for i in 0..batch.num_rows() {
            let names: Vec<String> = if labels.is_null(i) {
                Vec::new()
            } else {
                let list = labels.value(i);
                let list = list
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| bad("labels"))?;
                list.iter().flatten().map(str::to_string).collect()
            };
            let score = (!scores.is_null(i)).then(|| scores.value(i) as f64);
            records.push((ids.value(i).to_string(), row, names, score));
            row += 1;
        }
    }
    Pool::from_records(records, options, report)
}

/// `quote_some` for the CLI's messages about missing labels.
pub fn describe_missing(missing: &[&str]) -> String {
    quote_some(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, labels: &[&str], score: Option<f64>) -> (String, u64, Vec<String>, Option<f64>) {
        (id.into(), 0, labels.iter().map(|s| s.to_string()).collect(), score)
    }

    #[test]
    fn pool_filters_counts_and_sorts_labels() {
        let vocab: HashSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let options = PoolOptions {
            vocabulary: Some(vocab),
            norm: true,
            ..PoolOptions::default()
        };
        let mut report = PoolReport::default();
        let pool = Pool::from_records(
            vec![
                rec("1", &["c", "a", "x", "a"], Some(8.0)),
                rec("2", &[], Some(1.0)),
                rec("3", &["b"], None),
                rec("4", &["y"], Some(2.0)),
                rec("5", &["b"], Some(-1.0)),
            ],
            &options,
            &mut report,
        )
        .unwrap();
        assert_eq!(pool.ids, vec!["1", "4"]);
        assert_eq!(pool.names, vec!["a", "c"]);
        assert_eq!(pool.labels(0), &[0, 1]);
        assert!(pool.labels(1).is_empty());
        // norm divides by the labels after the vocabulary filter and before de-duplication, as the
        // reference does: 4 labels given, "x" filtered -> 3.
        assert_eq!(pool.values[0], 8.0 / 3.0);
        assert_eq!(report.read, 5);
        assert_eq!(report.left_out.get("no labels"), Some(&1));
        assert_eq!(report.left_out.get("no score"), Some(&1));
        assert_eq!(report.left_out.get("score is negative or not finite"), Some(&1));
        assert_eq!(report.labels_removed.get("not in the vocabulary"), Some(&2));
        assert_eq!(report.emptied, 1);
        let strict = PoolOptions {
            strict: true,
            ..PoolOptions::default()
        };
        let err = Pool::from_records(vec![rec("9", &[], Some(1.0))], &strict, &mut PoolReport::default()).unwrap_err();
        assert!(err.to_string().contains("record `9`"), "{err}");
        let constant = PoolOptions {
            constant_score: true,
            ..PoolOptions::default()
        };
        let pool = Pool::from_records(
            vec![rec("1", &["a"], None), rec("2", &["b"], Some(7.0)), rec("3", &[], None)],
            &constant,
            &mut PoolReport::default(),
        )
        .unwrap();
        assert_eq!(pool.values, vec![1.0, 1.0]);
    }

    #[test]
    fn retain_labels_renumbers() {
        let mut report = PoolReport::default();
        let mut pool = Pool::from_records(
            vec![rec("1", &["a", "b", "c"], Some(1.0)), rec("2", &["b"], Some(1.0))],
            &PoolOptions::default(),
            &mut report,
        )
        .unwrap();
        let removed = pool.retain_labels(|l| l != "b", "no vector", &mut report);
        assert_eq!(removed, 2);
        assert_eq!(pool.names, vec!["a", "c"]);
        assert_eq!(pool.labels(0), &[0, 1]);
        assert!(pool.labels(1).is_empty());
        assert_eq!(report.emptied, 1);
    }
}
