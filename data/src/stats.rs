//! `firebrand data stats`: what a dataset holds, in numbers.
//!
//! For text kinds: rows, a histogram of characters per row (all text columns together), and counts
//! of labels and sources. For `tokens`: tokens per row, trained tokens, documents per row and fill.
//! Histogram buckets are powers of two, which reads well for length distributions.

use std::collections::BTreeMap;

use arrow_array::Array;
use arrow_array::cast::AsArray;

use crate::error::Result;
use crate::kind::DatasetKind;
use crate::records::{TokensRow, array_value};
use crate::store::Dataset;

/// A histogram over power-of-two buckets: bucket `b` counts values in `[2^(b-1), 2^b)`, bucket 0
/// counts zeros.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Counts per bucket.
    pub buckets: Vec<usize>,
    /// Smallest value.
    pub min: usize,
    /// Largest value.
    pub max: usize,
    /// Sum of values.
    pub sum: usize,
    /// Number of values.
    pub count: usize,
}

impl Histogram {
    /// Adds a value.
    pub fn add(&mut self, v: usize) {
        let b = (usize::BITS - v.leading_zeros()) as usize;
        if self.buckets.len() <= b {
            self.buckets.resize(b + 1, 0);
        }
        self.buckets[b] += 1;
        self.min = if self.count == 0 { v } else { self.min.min(v) };
        self.max = self.max.max(v);
        self.sum += v;
        self.count += 1;
    }

    /// Mean value (0 for none).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// Text lines `[lo, hi)  count  bar`.
    pub fn render(&self) -> Vec<String> {
        let top = self.buckets.iter().copied().max().unwrap_or(0).max(1);
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(b, &c)| {
                let (lo, hi) = if b == 0 {
                    (0, 1)
                } else {
                    (1usize << (b - 1), 1usize << b)
                };
                let bar = "█".repeat((c * 40).div_ceil(top));
                format!("[{lo:>7}, {hi:>7})  {c:>9}  {bar}")
            })
            .collect()
    }
}

/// Statistics of one dataset.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Its kind.
    pub kind: DatasetKind,
    /// Lance version read.
    pub version: u64,
    /// Rows.
    pub rows: usize,
    /// Characters per row (text kinds) or tokens per row (`tokens`).
    pub lengths: Histogram,
    /// Label counts (text kinds).
    pub labels: BTreeMap<String, usize>,
    /// Source counts (text kinds).
    pub sources: BTreeMap<String, usize>,
    /// Trained tokens (`tokens`).
    pub loss_tokens: usize,
    /// Documents per row (`tokens`).
    pub docs_per_row: Histogram,
}

/// Computes the statistics of `ds` in one streaming pass.
///
/// # Errors
/// When the dataset cannot be read.
pub fn stats(ds: &Dataset) -> Result<Stats> {
    let mut s = Stats {
        kind: ds.kind(),
        version: ds.version(),
        rows: 0,
        lengths: Histogram::default(),
        labels: BTreeMap::new(),
        sources: BTreeMap::new(),
        loss_tokens: 0,
        docs_per_row: Histogram::default(),
    };
    if ds.kind() == DatasetKind::Tokens {
        for row in ds.rows::<TokensRow>(4096)? {
            let row = row?;
            s.rows += 1;
            s.lengths.add(row.input_ids.len());
            s.loss_tokens += row.loss_mask.iter().filter(|&&m| m).count();
            s.docs_per_row.add(row.source_ids.len());
        }
        return Ok(s);
    }
    for batch in ds.scan(None, 4096)? {
        let batch = batch?;
        let schema = batch.schema();
        let mut chars = vec![0usize; batch.num_rows()];
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            match field.name().as_str() {
                "id" | "meta" | "source_file" | "language" => {}
                "labels" => {
                    let list = column.as_list::<i32>();
                    for row in 0..list.len() {
                        let v = list.value(row);
                        for l in v.as_string::<i32>().iter().flatten() {
                            *s.labels.entry(l.to_string()).or_default() += 1;
                        }
                    }
                }
                "source" => {
                    for src in column.as_string::<i32>().iter().flatten() {
                        *s.sources.entry(src.to_string()).or_default() += 1;
                    }
                }
                _ => {
                    for (row, n) in chars.iter_mut().enumerate() {
                        *n += text_len(&array_value(column.as_ref(), row)?);
                    }
                }
            }
        }
        s.rows += batch.num_rows();
        chars.into_iter().for_each(|c| s.lengths.add(c));
    }
    Ok(s)
}

fn text_len(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.chars().count(),
        serde_json::Value::Array(a) => a.iter().map(text_len).sum(),
        serde_json::Value::Object(o) => o.get("content").map(text_len).unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_powers_of_two() {
        let mut h = Histogram::default();
        for v in [0, 1, 2, 3, 4, 1000] {
            h.add(v);
        }
        assert_eq!(h.buckets[0], 1); // 0
        assert_eq!(h.buckets[1], 1); // 1
        assert_eq!(h.buckets[2], 2); // 2, 3
        assert_eq!(h.buckets[3], 1); // 4
        assert_eq!(h.buckets[10], 1); // 1000 in [512, 1024)
        assert_eq!((h.min, h.max, h.count), (0, 1000, 6));
        assert_eq!(h.render().len(), 5);
    }
}
