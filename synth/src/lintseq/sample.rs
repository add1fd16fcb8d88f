//! LintSeq's backward phase as the reference runs it (`src/data_gen/lintseq.py::
//! lintseq_backward_sampling_pythonic` with the driver's settings: one trajectory, no tree search,
//! `indent_bias_sampling_factor=1`, comments and ALL-CAPS global literals never sampled, at most 512
//! edits):
//!
//! 1. every line gets an indentation: its leading whitespace in characters, updated only on lines
//!    with more than one character after it (blank lines and a lone `)`/`]`/`}` keep the previous
//!    value, so a closing bracket stays with its opener); the step is the first non-zero value;
//! 2. candidates are all lines but blank and comment-only ones, the lines inside a global
//!    ALL-CAPS literal (`NAMES = [` … `]`) and lines the language fixes (Go's `package`); a
//!    candidate weighs 1 at depth 0 and indentation / step deeper;
//! 3. each edit samples a remaining candidate by weight, takes it with its children (the run of
//!    following lines indented deeper), then deletes every line the checker flags in what is left,
//!    with their children, until the checker is clean (the whole file is checked on every pass);
//! 4. until no candidate remains. Lines never sampled (comments, blanks) are what the first forward
//!    edit inserts.
//!
//! Randomness: one generator per trajectory, seeded from the run's seed, the program's id and the
//! sample index, so the output does not depend on thread scheduling or on which other programs run.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::lang::{Context, Language, Parser};

/// Why a trajectory could not be sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The original program has a syntax error (1-based line).
    Unparsable(usize),
    /// No line can be sampled: comments and blank lines only.
    CommentOnly,
    /// The cap on edits was reached with lines left.
    CapReached,
    /// The program has more lines than allowed.
    TooLarge(usize),
    /// The program's syntax tree is deeper than [`super::MAX_DEPTH`].
    TooDeep(usize),
}

impl Rejection {
    /// The reason a job report counts it under.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Unparsable(_) => "unparsable",
            Rejection::CommentOnly => "comment-only",
            Rejection::CapReached => "cap reached",
            Rejection::TooLarge(_) => "too large",
            Rejection::TooDeep(_) => "too deep",
        }
    }
}

/// One backward trajectory: the chunks of line indices deleted, in deletion order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trajectory {
    /// Deleted line indices per edit (each sorted), first deletion first.
    pub chunks: Vec<Vec<usize>>,
    /// Checker passes run.
    pub passes: usize,
    /// Lines flagged, by rule, over the trajectory.
    pub flags: std::collections::BTreeMap<&'static str, usize>,
}

/// The per-line facts sampling needs.
pub(crate) struct Lines<'a> {
    pub text: Vec<&'a str>,
    indent: Vec<usize>,
    weight: Vec<f64>,
}

impl<'a> Lines<'a> {
    /// Splits `program` on `\n` and computes indentation, candidates and weights.
    pub fn new(program: &'a str, lang: &dyn Language) -> Self {
        let text: Vec<&str> = program.split('\n').collect();
        let mut indent = Vec::with_capacity(text.len());
        let mut current = 0;
        let mut step = None;
        for line in &text {
            let stripped = line.trim_start();
            if stripped.chars().count() > 1 {
                current = line.chars().count() - stripped.chars().count();
            }
            indent.push(current);
            if step.is_none() && current > 0 {
                step = Some(current);
            }
        }
        let mut candidate = candidates(&text, lang.comment_prefixes());
        for (c, line) in candidate.iter_mut().zip(&text) {
            *c &= !lang.fixed_line(line);
        }
        let weight = candidate
            .iter()
            .zip(&indent)
            .map(|(&c, &ind)| match (c, step) {
                (false, _) => 0.0,
                (true, Some(step)) if ind > 0 => ind as f64 / step as f64,
                (true, _) => 1.0,
            })
            .collect();
        Lines { text, indent, weight }
    }

    /// Whether any line can be sampled.
    pub fn has_candidates(&self) -> bool {
        self.weight.iter().any(|&w| w > 0.0)
    }

    /// The lines after `t` indented deeper than it (its block and continuation lines).
    fn children(&self, t: usize) -> std::ops::Range<usize> {
        let end = (t + 1..self.indent.len())
            .find(|&i| self.indent[i] <= self.indent[t])
            .unwrap_or(self.indent.len());
        t + 1..end
    }

