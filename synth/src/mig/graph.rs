//! The label graph and its propagation matrix (paper §3.2, Eqs. 3 and 6; reference
//! `SimLabelGraph.calc_weighted_adjacency_matrix` and `MIGSampler.calc_prop_matrix`).
//!
//! W_pq = cos(e_p, e_q) where that is at or above the threshold (default 0.9), else 0; the diagonal
//! is each label's similarity with itself (≈ 1) and is always kept, so every label has a self-loop
//! (the reference thresholds the diagonal too, and a threshold above a label's self-similarity
//! would give it a zero column and NaN propagation there). W′ scales the
//! off-diagonal by the propagation weight α (default 1). The propagation matrix is W′ with each
//! column divided by its sum, P_pq = W′_pq / Σ_r W′_rq, applied to row vectors: a record's
//! propagated information is ê[q] = Σ_p x[p] P_pq.
//!
//! The reference holds W densely (K² floats) and the pool densely (N×K). Here W is sparse: at the
//! default threshold a label has a handful of neighbours. Similarities are computed in f32 and
//! compared with the threshold in f32, as the reference's fp32 tensors are, so the same edges
//! exist; the propagation values are then held in f64.

use std::collections::HashMap;

use rayon::prelude::*;

use super::MigError;

/// Label vectors: one vector of `dim` floats per label, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelVectors {
    /// The labels, in the order of the rows.
    pub labels: Vec<String>,
    /// Vector length.
    pub dim: usize,
    /// `labels.len() * dim` values.
    pub data: Vec<f32>,
}

impl LabelVectors {
    /// Vectors from rows of equal length.
    ///
    /// # Errors
    /// When the rows differ in length, a label repeats, or there are no rows.
    pub fn new(labels: Vec<String>, rows: Vec<Vec<f32>>) -> Result<Self, MigError> {
        let dim = rows.first().map(Vec::len).unwrap_or(0);
        if dim == 0 {
            return Err(MigError::Invalid("no label vectors (or vectors of length 0)".into()));
        }
        if labels.len() != rows.len() {
            return Err(MigError::Invalid(format!(
                "{} labels but {} vectors",
                labels.len(),
                rows.len()
            )));
        }
        let mut data = Vec::with_capacity(rows.len() * dim);
        for (label, row) in labels.iter().zip(&rows) {
            if row.len() != dim {
                return Err(MigError::Invalid(format!(
                    "the vector of label `{label}` has {} values, the first has {dim}",
                    row.len()
                )));
            }
            data.extend_from_slice(row);
        }
        let out = LabelVectors { labels, dim, data };
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = out.labels.iter().find(|l| !seen.insert(l.as_str())) {
            return Err(MigError::Invalid(format!("label `{dup}` has two vectors")));
        }
        Ok(out)
    }

    /// The vector of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Row index of each label.
    pub fn index(&self) -> HashMap<&str, usize> {
        self.labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect()
    }
}

/// How the graph is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphOptions {
    /// Cosine similarity at or above which two labels are joined (the paper's T, default 0.9).
    pub threshold: f32,
    /// Weight α of the neighbours against the label itself (the reference's `prop_weight`, default 1).
    pub prop_weight: f64,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            threshold: 0.9,
            prop_weight: 1.0,
        }
    }
}

/// The propagation matrix P over the labels, sparse by rows (row p: the labels q that p's
/// information reaches, with P_pq). The pattern is symmetric, so row q also lists the labels whose
/// information reaches q.
#[derive(Debug, Clone)]
pub struct LabelGraph {
    labels: Vec<String>,
    start: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f64>,
}

/// Vectors further than this from unit length are refused (they were not normalised).
const NORM_TOLERANCE: f32 = 1e-2;

