//! Composing 1–4 atomic instructions per sample under a conflict table.
//!
//! VIF-RAG's notebook joins random pairs and asks an LLM to score their compatibility; FollowRAG's
//! data still holds unsatisfiable pairs (upper- and lower-case, a non-English language with
//! upper-case English). We use a symbolic table instead: IFEval's `INSTRUCTION_CONFLICTS`
//! (`instructions_registry.py`, made symmetric as its `conflict_make` does) plus entries for our
//! kinds, so no emitted combination is contradictory by construction. The number of instructions
//! follows FollowRAG's split (225:225:125:125 for 1, 2, 3, 4) unless told otherwise.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::{Context, Kind, Origin, Spec};

/// Whom an entry conflicts with.
enum Rule {
    /// These ids.
    Only(&'static [&'static str]),
    /// Every id but these.
    AllExcept(&'static [&'static str]),
}

use Rule::{AllExcept, Only};

/// One-way entries; [`conflicts`] makes them symmetric and reflexive.
const TABLE: &[(&str, Rule)] = &[
    // IFEval's own table.
    (
        "language:response_language",
        Only(&[
            "detectable_format:multiple_sections",
            "keywords:existence",
            "keywords:frequency",
            "keywords:forbidden_words",
            "startend:end_checker",
            "change_case:english_capital",
            "change_case:english_lowercase",
            // Ours: English markers or phrases in a non-English answer.
            "rag:include_answer",
            "rag:quote_verbatim",
            "rag:sources_line",
            "startend:start_with",
            "format:answer_then_reasons",
            "keywords:no_mention",
            "length_constraints:nth_paragraph_first_word",
        ]),
    ),
    (
        "length_constraints:number_paragraphs",
        Only(&[
            "length_constraints:nth_paragraph_first_word",
            "length_constraints:number_sentences",
        ]),
    ),
    (
        "detectable_format:multiple_sections",
        Only(&["detectable_format:number_highlighted_sections"]),
    ),
    ("detectable_format:constrained_response", AllExcept(&[])),
    (
        "detectable_format:json_format",
        AllExcept(&[
            "keywords:forbidden_words",
            "keywords:existence",
            "keywords:no_mention",
            "rag:include_answer",
        ]),
    ),
    (
        "combination:two_responses",
        AllExcept(&[
            "keywords:forbidden_words",
            "keywords:existence",
            "language:response_language",
            "detectable_format:title",
            "punctuation:no_comma",
            "keywords:no_mention",
        ]),
    ),
    (
        "combination:repeat_prompt",
        AllExcept(&[
            "keywords:existence",
            "detectable_format:title",
            "punctuation:no_comma",
            "keywords:no_mention",
        ]),
    ),
    (
        "change_case:capital_word_frequency",
        // Ours: section markers can be capital words.
        Only(&[
            "change_case:english_lowercase",
            "change_case:english_capital",
            "detectable_format:multiple_sections",
        ]),
    ),
    (
        "change_case:english_lowercase",
        // Ours: markers and quotes whose case is fixed.
        Only(&[
            "change_case:english_capital",
            "detectable_format:multiple_sections",
            "rag:sources_line",
            "rag:quote_verbatim",
        ]),
    ),
    (
        "change_case:english_capital",
        Only(&[
            "detectable_format:multiple_sections",
            "rag:sources_line",
            "rag:quote_verbatim",
            "format:wrapped_answer",
        ]),
    ),
    ("startend:quotation", Only(&["detectable_format:title"])),
    // Ours.
    (
        "format:json_keys",
        AllExcept(&[
            "keywords:forbidden_words",
            "keywords:existence",
            "keywords:no_mention",
            "rag:include_answer",
        ]),
    ),
    (
        "rag:no_citations",
        Only(&[
            "rag:cite_count",
            "rag:cite_each_sentence",
            "rag:cite_passage",
            "rag:sources_line",
        ]),
    ),
    (
        "rag:cite_each_sentence",
        Only(&[
            "format:markdown_table",
            "format:numbered_list",
            "detectable_format:number_bullet_lists",
        ]),
    ),
    (
        "rag:sources_line",
        Only(&[
            "format:single_line",
            "startend:end_checker",
            "detectable_content:postscript",
            "startend:quotation",
            "rag:cite_each_sentence",
        ]),
    ),
    (
        "length:max_sentences",
        Only(&[
            "length_constraints:number_sentences",
            "length_constraints:number_words",
            "length_constraints:number_paragraphs",
            "length_constraints:nth_paragraph_first_word",
            "detectable_format:multiple_sections",
            "detectable_format:number_bullet_lists",
            "format:numbered_list",
            "format:markdown_table",
        ]),
    ),
    (
        "length:max_chars",
        Only(&[
            "length_constraints:number_words",
            "length_constraints:number_sentences",
            "length_constraints:number_paragraphs",
            "length_constraints:nth_paragraph_first_word",
            "detectable_format:multiple_sections",
            "detectable_format:number_bullet_lists",
            "detectable_content:number_placeholders",
            "format:markdown_table",
            "format:numbered_list",
            "format:answer_then_reasons",
            "rag:quote_verbatim",
            "rag:cite_each_sentence",
            "rag:sources_line",
            "length:max_sentences",
        ]),
    ),
    (
        "format:single_line",
        Only(&[
            "length_constraints:number_paragraphs",
            "length_constraints:nth_paragraph_first_word",
            "detectable_format:number_bullet_lists",
            "detectable_format:multiple_sections",
            "detectable_content:postscript",
            "format:markdown_table",
            "format:numbered_list",
            "format:answer_then_reasons",
        ]),
    ),
    (
        "format:markdown_table",
        Only(&[
            "format:plain_text",
            "startend:quotation",
            "format:numbered_list",
            "detectable_format:number_bullet_lists",
        ]),
    ),
    (
        "format:answer_then_reasons",
        Only(&[
            "startend:start_with",
            "startend:quotation",
            "length_constraints:number_paragraphs",
            "length_constraints:nth_paragraph_first_word",
            "detectable_format:multiple_sections",
            "detectable_format:title",
            "format:numbered_list",
            "format:markdown_table",
        ]),
    ),
    (
        "startend:start_with",
        Only(&[
            "startend:quotation",
            "length_constraints:nth_paragraph_first_word",
            "detectable_format:title",
        ]),
    ),
    (
        "format:bold_once",
        Only(&[
            "detectable_format:number_highlighted_sections",
            "format:plain_text",
            "change_case:english_capital",
        ]),
    ),
    (
        "format:plain_text",
        Only(&[
            "detectable_format:number_bullet_lists",
            "detectable_format:number_highlighted_sections",
            "length_constraints:number_paragraphs",
        ]),
    ),
    ("format:wrapped_answer", Only(&["startend:quotation"])),
];

