//! LintSeq (Piterbarg, Pinto, Fergus, "Training Language Models on Synthetic Edit Sequences
//! Improves Code Synthesis", arXiv 2410.02749): rewrite each program as a sequence of
//! insertion-only edits, every intermediate program free of linter errors, by sampling deletions
//! backward and reversing them.
//!
//! Follows the reference implementation, `github.com/upiterbarg/lintseq` at `fe5a788`, as its
//! driver runs it (research notes: `shared/research/lintseq.md`):
//! - [`sample`]: the backward phase (`src/data_gen/lintseq.py`), with per-trajectory seeds;
//! - [`diff`]: the forward phase (`src/utils.py::inflate_edit_path`), replay and training text;
//! - [`lang`]: the checkers standing in for pylint, on tree-sitter, one file per language;
//! - [`extract`]: code from fenced blocks (`src/utils.py::strip_chain_of_thought`);
//! - [`input`]: programs from a folder, JSONL or a `chat`/`completion` dataset.
//!
//! Where we differ from the reference, on purpose: programs whose original has a syntax error are
//! dropped (`unparsable`) rather than losing their broken lines in the first edit; trajectories
//! that reach the edit cap are dropped (`cap reached`) rather than inserting every leftover line in
//! one first edit; empty edits are dropped (as pylintseq does); edits are emitted from the known
//! inserted lines, never from a diff; the checker is the one in [`lang`], not pylint (its rules
//! and divergences are documented there).

pub mod diff;
pub mod extract;
pub mod input;
pub mod lang;
pub mod sample;

use std::collections::BTreeMap;

use firebrand_data::{LintseqRow, Provenance};

pub use diff::{DIFF_TOKEN, forward_edits, replay, split_edits, training_text, trimmed};
pub use lang::{Language, by_extension, by_name};
pub use sample::Rejection;

use sample::{Checker, Lines, backward, stable_hash};

/// Deepest syntax tree sampled: the checkers walk trees recursively, so deep trees need more than
/// the default 2 MB of thread stack (the CLI's workers have 64 MB; a test runs this depth in 32 MB).
/// Deeper programs are dropped (`too deep`).
pub const MAX_DEPTH: usize = 2000;

/// How programs are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LintseqOptions {
    /// Independent trajectories per program (the paper's experiments used 5).
    pub samples: usize,
    /// The run's seed; each trajectory's seed also hashes the program id and the sample index.
    pub seed: u64,
    /// Most edits per trajectory (the reference's `max_depth`, 512).
    pub max_edits: usize,
    /// Programs with more lines are dropped as too large (0: no limit).
    pub max_lines: usize,
}

impl Default for LintseqOptions {
    fn default() -> Self {
        LintseqOptions {
            samples: 5,
            seed: 0,
            max_edits: 512,
            max_lines: 5000,
        }
    }
}

/// One program to rewrite.
#[derive(Clone)]
pub struct Program {
    /// The instruction it answers (empty for bare source files).
    pub instruction: String,
    /// The code.
    pub code: String,
    /// Its language.
    pub language: &'static dyn Language,
    /// Where it came from (file path, or input file and line).
    pub source_file: String,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("language", &self.language.name())
            .field("source_file", &self.source_file)
            .field("instruction", &self.instruction)
            .field("code", &self.code)
            .finish()
    }
}

/// One sampled trajectory as forward edits, with its statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditSequence {
    /// Insertion-only edits, first edit first.
    pub edits: Vec<String>,
    /// Checker passes the backward phase ran.
    pub passes: usize,
    /// Lines flagged per rule over the trajectory.
    pub flags: BTreeMap<&'static str, usize>,
}

