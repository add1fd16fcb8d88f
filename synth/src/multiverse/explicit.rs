//! The offline converter: sequential traces whose parallel structure is explicit in the text become
//! Multiverse traces without an LLM.
//!
//! A trace is split into paragraphs (blank-line separated). A run of two or more consecutive
//! paragraphs labelled `Case 1:`, `Case 2:`, … (also `Part`, `Subcase`, `Option`, `Subproblem`;
//! `:`, `.` or `)` after the number) is a set of independent paths: it becomes one `<Parallel>`
//! block whose outlines are each path's first sentence, whose paths are the paragraphs (label
//! removed: the normaliser numbers them), and whose Conclusion is a one-line join. A paragraph
//! labelled `Case 2.1:` after `Case 2:` belongs to path 2, and a run of such sub-cases becomes a
//! block nested in it. All other text stays where it was, so the content check measures only the
//! labels and cue sentences.
//!
//! This stands in for the reference's LLM stages 1–5 on traces that already say what is
//! independent (enumerated cases, marked sub-computations); it is what the command runs offline on
//! the embedded sample. Traces with no such run are reported as having no explicit structure.

use super::format::{Block, Node, Trace};

const KINDS: [&str; 5] = ["Case", "Part", "Subcase", "Option", "Subproblem"];

/// A paragraph with its label (`Case 2.1:` → `[2, 1]`) and its text without the label.
#[derive(Debug, Clone)]
struct Para {
    label: Option<Vec<u32>>,
    text: String,
    /// The paragraph as written, label included.
    raw: String,
}

fn parse_label(p: &str) -> Option<(Vec<u32>, &str)> {
    let kind = KINDS.iter().find(|k| p.starts_with(*k))?;
    let rest = p[kind.len()..].strip_prefix(' ')?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let number = rest[..end].trim_end_matches('.');
    let after = &rest[number.len()..];
    let after = after.strip_prefix([':', '.', ')'])?;
    let label: Option<Vec<u32>> = number.split('.').map(|n| n.parse().ok()).collect();
    Some((label?, after.trim_start()))
}