fn one_way(a: &str, b: &str) -> bool {
    TABLE.iter().any(|(id, rule)| {
        *id == a
            && match rule {
                Only(ids) => ids.contains(&b),
                AllExcept(ids) => !ids.contains(&b),
            }
    })
}

/// Whether two instruction ids (canonical) may not appear together: the same id twice, or an
/// entry of the table in either direction.
pub fn conflicts(a: &str, b: &str) -> bool {
    a == b || one_way(a, b) || one_way(b, a)
}

fn kwarg_str<'a>(s: &'a Spec, name: &str) -> &'a str {
    s.kwargs.get(name).and_then(serde_json::Value::as_str).unwrap_or("")
}

fn kwarg_strs(s: &Spec, name: &str) -> Vec<String> {
    s.kwargs
        .get(name)
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_lowercase)).collect())
        .unwrap_or_default()
}

fn one_way_clash(a: &Spec, b: &Spec) -> bool {
    match (a.id.as_str(), b.id.as_str()) {
        ("combination:repeat_prompt", "punctuation:no_comma") => kwarg_str(a, "prompt_to_repeat").contains(','),
        ("startend:start_with", "punctuation:no_comma") => kwarg_str(a, "start_phrase").contains(','),
        ("startend:end_checker", "punctuation:no_comma") => kwarg_str(a, "end_phrase").contains(','),
        ("keywords:no_mention", other) => {
            let needed = match other {
                "keywords:existence" => kwarg_strs(b, "keywords").join(" "),
                "keywords:frequency" => kwarg_str(b, "keyword").to_lowercase(),
                "combination:repeat_prompt" => kwarg_str(b, "prompt_to_repeat").to_lowercase(),
                "rag:include_answer" => kwarg_str(b, "answer").to_lowercase(),
                _ => return false,
            };
            kwarg_strs(a, "phrases")
                .iter()
                .any(|p| needed.contains(p.as_str()) || p.contains(needed.as_str()) && !needed.is_empty())
        }
        ("keywords:forbidden_words", "rag:include_answer") => {
            let answer = kwarg_str(b, "answer").to_lowercase();
            kwarg_strs(a, "forbidden_words")
                .iter()
                .any(|w| answer.contains(w.as_str()))
        }
        _ => false,
    }
}

