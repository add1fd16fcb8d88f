//! The LLM path of the conversion: the reference's five curation stages as two prompts (a plan:
//! step tree, dependencies, grouping; a rewrite: refill with the original sentences and the
//! Goal/Path/Conclusion form), sent through any [`Generator`], with the glue in Rust: code fences
//! stripped, the `<Think>` root ensured, grammar and content checks, and up to `tries` rewrites
//! before the trace is reported as failed by its last reason.
//!
//! The prompts are our own text (`synth/prompts/multiverse/*.txt`, versioned in their first line
//! and recorded in each row's `meta`); the reference sends Gemini its `data/prompt/step*.txt`, whose
//! tasks we follow (../shared/research/multiverse.md §2).

use firebrand_data::records::{Message, MultiverseRow, Role};

use super::{ConvertOptions, SequentialTrace, finish};
pub use crate::generator::{GenParams, Generator};
use crate::runner::Outcome;

/// The plan prompt (stages 1–3).
pub const PLAN_PROMPT: &str = include_str!("../../prompts/multiverse/plan.txt");
/// The rewrite prompt (stages 4–5).
pub const REWRITE_PROMPT: &str = include_str!("../../prompts/multiverse/rewrite.txt");

/// A prompt file as chat turns: `#` comment lines dropped, turns split at `---` lines, user and
/// assistant alternating from a user turn; `{key}` replaced by `vars`.
pub fn render_prompt(template: &str, vars: &[(&str, &str)]) -> Vec<Message> {
    let body: String = template
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    body.split("\n---\n")
        .enumerate()
        .map(|(i, turn)| {
            let mut text = turn.trim().to_string();
            for (k, v) in vars {
                text = text.replace(&format!("{{{k}}}"), v);
            }
            let role = if i % 2 == 0 { Role::User } else { Role::Assistant };
            Message::new(role, text)
        })
        .collect()
}

/// The version line of a prompt file (its first line).
pub fn prompt_version(template: &str) -> &str {
    template.lines().next().unwrap_or("").trim_start_matches('#').trim()
}