impl LabelGraph {
    /// Builds the graph over `labels` (the graph's node order; the reference sorts them) from their
    /// vectors.
    ///
    /// # Errors
    /// When a label has no vector, a vector is not of unit length, or the options are out of range.
    pub fn build(labels: &[String], vectors: &LabelVectors, options: GraphOptions) -> Result<Self, MigError> {
        if !(options.threshold > 0.0 && options.threshold <= 1.0) {
            return Err(MigError::Invalid(format!(
                "the similarity threshold must lie in (0, 1] (got {})",
                options.threshold
            )));
        }
        if !(options.prop_weight >= 0.0 && options.prop_weight.is_finite()) {
            return Err(MigError::Invalid(format!(
                "the propagation weight must be >= 0 (got {})",
                options.prop_weight
            )));
        }
        let index = vectors.index();
        let mut missing = Vec::new();
        let rows: Vec<&[f32]> = labels
            .iter()
            .filter_map(|l| match index.get(l.as_str()) {
                Some(&i) => Some(vectors.row(i)),
                None => {
                    missing.push(l.as_str());
                    None
                }
            })
            .collect();
        if !missing.is_empty() {
            return Err(MigError::Invalid(format!(
                "{} label(s) have no vector, e.g. {}\n  hint: embed them with `firebrand embed`",
                missing.len(),
                quote_some(&missing)
            )));
        }
        for (label, row) in labels.iter().zip(&rows) {
            let norm = dot(row, row).sqrt();
            if !norm.is_finite() || (norm - 1.0).abs() > NORM_TOLERANCE {
                return Err(MigError::Invalid(format!(
                    "the vector of label `{label}` has length {norm:.4}, not 1\n  hint: label vectors must be normalised (`firebrand embed` writes them so)"
                )));
            }
        }
        // Similar pairs, each row in parallel: O(K² d), the one quadratic step.
        let threshold = options.threshold;
        let neighbours: Vec<Vec<(u32, f32)>> = (0..rows.len())
            .into_par_iter()
            .map(|p| {
                let mut out = Vec::new();
                for (q, other) in rows.iter().enumerate() {
                    let sim = dot(rows[p], other);
                    if sim >= threshold || p == q {
                        out.push((q as u32, sim));
                    }
                }
                out
            })
            .collect();
        // W′ and its column sums (the pattern is symmetric but f32 dots of (p, q) and (q, p) are
        // the same numbers, so W is symmetric exactly).
        let alpha = options.prop_weight;
        let weight = |p: usize, q: u32, sim: f32| {
            if p == q as usize {
                sim as f64
            } else {
                sim as f64 * alpha
            }
        };
        let mut col_sum = vec![0.0f64; rows.len()];
        for (p, row) in neighbours.iter().enumerate() {
            for &(q, sim) in row {
                col_sum[q as usize] += weight(p, q, sim);
            }
        }
        let mut start = Vec::with_capacity(rows.len() + 1);
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        start.push(0);
        for (p, row) in neighbours.iter().enumerate() {
            for &(q, sim) in row {
                let sum = col_sum[q as usize];
                if sum > 0.0 {
                    cols.push(q);
                    vals.push(weight(p, q, sim) / sum);
                }
            }
            start.push(cols.len());
        }
        Ok(LabelGraph {
            labels: labels.to_vec(),
            start,
            cols,
            vals,
        })
    }

    /// The labels, in node order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the graph has no labels.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row p of P: the labels it reaches and the weights.
    pub fn row(&self, p: usize) -> (&[u32], &[f64]) {
        let (a, b) = (self.start[p], self.start[p + 1]);
        (&self.cols[a..b], &self.vals[a..b])
    }

    /// Undirected edges between distinct labels.
    pub fn edges(&self) -> usize {
        let loops = (0..self.len()).filter(|&p| self.row(p).0.contains(&(p as u32))).count();
        (self.cols.len() - loops) / 2
    }

    /// Σ_p x_p P[p, ·] for x = `value` on each of `labels`: a record's propagated information, as
    /// sorted (label, amount) pairs, written into `out`.
    pub fn propagate(&self, labels: &[u32], value: f64, out: &mut Vec<(u32, f64)>) {
        out.clear();
        for &p in labels {
            let (cols, vals) = self.row(p as usize);
            out.extend(cols.iter().zip(vals).map(|(&q, &v)| (q, value * v)));
        }
        if labels.len() > 1 {
            out.sort_unstable_by_key(|&(q, _)| q);
            out.dedup_by(|next, kept| {
                if next.0 == kept.0 {
                    kept.1 += next.1;
                    true
                } else {
                    false
                }
            });
        }
    }
}

/// f32 dot product with eight running sums (vectorises; the order is fixed, so it is deterministic).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    acc.iter().sum::<f32>() + tail
}