    /// The text of the lines not in `deleted`, and which original line each row is.
    fn render(&self, deleted: &[bool]) -> (String, Vec<usize>) {
        let kept: Vec<usize> = (0..self.text.len()).filter(|&i| !deleted[i]).collect();
        let mut out = String::new();
        for (k, &i) in kept.iter().enumerate() {
            if k > 0 {
                out.push('\n');
            }
            out.push_str(self.text[i]);
        }
        (out, kept)
    }
}

/// Candidate lines: not blank, not a comment, not inside a global ALL-CAPS literal.
fn candidates(text: &[&str], comments: &[&str]) -> Vec<bool> {
    let mut out = vec![false; text.len()];
    let mut open: Option<char> = None; // the closer of an open global literal
    for (i, line) in text.iter().enumerate() {
        let stripped = line.trim_start();
        // A prefix matches a line that starts with it or is it without its trailing space (`*`).
        let comment = comments
            .iter()
            .any(|c| stripped.starts_with(c) || stripped.trim_end() == c.trim_end());
        if stripped.is_empty() || comment {
            continue;
        }
        let last = line.trim_end().chars().last();
        if let Some(closer) = open {
            if last == Some(closer) {
                open = None;
            }
            continue;
        }
        out[i] = true;
        if let Some(eq) = line.find('=') {
            let name: String = line[..eq].chars().filter(|c| *c != ' ').collect();
            let upper = name.chars().any(char::is_alphabetic) && !name.chars().any(char::is_lowercase);
            if upper {
                open = match last {
                    Some('(') => Some(')'),
                    Some('[') => Some(']'),
                    _ => None,
                };
            }
        }
    }
    out
}

/// A 64-bit FNV-1a hash: stable across platforms and releases (per-program seeds).
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Runs the checker over the program minus deleted lines.
pub(crate) struct Checker<'l> {
    lang: &'l dyn Language,
    parser: Parser,
    ctx: Context,
    pub passes: usize,
    pub flags: std::collections::BTreeMap<&'static str, usize>,
}

impl<'l> Checker<'l> {
    pub fn new(lang: &'l dyn Language, ctx: Context) -> Self {
        Checker {
            lang,
            parser: Parser::new(lang),
            ctx,
            passes: 0,
            flags: Default::default(),
        }
    }

    /// The original line indices the checker flags in the program minus `deleted`.
    fn flagged(&mut self, lines: &Lines, deleted: &[bool]) -> Vec<usize> {
        let (text, kept) = lines.render(deleted);
        self.passes += 1;
        let tree = self.parser.parse(&text);
        let mut out = Vec::new();
        for f in self.lang.check(&text, &tree, &self.ctx) {
            *self.flags.entry(f.rule).or_default() += 1;
            // A checker row past the text would be a checker bug: the row is ignored rather than
            // looping (the reference's driver drops such a sample through its bare `except`).
            if let Some(&i) = kept.get(f.row) {
                out.push(i);
            }
        }
        out
    }

    /// The depth of `text`'s syntax tree (walked with a cursor, no recursion).
    pub fn depth(&mut self, text: &str) -> usize {
        let tree = self.parser.parse(text);
        let mut cursor = tree.walk();
        let (mut depth, mut deepest) = (0usize, 0usize);
        loop {
            deepest = deepest.max(depth);
            if cursor.goto_first_child() {
                depth += 1;
                continue;
            }
            loop {
                if cursor.goto_next_sibling() {
                    break;
                }
                if !cursor.goto_parent() {
                    return deepest;
                }
                depth -= 1;
            }
        }
    }

    /// The first row the checker flags in `text` as a syntax error, if any (1-based).
    pub fn syntax_error(&mut self, text: &str) -> Option<usize> {
        let tree = self.parser.parse(text);
        self.lang
            .check(text, &tree, &self.ctx)
            .into_iter()
            .find(|f| f.rule == "syntax")
            .map(|f| f.row + 1)
    }
}

