//! Mixing queries with instructions: one `prompts` row per (query, draw), whose user message is
//! the passages, the query and the composed instructions in this template (version 1):
//!
//! ```text
//! Passages:
//! [1] {title 1}
//! {text 1}
//!
//! [2] {title 2}
//! {text 2}
//!
//! Question: {query}
//!
//! Instructions: {instruction 1} {instruction 2} ...
//! ```
//!
//! The passage block is left out when a query has none. VIF-RAG appends the constraint to the
//! query (`query + " " + instruction`); a separate line keeps the question intact, so
//! `combination:repeat_prompt` has a well-defined text to repeat. The row's `verifiers` hold the
//! instructions as `{id, kwargs}`, `labels` the instruction ids plus `source:{query source}` (for
//! MIG), `meta` the query id, the template version and the phrasings used.

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use firebrand_data::records::{Message, PromptsRow, Provenance, Role};

use super::compose::{ComposeOptions, compose};
use super::{Context, Passage, Spec, Verifier, verifiers_json};
use crate::runner::Outcome;

/// The template's version, recorded in each row's `meta`.
pub const TEMPLATE_VERSION: &str = "firebrand-vifrag-v1";

/// A query to build prompts from.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Stable id (from the input, else its position).
    pub id: String,
    /// Where it came from (dataset, file, benchmark split).
    pub source: String,
    /// The question and what the prompt shows with it.
    pub context: Context,
}

impl Query {
    /// Reads a query from a JSON record. Accepted fields: the question as `query`, `question`,
    /// `prompt` or `instruction`; passages as `passages`, `docs` or `ctxs` (a list of strings or
    /// of objects with `text` or `content` and optional `title`); the answer as `answer`,
    /// `answers` or `answer_gold` (a string, or a list joined with `/`); the id as `id` or `key`.
    ///
    /// # Errors
    /// When there is no question, or passages or answers have an unexpected shape.
    pub fn from_json(v: &Value, fallback_id: &str, source: &str) -> Result<Query, String> {
        let field = |names: &[&str]| names.iter().find_map(|n| v.get(*n).filter(|x| !x.is_null()));
        let query = field(&["query", "question", "prompt", "instruction"])
            .and_then(Value::as_str)
            .ok_or("no question: expected a `query`, `question`, `prompt` or `instruction` string")?;
        let passages = match field(&["passages", "docs", "ctxs"]) {
            None => Vec::new(),
            Some(Value::Array(items)) => items.iter().map(passage).collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("`passages` is not a list: {other}")),
        };
        let answer = match field(&["answer", "answers", "answer_gold"]) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) => Some(flatten_answers(items).join("/")),
            Some(other) => Some(other.to_string()),
        };
        let id = match field(&["id", "key"]) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => fallback_id.to_string(),
        };
        Ok(Query {
            id,
            source: v.get("source").and_then(Value::as_str).unwrap_or(source).to_string(),
            context: Context {
                query: query.to_string(),
                passages,
                answer,
            },
        })
    }
}

/// Answer aliases from a list that may nest (NQ-style alias groups), in order.
fn flatten_answers(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .flat_map(|i| match i {
            Value::Array(inner) => flatten_answers(inner),
            Value::String(s) => vec![s.clone()],
            Value::Null => vec![],
            other => vec![other.to_string()],
        })
        .collect()
}

fn passage(v: &Value) -> Result<Passage, String> {
    match v {
        Value::String(s) => Ok(Passage {
            title: String::new(),
            text: s.clone(),
        }),
        Value::Object(o) => {
            let text = o
                .get("text")
                .or_else(|| o.get("content"))
                .and_then(Value::as_str)
                .ok_or("a passage has no `text` or `content` string")?;
            Ok(Passage {
                title: o.get("title").and_then(Value::as_str).unwrap_or("").to_string(),
                text: text.to_string(),
            })
        }
        other => Err(format!("a passage is neither a string nor an object: {other}")),
    }
}

/// The user message of the template (module docs).
pub fn render_prompt(ctx: &Context, instructions: &[String]) -> String {
    let mut out = String::new();
    if !ctx.passages.is_empty() {
        out.push_str("Passages:\n");
        for (i, p) in ctx.passages.iter().enumerate() {
            out.push_str(&format!("[{}] {}\n{}\n\n", i + 1, p.title.trim(), p.text.trim()));
        }
    }
    out.push_str(&format!("Question: {}", ctx.query.trim()));
    if !instructions.is_empty() {
        out.push_str(&format!("\n\nInstructions: {}", instructions.join(" ")));
    }
    out
}

