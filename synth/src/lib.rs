//! firebrand's synthesizers: LintSeq edit sequences, VIF-RAG instruction data, MIG selection,
//! Multiverse conversion and preference pairs, each writing a typed Lance dataset through
//! `firebrand-data`. None has landed yet; `firebrand synth` says so when run. See DESIGN.md.
#![warn(missing_docs)]