/// Up to five items, quoted, for error messages.
pub(crate) fn quote_some(items: &[&str]) -> String {
    let mut s: Vec<String> = items.iter().take(5).map(|l| format!("`{l}`")).collect();
    if items.len() > 5 {
        s.push("...".into());
    }
    s.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn vectors(rows: &[(&str, Vec<f32>)]) -> LabelVectors {
        LabelVectors::new(
            rows.iter().map(|(l, _)| l.to_string()).collect(),
            rows.iter().map(|(_, v)| unit(v)).collect(),
        )
        .unwrap()
    }

    #[test]
    fn propagation_matches_the_dense_formula() {
        // a ~ b (cos 0.995), c far from both.
        let v = vectors(&[
            ("a", vec![1.0, 0.1, 0.0]),
            ("b", vec![1.0, 0.0, 0.0]),
            ("c", vec![0.0, 0.0, 1.0]),
        ]);
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let alpha = 0.5;
        let g = LabelGraph::build(
            &labels,
            &v,
            GraphOptions {
                threshold: 0.9,
                prop_weight: alpha,
            },
        )
        .unwrap();
        assert_eq!(g.edges(), 1);
        // Dense W′ and column normalisation by hand.
        let w_ab = dot(v.row(0), v.row(1)) as f64;
        let w_aa = dot(v.row(0), v.row(0)) as f64;
        let w_bb = dot(v.row(1), v.row(1)) as f64;
        let col_a = w_aa + alpha * w_ab;
        let col_b = w_bb + alpha * w_ab;
        let (cols, vals) = g.row(0);
        assert_eq!(cols, &[0, 1]);
        assert!((vals[0] - w_aa / col_a).abs() < 1e-12);
        assert!((vals[1] - alpha * w_ab / col_b).abs() < 1e-12);
        let (cols, vals) = g.row(2);
        assert_eq!(cols, &[2]);
        assert!((vals[0] - 1.0).abs() < 1e-12);
        // A record on a and b with value 2: ê = 2 (P[a,·] + P[b,·]), merged per label.
        let mut out = Vec::new();
        g.propagate(&[0, 1], 2.0, &mut out);
        assert_eq!(out.len(), 2);
        let pa = g.row(0).1.to_vec();
        let pb = g.row(1).1.to_vec();
        assert!((out[0].1 - 2.0 * (pa[0] + pb[0])).abs() < 1e-12);
        assert!((out[1].1 - 2.0 * (pa[1] + pb[1])).abs() < 1e-12);
    }

    #[test]
    fn threshold_is_inclusive_and_refuses_bad_input() {
        let v = vectors(&[("a", vec![1.0, 0.0]), ("b", vec![0.6, 0.8])]); // cos = 0.6
        let labels: Vec<String> = vec!["a".into(), "b".into()];
        let at = |t: f32| {
            LabelGraph::build(
                &labels,
                &v,
                GraphOptions {
                    threshold: t,
                    prop_weight: 1.0,
                },
            )
            .unwrap()
            .edges()
        };
        assert_eq!(at(0.6), 1);
        assert_eq!(at(0.61), 0);
        let missing = LabelGraph::build(&["a".to_string(), "z".to_string()], &v, GraphOptions::default());
        assert!(missing.unwrap_err().to_string().contains("`z`"));
        let raw = LabelVectors::new(vec!["a".into()], vec![vec![3.0, 4.0]]).unwrap();
        let err = LabelGraph::build(&["a".to_string()], &raw, GraphOptions::default()).unwrap_err();
        assert!(err.to_string().contains("length 5.0000"), "{err}");
        let nan = LabelVectors::new(vec!["a".into()], vec![vec![f32::NAN, 0.0]]).unwrap();
        assert!(LabelGraph::build(&["a".to_string()], &nan, GraphOptions::default()).is_err());
        // A threshold of 1 keeps every self-loop, even where rounding puts a self-similarity below 1.
        let g = LabelGraph::build(
            &labels,
            &v,
            GraphOptions {
                threshold: 1.0,
                prop_weight: 1.0,
            },
        )
        .unwrap();
        assert_eq!((g.row(0).0, g.row(1).0), (&[0u32][..], &[1u32][..]));
        assert!(LabelVectors::new(vec!["a".into(), "a".into()], vec![vec![1.0], vec![1.0]]).is_err());
    }
}
