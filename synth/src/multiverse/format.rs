//! The Multiverse trace format: a parser into a typed tree, a validator whose errors name the line,
//! the tag and the rule, and a normaliser that numbers outlines and paths and writes the canonical
//! layout.
//!
//! Grammar, as the reference's `data/parse.py::validate_xml_structure` enforces it (see
//! ../shared/research/multiverse.md §1):
//! - the root is `<Think>…</Think>`, with only whitespace around it;
//! - `<Parallel>` sits directly under `<Think>` or under a `<Path>`;
//! - inside a `<Parallel>`: exactly one `<Goal>` first, then one or more `<Path>`, then exactly one
//!   `<Conclusion>` last, with only whitespace between them;
//! - `<Goal>` holds only `<Outline>`s, one per `<Path>`; `<Outline>` and `<Conclusion>` hold text only.
//!
//! Text is kept verbatim: the lexer recognises only the 12 control tags, so mathematical text such
//! as `a<b`, `x > 0` or `A & B` needs no escaping (the reference escapes it before parsing with lxml;
//! we never go through XML). Numbering, as `parse.py::modify_xml_tree` writes it: `k: ` in front of
//! the k-th outline and path of a top-level block, `p.k: ` inside a block nested in path `p`.

use std::fmt;

use firebrand_data::multiverse::{Tag, TagName, lex};

/// The sentence put before every block (part of the trained text, by the reference's convention).
pub const PARALLEL_CUE: &str = "Let's think in parallel.";

/// A parsed trace: the contents of `<Think>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Text and blocks in order.
    pub body: Vec<Node>,
}

/// Text or a parallel block.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Plain text (verbatim, whitespace included).
    Text(String),
    /// A `<Parallel>` block.
    Block(Block),
}

/// A `<Parallel>` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The outlines of `<Goal>`, one per path (text only, numbering included as written).
    pub outlines: Vec<String>,
    /// The paths, each text and nested blocks.
    pub paths: Vec<Vec<Node>>,
    /// The `<Conclusion>` text.
    pub conclusion: String,
}

/// One violation of the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// 1-based line of the trace where it is.
    pub line: usize,
    /// The tag involved, as written (`<Path>`), or `text`.
    pub tag: String,
    /// The rule broken.
    pub rule: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, {}: {}", self.line, self.tag, self.rule)
    }
}

impl std::error::Error for FormatError {}

fn tag_text(t: &Tag) -> String {
    format!("<{}{}>", if t.close { "/" } else { "" }, t.name.as_str())
}

/// A recursive-descent parser over the lexed tags.
struct Parser<'a> {
    text: &'a str,
    tags: Vec<Tag>,
    next: usize,
    /// Byte offset up to which the text has been consumed.
    pos: usize,
    line_starts: Vec<usize>,
}

type Parse<T> = Result<T, FormatError>;

impl<'a> Parser<'a> {
    fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    fn err<T>(&self, offset: usize, tag: &str, rule: impl Into<String>) -> Parse<T> {
        Err(FormatError {
            line: self.line(offset),
            tag: tag.to_string(),
            rule: rule.into(),
        })
    }

    fn peek(&self) -> Option<&Tag> {
        self.tags.get(self.next)
    }

