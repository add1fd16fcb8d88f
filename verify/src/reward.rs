//! Verifiable rewards for a completion of a `prompts` row: what GRPO optimises (issue 10) and what
//! preference building scores with (issue 9).
//!
//! A [`Reward`] returns `Some(score)` or `None` when it has nothing to say about a sample (no
//! verifiers, no reference answer). A weighted sum skips `None` parts (TRL's `nansum`); a sample
//! no part scored stays `None`, and GRPO leaves it out of its group baseline. Built-ins:
//! - [`Verifiers`]: the row's VIF-RAG verifiers, as the fraction passed or 1/0 for all passed;
//! - [`AnswerMatch`]: the row's `answer` against the completion: exact (normalised text), numeric
//!   (the last number, within a tolerance), or boxed (the last `\boxed{...}`, compared numerically
//!   when both sides are numbers); `answer` may hold aliases separated by `|`;
//! - [`Format`]: 1 when a regex matches the completion, else 0;
//! - [`LengthPenalty`]: −scale · (characters over the limit) / limit, 0 within it (characters, not
//!   tokens: rewards see text; the limit is the caller's choice);
//! - [`Weighted`]: Σ weight · reward over the parts that returned a score (`None` when none did),
//!   with per-part statistics for the run's metrics.
//!
//! Every score can be mapped from {0, 1} to {−1, +1} with `signed` (JustGRPO's ±1 rewards).
//!
//! A recipe names its rewards as [`RewardSpec`]s (`[[method.rewards]]` of a GRPO recipe), which
//! [`RewardSpec::build`] turns into a [`Weighted`] sum.

use firebrand_data::PromptsRow;
use regex::Regex;

use crate::{Mode, Verifier, parse_verifiers};

/// Scores one completion of one prompt.
pub trait Reward: Send + Sync {
    /// The name metrics are logged under.
    fn name(&self) -> &str;
    /// The score, or `None` when this reward does not apply to the sample.
    fn score(&self, row: &PromptsRow, completion: &str) -> Option<f64>;
}

/// Maps a {0, 1} score to {−1, +1} when asked.
fn sign(score: f64, signed: bool) -> f64 {
    if signed { 2.0 * score - 1.0 } else { score }
}

/// The row's verifiers.
#[derive(Debug, Clone)]
pub struct Verifiers {
    /// 1/0 for all passed, instead of the fraction passed.
    pub all: bool,
    /// Strict or loose checking.
    pub mode: Mode,
    /// ±1 instead of 1/0 (with `all`).
    pub signed: bool,
}

impl Reward for Verifiers {
    fn name(&self) -> &str {
        if self.all { "verifiers_all" } else { "verifiers" }
    }

    fn score(&self, row: &PromptsRow, completion: &str) -> Option<f64> {
        // Rows are checked when the dataset is built; one that no longer parses has no say.
        let verifiers: Vec<Verifier> = parse_verifiers(&row.verifiers).ok()?;
        if verifiers.is_empty() {
            return None;
        }
        let passed = verifiers.iter().filter(|v| v.follows(completion, self.mode)).count();
        let score = if self.all {
            f64::from(passed == verifiers.len())
        } else {
            passed as f64 / verifiers.len() as f64
        };
        Some(sign(score, self.signed))
    }
}

/// How [`AnswerMatch`] compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnswerKind {
    /// The completion, normalised (trimmed, lower-cased, whitespace collapsed, a final period
    /// dropped), equals an alias.
    Exact,
    /// The completion's last number is within `tolerance` (absolute) of the answer's.
    Numeric {
        /// Largest absolute difference that still matches.
        tolerance: f64,
    },
    /// The last `\boxed{...}` of the completion matches (numerically when both are numbers).
    Boxed,
}

/// The row's reference answer.
#[derive(Debug, Clone)]
pub struct AnswerMatch {
    /// How to compare.
    pub kind: AnswerKind,
    /// ±1 instead of 1/0.
    pub signed: bool,
}

fn normalise(s: &str) -> String {
    let lower = s.trim().to_lowercase();
    let collapsed: Vec<&str> = lower.split_whitespace().collect();
    collapsed.join(" ").trim_end_matches('.').to_string()
}

