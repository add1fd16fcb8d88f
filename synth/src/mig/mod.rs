//! MIG: data selection by maximising information gain over a label graph (Chen et al., "MIG:
//! Automatic Data Selection for Instruction Tuning by Maximizing Information Gain in Semantic
//! Space", arXiv 2504.13835, §3; reference code yichengchen24/MIG @969eb53, `mig/label.py` and
//! `mig/sampler.py`).
//!
//! A record holds a set of labels and a quality score. Labels are nodes of a graph whose edges join
//! labels with cosine similarity at or above a threshold (`graph.rs`). A record's information is its
//! score on each of its labels, propagated one step along the graph; the information of a set is
//! Σ_k φ(z_k) over the summed propagated vectors z, with φ concave (`Phi`). Selection is greedy
//! (`select.rs`): each step takes the record of largest gain.
//!
//! Two gains:
//! - `Gain::FirstOrder` is what the reference computes: the gain linearised at the current z,
//!   ⟨ê_d, φ′(z)⟩. It reproduces the reference's picks (ties to the lowest index, as `torch.argmax`).
//! - `Gain::Exact` is the true marginal gain Σ_k φ(z_k + ê_d[k]) − φ(z_k), which is what the
//!   paper's submodularity argument (its Appendix C) is about.
//!
//! Both gains only fall as z grows (φ′ decreasing, everything non-negative), so lazy greedy
//! (Minoux) returns the picks of a full scan at a fraction of its cost; the reference scans the
//! whole dense pool once per pick. For the first-order gain this holds in floating point too (each
//! h is rebuilt in a fixed order from non-increasing terms); the exact gain's φ(z+e) − φ(z) can
//! wobble by rounding, so there it holds up to rounding.
//!
//! Choices where the paper and the reference are silent or differ:
//! - Records whose labels are all outside the vocabulary stay in the pool with zero information, as
//!   in the reference; records with no labels at all, or no score, are left out and counted.
//! - A label repeated in a record counts once (the reference assigns, it does not add); with
//!   `norm` the score is divided by the number of labels after the vocabulary filter and before
//!   de-duplication, as the reference divides by `len(dp.labels)`. Labels later removed for having
//!   no vector (a case the reference does not have: it embeds every label) keep their share of
//!   the score: the record's information on them is lost, not moved to its other labels.
//! - Records whose labels are all removed carry no information; a selection where no record
//!   carries any is refused rather than returning the first N rows.
//! - Label vectors are used as given (the reference normalises them when it embeds); `graph.rs`
//!   refuses vectors far from unit length instead of silently renormalising.

mod graph;
#[cfg(test)]
mod parity_tests;
mod pool;
mod select;

pub use graph::{GraphOptions, LabelGraph, LabelVectors};
pub use pool::{Pool, PoolOptions, PoolReport, describe_missing, read_pool};
pub use select::{Coverage, Gain, Pick, Selection, select};

/// The concave function φ of the information measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phi {
    /// φ(x) = (x + a)^b, the paper's default with a = 1e-6, b = 0.8 (`--phi-a`, `--phi-b`).
    Pow {
        /// Offset that keeps φ′(0) finite.
        a: f64,
        /// Exponent in (0, 1).
        b: f64,
    },
    /// φ(x) = 1 − exp(−αx) (the reference's `exp`).
    Exp {
        /// Rate α > 0.
        alpha: f64,
    },
}

impl Default for Phi {
    fn default() -> Self {
        Phi::Pow { a: 1e-6, b: 0.8 }
    }
}

impl Phi {
    /// φ(x).
    pub fn value(self, x: f64) -> f64 {
        match self {
            Phi::Pow { a, b } => (x + a).powf(b),
            Phi::Exp { alpha } => 1.0 - (-alpha * x).exp(),
        }
    }

    /// φ′(x).
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Phi::Pow { a, b } => b * (x + a).powf(b - 1.0),
            Phi::Exp { alpha } => alpha * (-alpha * x).exp(),
        }
    }

    /// Checks the parameters make φ concave and increasing on x ≥ 0.
    ///
    /// # Errors
    /// A message naming the bad parameter.
    pub fn validate(self) -> Result<(), MigError> {
        match self {
            Phi::Pow { a, .. } if !(a > 0.0 && a.is_finite()) => {
                Err(MigError::Invalid(format!("phi a must be > 0 (got {a})")))
            }
            Phi::Pow { b, .. } if !(b > 0.0 && b < 1.0) => Err(MigError::Invalid(format!(
                "phi b must lie in (0, 1) for a concave φ (got {b})"
            ))),
            Phi::Exp { alpha } if !(alpha > 0.0 && alpha.is_finite()) => {
                Err(MigError::Invalid(format!("phi alpha must be > 0 (got {alpha})")))
            }
            _ => Ok(()),
        }
    }
}

/// What can go wrong in MIG.
#[derive(Debug, thiserror::Error)]
pub enum MigError {
    /// Bad parameters or input, with a message that says which.
    #[error("{0}")]
    Invalid(String),
    /// Reading the pool or the vectors failed.
    #[error(transparent)]
    Data(#[from] firebrand_data::DataError),
}