    /// The text between the current position and the next tag (or the end).
    fn text_until_next(&self) -> &'a str {
        let end = self.peek().map_or(self.text.len(), |t| t.span.start);
        &self.text[self.pos..end]
    }

    fn take_tag(&mut self) -> Tag {
        let t = self.tags[self.next].clone();
        self.next += 1;
        self.pos = t.span.end;
        t
    }

    /// Only whitespace may come before the next tag (or the end); names `context` otherwise.
    fn only_whitespace(&mut self, context: &str) -> Parse<()> {
        let text = self.text_until_next();
        if let Some(i) = text.find(|c: char| !c.is_whitespace()) {
            return self.err(self.pos + i, "text", format!("only whitespace is allowed {context}"));
        }
        self.pos += text.len();
        Ok(())
    }

    /// Expects `</name>` next (after text when `text_ok`); returns the text before it.
    fn text_then_close(&mut self, name: TagName, open_at: usize) -> Parse<String> {
        let text = self.text_until_next().to_string();
        self.pos += text.len();
        match self.peek() {
            Some(t) if t.name == name && t.close => {
                self.take_tag();
                Ok(text)
            }
            Some(t) => {
                let t = t.clone();
                self.err(
                    t.span.start,
                    &tag_text(&t),
                    format!("<{}> holds text only; expected </{}>", name.as_str(), name.as_str()),
                )
            }
            None => self.err(open_at, &format!("<{}>", name.as_str()), "is never closed"),
        }
    }

    /// Text and blocks until `</closer>`, which is consumed.
    fn body(&mut self, closer: TagName, open_at: usize) -> Parse<Vec<Node>> {
        let mut nodes = Vec::new();
        loop {
            let text = self.text_until_next();
            if !text.is_empty() {
                nodes.push(Node::Text(text.to_string()));
                self.pos += text.len();
            }
            let Some(t) = self.peek().cloned() else {
                return self.err(open_at, &format!("<{}>", closer.as_str()), "is never closed");
            };
            match (t.name, t.close) {
                (n, true) if n == closer => {
                    self.take_tag();
                    return Ok(nodes);
                }
                (TagName::Parallel, false) => {
                    self.take_tag();
                    nodes.push(Node::Block(self.block(t.span.start)?));
                }
                (_, true) => {
                    return self.err(
                        t.span.start,
                        &tag_text(&t),
                        format!("closes nothing open here (inside <{}>)", closer.as_str()),
                    );
                }
                (n, false) => {
                    let rule = match n {
                        TagName::Goal | TagName::Path | TagName::Conclusion => {
                            "may only appear directly inside <Parallel>"
                        }
                        TagName::Outline => "may only appear directly inside <Goal>",
                        TagName::Think => "only the root may be <Think>",
                        TagName::Parallel => unreachable!("handled above"),
                    };
                    return self.err(t.span.start, &tag_text(&t), rule);
                }
            }
        }
    }

    /// A block after its `<Parallel>`: Goal, Paths, Conclusion, `</Parallel>`.
    fn block(&mut self, open_at: usize) -> Parse<Block> {
        self.only_whitespace("between <Parallel> and <Goal>")?;
        let goal_at = match self.peek().cloned() {
            Some(t) if t.name == TagName::Goal && !t.close => {
                self.take_tag();
                t.span.start
            }
            Some(t) => return self.err(t.span.start, &tag_text(&t), "a <Parallel> block must start with <Goal>"),
            None => return self.err(open_at, "<Parallel>", "is never closed"),
        };
        let mut outlines = Vec::new();
        loop {
            self.only_whitespace("inside <Goal> (between outlines)")?;
            match self.peek().cloned() {
                Some(t) if t.name == TagName::Outline && !t.close => {
                    self.take_tag();
                    outlines.push(self.text_then_close(TagName::Outline, t.span.start)?);
                }
                Some(t) if t.name == TagName::Goal && t.close => {
                    self.take_tag();
                    break;
                }
                Some(t) => return self.err(t.span.start, &tag_text(&t), "<Goal> holds only <Outline>s"),
                None => return self.err(goal_at, "<Goal>", "is never closed"),
            }
        }
        let mut paths = Vec::new();
        let conclusion;
        loop {
            self.only_whitespace("between the parts of a <Parallel> block")?;
            match self.peek().cloned() {
                Some(t) if t.name == TagName::Path && !t.close => {
                    self.take_tag();
                    paths.push(self.body(TagName::Path, t.span.start)?);
                }
                Some(t) if t.name == TagName::Conclusion && !t.close => {
                    if paths.is_empty() {
                        return self.err(
                            t.span.start,
                            "<Conclusion>",
                            "a block needs at least one <Path> before it",
                        );
                    }
                    self.take_tag();
                    conclusion = self.text_then_close(TagName::Conclusion, t.span.start)?;
                    break;
                }
                Some(t) => {
                    let rule = if t.name == TagName::Parallel && t.close {
                        "a block must end with one <Conclusion>"
                    } else {
                        "expected <Path> or <Conclusion> in a <Parallel> block"
                    };
                    return self.err(t.span.start, &tag_text(&t), rule);
                }
                None => return self.err(open_at, "<Parallel>", "is never closed"),
            }
        }
        self.only_whitespace("between </Conclusion> and </Parallel>")?;
        match self.peek().cloned() {
            Some(t) if t.name == TagName::Parallel && t.close => {
                self.take_tag();
            }
            Some(t) => {
                return self.err(
                    t.span.start,
                    &tag_text(&t),
                    "<Conclusion> must be the last part of its block",
                );
            }
            None => return self.err(open_at, "<Parallel>", "is never closed"),
        }
        if outlines.len() != paths.len() {
            return self.err(
                goal_at,
                "<Goal>",
                format!(
                    "has {} <Outline>(s) for {} <Path>(s); there must be one per path",
                    outlines.len(),
                    paths.len()
                ),
            );
        }
        Ok(Block {
            outlines,
            paths,
            conclusion,
        })
    }
}

