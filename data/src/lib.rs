//! firebrand's data layer: dataset kinds and their Arrow schemas, typed rows, Lance reading and
//! writing, SQL over datasets, JSONL import and export, tokenizers, chat templates with loss
//! masks, packing, and the `tokens` datasets trainers read.
//!
//! Everything here is synchronous for callers; Lance and DataFusion run on one internal tokio
//! runtime (`store::runtime`).
#![warn(missing_docs)]

pub mod error;
pub mod import;
pub mod kind;
pub mod multiverse;
pub mod packing;
pub mod pairs;
pub mod records;
pub mod sql;
pub mod sql_table;
pub mod stats;
pub mod store;
pub mod template;
pub mod tokenize;
pub mod tokenizer;
pub mod vectors;

pub use error::{DataError, Result};
pub use kind::DatasetKind;
pub use records::{
    ChatRow, CompletionRow, LintseqRow, Message, MultiverseRow, PreferenceRow, PromptsRow, Provenance, Record, Role,
    TokensRow,
};
pub use store::{Dataset, DatasetWriter, WriteMode};