/// Parses a number as math answers write it: `1,234`, `-3.5`, `$12`, `50%`.
fn parse_number(s: &str) -> Option<f64> {
    let cleaned: String = s
        .trim()
        .trim_start_matches('$')
        .trim_end_matches(['%', '.'])
        .chars()
        .filter(|c| *c != ',')
        .collect();
    cleaned.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// The last number in a text.
fn last_number(text: &str) -> Option<f64> {
    let re = Regex::new(r"-?\$?\d[\d,]*(?:\.\d+)?").expect("a valid pattern");
    re.find_iter(text).filter_map(|m| parse_number(m.as_str())).last()
}

/// The content of the last `\boxed{...}`, with nested braces.
pub fn last_boxed(text: &str) -> Option<&str> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

impl AnswerMatch {
    fn matches(&self, completion: &str, alias: &str) -> bool {
        match self.kind {
            AnswerKind::Exact => normalise(completion) == normalise(alias),
            AnswerKind::Numeric { tolerance } => match (last_number(completion), parse_number(alias)) {
                (Some(x), Some(y)) => (x - y).abs() <= tolerance,
                _ => false,
            },
            AnswerKind::Boxed => match last_boxed(completion) {
                None => false,
                Some(boxed) => match (parse_number(boxed), parse_number(alias)) {
                    (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * y.abs().max(1.0),
                    _ => normalise(boxed) == normalise(alias),
                },
            },
        }
    }
}

impl Reward for AnswerMatch {
    fn name(&self) -> &str {
        match self.kind {
            AnswerKind::Exact => "answer_exact",
            AnswerKind::Numeric { .. } => "answer_numeric",
            AnswerKind::Boxed => "answer_boxed",
        }
    }

    fn score(&self, row: &PromptsRow, completion: &str) -> Option<f64> {
        let answer = row.answer.as_deref()?.trim();
        if answer.is_empty() {
            return None;
        }
        let hit = answer.split('|').any(|alias| self.matches(completion, alias));
        Some(sign(f64::from(hit), self.signed))
    }
}

/// 1 when the pattern matches anywhere in the completion.
#[derive(Debug, Clone)]
pub struct Format {
    /// The pattern.
    pub pattern: Regex,
    /// The metric name.
    pub name: String,
}

impl Reward for Format {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, _row: &PromptsRow, completion: &str) -> Option<f64> {
        Some(f64::from(self.pattern.is_match(completion)))
    }
}

/// −scale · (characters over `max_chars`) / `max_chars`.
#[derive(Debug, Clone, Copy)]
pub struct LengthPenalty {
    /// Characters allowed without penalty.
    pub max_chars: usize,
    /// Penalty at twice the limit.
    pub scale: f64,
}

impl Reward for LengthPenalty {
    fn name(&self) -> &str {
        "length_penalty"
    }

    fn score(&self, _row: &PromptsRow, completion: &str) -> Option<f64> {
        let n = completion.chars().count();
        let limit = self.max_chars.max(1);
        Some(-self.scale * n.saturating_sub(limit) as f64 / limit as f64)
    }
}

fn one() -> f64 {
    1.0
}

/// How an `answer` reward compares (the TOML spelling of [`AnswerKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerCompare {
    /// Normalised text equals an alias.
    #[default]
    Exact,
    /// The last number, within `tolerance`.
    Numeric,
    /// The last `\boxed{...}`.
    Boxed,
}

/// One reward of a recipe, with its weight in the sum (`kind = "verifiers" | "answer" | "format" |
/// "length"`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RewardSpec {
    /// The row's VIF-RAG verifiers ([`Verifiers`]).
    Verifiers {
        /// Weight in the sum (default 1).
        #[serde(default = "one")]
        weight: f64,
        /// 1/0 for all passed instead of the fraction passed.
        #[serde(default)]
        all: bool,
        /// IFEval's loose checking instead of strict.
        #[serde(default)]
        loose: bool,
        /// ±1 instead of 1/0.
        #[serde(default)]
        signed: bool,
    },
    /// The row's `answer` ([`AnswerMatch`]).
    Answer {
        /// Weight in the sum (default 1).
        #[serde(default = "one")]
        weight: f64,
        /// exact (default), numeric or boxed.
        #[serde(default, rename = "match")]
        compare: AnswerCompare,
        /// Largest absolute difference for `numeric` (default 0: equal).
        #[serde(default)]
        tolerance: f64,
        /// ±1 instead of 1/0.
        #[serde(default)]
        signed: bool,
    },
    /// 1 when a regex matches the completion ([`Format`]).
    Format {
        /// Weight in the sum (default 1).
        #[serde(default = "one")]
        weight: f64,
        /// The regex (Rust `regex` syntax).
        pattern: String,
        /// The metric name (default `format`).
        #[serde(default)]
        name: Option<String>,
    },
    /// A penalty for characters over a limit ([`LengthPenalty`]).
    Length {
        /// Weight in the sum (default 1).
        #[serde(default = "one")]
        weight: f64,
        /// Characters allowed without penalty.
        max_chars: usize,
        /// Penalty at twice the limit (default 1).
        #[serde(default = "one")]
        scale: f64,
    },
}