/// Parses and validates a trace.
///
/// # Errors
/// The first violation of the grammar, with its line, tag and rule.
pub fn parse(text: &str) -> Result<Trace, FormatError> {
    let mut p = Parser {
        text,
        tags: lex(text),
        next: 0,
        pos: 0,
        line_starts: std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
    };
    p.only_whitespace("before <Think>")?;
    let open = match p.peek().cloned() {
        Some(t) if t.name == TagName::Think && !t.close => p.take_tag(),
        Some(t) => return p.err(t.span.start, &tag_text(&t), "the trace must start with <Think>"),
        None => return p.err(0, "<Think>", "the trace has no <Think> root"),
    };
    let body = p.body(TagName::Think, open.span.start)?;
    p.only_whitespace("after </Think>")?;
    if let Some(t) = p.peek().cloned() {
        return p.err(t.span.start, &tag_text(&t), "only whitespace is allowed after </Think>");
    }
    Ok(Trace { body })
}

/// Removes a leading `1:` / `2.1:` label (digits and dots, a colon, then whitespace or the end:
/// `12:30` and `2:1 odds` are content, not labels).
fn strip_label(s: &str) -> &str {
    let t = s.trim_start();
    let digits = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let after = &t[digits..];
    let is_label = digits > 0
        && t.starts_with(|c: char| c.is_ascii_digit())
        && after.starts_with(':')
        && after[1..].chars().next().is_none_or(char::is_whitespace);
    if is_label { after[1..].trim_start() } else { t }
}

impl Trace {
    /// The canonical text: every tag on its own line, outlines and paths numbered hierarchically,
    /// and the cue sentence before every block.
    pub fn normalized(&self) -> String {
        let mut out = String::from("<Think>\n");
        write_nodes(&self.body, "", &mut out);
        out.push_str("</Think>");
        out
    }

    /// Number of blocks, nested ones included.
    pub fn blocks(&self) -> usize {
        fn count(nodes: &[Node]) -> usize {
            nodes
                .iter()
                .map(|n| match n {
                    Node::Text(_) => 0,
                    Node::Block(b) => 1 + b.paths.iter().map(|p| count(p)).sum::<usize>(),
                })
                .sum()
        }
        count(&self.body)
    }

    /// The trace as sequential text, as the reference's `data/afterwards.py` rebuilds it for the
    /// content check: goals and conclusions removed, tags, path labels and the cue sentence
    /// removed; the remaining pieces (text runs and paths, in order) are paragraphs separated by one
    /// blank line, as in s1K traces (the reference collapses runs of newlines to the same effect).
    pub fn sequential(&self) -> String {
        fn walk(nodes: &[Node], at_path_start: bool, out: &mut Vec<String>) {
            let mut first = at_path_start;
            for n in nodes {
                match n {
                    Node::Text(t) => {
                        let t = t.replace(PARALLEL_CUE, "");
                        let t = if first { strip_label(&t).to_string() } else { t };
                        if !t.trim().is_empty() {
                            out.push(collapse_blank_lines(t.trim()));
                            first = false;
                        }
                    }
                    Node::Block(b) => {
                        first = false;
                        for p in &b.paths {
                            walk(p, true, out);
                        }
                    }
                }
            }
        }
        let mut pieces = Vec::new();
        walk(&self.body, false, &mut pieces);
        pieces.join("\n\n")
    }
}

fn collapse_blank_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = 0;
    for line in s.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_string()
}