/// A stable 64-bit hash (FNV-1a), so per-row seeds do not depend on threads or platforms.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// Draw `k` of `query`: instructions composed with a seed derived from `(seed, query id, k)`, a
/// phrasing drawn for each, rendered into a `prompts` row.
pub fn make_prompt(query: &Query, k: usize, seed: u64, opts: &ComposeOptions) -> Outcome<PromptsRow> {
    let mut rng = StdRng::seed_from_u64(seed ^ stable_hash(&[&query.id, &k.to_string()]));
    let specs: Vec<Spec> = compose(&mut rng, &query.context, opts);
    if specs.is_empty() {
        return Outcome::Drop("no instruction of the pool fits this query".into());
    }
    let mut phrasings = Vec::with_capacity(specs.len());
    let mut texts = Vec::with_capacity(specs.len());
    for s in &specs {
        let v = match Verifier::build(s.clone()) {
            Ok(v) => v,
            Err(e) => return Outcome::Drop(format!("internal: a sampled instruction does not build: {e}")),
        };
        let i = rand::Rng::random_range(&mut rng, 0..v.kind.phrasings.len());
        phrasings.push(i);
        texts.push(v.describe(i));
    }
    let mut labels: Vec<String> = specs.iter().map(|s| s.id.clone()).collect();
    labels.push(format!("source:{}", query.source));
    Outcome::Keep(PromptsRow {
        id: format!("{}-{k}", query.id),
        prompt: vec![Message::new(Role::User, render_prompt(&query.context, &texts))],
        verifiers: verifiers_json(&specs),
        answer: query.context.answer.clone(),
        provenance: Provenance {
            source: "vifrag".into(),
            labels,
            score: None,
            meta: json!({
                "query_id": query.id,
                "query": query.context.query,
                "passages": query.context.passages,
                "template": TEMPLATE_VERSION,
                "phrasings": phrasings,
            })
            .to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse_verifiers;
    use super::*;

    fn query() -> Query {
        Query::from_json(
            &json!({"question": "Who wrote Hamlet?", "docs": [{"title": "Hamlet", "content": "Hamlet is a tragedy by William Shakespeare."}, "Shakespeare was born in Stratford."], "answers": [["William Shakespeare", "Shakespeare"]], "key": 7}),
            "row-0",
            "test",
        )
        .unwrap()
    }

    #[test]
    fn queries_read_common_field_names() {
        let q = query();
        assert_eq!(q.id, "7");
        assert_eq!(q.context.passages.len(), 2);
        assert_eq!(q.context.passages[1].title, "");
        assert_eq!(q.context.answer.as_deref(), Some("William Shakespeare/Shakespeare"));
        let err = Query::from_json(&json!({"text": "x"}), "r", "s").unwrap_err();
        assert!(err.contains("no question"), "{err}");
        assert!(Query::from_json(&json!({"query": "q", "passages": [3]}), "r", "s").is_err());
    }

    #[test]
    fn prompts_follow_the_template_and_store_re_checkable_verifiers() {
        let q = query();
        let Outcome::Keep(row) = make_prompt(&q, 0, 42, &ComposeOptions::default()) else {
            panic!("dropped")
        };
        let text = &row.prompt[0].content;
        assert!(text.starts_with("Passages:\n[1] Hamlet\nHamlet is a tragedy by William Shakespeare.\n\n[2] \n"));
        assert!(
            text.contains("\n\nQuestion: Who wrote Hamlet?\n\nInstructions: "),
            "{text}"
        );
        let verifiers = parse_verifiers(&row.verifiers).unwrap();
        assert!(!verifiers.is_empty());
        for v in &verifiers {
            assert!(row.provenance.labels.contains(&v.kind.id.to_string()));
        }
        assert!(row.provenance.labels.contains(&"source:test".to_string()));
        assert_eq!(row.id, "7-0");
        // Same seed, same row; another draw differs.
        let Outcome::Keep(again) = make_prompt(&q, 0, 42, &ComposeOptions::default()) else {
            panic!()
        };
        assert_eq!(again, row);
        let differs = (1..10).any(|k| match make_prompt(&q, k, 42, &ComposeOptions::default()) {
            Outcome::Keep(r) => r.verifiers != row.verifiers,
            Outcome::Drop(_) => false,
        });
        assert!(differs);
    }

    #[test]
    fn no_passages_no_passage_block() {
        let ctx = Context {
            query: "What is 2+2?".into(),
            ..Default::default()
        };
        assert_eq!(
            render_prompt(&ctx, &["Answer in one line.".into()]),
            "Question: What is 2+2?\n\nInstructions: Answer in one line."
        );
    }
}