impl RewardSpec {
    /// The weighted sum of `specs`.
    ///
    /// # Errors
    /// No rewards, a weight that is not finite, a negative tolerance, an invalid regex, a zero
    /// length limit, or two parts logging under one name.
    pub fn build(specs: &[RewardSpec]) -> Result<Weighted, String> {
        if specs.is_empty() {
            return Err("no rewards: add a [[method.rewards]] table (kind = \"answer\", \"verifiers\", \"format\" or \"length\")".into());
        }
        let mut parts: Vec<(f64, Box<dyn Reward>)> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let at = |m: String| format!("method.rewards[{i}]: {m}");
            let (weight, reward): (f64, Box<dyn Reward>) = match spec {
                RewardSpec::Verifiers {
                    weight,
                    all,
                    loose,
                    signed,
                } => (
                    *weight,
                    Box::new(Verifiers {
                        all: *all,
                        mode: if *loose { Mode::Loose } else { Mode::Strict },
                        signed: *signed,
                    }),
                ),
                RewardSpec::Answer {
                    weight,
                    compare,
                    tolerance,
                    signed,
                } => {
                    if !(*tolerance >= 0.0 && tolerance.is_finite()) {
                        return Err(at(format!("tolerance must be ≥ 0, got {tolerance}")));
                    }
                    let kind = match compare {
                        AnswerCompare::Exact => AnswerKind::Exact,
                        AnswerCompare::Numeric => AnswerKind::Numeric { tolerance: *tolerance },
                        AnswerCompare::Boxed => AnswerKind::Boxed,
                    };
                    (*weight, Box::new(AnswerMatch { kind, signed: *signed }))
                }
                RewardSpec::Format { weight, pattern, name } => {
                    let pattern = Regex::new(pattern).map_err(|e| at(format!("pattern: {e}")))?;
                    let name = name.clone().unwrap_or_else(|| "format".into());
                    (*weight, Box::new(Format { pattern, name }))
                }
                RewardSpec::Length {
                    weight,
                    max_chars,
                    scale,
                } => {
                    if *max_chars == 0 {
                        return Err(at("max_chars must be at least 1".into()));
                    }
                    if !scale.is_finite() {
                        return Err(at(format!("scale must be a finite number, got {scale}")));
                    }
                    (
                        *weight,
                        Box::new(LengthPenalty {
                            max_chars: *max_chars,
                            scale: *scale,
                        }),
                    )
                }
            };
            if !weight.is_finite() {
                return Err(at(format!("weight must be a finite number, got {weight}")));
            }
            if parts.iter().any(|(_, r)| r.name() == reward.name()) {
                return Err(at(format!(
                    "a second reward logging as `{}`: merge the two, or give format rewards distinct `name`s",
                    reward.name()
                )));
            }
            parts.push((weight, reward));
        }
        Ok(Weighted { parts })
    }
}

/// Mean, std and count of one reward's scores over a batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RewardStats {
    /// The reward's name.
    pub name: String,
    /// Mean of the scores given.
    pub mean: f64,
    /// Population std of the scores given.
    pub std: f64,
    /// Samples it gave no score for.
    pub none: usize,
}

/// A weighted sum of rewards.
pub struct Weighted {
    /// (weight, reward).
    pub parts: Vec<(f64, Box<dyn Reward>)>,
}

