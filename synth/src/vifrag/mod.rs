//! VIF-RAG: verifiable instructions for RAG answers (Dong et al., "Toward General Instruction-
//! Following Alignment for Retrieval-Augmented Generation"; reference `dongguanting/FollowRAG`).
//!
//! The released pipeline verifies free-form constraints with LLM-written Python (the AutoIF
//! method) and scores with IFEval's checkers. We keep only what can be checked deterministically:
//! every instruction is a [`Kind`] with a Rust checker, several phrasings and a sampler, so a
//! response can be re-checked at any later stage (DPO pair building, GRPO rewards, `eval follow`)
//! from the `verifiers` column alone.
//!
//! The verifiers live in `firebrand-verify` (so training and eval use them without the
//! synthesizers) and are re-exported here: [`Verifier`], [`Spec`], [`Kind`], ... and the modules
//! [`ifeval`] (IFEval's 25 types, FollowRAG's ids as aliases; [`text`] says where checks can differ
//! from IFEval's Python), [`rag`] (our atomic types for RAG answers) and [`score`] (IFEval-style
//! strict/loose accuracy, `firebrand eval follow`). The synthesis is here:
//!
//! - [`compose`]: 1–4 instructions per sample under a conflict table.
//! - [`mix`]: queries + passages + instructions → `prompts` rows (the documented template).
//! - [`keep`]: answers a generator writes, kept when they pass their verifiers.

pub mod compose;
pub mod keep;
pub mod mix;

pub use firebrand_verify::{
    CheckFn, Context, Kind, Kw, Kwargs, Mode, Origin, Passage, Relation, Spec, Verifier, VerifierError, kind, kinds,
    loose_variants, parse_verifiers, render, verifiers_json,
};
pub use firebrand_verify::{ifeval, rag, score, text};
