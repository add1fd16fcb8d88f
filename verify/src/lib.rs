//! firebrand's deterministic verifiers of instructions, shared by synthesis (`firebrand-synth`
//! writes them into the `verifiers` column and keeps answers that pass), training (GRPO's
//! rewards) and evaluation (`firebrand eval follow`):
//!
//! - [`verifier`]: what a verifier is ([`Kind`], [`Spec`], [`Verifier`], strict and loose
//!   [`Mode`]s), re-exported here;
//! - [`ifeval`]: the 25 instruction types of Google's IFEval, with FollowRAG's renamed ids as
//!   aliases; [`text`] says where checks can differ from IFEval's Python;
//! - [`rag`]: VIF-RAG-style atomic instructions for RAG answers (citations, quoting, JSON keys,
//!   tables, ...);
//! - [`score`]: IFEval-style strict/loose accuracy;
//! - [`reward`]: verifiable rewards for GRPO and preference building ([`reward::RewardSpec`],
//!   [`reward::Weighted`]).
//!
//! It depends only on `firebrand-data`, so training and eval get rewards without compiling the
//! synthesizers (tree-sitter, the HTTP client).
#![warn(missing_docs)]

pub mod ifeval;
pub mod rag;
pub mod reward;
pub mod score;
pub mod text;
pub mod verifier;

pub use verifier::{
    CheckFn, Context, Kind, Kw, Kwargs, Mode, Origin, Passage, Relation, Spec, Verifier, VerifierError, kind, kinds,
    loose_variants, parse_verifiers, render, verifiers_json,
};