/// Samples `opts.samples` trajectories of `code` in `lang` for the program called `id`.
///
/// # Errors
/// A [`Rejection`] when the program cannot be sampled (too large, unparsable, comments only, or a
/// trajectory reached the edit cap).
pub fn synthesize(
    id: &str,
    code: &str,
    lang: &dyn Language,
    opts: &LintseqOptions,
) -> Result<Vec<EditSequence>, Rejection> {
    let lines = Lines::new(code, lang);
    if opts.max_lines > 0 && lines.text.len() > opts.max_lines {
        return Err(Rejection::TooLarge(lines.text.len()));
    }
    let ctx = lang.context(code);
    let mut checker = Checker::new(lang, ctx.clone());
    let depth = checker.depth(code);
    if depth > MAX_DEPTH {
        return Err(Rejection::TooDeep(depth));
    }
    if let Some(row) = checker.syntax_error(code) {
        return Err(Rejection::Unparsable(row));
    }
    if !lines.has_candidates() {
        return Err(Rejection::CommentOnly);
    }
    let mut out = Vec::with_capacity(opts.samples);
    for k in 0..opts.samples {
        let seed = stable_hash(&[&opts.seed.to_le_bytes(), id.as_bytes(), &(k as u64).to_le_bytes()]);
        let mut checker = Checker::new(lang, ctx.clone());
        let t = backward(&lines, &mut checker, seed, opts.max_edits)?;
        out.push(EditSequence {
            edits: forward_edits(&lines.text, &t.chunks),
            passes: t.passes,
            flags: t.flags,
        });
    }
    Ok(out)
}

/// What the checker flags in `code` as it stands (what a program's first edit would delete).
pub fn lint(code: &str, lang: &dyn Language) -> Vec<lang::Flag> {
    let tree = lang::Parser::new(lang).parse(code);
    lang.check(code, &tree, &lang.context(code))
}

/// Checks an edit sequence of `program`: every edit is an insertion that fits (see [`replay`]),
/// the edits rebuild the program (blank lines trimmed at both ends), and every program before the
/// last passes the checker. Returns what is wrong, with the edit it happened at.
///
/// # Errors
/// A message naming the first edit that breaks a property.
pub fn verify<S: AsRef<str>>(program: &str, lang: &dyn Language, edits: &[S]) -> Result<(), String> {
    let ctx = lang.context(program);
    let mut parser = lang::Parser::new(lang);
    for k in 1..edits.len() {
        let state = replay(&edits[..k]).map_err(|e| e.to_string())?;
        let tree = parser.parse(&state);
        if let Some(f) = lang.check(&state, &tree, &ctx).first() {
            let line = state.split('\n').nth(f.row).unwrap_or("").trim();
            return Err(format!("after edit {k}: line {}: {} ({line:?})", f.row + 1, f.rule));
        }
    }
    let rebuilt = replay(edits).map_err(|e| e.to_string())?;
    if rebuilt != trimmed(program) {
        return Err("the edits do not rebuild the program".to_string());
    }
    Ok(())
}

/// The `labels` of a program: `language:NAME` and `construct:NAME` for each construct it uses.
pub fn labels(code: &str, lang: &dyn Language) -> Vec<String> {
    let tree = lang::Parser::new(lang).parse(code);
    std::iter::once(format!("language:{}", lang.name()))
        .chain(
            lang.constructs(code, &tree)
                .into_iter()
                .map(|c| format!("construct:{c}")),
        )
        .collect()
}

/// The dataset rows of a program: one per trajectory, ids `ID#k`.
///
/// # Errors
/// As [`synthesize`].
pub fn rows(id: &str, program: &Program, opts: &LintseqOptions) -> Result<Vec<LintseqRow>, Rejection> {
    let lang = program.language;
    let sequences = synthesize(id, &program.code, lang, opts)?;
    let labels = labels(&program.code, lang);
    let lines = program.code.split('\n').count();
    Ok(sequences
        .into_iter()
        .enumerate()
        .map(|(k, s)| {
            let meta = serde_json::json!({
                "seed": opts.seed,
                "samples": opts.samples,
                "edits": s.edits.len(),
                "lines": lines,
                "checker_passes": s.passes,
                "flags": s.flags,
            });
            LintseqRow {
                id: format!("{id}#{k}"),
                instruction: program.instruction.clone(),
                program: program.code.clone(),
                edits: s.edits,
                language: lang.name().to_string(),
                source_file: program.source_file.clone(),
                sample: k as i32,
                provenance: Provenance {
                    source: "lintseq".to_string(),
                    labels: labels.clone(),
                    score: None,
                    meta: meta.to_string(),
                },
            }
        })
        .collect())
}

