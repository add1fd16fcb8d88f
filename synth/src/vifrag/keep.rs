//! Generate → verify → keep: VIF-RAG's rejection sampling with deterministic verifiers. Each
//! prompt gets `n` responses from a [`Generator`]; a response is kept when it passes all of the
//! prompt's verifiers (strict mode). VIF-RAG keeps a response when the mean of its LLM-written
//! verifiers is above 0; ours are exact, so we require all of them.
//!
//! The kept conversation is a `chat` row with the prompt's id, its labels, the fraction of the
//! `n` responses that passed as `score` (a difficulty signal for MIG), and the verifiers in
//! `meta` so later stages can re-check.

use std::collections::BTreeMap;
use std::sync::Mutex;

use firebrand_data::records::{ChatRow, Message, PromptsRow, Provenance, Role};
use serde_json::json;

use super::parse_verifiers;
use super::score::{Judged, Tally};
use crate::generator::{GenParams, Generator};
use crate::runner::Outcome;

/// What the loop saw, for the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeepStats {
    /// Responses judged, and passed, per instruction id.
    pub by_id: BTreeMap<String, Tally>,
    /// Responses generated.
    pub responses: usize,
    /// Responses that passed all their instructions.
    pub passed: usize,
}

impl KeepStats {
    /// Per-id pass rates as text lines.
    pub fn lines(&self) -> Vec<String> {
        self.by_id
            .iter()
            .map(|(id, t)| format!("{id:<48} {:>6.1}%  ({}/{})", 100.0 * t.rate(), t.passed, t.total))
            .collect()
    }
}

/// Answers a chunk of prompts and keeps, per prompt, the first response that passes everything.
pub fn answer_and_keep(
    generator: &dyn Generator,
    chunk: Vec<(String, PromptsRow)>,
    params: &GenParams,
    stats: &Mutex<KeepStats>,
) -> Vec<Outcome<ChatRow>> {
    let conversations: Vec<Vec<Message>> = chunk.iter().map(|(_, r)| r.prompt.clone()).collect();
    let answers = generator.generate(&conversations, params);
    let mut local = KeepStats::default();
    let out = chunk
        .into_iter()
        .zip(answers)
        .map(|((_, row), answers)| {
            let verifiers = match parse_verifiers(&row.verifiers) {
                Ok(v) => v,
                Err(e) => return Outcome::Drop(format!("unusable verifiers: {e}")),
            };
            let answers = match answers {
                Ok(a) => a,
                Err(e) => return Outcome::Drop(format!("generation failed: {e}")),
            };
            let mut kept: Option<String> = None;
            let mut passed = 0;
            for a in answers.iter() {
                let judged = Judged::new(&verifiers, a);
                local.responses += 1;
                for (v, &ok) in verifiers.iter().zip(&judged.strict) {
                    let t = local.by_id.entry(v.kind.id.to_string()).or_default();
                    t.passed += usize::from(ok);
                    t.total += 1;
                }
                if judged.strict.iter().all(|&b| b) {
                    passed += 1;
                    kept.get_or_insert_with(|| a.clone());
                }
            }
            local.passed += passed;
            let Some(response) = kept else {
                return Outcome::Drop("no response passed all its instructions".into());
            };
            let mut messages = row.prompt.clone();
            messages.push(Message::new(Role::Assistant, response));
            Outcome::Keep(ChatRow {
                id: row.id.clone(),
                messages,
                provenance: Provenance {
                    source: "vifrag".into(),
                    labels: row.provenance.labels.clone(),
                    score: Some(passed as f32 / answers.len().max(1) as f32),
                    meta:
                        json!({ "verifiers": row.verifiers, "answer": row.answer, "prompt_meta": row.provenance.meta })
                            .to_string(),
                },
            })
        })
        .collect();
    if let Ok(mut s) = stats.lock() {
        s.responses += local.responses;
        s.passed += local.passed;
        for (id, t) in local.by_id {
            let e = s.by_id.entry(id).or_default();
            e.passed += t.passed;
            e.total += t.total;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::compose::ComposeOptions;
    use super::super::mix::{Query, make_prompt};
    use super::*;
    use crate::generator::Answers;

    /// Answers in lower case without commas, or in capitals with a comma, alternately.
    struct TwoVoices;

    const LOWER: &str = "the capital of france is paris and it lies on the river seine.";
    const UPPER: &str = "THE CAPITAL OF FRANCE IS PARIS, WHICH LIES ON THE RIVER SEINE.";

    impl Generator for TwoVoices {
        fn generate(&self, conversations: &[Vec<Message>], params: &GenParams) -> Vec<Answers> {
            conversations
                .iter()
                .map(|_| {
                    Ok((0..params.n)
                        .map(|i| {
                            if i % 2 == 0 {
                                LOWER.to_string()
                            } else {
                                UPPER.to_string()
                            }
                        })
                        .collect())
                })
                .collect()
        }
    }

    fn row(id: &str, verifiers: &str) -> (String, PromptsRow) {
        let Outcome::Keep(mut r) = make_prompt(
            &Query::from_json(&json!({"query": "Capital of France?", "id": id}), id, "t").unwrap(),
            0,
            0,
            &ComposeOptions::default(),
        ) else {
            panic!()
        };
        r.verifiers = verifiers.to_string();
        (id.to_string(), r)
    }

    #[test]
    fn keeps_the_first_passing_response_and_counts_pass_rates() {
        let stats = Mutex::new(KeepStats::default());
        let chunk = vec![
            row("a", r#"[{"id": "change_case:english_lowercase"}]"#),
            row(
                "b",
                r#"[{"id": "punctuation:no_comma"}, {"id": "change_case:english_capital"}]"#,
            ),
            row("c", r#"[{"id": "detectable_format:json_format"}]"#),
            row("d", r#"[{"id": "nope"}]"#),
        ];
        let out = answer_and_keep(
            &TwoVoices,
            chunk,
            &GenParams {
                n: 2,
                ..Default::default()
            },
            &stats,
        );
        let Outcome::Keep(a) = &out[0] else {
            panic!("{:?}", out[0])
        };
        assert_eq!(a.messages.last().unwrap().content, LOWER);
        assert_eq!(a.provenance.score, Some(0.5));
        assert!(a.provenance.meta.contains("english_lowercase"));
        // The lower-case answer is not upper-case, the upper-case one has a comma.
        assert!(matches!(&out[1], Outcome::Drop(r) if r.starts_with("no response passed")));
        assert!(matches!(&out[2], Outcome::Drop(r) if r.starts_with("no response passed")));
        assert!(matches!(&out[3], Outcome::Drop(r) if r.starts_with("unusable verifiers")));
        let s = stats.lock().unwrap();
        assert_eq!(s.responses, 6);
        assert_eq!(s.passed, 1);
        assert_eq!(s.by_id["punctuation:no_comma"], Tally { passed: 1, total: 2 });
        assert_eq!(s.by_id["change_case:english_capital"], Tally { passed: 1, total: 2 });
    }
}
