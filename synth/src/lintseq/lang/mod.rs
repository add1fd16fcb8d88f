//! The languages LintSeq can sample: each is one file implementing [`Language`] — its tree-sitter
//! grammar, comment prefixes, fence tags and file extensions, and the checker that stands in for
//! the linter of the reference (pylint's error set, `src/utils.py::file_linter`). Adding a
//! language is one file here plus one line in [`LANGUAGES`].
//!
//! A checker returns [`Flag`]s: the 0-based rows of the text it was given that the backward
//! sampler must delete, each with the rule that fired. As pylint does, a checker reports only the
//! first syntax error (the parse stops there), and otherwise every semantic error at once.

use std::collections::BTreeSet;

use tree_sitter::{Node, Tree};

pub mod go;
pub mod javascript;
pub mod python;

/// One finding of a checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// 0-based row of the checked text.
    pub row: usize,
    /// The rule that fired (`syntax`, `undefined-name`, ...), for the run's statistics.
    pub rule: &'static str,
}

/// What a checker knows about the program a trajectory started from (fixed for the trajectory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The program's own indentation step in columns, where the language cares (Python).
    pub indent_unit: Option<usize>,
}

/// A language LintSeq can sample.
pub trait Language: Sync {
    /// Name, as in the dataset's `language` column and `--language`.
    fn name(&self) -> &'static str;
    /// File extensions (without the dot) read from a folder.
    fn extensions(&self) -> &'static [&'static str];
    /// Markdown fence tags whose blocks hold this language's code (lowercase).
    fn fence_tags(&self) -> &'static [&'static str];
    /// Prefixes of comment-only lines (never sampled for deletion).
    fn comment_prefixes(&self) -> &'static [&'static str];
    /// A line never sampled for deletion, like a comment: it stays to the first edit (Go's
    /// `package` clause, without which no state is a Go file).
    fn fixed_line(&self, _line: &str) -> bool {
        false
    }
    /// The tree-sitter grammar.
    fn grammar(&self) -> tree_sitter::Language;
    /// What the checker keeps fixed over a trajectory, from the original program.
    fn context(&self, _program: &str) -> Context {
        Context::default()
    }
    /// The rows of `src` (parsed into `tree`) that break the language's rules.
    fn check(&self, src: &str, tree: &Tree, ctx: &Context) -> Vec<Flag>;
    /// Constructs the program uses (`class`, `loop`, ...), for the `labels` column.
    fn constructs(&self, src: &str, tree: &Tree) -> BTreeSet<&'static str>;
}

/// Every language, in `--language` order.
pub static LANGUAGES: [&dyn Language; 3] = [&python::Python, &go::Go, &javascript::JavaScript];

/// The language called `name` (case-insensitive; common aliases accepted).
pub fn by_name(name: &str) -> Option<&'static dyn Language> {
    let name = name.to_ascii_lowercase();
    LANGUAGES
        .iter()
        .copied()
        .find(|l| l.name() == name || l.fence_tags().contains(&name.as_str()))
}

/// The language of a file, by extension.
pub fn by_extension(ext: &str) -> Option<&'static dyn Language> {
    LANGUAGES.iter().copied().find(|l| l.extensions().contains(&ext))
}

/// The names of every language, for messages.
pub fn names() -> Vec<&'static str> {
    LANGUAGES.iter().map(|l| l.name()).collect()
}

/// A parser for one language, reused over the passes of a trajectory.
pub struct Parser {
    inner: tree_sitter::Parser,
}

impl Parser {
    /// A parser for `lang`.
    pub fn new(lang: &dyn Language) -> Self {
        let mut inner = tree_sitter::Parser::new();
        // A grammar crate built against an incompatible tree-sitter ABI is a build error we
        // would see in every test, not a user input.
        inner
            .set_language(&lang.grammar())
            .expect("tree-sitter grammar ABI matches the tree-sitter crate");
        Parser { inner }
    }

    /// Parses `src` (tree-sitter always returns a tree when no timeout or cancellation is set).
    pub fn parse(&mut self, src: &str) -> Tree {
        self.inner
            .parse(src, None)
            .expect("tree-sitter parses without a timeout or cancellation flag")
    }
}

/// The first syntax error of a tree-sitter parse, as the row a compiler would report: for an
/// `ERROR` node, its first child that is not a complete statement (tree-sitter often wraps valid
/// statements before the culprit into the error); for a `MISSING` token, the row where the
/// construct that misses it starts (CPython's "'(' was never closed" points at the opener).
pub fn first_syntax_error(tree: &Tree) -> Option<usize> {
    let root = tree.root_node();
    if !root.has_error() {
        return None;
    }
    let mut best: Option<usize> = None;
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if !node.has_error() {
            continue;
        }
        let row = if node.is_error() {
            Some(error_row(node))
        } else if node.is_missing() {
            Some(
                node.parent()
                    .map_or(node.start_position().row, |p| p.start_position().row),
            )
        } else {
            None
        };
        if let Some(r) = row {
            best = Some(best.map_or(r, |b| b.min(r)));
            continue;
        }
        let mut cursor = node.walk();
        for child in node.children(&mut cursor) {
            if best.is_none_or(|b| child.start_position().row <= b) {
                stack.push(child);
            }
        }
    }
    best
}

/// The row of an `ERROR` node's first loose token (a leaf, or a nested error or missing token,
/// also inside a child statement that holds one), or its start.
fn error_row(node: Node) -> usize {
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        if child.is_error() {
            return error_row(child);
        }
        if child.is_missing() || child.child_count() == 0 {
            return child.start_position().row;
        }
        if child.has_error() {
            let mut inner = None;
            visit(child, &mut |n| {
                if inner.is_none() && (n.is_error() || n.is_missing()) {
                    inner = Some(if n.is_error() {
                        error_row(n)
                    } else {
                        n.start_position().row
                    });
                }
            });
            if let Some(row) = inner {
                return row;
            }
        }
    }
    node.start_position().row
}

/// The text of `node` in `src`.
pub(crate) fn text<'s>(node: Node, src: &'s str) -> &'s str {
    &src[node.byte_range()]
}

/// Calls `f` on every node under `node` (itself included), in document order, without recursion.
pub(crate) fn visit<'t>(node: Node<'t>, f: &mut impl FnMut(Node<'t>)) {
    let mut cursor = node.walk();
    loop {
        f(cursor.node());
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.node() == node {
                return;
            }
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return;
            }
        }
    }
}

/// Constructs named by node kinds: the labels of every node whose kind is a key of `table`.
pub(crate) fn constructs_by_kind(tree: &Tree, table: &[(&str, &'static str)]) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    visit(tree.root_node(), &mut |n| {
        if let Some((_, label)) = table.iter().find(|(k, _)| *k == n.kind()) {
            out.insert(*label);
        }
    });
    out
}

/// The 1-based rows and rules `lang` flags in `src`, sorted (for the checkers' tests).
#[cfg(test)]
pub(crate) fn flags_of(lang: &dyn Language, src: &str) -> Vec<(usize, &'static str)> {
    let tree = Parser::new(lang).parse(src);
    let mut v: Vec<(usize, &'static str)> = lang
        .check(src, &tree, &lang.context(src))
        .into_iter()
        .map(|f| (f.row + 1, f.rule))
        .collect();
    v.sort();
    v
}
