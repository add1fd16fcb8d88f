//! Preference pairs in the spirit of PA-RAG (Wu et al., NAACL 2025; `wujwyi/PA-RAG`
//! `inference.py --docs_select`): answers sampled under different passage conditions, scored, and
//! paired per perspective. PA-RAG releases no construction code; the conditions follow its
//! inference switches, the pairing follows the paper's description, the rest is ours.
//!
//! Input: `prompts` rows written by `synth vifrag` (their `meta` keeps the question, the passages
//! and the instruction phrasings, so a prompt can be re-rendered with other passages). Golden
//! passages are those that contain the answer (VIF-RAG's `rag:include_answer` semantics: an alias,
//! word-bounded, case-insensitive); the others are noise. Conditions:
//! - `full`: the prompt as it is (all passages);
//! - `golden`: golden passages only, in order;
//! - `partial`: an order-preserving random subset of the golden passages of PA-RAG's size
//!   `remain_num = [1, 1, 1, 2, 2][len − 1]` (at least two golden passages are needed, or partial
//!   would equal golden);
//! - `noisy`: the noise passages inserted one by one at random positions among the golden ones.
//!
//! Perspectives (the pair's prompt is always the full prompt, as PA-RAG's DPO prompts show the
//! full document set):
//! - `informativeness`: chosen from `golden` and containing the answer, rejected from `partial`
//!   and missing it;
//! - `robustness`: chosen from `golden` with the answer, rejected from `noisy` without it;
//! - `instruction`: among `full` answers, the highest fraction of the prompt's verifiers passed
//!   against the lowest.
//!
//! Among several candidates the one passing the most verifiers is chosen (then the first); the
//! rejected is the first that qualifies. PA-RAG's citation-quality perspective needs an NLI model
//! and is not built. A (prompt, perspective) with no pair is counted by reason: `all pass`, `all
//! fail`, `ties`, `no answer`, `no noise passages`, `fewer than 2 golden passages`,
//! `identical answers`, `empty answer`, or the generation error.
//!
//! A condition's prompt numbers its own passages from [1]; answers are stored (and scored) with
//! their citations renumbered to the full prompt's passages, which is what the pair's prompt shows.
//!
//! Determinism: the partial subsets, noise positions and generation seeds each come from (`seed`,
//! prompt id, condition), so they do not depend on which perspectives are asked.

use std::collections::BTreeMap;

use firebrand_data::records::{Message, PreferenceRow, PromptsRow, Provenance, Role};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::generator::{GenParams, Generator};
use crate::runner::Outcome;
use crate::vifrag::mix::{render_prompt, stable_hash};
use crate::vifrag::{Context, Mode, Passage, Spec, Verifier, parse_verifiers};

/// What a pair teaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Perspective {
    /// Use all the useful passages (golden vs partial evidence).
    Informativeness,
    /// Ignore noise (golden vs noisy passages).
    Robustness,
    /// Follow the instructions (most vs fewest verifiers passed).
    Instruction,
}

impl Perspective {
    /// Every perspective.
    pub const ALL: [Perspective; 3] = [
        Perspective::Informativeness,
        Perspective::Robustness,
        Perspective::Instruction,
    ];

    /// The name in labels, ids and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Perspective::Informativeness => "informativeness",
            Perspective::Robustness => "robustness",
            Perspective::Instruction => "instruction",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Perspective> {
        Perspective::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Whether pairs of this perspective are judged by the row's answer.
    fn needs_answer(self) -> bool {
        self != Perspective::Instruction
    }

    fn conditions(self) -> &'static [Condition] {
        match self {
            Perspective::Informativeness => &[Condition::Golden, Condition::Partial],
            Perspective::Robustness => &[Condition::Golden, Condition::Noisy],
            Perspective::Instruction => &[Condition::Full],
        }
    }
}

/// Which passages a prompt shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    /// The prompt as given.
    Full,
    /// Golden passages only.
    Golden,
    /// Some of the golden passages.
    Partial,
    /// Golden passages with the noise inserted.
    Noisy,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Full => "full",
            Condition::Golden => "golden",
            Condition::Partial => "partial",
            Condition::Noisy => "noisy",
        }
    }
}

/// A prompt taken apart: what is needed to render it under another condition and to score answers.
#[derive(Debug)]
pub struct Scene {
    /// The prompt row.
    pub row: PromptsRow,
    /// Its question.
    pub query: String,
    /// Every passage of the full prompt, in its order.
    pub passages: Vec<Passage>,
    /// Indices of the passages containing the answer, in order (all when there is no answer).
    pub golden: Vec<usize>,
    /// Indices of the other passages, in order.
    pub noise: Vec<usize>,
    /// The instruction sentences as the prompt shows them.
    pub instructions: Vec<String>,
    /// The prompt's verifiers.
    pub verifiers: Vec<Verifier>,
    /// `rag:include_answer` for the row's answer, when it has one.
    pub answer: Option<Verifier>,
}