fn write_nodes(nodes: &[Node], prefix: &str, out: &mut String) {
    for (i, n) in nodes.iter().enumerate() {
        match n {
            Node::Text(t) => {
                let t = t.trim();
                if !t.is_empty() {
                    out.push_str(t);
                    out.push('\n');
                }
            }
            Node::Block(b) => {
                let cued = nodes[..i]
                    .iter()
                    .rev()
                    .find_map(|n| match n {
                        Node::Text(t) if t.trim().is_empty() => None,
                        Node::Text(t) => Some(t.trim_end().ends_with(PARALLEL_CUE)),
                        Node::Block(_) => Some(false),
                    })
                    .unwrap_or(false);
                if !cued {
                    out.push_str(PARALLEL_CUE);
                    out.push('\n');
                }
                let label = |k: usize| {
                    if prefix.is_empty() {
                        format!("{k}")
                    } else {
                        format!("{prefix}.{k}")
                    }
                };
                out.push_str("<Parallel>\n<Goal>\n");
                for (k, o) in b.outlines.iter().enumerate() {
                    out.push_str(&format!(
                        "<Outline>\n{}: {}\n</Outline>\n",
                        label(k + 1),
                        strip_label(o).trim()
                    ));
                }
                out.push_str("</Goal>\n");
                for (k, p) in b.paths.iter().enumerate() {
                    let id = label(k + 1);
                    out.push_str("<Path>\n");
                    // The label goes before the path's first text; a path that opens with a block
                    // (or is empty) gets the label on a line of its own, in every pass alike.
                    let mut nodes = p.clone();
                    if let Some(Node::Text(t)) = nodes
                        .iter_mut()
                        .find(|n| !matches!(n, Node::Text(t) if t.trim().is_empty()))
                    {
                        let rest = strip_label(t);
                        // A lone cue belongs to the block that follows (it is written again there).
                        *t = if rest.trim() == PARALLEL_CUE {
                            String::new()
                        } else {
                            rest.to_string()
                        };
                    }
                    let opens_with_text = nodes
                        .iter()
                        .find(|n| !matches!(n, Node::Text(t) if t.trim().is_empty()))
                        .is_some_and(|n| matches!(n, Node::Text(_)));
                    if opens_with_text {
                        out.push_str(&format!("{id}: "));
                    } else {
                        out.push_str(&format!("{id}:\n"));
                    }
                    write_nodes(&nodes, &id, out);
                    out.push_str("</Path>\n");
                }
                out.push_str(&format!(
                    "<Conclusion>\n{}\n</Conclusion>\n</Parallel>\n",
                    b.conclusion.trim()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "<Think>
We need the minimum of |x-1|+|x+3|; note 0 < 1 & 2 > 1.
Let's think in parallel.
<Parallel>
<Goal>
<Outline>
Determine f for x < -3.
</Outline>
<Outline>
Determine f on [-3, 1].
</Outline>
</Goal>
<Path>
For x < -3, f(x) = -2x - 2 > 4.
</Path>
<Path>
On [-3, 1], f is 4.
Let's think in parallel.
<Parallel>
<Goal>
<Outline>
7: left end
</Outline>
<Outline>
right end
</Outline>
</Goal>
<Path>
f(-3) = 4.
</Path>
<Path>
f(1) = 4.
</Path>
<Conclusion>
Both ends give 4.
</Conclusion>
</Parallel>
So f is constant there.
</Path>
<Conclusion>
The minimum is 4.
</Conclusion>
</Parallel>
**Final Answer** 4
</Think>
";

    #[test]
    fn a_nested_trace_parses_and_normalises_with_hierarchical_numbers() {
        let t = parse(GOOD).unwrap();
        assert_eq!(t.blocks(), 2);
        let n = t.normalized();
        for needle in [
            "<Outline>\n1: Determine f for x < -3.\n</Outline>",
            "<Path>\n1: For x < -3, f(x) = -2x - 2 > 4.\n</Path>",
            "<Path>\n2: On [-3, 1], f is 4.\nLet's think in parallel.\n<Parallel>",
            "<Outline>\n2.1: left end\n</Outline>",
            "<Outline>\n2.2: right end\n</Outline>",
            "<Path>\n2.2: f(1) = 4.\n</Path>",
        ] {
            assert!(n.contains(needle), "{needle:?} missing from\n{n}");
        }
        // Labels need whitespace after the colon: times and odds are content.
        assert_eq!(strip_label("2.1: x"), "x");
        assert_eq!(strip_label("12:30 is late"), "12:30 is late");
        assert_eq!(strip_label("2:1 odds"), "2:1 odds");
        assert_eq!(strip_label("3:"), "");
        // A path that opens with a block, and an empty path, normalise the same way twice.
        let nested_first = parse("<Think><Parallel><Goal><Outline>a</Outline><Outline>b</Outline></Goal><Path><Parallel><Goal><Outline>c</Outline></Goal><Path>d</Path><Conclusion>e</Conclusion></Parallel>f</Path><Path></Path><Conclusion>g</Conclusion></Parallel></Think>").unwrap();
        let once = nested_first.normalized();
        assert_eq!(parse(&once).unwrap().normalized(), once);
        assert!(
            once.contains("<Path>\n1:\nLet's think in parallel.\n<Parallel>") && once.contains("<Path>\n2:\n</Path>"),
            "{once}"
        );
        // Normalising is idempotent and the result still parses to the same shape.
        let again = parse(&n).unwrap();
        assert_eq!(again.normalized(), n);
        assert_eq!(again.blocks(), 2);
    }

    #[test]
    fn the_cue_is_added_where_missing() {
        let t = parse("<Think>a\n<Parallel><Goal><Outline>o</Outline></Goal><Path>p</Path><Conclusion>c</Conclusion></Parallel></Think>").unwrap();
        assert!(
            t.normalized().contains("a\nLet's think in parallel.\n<Parallel>"),
            "{}",
            t.normalized()
        );
    }

    #[test]
    fn sequential_text_drops_goals_conclusions_tags_and_cues() {
        let t = parse(GOOD).unwrap();
        let s = t.sequential();
        assert!(!s.contains('<') || s.contains("0 < 1"), "{s}");
        assert!(
            !s.contains("Determine f") && !s.contains("The minimum is 4") && !s.contains(PARALLEL_CUE),
            "{s}"
        );
        assert!(
            s.contains("For x < -3, f(x) = -2x - 2 > 4.\n\nOn [-3, 1], f is 4.\n\nf(-3) = 4."),
            "{s}"
        );
        assert!(s.ends_with("**Final Answer** 4"), "{s}");
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn malformed_traces_name_line_tag_and_rule() {
        let block = |inner: &str| format!("<Think>\n<Parallel>\n{inner}\n</Parallel>\n</Think>");
        let ok_goal = "<Goal><Outline>a</Outline><Outline>b</Outline></Goal>";
        for (text, want) in [
            (
                "x <Think></Think>".to_string(),
                "line 1, text: only whitespace is allowed before <Think>",
            ),
            ("<Think>\nnever closed".to_string(), "line 1, <Think>: is never closed"),
            (
                block("<Path>a</Path><Conclusion>c</Conclusion>"),
                "line 3, <Path>: a <Parallel> block must start with <Goal>",
            ),
            (
                block(&format!(
                    "{ok_goal}<Path>a</Path>\nstray\n<Path>b</Path><Conclusion>c</Conclusion>"
                )),
                "line 4, text: only whitespace is allowed between the parts of a <Parallel> block",
            ),
            (
                block("<Goal><Outline>a</Outline></Goal><Path>a</Path><Path>b</Path><Conclusion>c</Conclusion>"),
                "line 3, <Goal>: has 1 <Outline>(s) for 2 <Path>(s)",
            ),
            (
                block(&format!("{ok_goal}<Path>a</Path><Path>b</Path>")),
                "line 4, </Parallel>: a block must end with one <Conclusion>",
            ),
            (
                block(&format!(
                    "{ok_goal}<Path>a</Path><Path>b</Path><Conclusion>c</Conclusion><Path>d</Path>"
                )),
                "line 3, <Path>: <Conclusion> must be the last part of its block",
            ),
            (
                "<Think>\n<Path>x</Path></Think>".to_string(),
                "line 2, <Path>: may only appear directly inside <Parallel>",
            ),
            (
                "<Think>\n</Path></Think>".to_string(),
                "line 2, </Path>: closes nothing open here (inside <Think>)",
            ),
            (
                block("<Goal>text<Outline>a</Outline></Goal><Path>a</Path><Conclusion>c</Conclusion>"),
                "line 3, text: only whitespace is allowed inside <Goal> (between outlines)",
            ),
            (
                block("<Goal><Outline>a<Path></Outline></Goal>"),
                "line 3, <Path>: <Outline> holds text only; expected </Outline>",
            ),
            (
                "<Think></Think>\n<Think></Think>".to_string(),
                "line 2, <Think>: only whitespace is allowed after </Think>",
            ),
        ] {
            let got = err(&text);
            assert!(got.contains(want), "{text:?}\n got: {got}\nwant: {want}");
        }
    }
}