/// A model's answer as a trace: code fences removed, text before `<Think>` and after `</Think>`
/// dropped, and a `<Think>` root added when the answer has none (as the reference's
/// `data/preprocess.py`).
pub fn extract_trace(answer: &str) -> String {
    let unfenced: String = answer
        .lines()
        .filter(|l| !l.trim_start().starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    match (unfenced.find("<Think>"), unfenced.rfind("</Think>")) {
        (Some(a), Some(b)) if a < b => unfenced[a..b + "</Think>".len()].to_string(),
        _ => format!("<Think>\n{}\n</Think>", unfenced.trim()),
    }
}

/// Converts a batch of traces with `generator`: one plan per trace, then rewrites, retrying the
/// failed ones up to `tries` times in all. Outcomes are in input order.
pub fn convert_with(
    generator: &dyn Generator,
    inputs: &[(String, SequentialTrace)],
    opts: &ConvertOptions,
    params: &GenParams,
    tries: usize,
) -> Vec<Outcome<MultiverseRow>> {
    let plan_prompts: Vec<Vec<Message>> = inputs
        .iter()
        .map(|(_, t)| render_prompt(PLAN_PROMPT, &[("trace", &t.trace)]))
        .collect();
    let mut plans: Vec<Option<String>> = Vec::with_capacity(inputs.len());
    let mut last_reason: Vec<String> = vec![String::new(); inputs.len()];
    for (i, answer) in generator.generate(&plan_prompts, params).into_iter().enumerate() {
        match answer.map(|mut a| a.pop()) {
            Ok(Some(plan)) => plans.push(Some(plan)),
            Ok(None) => {
                plans.push(None);
                last_reason[i] = "the generator gave no plan".into();
            }
            Err(e) => {
                plans.push(None);
                last_reason[i] = format!("generation failed: {e}");
            }
        }
    }
    let mut outcomes: Vec<Option<Outcome<MultiverseRow>>> = (0..inputs.len()).map(|_| None).collect();
    let source = format!(
        "multiverse-llm ({}; {})",
        prompt_version(PLAN_PROMPT),
        prompt_version(REWRITE_PROMPT)
    );
    for _ in 0..tries.max(1) {
        let pending: Vec<usize> = (0..inputs.len())
            .filter(|&i| outcomes[i].is_none() && plans[i].is_some())
            .collect();
        if pending.is_empty() {
            break;
        }
        let conversations: Vec<Vec<Message>> = pending
            .iter()
            .map(|&i| {
                let plan = plans[i].as_deref().unwrap_or_default();
                render_prompt(REWRITE_PROMPT, &[("trace", &inputs[i].1.trace), ("plan", plan)])
            })
            .collect();
        let answers = generator.generate(&conversations, params);
        for (&i, answer) in pending.iter().zip(answers) {
            let answer = match answer.map(|mut a| a.pop()) {
                Ok(Some(a)) => a,
                Ok(None) => {
                    last_reason[i] = "the generator gave no answer".into();
                    continue;
                }
                Err(e) => {
                    last_reason[i] = format!("generation failed: {e}");
                    continue;
                }
            };
            let (id, input) = &inputs[i];
            match finish(id, input, &extract_trace(&answer), opts, &source) {
                Outcome::Keep(row) => outcomes[i] = Some(Outcome::Keep(row)),
                Outcome::Drop(reason) => last_reason[i] = reason,
            }
        }
    }
    outcomes
        .into_iter()
        .zip(last_reason)
        .map(|(o, reason)| o.unwrap_or_else(|| Outcome::Drop(format!("{reason} (after {} tries)", tries.max(1)))))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers plans with a fixed text and rewrites from a script, one entry per call.
    struct Scripted {
        rewrites: Mutex<Vec<Vec<String>>>,
        seen: Mutex<Vec<Vec<Message>>>,
    }

    impl Generator for Scripted {
        fn generate(&self, conversations: &[Vec<Message>], _: &GenParams) -> Vec<crate::generator::Answers> {
            self.seen.lock().unwrap().extend(conversations.iter().cloned());
            if conversations[0][0].content.starts_with("You will restructure") {
                return conversations
                    .iter()
                    .map(|_| Ok(vec!["S1\n<parallel>\nS2\nS3\n</parallel>".into()]))
                    .collect();
            }
            self.rewrites
                .lock()
                .unwrap()
                .remove(0)
                .into_iter()
                .map(|a| Ok(vec![a]))
                .collect()
        }
    }

    const TRACE: &str = "Split on parity to find n^2 mod 4 for every integer n, since the residue depends only on it.\n\nn even: n = 2k so n^2 = 4k^2, residue 0.\n\nn odd: n = 2k + 1 so n^2 = 4(k^2 + k) + 1, residue 1.\n\nSo squares are 0 or 1 mod 4.";

    fn good() -> String {
        "```xml\n<Think>\nSplit on parity to find n^2 mod 4 for every integer n, since the residue depends only on it.\nLet's think in parallel.\n<Parallel>\n<Goal>\n<Outline>\n1: even n\n</Outline>\n<Outline>\n2: odd n\n</Outline>\n</Goal>\n<Path>\n1: n even: n = 2k so n^2 = 4k^2, residue 0.\n</Path>\n<Path>\n2: n odd: n = 2k + 1 so n^2 = 4(k^2 + k) + 1, residue 1.\n</Path>\n<Conclusion>\nBoth parities are covered.\n</Conclusion>\n</Parallel>\nSo squares are 0 or 1 mod 4.\n</Think>\n```".into()
    }

    fn input(id: &str) -> (String, SequentialTrace) {
        (
            id.into(),
            SequentialTrace {
                id: Some(id.into()),
                question: "q".into(),
                trace: TRACE.into(),
                answer: "0 or 1".into(),
            },
        )
    }

    #[test]
    fn prompts_render_with_the_trace_and_the_plan() {
        let turns = render_prompt(REWRITE_PROMPT, &[("trace", "T-R-A-C-E"), ("plan", "P-L-A-N")]);
        assert_eq!(turns.len(), 1);
        assert!(turns[0].content.contains("T-R-A-C-E") && turns[0].content.contains("P-L-A-N"));
        assert!(!turns[0].content.contains("{trace}") && !turns[0].content.contains("# firebrand"));
        assert_eq!(
            prompt_version(PLAN_PROMPT),
            "firebrand multiverse prompt: plan, version 1"
        );
    }

    #[test]
    fn failed_rewrites_are_retried_and_reported_by_their_last_reason() {
        let g = Scripted {
            // Call 1: a broken trace for a, a good one for b. Call 2: a good one for a.
            rewrites: Mutex::new(vec![
                vec!["<Think><Parallel><Goal></Goal></Think>".into(), good()],
                vec![good()],
            ]),
            seen: Mutex::new(Vec::new()),
        };
        let out = convert_with(
            &g,
            &[input("a"), input("b")],
            &ConvertOptions::default(),
            &GenParams::default(),
            3,
        );
        assert!(out.iter().all(|o| matches!(o, Outcome::Keep(_))), "{out:?}");
        let Outcome::Keep(row) = &out[0] else { unreachable!() };
        assert!(row.parallel_trace.starts_with("<Think>\n") && row.distance.unwrap() < 0.2);
        assert!(row.provenance.source.contains("version 1"));
        // The plan reached the rewrite prompt.
        assert!(
            g.seen
                .lock()
                .unwrap()
                .iter()
                .any(|c| c[0].content.contains("<parallel>\nS2"))
        );

        let g = Scripted {
            rewrites: Mutex::new(vec![
                vec!["no tags at all".into()],
                vec![good().replace("residue 0.", "a completely different argument that drifts far away from the original sentences of the trace, which the content check must catch.")],
            ]),
            seen: Mutex::new(Vec::new()),
        };
        let out = convert_with(&g, &[input("c")], &ConvertOptions::default(), &GenParams::default(), 2);
        match &out[0] {
            Outcome::Drop(r) => assert!(
                r.starts_with("content check failed") && r.ends_with("(after 2 tries)"),
                "{r}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
