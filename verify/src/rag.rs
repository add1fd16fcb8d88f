//! firebrand's atomic instructions for RAG answers: citing, quoting, answer shape and length,
//! structured output. VIF-RAG's own atomic set (< 100 hand-written constraints, verified by
//! LLM-written Python) is not released; these are ours, each with a deterministic checker.
//!
//! Citations are `[k]` with k the passage number as the prompt shows it (1-based, as
//! `firebrand-synth`'s VIF-RAG prompt template numbers them). Sentences are split as in
//! [`crate::text::sentences`].

use std::collections::BTreeSet;
use std::sync::LazyLock;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use regex::Regex;
use serde_json::json;

use crate::ifeval::{content_words, json_body};
use crate::text::{self, py_strip};
use crate::{CheckFn, Context, Kind, Kw, Kwargs, Origin, VerifierError};

static CITATION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[(\d+)\]").expect("static regex"));

/// The passage numbers cited in `text`.
pub fn citations(text: &str) -> BTreeSet<i64> {
    CITATION.captures_iter(text).filter_map(|c| c[1].parse().ok()).collect()
}

fn obj(v: serde_json::Value) -> Option<Kwargs> {
    match v {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

fn none(_: &mut StdRng, _: &Context) -> Option<Kwargs> {
    Some(Kwargs::new())
}

fn with_passages(ctx: &Context) -> Option<usize> {
    (!ctx.passages.is_empty()).then_some(ctx.passages.len())
}

/// Collapses runs of whitespace, for verbatim comparisons that ignore line wrapping.
fn squash(s: &str) -> String {
    s.split(text::py_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `needle` occurs in `hay` with no letter or digit right before or after it.
fn contains_word(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(i) = hay[from..].find(needle) {
        let at = from + i;
        let end = at + needle.len();
        let before = hay[..at].chars().next_back().is_some_and(char::is_alphanumeric);
        let after = hay[end..].chars().next().is_some_and(char::is_alphanumeric);
        if !before && !after {
            return true;
        }
        from = at + needle.chars().next().map_or(1, char::len_utf8);
    }
    false
}

// ---- citations ----

fn build_cite_count(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let n = kw.count("num_citations")?;
    // Optional: citations past the last passage do not count.
    let p = if kw.get("num_passages").is_some() {
        kw.count("num_passages")?
    } else {
        i64::MAX
    };
    Ok(Box::new(move |r| {
        citations(r).iter().filter(|&&k| (1..=p).contains(&k)).count() as i64 >= n
    }))
}

fn sample_cite_count(rng: &mut StdRng, ctx: &Context) -> Option<Kwargs> {
    let p = with_passages(ctx)?;
    obj(json!({ "num_citations": rng.random_range(1..=p.min(3)), "num_passages": p }))
}

fn build_cite_each(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let p = kw.count("num_passages")?;
    Ok(Box::new(move |r| {
        // A citation standing alone after a sentence's period belongs to that sentence.
        let mut s: Vec<String> = Vec::new();
        for piece in text::sentences(r) {
            let bare = CITATION.replace_all(piece, "");
            match s.last_mut() {
                Some(last) if py_strip(&bare).is_empty() => {
                    last.push(' ');
                    last.push_str(piece);
                }
                _ => s.push(piece.to_string()),
            }
        }
        !s.is_empty()
            && s.iter().all(|s| {
                let c = citations(s);
                !c.is_empty() && c.iter().all(|&k| (1..=p).contains(&k))
            })
    }))
}

fn sample_cite_each(_: &mut StdRng, ctx: &Context) -> Option<Kwargs> {
    obj(json!({ "num_passages": with_passages(ctx)? }))
}

fn build_cite_specific(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let k = kw.int("passage")?;
    Ok(Box::new(move |r| citations(r).contains(&k)))
}

fn sample_cite_specific(rng: &mut StdRng, ctx: &Context) -> Option<Kwargs> {
    let p = with_passages(ctx)?;
    obj(json!({ "passage": rng.random_range(1..=p) }))
}

fn build_no_citations(_: &Kw) -> Result<CheckFn, VerifierError> {
    let source = Regex::new(r"(?i)\b(passage|document|source)s?\s*-?\s*\d").expect("static regex");
    Ok(Box::new(move |r| citations(r).is_empty() && !source.is_match(r)))
}

fn build_sources_line(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let marker = kw.str("marker")?.to_string();
    Ok(Box::new(move |r| {
        let lines: Vec<&str> = r.lines().map(py_strip).filter(|l| !l.is_empty()).collect();
        let Some((last, body)) = lines.split_last() else {
            return false;
        };
        let Some(list) = last.strip_prefix(marker.as_str()) else {
            return false;
        };
        let listed = citations(list);
        let cited = citations(&body.join("\n"));
        !listed.is_empty() && !cited.is_empty() && cited.is_subset(&listed)
    }))
}

fn sample_sources_line(rng: &mut StdRng, ctx: &Context) -> Option<Kwargs> {
    with_passages(ctx)?;
    obj(json!({ "marker": (["Sources:", "References:"].choose(rng)?) }))
}

fn build_quote(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let source = squash(kw.str("source")?);
    let min = kw.count("min_words")?;
    let quoted = Regex::new(r#""([^"]+)"|“([^”]+)”"#).expect("static regex");
    Ok(Box::new(move |r| {
        quoted.captures_iter(r).any(|c| {
            let q = squash(c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str()));
            let q = q.trim_end_matches(['.', ',', ';', ':']);
            text::count_words(q) as i64 >= min && source.contains(q)
        })
    }))
}

fn sample_quote(rng: &mut StdRng, ctx: &Context) -> Option<Kwargs> {
    with_passages(ctx)?;
    // A passage long enough to quote from; the quote asks for at most half of it.
    let long: Vec<usize> = (0..ctx.passages.len())
        .filter(|&i| text::count_words(&ctx.passages[i].text) >= 6)
        .collect();
    let &i = long.choose(rng)?;
    let words = text::count_words(&ctx.passages[i].text);
    let min = rng.random_range(3..=(words / 2).clamp(3, 8));
    obj(json!({ "passage": i + 1, "source": ctx.passages[i].text, "min_words": min }))
}

fn build_include_answer(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let answers: Vec<String> = kw
        .str("answer")?
        .split(['/', '|'])
        .map(|a| squash(a).to_lowercase())
        .filter(|a| !a.is_empty())
        .collect();
    if answers.is_empty() {
        return Err(kw.err("answer", "is empty"));
    }
    Ok(Box::new(move |r| {
        let r = squash(r).to_lowercase();
        answers.iter().any(|a| contains_word(&r, a))
    }))
}

fn sample_include_answer(_: &mut StdRng, ctx: &Context) -> Option<Kwargs> {
    let a = ctx.answer.as_deref().map(py_strip).filter(|a| !a.is_empty())?;
    obj(json!({ "answer": a }))
}

// ---- length ----

fn build_max_sentences(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let n = kw.count("max_sentences")?;
    Ok(Box::new(move |r| text::count_sentences(r) as i64 <= n))
}

fn sample_max_sentences(rng: &mut StdRng, _: &Context) -> Option<Kwargs> {
    obj(json!({ "max_sentences": rng.random_range(1..=3) }))
}

fn build_max_chars(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let n = kw.count("max_chars")?;
    Ok(Box::new(move |r| py_strip(r).chars().count() as i64 <= n))
}

fn sample_max_chars(rng: &mut StdRng, _: &Context) -> Option<Kwargs> {
    obj(json!({ "max_chars": 50 * rng.random_range(2..=8) }))
}

fn build_single_line(_: &Kw) -> Result<CheckFn, VerifierError> {
    Ok(Box::new(|r| !py_strip(r).contains('\n')))
}

// ---- shape ----

fn build_json_keys(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let keys = kw.strs("keys")?;
    Ok(Box::new(move |r| {
        serde_json::from_str::<serde_json::Value>(json_body(r))
            .ok()
            .and_then(|v| v.as_object().map(|o| keys.iter().all(|k| o.contains_key(k))))
            .unwrap_or(false)
    }))
}

fn sample_json_keys(rng: &mut StdRng, ctx: &Context) -> Option<Kwargs> {
    let mut keys = vec!["answer"];
    if !ctx.passages.is_empty() && rng.random_bool(0.6) {
        keys.push("citations");
    }
    if rng.random_bool(0.5) {
        keys.push(["explanation", "confidence", "evidence"].choose(rng)?);
    }
    obj(json!({ "keys": keys }))
}

fn build_table(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let rows = kw.count("min_rows")?;
    let cols = kw.count("num_columns")?;
    let separator = Regex::new(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$").expect("static regex");
    Ok(Box::new(move |r| {
        let lines: Vec<&str> = r.lines().map(py_strip).collect();
        let cells = |l: &str| l.trim_matches('|').split('|').count() as i64;
        lines.windows(2).enumerate().any(|(i, w)| {
            let (header, sep) = (w[0], w[1]);
            if !header.contains('|') || !separator.is_match(sep) || cells(header) != cols || cells(sep) != cols {
                return false;
            }
            let body = lines[i + 2..]
                .iter()
                .take_while(|l| l.contains('|'))
                .filter(|l| cells(l) == cols)
                .count();
            body as i64 >= rows
        })
    }))
}

fn sample_table(rng: &mut StdRng, _: &Context) -> Option<Kwargs> {
    obj(json!({ "min_rows": rng.random_range(2..=4), "num_columns": rng.random_range(2..=3) }))
}

fn build_numbered(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let n = kw.count("num_items")?;
    let item = Regex::new(r"^\s*(\d+)[.)]\s+\S").expect("static regex");
    Ok(Box::new(move |r| {
        let numbers: Vec<i64> = r
            .lines()
            .filter_map(|l| item.captures(l).and_then(|c| c[1].parse().ok()))
            .collect();
        numbers.len() as i64 == n && numbers.iter().enumerate().all(|(i, &k)| k == i as i64 + 1)
    }))
}

fn sample_numbered(rng: &mut StdRng, _: &Context) -> Option<Kwargs> {
    obj(json!({ "num_items": rng.random_range(2..=5) }))
}

fn build_answer_first(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let max = kw.count("max_answer_words")?;
    let marker = kw.str("marker")?.to_lowercase();
    Ok(Box::new(move |r| {
        let mut lines = r.lines().map(py_strip).filter(|l| !l.is_empty());
        let Some(first) = lines.next() else { return false };
        let answer_ok = text::count_words(first) as i64 <= max && !first.to_lowercase().starts_with(&marker);
        answer_ok && lines.any(|l| l.to_lowercase().starts_with(&marker))
    }))
}

fn sample_answer_first(rng: &mut StdRng, _: &Context) -> Option<Kwargs> {
    obj(
        json!({ "max_answer_words": rng.random_range(3..=10), "marker": (["Reasons:", "Because:", "Explanation:"].choose(rng)?) }),
    )
}

fn build_wrapped(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let open = kw.str("open")?.to_string();
    let close = kw.str("close")?.to_string();
    if open.is_empty() || close.is_empty() {
        return Err(kw.err("open", "the wrapper is empty"));
    }
    Ok(Box::new(move |r| {
        let mut spans = 0;
        let mut rest = r;
        while let Some(a) = rest.find(&open) {
            let after = &rest[a + open.len()..];
            let Some(b) = after.find(&close) else { return false };
            if py_strip(&after[..b]).is_empty() {
                return false;
            }
            spans += 1;
            rest = &after[b + close.len()..];
        }
        spans == 1
    }))
}

fn sample_wrapped(rng: &mut StdRng, _: &Context) -> Option<Kwargs> {
    let (open, close) = *[("<answer>", "</answer>"), ("\\boxed{", "}"), ("[[", "]]")].choose(rng)?;
    obj(json!({ "open": open, "close": close }))
}

fn build_start_with(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let phrase = py_strip(kw.str("start_phrase")?).to_lowercase();
    Ok(Box::new(move |r| py_strip(r).to_lowercase().starts_with(&phrase)))
}

fn sample_start_with(rng: &mut StdRng, _: &Context) -> Option<Kwargs> {
    const STARTS: &[&str] = &[
        "According to the passages,",
        "Based on the sources,",
        "In short,",
        "The answer is",
    ];
    obj(json!({ "start_phrase": STARTS.choose(rng)? }))
}

fn build_bold_once(_: &Kw) -> Result<CheckFn, VerifierError> {
    let bold = Regex::new(r"\*\*[^\n*]+\*\*").expect("static regex");
    Ok(Box::new(move |r| bold.find_iter(r).count() == 1))
}

fn build_plain(_: &Kw) -> Result<CheckFn, VerifierError> {
    let markup = Regex::new(r"(?m)^\s*(#{1,6}\s|[*+-]\s|>\s|\|)|\*\*|__|`").expect("static regex");
    Ok(Box::new(move |r| !markup.is_match(r)))
}

fn build_no_mention(kw: &Kw) -> Result<CheckFn, VerifierError> {
    let phrases: Vec<String> = kw.strs("phrases")?.iter().map(|p| squash(p).to_lowercase()).collect();
    Ok(Box::new(move |r| {
        let r = squash(r).to_lowercase();
        !phrases.iter().any(|p| contains_word(&r, p))
    }))
}

fn sample_no_mention(rng: &mut StdRng, ctx: &Context) -> Option<Kwargs> {
    // A passage title the answer does not depend on, else a passage word.
    let answer = ctx.answer.as_deref().unwrap_or("").to_lowercase();
    let query = ctx.query.to_lowercase();
    // Nothing the question or the answer needs: the response may have to repeat the question or
    // use its words for other instructions.
    let free = |t: &str| {
        let t = t.to_lowercase();
        !query.contains(&t)
            && !t
                .split_whitespace()
                .any(|w| contains_word(&query, w) || contains_word(&answer, w))
            && (answer.is_empty() || !t.contains(&answer))
    };
    let titles: Vec<String> = ctx
        .passages
        .iter()
        .map(|p| py_strip(&p.title).to_string())
        .filter(|t| !t.is_empty() && free(t))
        .collect();
    let phrase = match titles.choose(rng) {
        Some(t) => t.clone(),
        None => {
            let words: Vec<String> = content_words(ctx).into_iter().filter(|w| free(w)).collect();
            words.choose(rng)?.clone()
        }
    };
    obj(json!({ "phrases": [phrase] }))
}

/// firebrand's RAG kinds.
pub static KINDS: [Kind; 19] = [
    Kind {
        id: "rag:cite_count",
        aliases: &[],
        origin: Origin::Rag,
        build: build_cite_count,
        phrasings: &[
            "Cite at least {num_citations} of the passages, writing [k] for passage k.",
            "Support your answer with citations to at least {num_citations} of the passages, in the form [1], [2].",
            "Refer to at least {num_citations} distinct passages by number in square brackets, like [2].",
        ],
        sample: sample_cite_count,
    },
    Kind {
        id: "rag:cite_each_sentence",
        aliases: &[],
        origin: Origin::Rag,
        build: build_cite_each,
        phrasings: &[
            "Every sentence must cite at least one passage as [k], with k between 1 and {num_passages}.",
            "End each sentence with a citation such as [1] naming the passage it relies on (passages 1 to {num_passages}).",
            "Cite a supporting passage, written [k], in every single sentence.",
        ],
        sample: sample_cite_each,
    },
    Kind {
        id: "rag:cite_passage",
        aliases: &[],
        origin: Origin::Rag,
        build: build_cite_specific,
        phrasings: &[
            "Your answer must cite passage {passage} as [{passage}].",
            "Make sure to use and cite passage [{passage}].",
            "Include the citation [{passage}] where you use passage {passage}.",
        ],
        sample: sample_cite_specific,
    },
    Kind {
        id: "rag:no_citations",
        aliases: &[],
        origin: Origin::Rag,
        build: build_no_citations,
        phrasings: &[
            "Do not cite or mention the passages; answer in your own words.",
            "Answer without any citations or references to the sources.",
            "Give the answer directly, with no [k] citations and no mention of passages or documents.",
        ],
        sample: none,
    },
    Kind {
        id: "rag:sources_line",
        aliases: &[],
        origin: Origin::Rag,
        build: build_sources_line,
        phrasings: &[
            "Cite passages as [k] and end with a last line starting with \"{marker}\" that lists every passage you cited.",
            "Finish with a line \"{marker} [1][2]...\" listing all the passages you cited in the text as [k].",
            "Use [k] citations in the text, then close with a line beginning \"{marker}\" that lists them all.",
        ],
        sample: sample_sources_line,
    },
    Kind {
        id: "rag:quote_verbatim",
        aliases: &[],
        origin: Origin::Rag,
        build: build_quote,
        phrasings: &[
            "Quote at least {min_words} consecutive words from passage {passage} verbatim, inside double quotes.",
            "Include a direct quotation of at least {min_words} words from passage {passage}, in \"double quotes\".",
            "Support the answer with an exact quote (in double quotation marks, {min_words} words or more) from passage {passage}.",
        ],
        sample: sample_quote,
    },
    Kind {
        id: "rag:include_answer",
        aliases: &[],
        origin: Origin::Rag,
        build: build_include_answer,
        phrasings: &[
            "State the short answer explicitly in your response.",
            "Make sure the exact short answer appears in what you write.",
            "Your response must contain the answer itself, not only a description of it.",
        ],
        sample: sample_include_answer,
    },
    Kind {
        id: "length:max_sentences",
        aliases: &[],
        origin: Origin::Rag,
        build: build_max_sentences,
        phrasings: &[
            "Answer in at most {max_sentences} sentences.",
            "Use no more than {max_sentences} sentences.",
            "Keep your answer to {max_sentences} sentences or fewer.",
        ],
        sample: sample_max_sentences,
    },
    Kind {
        id: "length:max_chars",
        aliases: &[],
        origin: Origin::Rag,
        build: build_max_chars,
        phrasings: &[
            "Keep the whole response under {max_chars} characters.",
            "Your answer must not exceed {max_chars} characters.",
            "Answer in at most {max_chars} characters.",
        ],
        sample: sample_max_chars,
    },
    Kind {
        id: "format:single_line",
        aliases: &[],
        origin: Origin::Rag,
        build: build_single_line,
        phrasings: &[
            "Write your answer on a single line.",
            "Answer in one line, without line breaks.",
            "Do not use any line breaks in your response.",
        ],
        sample: none,
    },
    Kind {
        id: "format:json_keys",
        aliases: &[],
        origin: Origin::Rag,
        build: build_json_keys,
        phrasings: &[
            "Reply with a JSON object that has the keys {keys}.",
            "Format the answer as JSON with the fields {keys}.",
            "Return only a JSON object containing {keys}.",
        ],
        sample: sample_json_keys,
    },
    Kind {
        id: "format:markdown_table",
        aliases: &[],
        origin: Origin::Rag,
        build: build_table,
        phrasings: &[
            "Present the answer as a markdown table with {num_columns} columns and at least {min_rows} rows below the header.",
            "Include a markdown table of {num_columns} columns with a header, a --- separator line and at least {min_rows} rows.",
            "Organise the information in a {num_columns}-column markdown table with at least {min_rows} data rows.",
        ],
        sample: sample_table,
    },
    Kind {
        id: "format:numbered_list",
        aliases: &[],
        origin: Origin::Rag,
        build: build_numbered,
        phrasings: &[
            "Answer as a numbered list of exactly {num_items} items (1., 2., ...).",
            "Give exactly {num_items} numbered points, numbered from 1.",
            "Use a numbered list with {num_items} items, one per line.",
        ],
        sample: sample_numbered,
    },
    Kind {
        id: "format:answer_then_reasons",
        aliases: &[],
        origin: Origin::Rag,
        build: build_answer_first,
        phrasings: &[
            "Give the answer first, on its own line in at most {max_answer_words} words, then your reasons on a line starting with \"{marker}\".",
            "Start with the bare answer (no more than {max_answer_words} words) on the first line; explain afterwards in a part beginning \"{marker}\".",
            "First line: the answer only, {max_answer_words} words at most. Then a line beginning with \"{marker}\" and your reasoning.",
        ],
        sample: sample_answer_first,
    },
    Kind {
        id: "format:wrapped_answer",
        aliases: &[],
        origin: Origin::Rag,
        build: build_wrapped,
        phrasings: &[
            "Put the final answer once inside {open}...{close}.",
            "Wrap your final answer in {open} and {close}, exactly once.",
            "Mark the final answer as {open}answer{close}; use the markers only once.",
        ],
        sample: sample_wrapped,
    },
    Kind {
        id: "startend:start_with",
        aliases: &[],
        origin: Origin::Rag,
        build: build_start_with,
        phrasings: &[
            "Begin your response with \"{start_phrase}\".",
            "Start your answer with the words \"{start_phrase}\".",
            "Your first words must be \"{start_phrase}\".",
        ],
        sample: sample_start_with,
    },
    Kind {
        id: "format:bold_once",
        aliases: &[],
        origin: Origin::Rag,
        build: build_bold_once,
        phrasings: &[
            "Put the key answer in **bold**, and bold nothing else.",
            "Use markdown bold (**...**) exactly once, for the answer itself.",
            "Highlight only the answer in bold with **, once.",
        ],
        sample: none,
    },
    Kind {
        id: "format:plain_text",
        aliases: &[],
        origin: Origin::Rag,
        build: build_plain,
        phrasings: &[
            "Use plain text only: no markdown headings, bullets, bold, tables or code.",
            "Do not use any markdown formatting.",
            "Answer in plain prose without markdown (no #, *, -, |, ` or bold).",
        ],
        sample: none,
    },
    Kind {
        id: "keywords:no_mention",
        aliases: &[],
        origin: Origin::Rag,
        build: build_no_mention,
        phrasings: &[
            "Do not mention {phrases} in your answer.",
            "Answer without mentioning {phrases}.",
            "Leave {phrases} out of your response entirely.",
        ],
        sample: sample_no_mention,
    },
];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{Mode, Verifier};

    fn v(id: &str, kwargs: serde_json::Value) -> Verifier {
        Verifier::new(id, kwargs).unwrap()
    }

    fn check(id: &str, kwargs: serde_json::Value, yes: &[&str], no: &[&str]) {
        let ver = v(id, kwargs);
        for r in yes {
            assert!(ver.follows(r, Mode::Strict), "{id} should accept {r:?}");
        }
        for r in no {
            assert!(!ver.follows(r, Mode::Strict), "{id} should reject {r:?}");
        }
    }

    #[test]
    fn citations() {
        check(
            "rag:cite_count",
            json!({"num_citations": 2}),
            &["A [1]. B [3]."],
            &["A [1]. B [1].", "none"],
        );
        check(
            "rag:cite_each_sentence",
            json!({"num_passages": 3}),
            &["Paris is the capital [1]. It is large [2][3]."],
            &["Paris is the capital [1]. It is large.", "Paris [4]."],
        );
        check(
            "rag:cite_passage",
            json!({"passage": 2}),
            &["Yes [2]."],
            &["Yes [1].", "Yes 2."],
        );
        check(
            "rag:no_citations",
            json!({}),
            &["Paris."],
            &["Paris [1].", "As passage 2 says, Paris.", "Document-1 says Paris."],
        );
        check(
            "rag:sources_line",
            json!({"marker": "Sources:"}),
            &["Paris [1], old [2].\nSources: [1][2]"],
            &[
                "Paris [1], old [2].\nSources: [1]",
                "Paris.\nSources: [1]",
                "Sources: [1]\nParis [1].",
            ],
        );
    }

    #[test]
    fn quoting_and_answer() {
        let source = "The Eiffel Tower was completed in\n1889 for the World's Fair.";
        check(
            "rag:quote_verbatim",
            json!({"passage": 1, "source": source, "min_words": 4}),
            &[
                "As the source says, \"completed in 1889 for the World's Fair.\"",
                "“The Eiffel Tower was completed” indeed.",
            ],
            &[
                "\"completed in 1890\" is wrong",
                "\"was completed\" (too short)",
                "completed in 1889 for the fair",
            ],
        );
        check(
            "rag:include_answer",
            json!({"answer": "Tokyo/Edo"}),
            &["It is TOKYO.", "formerly edo"],
            &["Kyoto."],
        );
        assert!(Verifier::new("rag:include_answer", json!({"answer": " / "})).is_err());
    }

    #[test]
    fn length_and_lines() {
        check(
            "length:max_sentences",
            json!({"max_sentences": 2}),
            &["One. Two."],
            &["One. Two. Three."],
        );
        check(
            "length:max_chars",
            json!({"max_chars": 5}),
            &["  abcde \n"],
            &["abcdef"],
        );
        check("format:single_line", json!({}), &["one line\n"], &["two\nlines"]);
    }

    #[test]
    fn structured_output() {
        check(
            "format:json_keys",
            json!({"keys": ["answer", "citations"]}),
            &["```json\n{\"answer\": \"Paris\", \"citations\": [1], \"x\": 0}\n```"],
            &[
                "{\"answer\": \"Paris\"}",
                "[\"answer\", \"citations\"]",
                "answer: Paris",
            ],
        );
        check(
            "format:markdown_table",
            json!({"min_rows": 2, "num_columns": 2}),
            &["Here:\n| City | Country |\n|---|:---:|\n| Paris | France |\n| Rome | Italy |\nDone."],
            &[
                "| City | Country |\n|---|---|\n| Paris | France |",
                "| a | b | c |\n|---|---|---|\n|1|2|3|\n|4|5|6|",
                "City, Country\nParis, France",
            ],
        );
        check(
            "format:numbered_list",
            json!({"num_items": 3}),
            &["Steps:\n1. a\n2) b\n3. c"],
            &["1. a\n2. b", "1. a\n3. b\n4. c", "1. a\n2. b\n3. c\n4. d"],
        );
        check(
            "format:answer_then_reasons",
            json!({"max_answer_words": 3, "marker": "Reasons:"}),
            &["Paris.\n\nReasons: it is the capital."],
            &[
                "The capital city of France is Paris.\nReasons: x",
                "Paris.\nBecause it is.",
                "Reasons: first",
            ],
        );
        check(
            "format:wrapped_answer",
            json!({"open": "<answer>", "close": "</answer>"}),
            &["So <answer>Paris</answer>."],
            &[
                "<answer>Paris</answer> <answer>Rome</answer>",
                "<answer> </answer>",
                "<answer>Paris",
                "Paris",
            ],
        );
        check(
            "startend:start_with",
            json!({"start_phrase": "In short,"}),
            &["  in short, Paris."],
            &["Paris. In short, yes."],
        );
        check(
            "format:bold_once",
            json!({}),
            &["It is **Paris**."],
            &["**Paris** and **Rome**", "Paris"],
        );
        check(
            "format:plain_text",
            json!({}),
            &["Paris is the capital of France, with 2.1 million people."],
            &["# Title\nx", "* item", "use **bold**", "a `code` span", "| a | b |"],
        );
        check(
            "keywords:no_mention",
            json!({"phrases": ["Eiffel Tower"]}),
            &["A tower in Paris."],
            &["The eiffel  tower is tall."],
        );
    }
}