/// Samples one backward trajectory of `lines` (see the module docs).
pub(crate) fn backward(
    lines: &Lines,
    checker: &mut Checker,
    seed: u64,
    max_edits: usize,
) -> Result<Trajectory, Rejection> {
    let n = lines.text.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut deleted = vec![false; n];
    let mut remaining: Vec<usize> = (0..n).filter(|&i| lines.weight[i] > 0.0).collect();
    if remaining.is_empty() {
        return Err(Rejection::CommentOnly);
    }
    let mut chunks = Vec::new();
    while !remaining.is_empty() {
        if chunks.len() == max_edits {
            return Err(Rejection::CapReached);
        }
        let total: f64 = remaining.iter().map(|&i| lines.weight[i]).sum();
        let mut u = rng.random::<f64>() * total;
        let mut target = *remaining.last().unwrap_or(&0);
        for &i in &remaining {
            u -= lines.weight[i];
            if u < 0.0 {
                target = i;
                break;
            }
        }
        let mut in_chunk = vec![false; n];
        let mut frontier = vec![target];
        loop {
            let mut grown = Vec::new();
            for &f in &frontier {
                if deleted[f] || in_chunk[f] {
                    continue;
                }
                in_chunk[f] = true;
                deleted[f] = true;
                grown.push(f);
                for c in lines.children(f) {
                    if !deleted[c] && !in_chunk[c] {
                        in_chunk[c] = true;
                        deleted[c] = true;
                        grown.push(c);
                    }
                }
            }
            if grown.is_empty() && !frontier.is_empty() {
                break; // every flagged line was already gone: nothing left to change
            }
            frontier = checker.flagged(lines, &deleted);
            if frontier.is_empty() {
                break;
            }
        }
        let chunk: Vec<usize> = (0..n).filter(|&i| in_chunk[i]).collect();
        remaining.retain(|&i| !in_chunk[i]);
        chunks.push(chunk);
    }
    Ok(Trajectory {
        chunks,
        passes: checker.passes,
        flags: checker.flags.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lintseq::lang::python::Python;

    #[test]
    fn indentation_and_weights_follow_the_reference() {
        let program = "def f(x):\n    y = [\n        1,\n    ]\n\n    # note\n    return y\n";
        let lines = Lines::new(program, &Python);
        // `]` (one character) and the blank line keep the previous indentation.
        assert_eq!(lines.indent, vec![0, 4, 8, 8, 8, 4, 4, 4]);
        // Step 4: depth 0 and 1 weigh 1, depth 2 weighs 2; blanks and comments 0.
        assert_eq!(lines.weight, vec![1.0, 1.0, 2.0, 2.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(lines.children(1), 2..5);
        assert_eq!(lines.children(0), 1..8);
    }

    #[test]
    fn global_caps_literals_are_not_candidates() {
        let text = [
            "NAMES = [",
            "    'a',",
            "    'b',",
            "]",
            "x = 1",
            "lower = [",
            "    1,",
            "]",
        ];
        assert_eq!(
            candidates(&text, &["#"]),
            vec![true, false, false, false, true, true, true, true]
        );
    }

    #[test]
    fn every_state_is_clean_and_every_line_is_deleted_once() {
        let program = "import math\n\n\ndef area(r):\n    if r < 0:\n        raise ValueError(\"negative\")\n    return math.pi * r ** 2\n\n\nprint(area(2.0))\n";
        let lines = Lines::new(program, &Python);
        for seed in 0..20 {
            let mut checker = Checker::new(&Python, Python.context(program));
            let t = backward(&lines, &mut checker, seed, 512).expect("samples");
            let mut seen = vec![0; lines.text.len()];
            let mut deleted = vec![false; lines.text.len()];
            for chunk in &t.chunks {
                for &i in chunk {
                    seen[i] += 1;
                    deleted[i] = true;
                }
                assert!(
                    checker.flagged(&lines, &deleted).is_empty(),
                    "seed {seed}: unclean state"
                );
            }
            // Blank lines are never sampled but go with their block; the rest are candidates.
            for (i, line) in lines.text.iter().enumerate() {
                if !line.trim().is_empty() {
                    assert_eq!(seen[i], 1, "seed {seed}: line {i} deleted {} times", seen[i]);
                }
            }
        }
    }

    #[test]
    fn a_body_never_outlives_its_header_and_the_cap_is_enforced() {
        let program = "for i in range(3):\n    print(i)\n";
        let lines = Lines::new(program, &Python);
        let mut checker = Checker::new(&Python, Python.context(program));
        let t = backward(&lines, &mut checker, 1, 512).expect("samples");
        // Deleting `print(i)` empties the loop, so both go in one edit; deleting the header takes
        // its child. Either way: one edit (with the final empty line, indented as `print(i)`).
        assert_eq!(t.chunks, vec![vec![0, 1, 2]]);
        let program = "a = 1\nb = 2\nc = 3\n";
        let lines = Lines::new(program, &Python);
        let mut checker = Checker::new(&Python, Python.context(program));
        assert_eq!(backward(&lines, &mut checker, 1, 2), Err(Rejection::CapReached));
    }

    #[test]
    fn seeds_are_stable() {
        assert_eq!(stable_hash(&[b"a", b"b"]), stable_hash(&[b"a", b"b"]));
        assert_ne!(stable_hash(&[b"ab", b""]), stable_hash(&[b"a", b"b"]));
    }
}