impl Weighted {
    /// Totals per sample (`None` where no part scored) and per-part statistics.
    pub fn score_batch(&self, samples: &[(&PromptsRow, &str)]) -> (Vec<Option<f64>>, Vec<RewardStats>) {
        let mut totals: Vec<Option<f64>> = vec![None; samples.len()];
        let mut stats = Vec::with_capacity(self.parts.len());
        for (weight, reward) in &self.parts {
            let scores: Vec<Option<f64>> = samples.iter().map(|(row, c)| reward.score(row, c)).collect();
            for (total, s) in totals.iter_mut().zip(&scores) {
                if let Some(s) = s {
                    *total = Some(total.unwrap_or(0.0) + weight * s);
                }
            }
            let given: Vec<f64> = scores.iter().flatten().copied().collect();
            let mean = if given.is_empty() {
                0.0
            } else {
                given.iter().sum::<f64>() / given.len() as f64
            };
            let std = if given.is_empty() {
                0.0
            } else {
                (given.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / given.len() as f64).sqrt()
            };
            stats.push(RewardStats {
                name: reward.name().to_string(),
                mean,
                std,
                none: scores.len() - given.len(),
            });
        }
        (totals, stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firebrand_data::{Message, Provenance, Role};

    fn row(verifiers: &str, answer: Option<&str>) -> PromptsRow {
        PromptsRow {
            id: "p".into(),
            prompt: vec![Message::new(Role::User, "q")],
            verifiers: verifiers.into(),
            answer: answer.map(str::to_string),
            provenance: Provenance::from_source("test"),
        }
    }

    #[test]
    fn verifier_rewards_count_what_passes() {
        let r = row(
            r#"[{"id": "punctuation:no_comma", "kwargs": {}}, {"id": "keywords:existence", "kwargs": {"keywords": ["lower"]}}]"#,
            None,
        );
        let fraction = Verifiers {
            all: false,
            mode: Mode::Strict,
            signed: false,
        };
        assert_eq!(fraction.score(&r, "all lower, with a comma"), Some(0.5));
        assert_eq!(fraction.score(&r, "all lower and no comma"), Some(1.0));
        let all = Verifiers {
            all: true,
            signed: true,
            ..fraction.clone()
        };
        assert_eq!(all.score(&r, "Upper, and comma"), Some(-1.0));
        assert_eq!(all.score(&r, "fine and lower"), Some(1.0));
        assert_eq!(fraction.score(&row("[]", None), "x"), None);
    }

    #[test]
    fn answers_match_exactly_numerically_and_boxed() {
        let exact = AnswerMatch {
            kind: AnswerKind::Exact,
            signed: false,
        };
        let r = row("[]", Some("Paris|City of Light"));
        assert_eq!(exact.score(&r, "  paris. "), Some(1.0));
        assert_eq!(exact.score(&r, "city of   light"), Some(1.0));
        assert_eq!(exact.score(&r, "Lyon"), Some(0.0));
        assert_eq!(exact.score(&row("[]", None), "Paris"), None);
        let numeric = AnswerMatch {
            kind: AnswerKind::Numeric { tolerance: 0.01 },
            signed: true,
        };
        let r = row("[]", Some("1,234.5"));
        assert_eq!(numeric.score(&r, "first 12, then the total is 1234.5"), Some(1.0));
        assert_eq!(
            numeric.score(&r, "1234.5 or maybe 1235"),
            Some(-1.0),
            "the last number counts"
        );
        assert_eq!(numeric.score(&r, "no number"), Some(-1.0));
        let boxed = AnswerMatch {
            kind: AnswerKind::Boxed,
            signed: false,
        };
        let r = row("[]", Some("42"));
        assert_eq!(boxed.score(&r, "so \\boxed{41} no wait \\boxed{42.0}"), Some(1.0));
        assert_eq!(boxed.score(&r, "42 but boxed \\boxed{7}"), Some(0.0));
        assert_eq!(last_boxed("x \\boxed{\\frac{1}{2}} y"), Some("\\frac{1}{2}"));
        assert_eq!(last_boxed("\\boxed{unclosed"), None);
        let r = row("[]", Some("\\frac{1}{2}"));
        assert_eq!(boxed.score(&r, "\\boxed{\\frac{1}{2}}"), Some(1.0));
    }

    #[test]
    fn weighted_sums_leave_out_what_does_not_apply() {
        let w = Weighted {
            parts: vec![
                (
                    2.0,
                    Box::new(AnswerMatch {
                        kind: AnswerKind::Exact,
                        signed: false,
                    }),
                ),
                (
                    0.5,
                    Box::new(Format {
                        pattern: Regex::new(r"^\S+$").unwrap(),
                        name: "one_word".into(),
                    }),
                ),
                (
                    1.0,
                    Box::new(LengthPenalty {
                        max_chars: 4,
                        scale: 1.0,
                    }),
                ),
            ],
        };
        let with = row("[]", Some("yes"));
        let without = row("[]", None);
        let samples = [(&with, "yes"), (&with, "no way"), (&without, "yes")];
        let (totals, stats) = w.score_batch(&samples);
        // yes: 2·1 + 0.5·1 + 0; "no way" (6 chars): 0 + 0 − (2/4); no answer: 0.5·1 + 0.
        assert_eq!(totals, vec![Some(2.5), Some(-0.5), Some(0.5)]);
        assert_eq!(stats[0].name, "answer_exact");
        assert_eq!(stats[0].none, 1);
        assert!((stats[0].mean - 0.5).abs() < 1e-12);
        assert!((stats[2].mean - (-0.5 / 3.0)).abs() < 1e-12);
        // Nothing applies: None, which GRPO leaves out of the baseline.
        let only_answer = Weighted {
            parts: vec![(
                1.0,
                Box::new(AnswerMatch {
                    kind: AnswerKind::Exact,
                    signed: false,
                }),
            )],
        };
        assert_eq!(only_answer.score_batch(&[(&without, "x")]).0, vec![None]);
    }
}
