//! Multiverse 1K conversion: sequential reasoning traces into validated parallel-reasoning traces
//! (`multiverse` datasets), following Infini-AI-Lab/Multiverse's `data/` pipeline (see
//! ../shared/research/multiverse.md §1–2).
//!
//! - `format`: the tags' grammar: parser, validator (line, tag, rule), normaliser (numbering, cue).
//! - `check`: the content check (normalised Levenshtein distance of the de-tagged trace).
//! - `explicit`: the offline converter for traces whose cases are explicit.
//!
//! The token-level attention structure (segments, parents, positions) lives in
//! `firebrand_data::multiverse`, because tokenization needs it.

pub mod check;
pub mod explicit;
pub mod format;
pub mod llm;

use serde::Deserialize;

use firebrand_data::records::{MultiverseRow, Provenance};

use crate::runner::Outcome;

/// One sequential trace to convert (s1K-style JSONL; field aliases of s1K-1.1 accepted).
#[derive(Debug, Clone, Deserialize)]
pub struct SequentialTrace {
    /// Id (`uuid` in s1K).
    #[serde(alias = "uuid", default)]
    pub id: Option<String>,
    /// The question.
    pub question: String,
    /// The reasoning trace (`deepseek_thinking_trajectory` in s1K-1.1).
    #[serde(alias = "deepseek_thinking_trajectory", alias = "thinking")]
    pub trace: String,
    /// The final answer (`deepseek_attempt` in s1K-1.1).
    #[serde(alias = "deepseek_attempt")]
    pub answer: String,
}

/// Options of a conversion.
#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    /// Largest normalised edit distance the content check accepts.
    pub max_distance: f32,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            max_distance: check::DEFAULT_MAX_DISTANCE,
        }
    }
}

/// Why a trace was left out (the report's reasons).
pub mod reasons {
    /// The offline converter found no run of explicit cases.
    pub const NO_STRUCTURE: &str = "no explicit parallel structure (no run of `Case 1:`, `Case 2:` paragraphs)";
    /// The converted trace has no `<Parallel>` block.
    pub const NO_BLOCK: &str = "the converted trace has no <Parallel> block";
    /// The converted trace broke the grammar.
    pub const GRAMMAR: &str = "grammar check failed";
    /// The de-tagged trace drifted from the original.
    pub const CONTENT: &str = "content check failed (edit distance above the threshold)";
}

/// Converts one trace with the offline converter, then validates it (grammar, content).
pub fn convert_explicit(id: &str, input: &SequentialTrace, opts: &ConvertOptions) -> Outcome<MultiverseRow> {
    let Some(trace) = explicit::convert(&input.trace) else {
        return Outcome::Drop(reasons::NO_STRUCTURE.into());
    };
    finish(id, input, &trace.normalized(), opts, "multiverse-explicit")
}

/// Validates a converted trace text and builds its row: the grammar is checked on the text as it
/// will be trained on (after normalising), then the content check against the original.
pub fn finish(
    id: &str,
    input: &SequentialTrace,
    parallel: &str,
    opts: &ConvertOptions,
    source: &str,
) -> Outcome<MultiverseRow> {
    let trace = match format::parse(parallel) {
        Ok(t) => t,
        Err(e) => return Outcome::Drop(format!("{}: {}", reasons::GRAMMAR, e.rule)),
    };
    if trace.blocks() == 0 {
        return Outcome::Drop(reasons::NO_BLOCK.into());
    }
    let distance = check::content_distance(&trace, &input.trace);
    if distance > opts.max_distance {
        return Outcome::Drop(reasons::CONTENT.into());
    }
    let meta = serde_json::json!({ "blocks": trace.blocks() }).to_string();
    Outcome::Keep(MultiverseRow {
        id: id.to_string(),
        question: input.question.clone(),
        parallel_trace: trace.normalized(),
        sequential_trace: trace.sequential(),
        original_trace: input.trace.clone(),
        answer: input.answer.clone(),
        distance: Some(distance),
        provenance: Provenance {
            source: source.to_string(),
            labels: vec!["multiverse".into()],
            score: None,
            meta,
        },
    })
}