impl Scene {
    /// Takes a `prompts` row from `synth vifrag` apart.
    ///
    /// # Errors
    /// A message when `meta` lacks the question or passages, or the verifiers do not parse.
    pub fn from_row(row: &PromptsRow) -> Result<Scene, String> {
        let meta: serde_json::Value =
            serde_json::from_str(&row.provenance.meta).map_err(|e| format!("`meta` is not JSON: {e}"))?;
        let query = meta["query"]
            .as_str()
            .ok_or("`meta.query` is missing (prefs reads prompts written by `synth vifrag`)")?
            .to_string();
        let passages: Vec<Passage> =
            serde_json::from_value(meta["passages"].clone()).map_err(|e| format!("`meta.passages`: {e}"))?;
        let verifiers = parse_verifiers(&row.verifiers).map_err(|e| format!("`verifiers`: {e}"))?;
        let phrasings: Vec<usize> = meta["phrasings"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_u64().map(|p| p as usize)).collect())
            .unwrap_or_default();
        if phrasings.len() != verifiers.len() {
            return Err("`meta.phrasings` does not match the verifiers".into());
        }
        let instructions = verifiers.iter().zip(&phrasings).map(|(v, &p)| v.describe(p)).collect();
        let answer = match row.answer.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
            None => None,
            Some(a) => Some(
                Verifier::build(Spec {
                    id: "rag:include_answer".into(),
                    kwargs: json!({ "answer": a }).as_object().cloned().unwrap_or_default(),
                })
                .map_err(|e| format!("`answer`: {e}"))?,
            ),
        };
        let (golden, noise): (Vec<usize>, Vec<usize>) = match &answer {
            Some(a) => (0..passages.len())
                .partition(|&i| a.follows(&format!("{} {}", passages[i].title, passages[i].text), Mode::Strict)),
            None => ((0..passages.len()).collect(), Vec::new()),
        };
        Ok(Scene {
            row: row.clone(),
            query,
            passages,
            golden,
            noise,
            instructions,
            verifiers,
            answer,
        })
    }

    /// The passages of a condition (indices into the full prompt's), or why it cannot be built.
    fn passages(&self, condition: Condition, rng: &mut StdRng) -> Result<Option<Vec<usize>>, &'static str> {
        Ok(match condition {
            Condition::Full => None,
            Condition::Golden => Some(self.golden.clone()),
            Condition::Partial => {
                if self.golden.len() < 2 {
                    return Err("fewer than 2 golden passages");
                }
                let keep = [1, 1, 1, 2, 2][self.golden.len().min(5) - 1];
                let mut idx: Vec<usize> = (0..self.golden.len())
                    .collect::<Vec<_>>()
                    .choose_multiple(rng, keep)
                    .copied()
                    .collect();
                idx.sort_unstable();
                Some(idx.into_iter().map(|i| self.golden[i]).collect())
            }
            Condition::Noisy => {
                if self.noise.is_empty() {
                    return Err("no noise passages");
                }
                let mut out = self.golden.clone();
                for &p in &self.noise {
                    let at = rng.random_range(0..=out.len());
                    out.insert(at, p);
                }
                Some(out)
            }
        })
    }

    /// The conversation of a condition.
    fn conversation(&self, passages: Option<&[usize]>) -> Vec<Message> {
        match passages {
            None => self.row.prompt.clone(),
            Some(idx) => {
                let ctx = Context {
                    query: self.query.clone(),
                    passages: idx.iter().map(|&i| self.passages[i].clone()).collect(),
                    answer: None,
                };
                vec![Message::new(Role::User, render_prompt(&ctx, &self.instructions))]
            }
        }
    }

    /// Rewrites citations `[k]` of an answer written against a condition's passages (numbered from
    /// 1 in the condition's order) into the full prompt's numbering, which is what the pair's prompt
    /// shows; numbers outside the condition's passages are left as they are.
    fn renumber(text: &str, shown: Option<&[usize]>) -> String {
        let Some(shown) = shown else { return text.to_string() };
        let re = regex::Regex::new(r"\[(\d+)\]").expect("a valid pattern");
        re.replace_all(text, |c: &regex::Captures| {
            match c[1].parse::<usize>().ok().filter(|k| (1..=shown.len()).contains(k)) {
                Some(k) => format!("[{}]", shown[k - 1] + 1),
                None => c[0].to_string(),
            }
        })
        .into_owned()
    }

    /// Fraction of the verifiers an answer passes (1 when there are none).
    fn followed(&self, text: &str) -> f64 {
        if self.verifiers.is_empty() {
            return 1.0;
        }
        let n = self.verifiers.iter().filter(|v| v.follows(text, Mode::Strict)).count();
        n as f64 / self.verifiers.len() as f64
    }

    fn has_answer(&self, text: &str) -> Option<bool> {
        self.answer.as_ref().map(|a| a.follows(text, Mode::Strict))
    }
}

