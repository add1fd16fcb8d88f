//! IFEval-style scoring (google-research `instruction_following_eval/evaluation_lib.py`), as
//! FollowRAG uses it: per prompt, each instruction is judged strictly and loosely; prompt-level
//! accuracy counts prompts whose instructions all pass, instruction-level accuracy counts
//! instructions (micro-averaged); both are also broken down by instruction id and by its
//! category (the part before `:`). FollowRAG's headline "IF" score is loose instruction-level.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Mode, Verifier};

/// The verdicts on one response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judged {
    /// Per instruction, strict.
    pub strict: Vec<bool>,
    /// Per instruction, loose.
    pub loose: Vec<bool>,
}

impl Judged {
    /// Judges `response` against every verifier.
    pub fn new(verifiers: &[Verifier], response: &str) -> Self {
        Judged {
            strict: verifiers.iter().map(|v| v.follows(response, Mode::Strict)).collect(),
            loose: verifiers.iter().map(|v| v.follows(response, Mode::Loose)).collect(),
        }
    }
}

/// Passed and total counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Passed.
    pub passed: usize,
    /// Judged.
    pub total: usize,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.passed += usize::from(ok);
        self.total += 1;
    }

    /// passed / total (0 when nothing was judged).
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.passed as f64 / self.total as f64
        }
    }
}

/// Strict and loose tallies side by side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// Strict mode.
    pub strict: Tally,
    /// Loose mode.
    pub loose: Tally,
}

/// Accuracy over a set of prompts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Prompts whose instructions all pass.
    pub prompt: Pair,
    /// Instructions that pass.
    pub instruction: Pair,
    /// Per instruction id.
    pub by_id: BTreeMap<String, Pair>,
    /// Per category (`keywords`, `detectable_format`, `rag`, ...).
    pub by_category: BTreeMap<String, Pair>,
}

impl Report {
    /// Adds one prompt's verdicts; `ids` are its instruction ids in the verdicts' order.
    pub fn add(&mut self, ids: &[String], judged: &Judged) {
        self.prompt.strict.add(judged.strict.iter().all(|&b| b));
        self.prompt.loose.add(judged.loose.iter().all(|&b| b));
        for ((id, &s), &l) in ids.iter().zip(&judged.strict).zip(&judged.loose) {
            let category = id.split(':').next().unwrap_or(id).to_string();
            for pair in [
                &mut self.instruction,
                self.by_id.entry(id.clone()).or_default(),
                self.by_category.entry(category).or_default(),
            ] {
                pair.strict.add(s);
                pair.loose.add(l);
            }
        }
    }

    /// The report as text: the four headline numbers, then categories and ids.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |name: &str, p: &Pair| {
            format!(
                "{name:<48} {:>7.4} {:>7.4} {:>7}\n",
                p.strict.rate(),
                p.loose.rate(),
                p.strict.total
            )
        };
        out.push_str(&format!("{:<48} {:>7} {:>7} {:>7}\n", "", "strict", "loose", "n"));
        out.push_str(&line("prompt-level", &self.prompt));
        out.push_str(&line("instruction-level", &self.instruction));
        out.push('\n');
        for (k, p) in &self.by_category {
            out.push_str(&line(k, p));
        }
        out.push('\n');
        for (k, p) in &self.by_id {
            out.push_str(&line(k, p));
        }
        out
    }
}

/// A prompt in IFEval's input convention (`input_data.jsonl`).
#[derive(Debug, Clone, Deserialize)]
pub struct IfEvalInput {
    /// Its key (an integer in IFEval's data; any JSON value is kept).
    #[serde(default)]
    pub key: serde_json::Value,
    /// The prompt text; responses are matched to it exactly.
    pub prompt: String,
    /// Instruction ids (IFEval's or FollowRAG's).
    pub instruction_id_list: Vec<String>,
    /// One kwargs object per instruction.
    pub kwargs: Vec<serde_json::Value>,
}

/// One row of `--details`: the prompt's per-instruction verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    /// The prompt's key or id.
    pub key: serde_json::Value,
    /// The prompt text.
    pub prompt: String,
    /// The response judged.
    pub response: String,
    /// Instruction ids.
    pub instruction_id_list: Vec<String>,
    /// Strict verdict per instruction.
    pub follow_instruction_list_strict: Vec<bool>,
    /// Loose verdict per instruction.
    pub follow_instruction_list_loose: Vec<bool>,
    /// All instructions pass, strict.
    pub follow_all_instructions_strict: bool,
    /// All instructions pass, loose.
    pub follow_all_instructions_loose: bool,
}

impl Detail {
    /// The detail row of one judged prompt.
    pub fn new(key: serde_json::Value, prompt: String, response: String, ids: Vec<String>, j: Judged) -> Self {
        Detail {
            key,
            prompt,
            response,
            follow_all_instructions_strict: j.strict.iter().all(|&b| b),
            follow_all_instructions_loose: j.loose.iter().all(|&b| b),
            instruction_id_list: ids,
            follow_instruction_list_strict: j.strict,
            follow_instruction_list_loose: j.loose,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strict_and_loose_accuracy_by_prompt_instruction_and_id() {
        let comma = Verifier::new("punctuation:no_comma", json!({})).unwrap();
        let title = Verifier::new("detectable_format:title", json!({})).unwrap();
        let lower = Verifier::new("change_case:english_lowercase", json!({})).unwrap();
        let mut report = Report::default();
        // Follows both.
        let a = Judged::new(&[comma, title], "<<t>>\nno commas here");
        assert_eq!(
            (a.strict.clone(), a.loose.clone()),
            (vec![true, true], vec![true, true])
        );
        report.add(&["punctuation:no_comma".into(), "detectable_format:title".into()], &a);
        // Lower-case only once the first line (a capitalised preamble) is dropped: loose passes.
        let b = Judged::new(
            &[lower],
            "Sure! Here it is:\nthe answer is that water boils at one hundred degrees.",
        );
        assert_eq!((b.strict.clone(), b.loose.clone()), (vec![false], vec![true]));
        report.add(&["change_case:english_lowercase".into()], &b);
        assert_eq!(report.prompt.strict, Tally { passed: 1, total: 2 });
        assert_eq!(report.prompt.loose, Tally { passed: 2, total: 2 });
        assert_eq!(report.instruction.strict, Tally { passed: 2, total: 3 });
        assert_eq!(report.by_category["change_case"].loose, Tally { passed: 1, total: 1 });
        assert!(report.render().contains("prompt-level"));
    }

    #[test]
    fn blank_responses_follow_nothing() {
        let comma = Verifier::new("punctuation:no_comma", json!({})).unwrap();
        let j = Judged::new(&[comma], "  \n ");
        assert_eq!((j.strict, j.loose), (vec![false], vec![false]));
    }
}