/// Whether two drawn instructions clash through their parameters although their kinds do not:
/// a question to repeat, a start or end phrase that has a comma under `no_comma`; a phrase not
/// to mention that a keyword, the question or the answer needs; a forbidden word in the answer.
pub fn clash(a: &Spec, b: &Spec) -> bool {
    one_way_clash(a, b) || one_way_clash(b, a)
}

/// How many instructions a sample gets, and from which kinds.
#[derive(Debug, Clone)]
pub struct ComposeOptions {
    /// Fewest instructions per sample (at least 1).
    pub min: usize,
    /// Most instructions per sample (at most 4 by default; any number is allowed).
    pub max: usize,
    /// Relative weights of 1, 2, 3, 4, ... instructions (missing entries weigh like the last).
    pub weights: Vec<f64>,
    /// Kinds to draw from.
    pub pool: Vec<&'static Kind>,
}

impl Default for ComposeOptions {
    fn default() -> Self {
        ComposeOptions {
            min: 1,
            max: 4,
            weights: vec![225.0, 225.0, 125.0, 125.0],
            pool: default_pool(),
        }
    }
}

/// FollowRAG's 22 IFEval types and all of ours.
pub fn default_pool() -> Vec<&'static Kind> {
    super::kinds().filter(|k| k.origin != Origin::IfEvalOnly).collect()
}

fn draw_count(rng: &mut StdRng, opts: &ComposeOptions) -> usize {
    let min = opts.min.max(1);
    let max = opts.max.max(min);
    let weight = |k: usize| {
        opts.weights
            .get(k - 1)
            .or(opts.weights.last())
            .copied()
            .unwrap_or(1.0)
            .max(0.0)
    };
    let total: f64 = (min..=max).map(weight).sum();
    if total <= 0.0 {
        return min;
    }
    let mut x = rng.random_range(0.0..total);
    for k in min..=max {
        x -= weight(k);
        if x < 0.0 {
            return k;
        }
    }
    max
}