/// How pairs are built.
#[derive(Debug, Clone)]
pub struct PrefsOptions {
    /// Perspectives to build.
    pub perspectives: Vec<Perspective>,
    /// Sampling; `n` answers per prompt and condition.
    pub params: GenParams,
}

/// A scored answer.
#[derive(Debug, Clone)]
struct Scored {
    text: String,
    condition: Condition,
    answer: Option<bool>,
    followed: f64,
}

impl Scored {
    fn describe(&self) -> serde_json::Value {
        json!({"condition": self.condition.name(), "has_answer": self.answer, "verifiers_passed": self.followed})
    }
}

/// The first of the best-following candidates.
fn best(candidates: &[&Scored]) -> Option<Scored> {
    let top = candidates.iter().map(|s| s.followed).fold(f64::NEG_INFINITY, f64::max);
    candidates.iter().find(|s| s.followed == top).map(|s| (*s).clone())
}

fn pair(scene: &Scene, perspective: Perspective, answers: &BTreeMap<Condition, Vec<Scored>>) -> Outcome<PreferenceRow> {
    let get = |c: Condition| answers.get(&c).map(Vec::as_slice).unwrap_or_default();
    let (chosen, rejected) = match perspective {
        Perspective::Informativeness | Perspective::Robustness => {
            if scene.answer.is_none() {
                return Outcome::Drop(format!("{}: no answer", perspective.name()));
            }
            let worse = if perspective == Perspective::Informativeness {
                Condition::Partial
            } else {
                Condition::Noisy
            };
            let good: Vec<&Scored> = get(Condition::Golden)
                .iter()
                .filter(|s| s.answer == Some(true))
                .collect();
            let bad: Vec<&Scored> = get(worse).iter().filter(|s| s.answer == Some(false)).collect();
            match (best(&good), bad.first()) {
                (None, _) => return Outcome::Drop(format!("{}: all fail", perspective.name())),
                (_, None) => return Outcome::Drop(format!("{}: all pass", perspective.name())),
                (Some(c), Some(r)) => (c, (*r).clone()),
            }
        }
        Perspective::Instruction => {
            let all: Vec<&Scored> = get(Condition::Full).iter().collect();
            let hi = all.iter().map(|s| s.followed).fold(f64::NEG_INFINITY, f64::max);
            let lo = all.iter().map(|s| s.followed).fold(f64::INFINITY, f64::min);
            if all.is_empty() || hi == lo {
                let why = if all.is_empty() {
                    "no answers"
                } else if lo >= 1.0 {
                    "all pass"
                } else if hi <= 0.0 {
                    "all fail"
                } else {
                    "ties"
                };
                return Outcome::Drop(format!("instruction: {why}"));
            }
            let chosen = all.iter().find(|s| s.followed == hi).map(|s| (*s).clone());
            let rejected = all.iter().find(|s| s.followed == lo).map(|s| (*s).clone());
            match (chosen, rejected) {
                (Some(c), Some(r)) => (c, r),
                _ => return Outcome::Drop("instruction: no answers".into()),
            }
        }
    };
    if chosen.text.trim().is_empty() || rejected.text.trim().is_empty() {
        return Outcome::Drop(format!("{}: empty answer", perspective.name()));
    }
    if chosen.text.trim() == rejected.text.trim() {
        return Outcome::Drop(format!("{}: identical answers", perspective.name()));
    }
    let mut labels = vec![format!("perspective:{}", perspective.name())];
    labels.extend(scene.row.provenance.labels.iter().cloned());
    Outcome::Keep(PreferenceRow {
        id: format!("{}:{}", scene.row.id, perspective.name()),
        prompt: scene.row.prompt.clone(),
        chosen: chosen.text.clone(),
        rejected: rejected.text.clone(),
        ref_chosen_logp: None,
        ref_rejected_logp: None,
        provenance: Provenance {
            source: "prefs".into(),
            labels,
            score: None,
            meta: json!({
                "prompt_id": scene.row.id,
                "perspective": perspective.name(),
                "chosen": chosen.describe(),
                "rejected": rejected.describe(),
                "golden_passages": scene.golden.len(),
                "noise_passages": scene.noise.len(),
            })
            .to_string(),
        },
    })
}