/// The program id of a row id `ID#k` (what `--resume` matches inputs on).
pub fn program_id(row_id: &str) -> &str {
    row_id.rsplit_once('#').map_or(row_id, |(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lang::python::Python;

    const PROGRAM: &str = "import math\n\n\nclass Circle:\n    def __init__(self, r):\n        self.r = r\n\n    def area(self):\n        return math.pi * self.r ** 2\n\n\ndef total(circles):\n    # sum of areas\n    return sum(c.area() for c in circles)\n\n\nprint(total([Circle(1), Circle(2)]))\n";

    #[test]
    fn trajectories_replay_to_the_program_and_are_deterministic() {
        let opts = LintseqOptions::default();
        let a = synthesize("p1", PROGRAM, &Python, &opts).expect("samples");
        let b = synthesize("p1", PROGRAM, &Python, &opts).expect("samples");
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
        for s in &a {
            assert_eq!(replay(&s.edits).unwrap(), trimmed(PROGRAM));
            assert_eq!(verify(PROGRAM, &Python, &s.edits), Ok(()));
            assert!(s.edits.len() >= 2);
        }
        // verify catches an edit sequence whose intermediate program does not pass.
        let bad = ["@@ -0,0 +1 @@\n+print(x)", "@@ -0,0 +1 @@\n+x = 1"];
        assert!(
            verify("x = 1\nprint(x)", &Python, &bad)
                .unwrap_err()
                .contains("after edit 1")
        );
        let other = synthesize("p2", PROGRAM, &Python, &opts).expect("samples");
        let seeds_differ = (0..5).any(|k| other[k].edits != a[k].edits);
        assert!(seeds_differ, "program ids feed the seed");
    }

    #[test]
    fn rejections_carry_their_reason() {
        let opts = LintseqOptions::default();
        assert_eq!(
            synthesize("x", "def f(:\n    pass\n", &Python, &opts),
            Err(Rejection::Unparsable(1))
        );
        assert_eq!(
            synthesize("x", "# only\n\n# comments\n", &Python, &opts),
            Err(Rejection::CommentOnly)
        );
        let small = LintseqOptions { max_lines: 3, ..opts };
        assert_eq!(
            synthesize("x", "a = 1\nb = 2\nc = 3\nd = 4\n", &Python, &small),
            Err(Rejection::TooLarge(5))
        );
    }

    #[test]
    fn deep_trees_are_sampled_within_a_bounded_stack_or_dropped() {
        // `x = 1 + 1 + ...`: a left-deep tree, one level per operator.
        let chain = |n: usize| format!("x = 1{}\nprint(x)\n", " + 1".repeat(n));
        let opts = LintseqOptions {
            samples: 1,
            ..Default::default()
        };
        let ok = std::thread::Builder::new()
            .stack_size(32 << 20)
            .spawn(move || synthesize("deep", &chain(MAX_DEPTH - 10), &Python, &opts).map(|s| s.len()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(ok, Ok(1));
        let too_deep = synthesize("deeper", &chain(MAX_DEPTH + 10), &Python, &opts);
        assert!(matches!(too_deep, Err(Rejection::TooDeep(d)) if d > MAX_DEPTH));
    }

    #[test]
    fn labels_name_language_and_constructs() {
        let l = labels(PROGRAM, &Python);
        for want in [
            "language:python",
            "construct:class",
            "construct:function",
            "construct:comprehension",
            "construct:import",
        ] {
            assert!(l.contains(&want.to_string()), "{want} missing from {l:?}");
        }
        assert!(!l.contains(&"construct:loop".to_string()));
    }

    #[test]
    fn row_ids_map_back_to_programs() {
        assert_eq!(program_id("a/b.py#3"), "a/b.py");
        assert_eq!(program_id("x#y#0"), "x#y");
    }
}