/// Draws instructions for one sample: a count, then kinds in random order, skipping those that
/// conflict with one already chosen or that the context cannot support (no passages, no answer).
/// Returns fewer than drawn only when the pool runs out.
pub fn compose(rng: &mut StdRng, ctx: &Context, opts: &ComposeOptions) -> Vec<Spec> {
    let want = draw_count(rng, opts);
    let mut order = opts.pool.clone();
    order.shuffle(rng);
    let mut chosen: Vec<Spec> = Vec::with_capacity(want);
    for kind in order {
        if chosen.len() == want {
            break;
        }
        if chosen.iter().any(|s| conflicts(&s.id, kind.id)) {
            continue;
        }
        if let Some(kwargs) = (kind.sample)(rng, ctx) {
            let spec = Spec {
                id: kind.id.to_string(),
                kwargs,
            };
            if !chosen.iter().any(|c| clash(c, &spec)) {
                chosen.push(spec);
            }
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::super::{Passage, Verifier, kind, kinds};
    use super::*;

    #[test]
    fn the_table_names_only_known_ids() {
        for (id, rule) in TABLE {
            assert!(kind(id).is_some_and(|k| k.id == *id), "{id}");
            let (Only(ids) | AllExcept(ids)) = rule;
            for other in *ids {
                assert!(kind(other).is_some_and(|k| k.id == *other), "{id} names {other}");
            }
        }
    }

    #[test]
    fn parameter_clashes_are_caught() {
        let spec = |id: &str, kwargs: serde_json::Value| Spec {
            id: id.into(),
            kwargs: kwargs.as_object().unwrap().clone(),
        };
        let no_comma = spec("punctuation:no_comma", serde_json::json!({}));
        assert!(clash(
            &spec(
                "combination:repeat_prompt",
                serde_json::json!({"prompt_to_repeat": "Who, and why?"})
            ),
            &no_comma
        ));
        assert!(!clash(
            &spec(
                "combination:repeat_prompt",
                serde_json::json!({"prompt_to_repeat": "Who?"})
            ),
            &no_comma
        ));
        let avoid = spec("keywords:no_mention", serde_json::json!({"phrases": ["Vienna"]}));
        assert!(clash(
            &spec("keywords:existence", serde_json::json!({"keywords": ["vienna"]})),
            &avoid
        ));
        assert!(clash(
            &avoid,
            &spec("rag:include_answer", serde_json::json!({"answer": "Vienna"}))
        ));
        assert!(!clash(
            &avoid,
            &spec("keywords:existence", serde_json::json!({"keywords": ["danube"]}))
        ));
    }

    #[test]
    fn conflicts_are_symmetric_and_cover_the_known_contradictions() {
        for a in kinds() {
            assert!(conflicts(a.id, a.id));
            for b in kinds() {
                assert_eq!(conflicts(a.id, b.id), conflicts(b.id, a.id), "{} {}", a.id, b.id);
            }
        }
        for (a, b) in [
            ("change_case:english_capital", "change_case:english_lowercase"),
            ("language:response_language", "change_case:english_capital"),
            ("combination:repeat_prompt", "detectable_format:json_format"),
            ("startend:quotation", "detectable_format:title"),
            ("rag:no_citations", "rag:cite_passage"),
            ("format:json_keys", "format:markdown_table"),
            ("format:single_line", "format:numbered_list"),
        ] {
            assert!(conflicts(a, b), "{a} {b}");
        }
        assert!(!conflicts("keywords:existence", "punctuation:no_comma"));
        assert!(!conflicts("detectable_format:json_format", "keywords:existence"));
    }

    fn context() -> Context {
        Context {
            query: "Which river flows through the city of Vienna?".into(),
            passages: vec![
                Passage {
                    title: "Vienna".into(),
                    text: "Vienna is the capital of Austria and lies on the river Danube in the east of the country."
                        .into(),
                },
                Passage {
                    title: "Danube".into(),
                    text: "The Danube is the second-longest river in Europe, flowing through ten countries.".into(),
                },
            ],
            answer: Some("Danube".into()),
        }
    }

    /// The property: over many draws, no emitted pair conflicts, every instruction builds, and
    /// the count stays within bounds; each kind of the pool is drawn at some point.
    #[test]
    fn no_conflicting_pair_is_ever_emitted() {
        let ctx = context();
        let opts = ComposeOptions::default();
        let mut seen = std::collections::HashSet::new();
        let mut counts = [0usize; 5];
        for seed in 0..5000u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let specs = compose(&mut rng, &ctx, &opts);
            assert!((1..=4).contains(&specs.len()), "seed {seed}: {specs:?}");
            counts[specs.len()] += 1;
            for (i, a) in specs.iter().enumerate() {
                seen.insert(a.id.clone());
                Verifier::build(a.clone()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                for b in &specs[i + 1..] {
                    assert!(!conflicts(&a.id, &b.id), "seed {seed}: {} with {}", a.id, b.id);
                    assert!(!clash(a, b), "seed {seed}: {a:?} with {b:?}");
                }
            }
        }
        assert_eq!(seen.len(), opts.pool.len(), "kinds never drawn");
        // FollowRAG's 225:225:125:125 split, within sampling noise.
        assert!(
            (1450..1750).contains(&counts[1]) && (800..1000).contains(&counts[4]),
            "{counts:?}"
        );
    }

    #[test]
    fn kinds_that_need_passages_or_an_answer_are_skipped_without_them() {
        let ctx = Context {
            query: "Tell me something about rivers in general".into(),
            ..Default::default()
        };
        let opts = ComposeOptions {
            min: 4,
            max: 4,
            ..Default::default()
        };
        let mut full = 0;
        for seed in 0..500u64 {
            let specs = compose(&mut StdRng::seed_from_u64(seed), &ctx, &opts);
            // Fewer only when an all-excluding kind (JSON, repeat the prompt) came first.
            assert!(
                specs.len() == 4
                    || specs
                        .iter()
                        .any(|s| s.id.contains("json") || s.id == "combination:repeat_prompt"),
                "{specs:?}"
            );
            full += usize::from(specs.len() == 4);
            assert!(
                specs
                    .iter()
                    .all(|s| !s.id.starts_with("rag:") || s.id == "rag:no_citations"),
                "{specs:?}"
            );
        }
        assert!(full > 400, "{full}");
    }
}
