//! `DataError`: every failure of the data layer, each naming where (path, line or row, field) and
//! what, followed by a hint where one helps.

use std::path::PathBuf;

use crate::kind::DatasetKind;

/// Every error the data crate returns.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A value in a dataset or an input file is wrong.
    #[error("{}: {location}, field `{field}`: {problem}{}", .path.display(), hint_suffix(.hint))]
    BadField {
        /// The file or dataset.
        path: PathBuf,
        /// `line N` for text inputs, `row N` for datasets.
        location: String,
        /// The field, with its position inside nested values (`messages[2].role`).
        field: String,
        /// What is wrong.
        problem: String,
        /// How to fix it; empty for none.
        hint: String,
    },
    /// A line of a text input is not what it must be (not JSON, not UTF-8, not an object).
    #[error("{}: line {line}: {problem}{}", .path.display(), hint_suffix(.hint))]
    BadLine {
        /// The input file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        problem: String,
        /// How to fix it; empty for none.
        hint: String,
    },
    /// The dataset holds another kind than the step reads.
    #[error("{}: holds a `{found}` dataset, this step reads `{expected}`{}", .path.display(), hint_suffix(.hint))]
    WrongKind {
        /// The dataset.
        path: PathBuf,
        /// The kind in its schema metadata.
        found: DatasetKind,
        /// The kind this step reads.
        expected: DatasetKind,
        /// How to get the right kind.
        hint: String,
    },
    /// The dataset carries no or an unknown `firebrand.kind`.
    #[error("{}: not a firebrand dataset ({problem})\n  hint: firebrand datasets are written by `firebrand data import`, `data tokenize`, `data query --out` and `synth`", .path.display())]
    NotFirebrand {
        /// The dataset.
        path: PathBuf,
        /// What was found instead of a known kind.
        problem: String,
    },
    /// An input that must not be empty is.
    #[error("{}: {what}", .path.display())]
    Empty {
        /// The file or dataset.
        path: PathBuf,
        /// What is empty.
        what: String,
    },
    /// A file or folder could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Lance failed on a dataset.
    #[error("{}: {source}", .path.display())]
    Lance {
        /// The dataset.
        path: PathBuf,
        /// Lance's error.
        source: Box<lance::Error>,
    },
    /// A SQL query failed to plan or run.
    #[error("query failed: {0}")]
    Query(Box<datafusion::error::DataFusionError>),
    /// Converting between rows and Arrow failed.
    #[error("{context}: {problem}")]
    Arrow {
        /// What was being converted.
        context: String,
        /// The underlying problem.
        problem: String,
    },
    /// A tokenizer could not be loaded, trained or used.
    #[error("tokenizer {}: {problem}{}", .path.display(), hint_suffix(.hint))]
    Tokenizer {
        /// The tokenizer file, or `<memory>`.
        path: PathBuf,
        /// What went wrong.
        problem: String,
        /// How to fix it; empty for none.
        hint: String,
    },
    /// An option is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("\n  hint: {hint}")
    }
}

impl DataError {
    /// Wraps a Lance error with the dataset path.
    pub fn lance(path: impl Into<PathBuf>, source: lance::Error) -> Self {
        DataError::Lance {
            path: path.into(),
            source: Box::new(source),
        }
    }

    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps an Arrow conversion problem.
    pub fn arrow(context: impl Into<String>, problem: impl ToString) -> Self {
        DataError::Arrow {
            context: context.into(),
            problem: problem.to_string(),
        }
    }
}

impl From<datafusion::error::DataFusionError> for DataError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        DataError::Query(Box::new(e))
    }
}

/// Result with [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;