fn paragraphs(trace: &str) -> Vec<Para> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<Para>| {
        let t = cur.trim();
        if !t.is_empty() {
            out.push(match parse_label(t) {
                Some((label, text)) => Para {
                    label: Some(label),
                    text: text.to_string(),
                    raw: t.to_string(),
                },
                None => Para {
                    label: None,
                    text: t.to_string(),
                    raw: t.to_string(),
                },
            });
        }
        cur.clear();
    };
    for line in trace.lines() {
        if line.trim().is_empty() {
            flush(&mut cur, &mut out);
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    flush(&mut cur, &mut out);
    out
}

fn first_sentence(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    match line.find(". ") {
        Some(i) => line[..=i].to_string(),
        None => line.to_string(),
    }
}

fn has_prefix(label: &Option<Vec<u32>>, prefix: &[u32]) -> bool {
    label
        .as_ref()
        .is_some_and(|l| l.len() > prefix.len() && l.starts_with(prefix))
}

/// Builds nodes from `paras[*i..]` at nesting `prefix`, stopping at a paragraph that does not
/// belong under `prefix` (when `prefix` is non-empty).
fn build(paras: &[Para], i: &mut usize, prefix: &[u32]) -> Vec<Node> {
    let mut nodes = Vec::new();
    while *i < paras.len() {
        let p = &paras[*i];
        if !prefix.is_empty() && !has_prefix(&p.label, prefix) {
            break;
        }
        let first: Vec<u32> = prefix.iter().copied().chain([1]).collect();
        let second: Vec<u32> = prefix.iter().copied().chain([2]).collect();
        let starts_run = p.label.as_deref() == Some(&first[..])
            && paras[*i + 1..].iter().any(|q| q.label.as_deref() == Some(&second[..]))
            && run_is_contiguous(paras, *i, prefix);
        if !starts_run {
            // Inside a path, sub-labels that do not form a run stay text.
            nodes.push(Node::Text(format!("{}\n", paragraph_text(p))));
            *i += 1;
            continue;
        }
        let mut outlines = Vec::new();
        let mut paths = Vec::new();
        let mut k = 1;
        while *i < paras.len() {
            let want: Vec<u32> = prefix.iter().copied().chain([k]).collect();
            if paras[*i].label.as_deref() != Some(&want[..]) {
                break;
            }
            let head = &paras[*i];
            outlines.push(first_sentence(&head.text));
            let mut body = vec![Node::Text(format!("{}\n", head.text))];
            *i += 1;
            body.extend(build(paras, i, &want));
            paths.push(body);
            k += 1;
        }
        let n = paths.len();
        nodes.push(Node::Block(Block {
            outlines,
            paths,
            conclusion: format!("All {n} cases are settled; the reasoning continues from their results."),
        }));
    }
    nodes
}

/// Whether paragraphs from `start` form labels `prefix.1`, `prefix.2`, … (each possibly followed
/// by deeper sub-labels) for at least two consecutive numbers.
fn run_is_contiguous(paras: &[Para], start: usize, prefix: &[u32]) -> bool {
    let mut k = 1;
    let mut j = start;
    while j < paras.len() {
        let want: Vec<u32> = prefix.iter().copied().chain([k]).collect();
        if paras[j].label.as_deref() != Some(&want[..]) {
            break;
        }
        j += 1;
        while j < paras.len() && has_prefix(&paras[j].label, &want) {
            j += 1;
        }
        k += 1;
    }
    k > 2
}

/// A paragraph outside a run of cases stays as written, label included.
fn paragraph_text(p: &Para) -> String {
    p.raw.clone()
}

/// Converts a sequential trace whose cases are explicit; `None` when it has no run of cases.
pub fn convert(trace: &str) -> Option<Trace> {
    let paras = paragraphs(trace);
    let mut i = 0;
    let body = build(&paras, &mut i, &[]);
    let t = Trace { body };
    (t.blocks() > 0).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::super::format::parse;
    use super::*;

    #[test]
    fn labels_parse() {
        assert_eq!(
            parse_label("Case 2.1: x").map(|(l, t)| (l, t.to_string())),
            Some((vec![2, 1], "x".into()))
        );
        assert_eq!(parse_label("Part 3) y").map(|(l, _)| l), Some(vec![3]));
        assert!(parse_label("Cases are many").is_none());
        assert!(parse_label("Case x: y").is_none());
    }

    #[test]
    fn enumerated_cases_become_a_nested_block_that_validates() {
        let trace = "We want a formula for f(x) = max(x, -x) without the max, so we split on the sign of x and look at each side on its own.\n\nCase 1: x < 0. Then -x is positive and x is negative, so the larger of the two is -x and f(x) = -x.\n\nCase 2: x >= 0. Two sub-cases.\n\nCase 2.1: x = 0. Both x and -x are 0, so f is 0.\n\nCase 2.2: x > 0. Now x is the positive one, so f is x.\n\nSo f(x) = |x| on the whole real line.\n";
        let t = convert(trace).unwrap();
        assert_eq!(t.blocks(), 2);
        let text = t.normalized();
        let again = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again.blocks(), 2);
        for needle in [
            "<Outline>\n1: x < 0.\n</Outline>",
            "<Path>\n2: x >= 0. Two sub-cases.\nLet's think in parallel.\n<Parallel>",
            "<Path>\n2.2: x > 0. Now x is the positive one, so f is x.\n</Path>",
            "</Parallel>\nSo f(x) = |x| on the whole real line.\n</Think>",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        let d = super::super::check::content_distance(&t, trace);
        assert!(d < 0.2, "distance {d}");
    }

    #[test]
    fn a_trace_without_a_run_of_cases_is_not_converted() {
        assert!(convert("Just one thought.\n\nCase 1: alone.\n\nDone.").is_none());
    }

    #[test]
    fn labels_outside_a_run_stay_as_written() {
        let t = convert("Intro.\n\nPart 1) a.\n\nPart 2) b.\n\nOption 7. stays.\n").unwrap();
        assert!(
            t.normalized().contains("\nOption 7. stays.\n</Think>"),
            "{}",
            t.normalized()
        );
    }
}
