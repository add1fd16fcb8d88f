//! `TrainError`: every failure of the training crate, naming the file, key or step involved.

use std::path::PathBuf;

/// Every error the training crate returns.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A model configuration is invalid or unsupported.
    #[error("{0}")]
    Config(String),
    /// A weight file is missing a tensor, has one of the wrong shape, or cannot be read.
    #[error("{}: {problem}", .path.display())]
    Weights {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A file or folder could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A batch cannot be trained on.
    #[error("{0}")]
    Batch(String),
    /// Generation cannot run (empty prompt, bad sampling parameters, undecodable tokens).
    #[error("{0}")]
    Generate(String),
    /// The fast CUDA path could not start or a device call failed.
    #[error("fast CUDA path: {0}")]
    Device(String),
    /// The data layer failed.
    #[error(transparent)]
    Data(#[from] firebrand_data::DataError),
}

impl TrainError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
