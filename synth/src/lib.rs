//! firebrand's synthesizers: LintSeq edit sequences, VIF-RAG instruction data, MIG selection,
//! Multiverse conversion and preference pairs, each writing a typed Lance dataset through
//! `firebrand-data` with the shared job runner (`runner.rs`). Landed: LintSeq (`lintseq/`), Multiverse (`multiverse/`), VIF-RAG (`vifrag/`), MIG (`mig/`),
//! preference pairs (`prefs/`).
#![warn(missing_docs)]

pub mod generator;
pub mod lintseq;
pub mod mig;
pub mod multiverse;
pub mod prefs;
pub mod runner;
pub mod vifrag;