/// Builds the pairs of a chunk of (prompt row, perspective) inputs; one outcome per input, in
/// order. Inputs of one prompt share its answers: generation runs once per (prompt, condition).
pub fn build_pairs(
    generator: &dyn Generator,
    inputs: &[(PromptsRow, Perspective)],
    options: &PrefsOptions,
    seed: u64,
) -> Vec<Outcome<PreferenceRow>> {
    // Prompts in first-seen order, with the conditions their perspectives need.
    let mut order: Vec<String> = Vec::new();
    let mut scenes: BTreeMap<String, Result<Scene, String>> = BTreeMap::new();
    let mut needs: BTreeMap<String, Vec<Condition>> = BTreeMap::new();
    for (row, perspective) in inputs {
        if !scenes.contains_key(&row.id) {
            order.push(row.id.clone());
            scenes.insert(row.id.clone(), Scene::from_row(row));
        }
        if perspective.needs_answer()
            && scenes
                .get(&row.id)
                .is_some_and(|s| s.as_ref().is_ok_and(|s| s.answer.is_none()))
        {
            continue; // dropped below for want of an answer; nothing to generate
        }
        let n = needs.entry(row.id.clone()).or_default();
        for c in perspective.conditions() {
            if !n.contains(c) {
                n.push(*c);
            }
        }
    }
    // Every (prompt, condition) conversation; conditions that cannot be built are remembered.
    // Each (prompt, condition) has its own random stream, so which perspectives are asked (or
    // re-asked by --resume) does not change a condition's passages.
    type Request = (String, Condition, Option<Vec<usize>>, Vec<Message>);
    let mut requests: Vec<Request> = Vec::new();
    let mut unbuildable: BTreeMap<(String, Condition), &'static str> = BTreeMap::new();
    for id in &order {
        let Some(Ok(scene)) = scenes.get(id) else { continue };
        let mut conditions = needs.get(id).cloned().unwrap_or_default();
        conditions.sort_unstable();
        for c in conditions {
            let mut rng = StdRng::seed_from_u64(seed ^ stable_hash(&[id, c.name(), "passages"]));
            match scene.passages(c, &mut rng) {
                Ok(p) => {
                    let conversation = scene.conversation(p.as_deref());
                    requests.push((id.clone(), c, p, conversation));
                }
                Err(why) => {
                    unbuildable.insert((id.clone(), c), why);
                }
            }
        }
    }
    // One generation call per (prompt, condition), each with its own seed.
    let mut answers: BTreeMap<String, BTreeMap<Condition, Vec<Scored>>> = BTreeMap::new();
    let mut failed: BTreeMap<(String, Condition), String> = BTreeMap::new();
    for (id, condition, shown, conversation) in &requests {
        let params = GenParams {
            seed: seed ^ stable_hash(&[id, condition.name()]),
            ..options.params.clone()
        };
        let result = generator
            .generate(std::slice::from_ref(conversation), &params)
            .into_iter()
            .next()
            .unwrap_or_else(|| Err("the generator returned nothing".into()));
        let Some(Ok(scene)) = scenes.get(id) else { continue };
        match result {
            Ok(texts) => {
                let scored = texts
                    .into_iter()
                    .map(|text| {
                        // Scored and stored as the pair's prompt numbers the passages.
                        let text = Scene::renumber(&text, shown.as_deref());
                        Scored {
                            answer: scene.has_answer(&text),
                            followed: scene.followed(&text),
                            condition: *condition,
                            text,
                        }
                    })
                    .collect();
                answers.entry(id.clone()).or_default().insert(*condition, scored);
            }
            Err(e) => {
                failed.insert((id.clone(), *condition), e);
            }
        }
    }
    inputs
        .iter()
        .map(|(row, perspective)| {
            let scene = match scenes.get(&row.id) {
                Some(Ok(s)) => s,
                Some(Err(e)) => return Outcome::Drop(format!("bad prompt row: {e}")),
                None => return Outcome::Drop("internal: prompt not seen".into()),
            };
            if perspective.needs_answer() && scene.answer.is_none() {
                return Outcome::Drop(format!("{}: no answer", perspective.name()));
            }
            for c in perspective.conditions() {
                if let Some(why) = unbuildable.get(&(row.id.clone(), *c)) {
                    return Outcome::Drop(format!("{}: {why}", perspective.name()));
                }
            }
            for c in perspective.conditions() {
                if let Some(e) = failed.get(&(row.id.clone(), *c)) {
                    return Outcome::Drop(format!("generation failed: {e}"));
                }
            }
            let empty = BTreeMap::new();
            pair(scene, *perspective, answers.get(&row.id).unwrap_or(&empty))
        })
        .collect()
}

#[cfg(test)]
mod tests;
