//! Python: the checker that stands in for the pylint error set of the LintSeq reference
//! (`src/utils.py::file_linter`: every E and F message plus W0311 bad-indentation), in process on
//! tree-sitter-python. Rules, in the order they are tried:
//!
//! 1. **Syntax** (E0001; only the first error, as CPython stops there):
//!    - indentation as CPython's tokenizer sees it (logical lines: brackets, strings and `\`
//!      continuations join physical lines): *unexpected indent*, *unindent does not match any outer
//!      level*, and *expected an indented block*, reported on the block's header line as the
//!      reference remaps E0001's "after 'for' statement on line N" (so the header goes, with its
//!      children); a body of comments only counts as empty;
//!    - tree-sitter `ERROR` and `MISSING` nodes (see [`super::first_syntax_error`]), and a `try`
//!      with no `except` or `finally` (on the `try` line);
//!    - `return`/`yield`/`await` outside a function, `break`/`continue` outside a loop (E0104,
//!      E0105, E0103: CPython rejects them at compile time, tree-sitter accepts them).
//! 2. **Bad indentation** (W0311): a statement indented other than depth × the program's own step
//!    (pylint's default step is 4; the program's own is used, so programs indented by 2 or by tabs
//!    are not wiped out as the reference's are — see the research notes, §3).
//! 3. **Undefined names** (E0602, E0601/E0606): every load of a name with Python's scoping —
//!    module, class, function, lambda and comprehension scopes; class scopes hidden from the
//!    functions inside them; `global`/`nonlocal`; bindings by assignment, augmented assignment,
//!    `for`, `with … as`, `except … as`, imports, `def`/`class`, parameters, walrus (to the enclosing
//!    non-comprehension scope), `match` captures, type parameters; `del`; builtins and module
//!    dunders. Where a scope runs its statements in order (module and class bodies, a function's own
//!    body, comprehensions evaluated in place), a load before the first binding, or after a `del`
//!    with no binding in between, is flagged; loads from nested functions and lambdas only need a
//!    binding somewhere. A `from m import *` makes every module-level name possible.
//! 4. **Members of local classes** (E1101): `self.x`/`cls.x` in a method, where `x` is neither bound
//!    in the class body nor assigned through `self`/`cls` in any method of the class or its bases,
//!    when every base is a local class (or `object`) and nothing dynamic is in play (`__getattr__`,
//!    `__getattribute__`, `__setattr__`, `setattr`, `__dict__`, a metaclass, class decorators other
//!    than `dataclass`). Dunder names always resolve.
//!
//! Imports are never flagged: pylint's E0401 depends on what is installed where it runs (the
//! reference deletes every import of a package its machine lacks, and everything using it).

use std::collections::{BTreeSet, HashMap, HashSet};

use tree_sitter::{Node, Tree};

use super::{Context, Flag, Language, constructs_by_kind, first_syntax_error, text, visit};

/// Python.
pub struct Python;

impl Language for Python {
    fn name(&self) -> &'static str {
        "python"
    }
    fn extensions(&self) -> &'static [&'static str] {
        &["py"]
    }
    fn fence_tags(&self) -> &'static [&'static str] {
        &["python", "py", "python3"]
    }
    fn comment_prefixes(&self) -> &'static [&'static str] {
        &["#"]
    }
    fn grammar(&self) -> tree_sitter::Language {
        tree_sitter_python::LANGUAGE.into()
    }

    fn context(&self, program: &str) -> Context {
        Context {
            indent_unit: indent_unit(&logical_lines(program)),
        }
    }

    fn check(&self, src: &str, tree: &Tree, ctx: &Context) -> Vec<Flag> {
        let lines = logical_lines(src);
        let syntax = [
            indentation_error(&lines),
            first_syntax_error(tree),
            incomplete_block(tree.root_node()),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(row) = syntax {
            return vec![Flag { row, rule: "syntax" }];
        }
        let mut walker = Walker::new(src);
        walker.walk_module(tree.root_node());
        if let Some(row) = walker.misplaced.iter().min() {
            return vec![Flag {
                row: *row,
                rule: "syntax",
            }];
        }
        let mut flags = bad_indentation(&lines, ctx.indent_unit);
        flags.extend(walker.undefined());
        flags.extend(walker.missing_members());
        flags
    }

    fn constructs(&self, src: &str, tree: &Tree) -> BTreeSet<&'static str> {
        let mut out = constructs_by_kind(
            tree,
            &[
                ("function_definition", "function"),
                ("class_definition", "class"),
                ("decorator", "decorator"),
                ("lambda", "lambda"),
                ("list_comprehension", "comprehension"),
                ("set_comprehension", "comprehension"),
                ("dictionary_comprehension", "comprehension"),
                ("generator_expression", "comprehension"),
                ("yield", "generator"),
                ("try_statement", "exceptions"),
                ("raise_statement", "exceptions"),
                ("with_statement", "context-manager"),
                ("for_statement", "loop"),
                ("while_statement", "loop"),
                ("import_statement", "import"),
                ("import_from_statement", "import"),
                ("match_statement", "pattern-matching"),
                ("await", "async"),
                ("type", "type-hints"),
                ("interpolation", "f-string"),
            ],
        );
        visit(tree.root_node(), &mut |n| {
            if n.kind() == "function_definition" && n.child(0).is_some_and(|c| c.kind() == "async") {
                out.insert("async");
            }
            if n.kind() == "function_definition"
                && let Some(name) = n.child_by_field_name("name")
            {
                let name = text(name, src);
                let recursive = n.child_by_field_name("body").is_some_and(|body| {
                    let mut found = false;
                    visit(body, &mut |c| {
                        found |= c.kind() == "call"
                            && c.child_by_field_name("function").is_some_and(|f| text(f, src) == name);
                    });
                    found
                });
                if recursive {
                    out.insert("recursion");
                }
            }
        });
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Logical lines and indentation (CPython's tokenizer, reduced to what indentation needs).

/// A logical line: its first physical row, the width of its indentation, and whether it ends with
/// a `:` outside brackets (a block header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogicalLine {
    row: usize,
    indent: usize,
    header: bool,
}

/// The logical lines of `src`. Blank and comment-only lines are not logical lines; tabs advance to
/// the next multiple of 8, as CPython counts them. A `\` continuation into a blank line or the end
/// of the file ends the list with a line of impossible indentation at the backslash's row, which
/// [`indentation_error`] reports.
fn logical_lines(src: &str) -> Vec<LogicalLine> {
    let mut out = Vec::new();
    let mut depth = 0usize; // bracket depth
    let mut string: Option<(u8, bool)> = None; // (quote, triple)
    let mut continued = false; // inside a logical line that started on an earlier row
    let mut last = b' '; // last significant character of the current logical line
    let mut dangling: Option<usize> = None; // a `\` continuation outside strings, by row
    for (row, line) in src.split('\n').enumerate() {
        if let Some(r) = dangling.take()
            && line.trim().is_empty()
        {
            // CPython joins the blank line and ends the statement there: a syntax error.
            out.push(LogicalLine {
                row: r,
                indent: usize::MAX,
                header: false,
            });
            return out;
        }
        // Bytes: every character that matters is ASCII, and UTF-8 never reuses ASCII bytes.
        let chars = line.as_bytes();
        let mut i = 0;
        if !continued && string.is_none() {
            let mut width = 0;
            while i < chars.len() && matches!(chars[i], b' ' | b'\t' | 0x0c) {
                width = match chars[i] {
                    b'\t' => (width / 8 + 1) * 8,
                    0x0c => 0,
                    _ => width + 1,
                };
                i += 1;
            }
            if i == chars.len() || chars[i] == b'#' || chars[i] == b'\r' && i + 1 == chars.len() {
                continue;
            }
            out.push(LogicalLine {
                row,
                indent: width,
                header: false,
            });
            last = b' ';
        }
        let mut backslash = false;
        while i < chars.len() {
            let c = chars[i];
            if let Some((q, triple)) = string {
                if c == b'\\' {
                    // A backslash at the end of the row continues even a one-quote string.
                    backslash = i + 1 == chars.len();
                    i += 2;
                    continue;
                }
                if c == q {
                    if !triple {
                        string = None;
                    } else if chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q) {
                        string = None;
                        i += 3;
                        last = q;
                        continue;
                    }
                }
                i += 1;
                last = q;
                continue;
            }
            match c {
                b'#' => break,
                b'"' | b'\'' => {
                    let triple = chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c);
                    string = Some((c, triple));
                    i += if triple { 3 } else { 1 };
                    last = c;
                    continue;
                }
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                b'\\' if i + 1 == chars.len() => backslash = true,
                _ => {}
            }
            if !c.is_ascii_whitespace() {
                last = c;
            }
            i += 1;
        }
        // A one-quote string never spans rows (an unterminated one is a syntax error tree-sitter
        // reports); a triple-quoted one does.
        if matches!(string, Some((_, false))) && !backslash {
            string = None;
        }
        if backslash && string.is_none() {
            dangling = Some(row);
        }
        continued = depth > 0 || backslash || string.is_some();
        if !continued && let Some(l) = out.last_mut() {
            l.header = last == b':';
        }
    }
    if let Some(r) = dangling {
        out.push(LogicalLine {
            row: r,
            indent: usize::MAX,
            header: false,
        }); // `\` at the end of the file
    }
    out
}

/// The program's indentation step: the first increase of indentation after a block header.
fn indent_unit(lines: &[LogicalLine]) -> Option<usize> {
    lines
        .windows(2)
        .find(|w| w[0].header && w[1].indent > w[0].indent)
        .map(|w| w[1].indent - w[0].indent)
}

/// The first indentation error CPython's tokenizer would raise, as a row.
fn indentation_error(lines: &[LogicalLine]) -> Option<usize> {
    let mut stack = vec![0usize];
    let mut header: Option<usize> = None;
    for l in lines {
        let top = *stack.last()?;
        if let Some(h) = header.take() {
            if l.indent <= top {
                return Some(h); // expected an indented block (remapped to the header)
            }
            stack.push(l.indent);
        } else if l.indent > top {
            return Some(l.row); // unexpected indent
        } else {
            while stack.last().is_some_and(|&t| l.indent < t) {
                stack.pop();
            }
            if stack.last() != Some(&l.indent) {
                return Some(l.row); // unindent does not match any outer indentation level
            }
        }
        if l.header {
            header = Some(l.row);
        }
    }
    header
}

/// W0311 with the program's own step: statements indented other than depth × step.
fn bad_indentation(lines: &[LogicalLine], unit: Option<usize>) -> Vec<Flag> {
    let Some(unit) = unit else { return Vec::new() };
    let mut stack = vec![0usize];
    let mut out = Vec::new();
    for l in lines {
        while stack.last().is_some_and(|&t| l.indent < t) {
            stack.pop();
        }
        if stack.last().is_some_and(|&t| l.indent > t) {
            stack.push(l.indent);
        }
        if l.indent != (stack.len() - 1) * unit {
            out.push(Flag {
                row: l.row,
                rule: "bad-indentation",
            });
        }
    }
    out
}

/// A block with no statement (comments only, or nothing), or a `try` with neither `except` nor
/// `finally` (tree-sitter accepts both): the header's row. CPython reports the missing handler on
/// the line after the block; deleting the `try` with its block is what makes the file valid.
fn incomplete_block(root: Node) -> Option<usize> {
    let mut found: Option<usize> = None;
    visit(root, &mut |n| {
        if n.kind() == "try_statement" {
            let mut cursor = n.walk();
            let handled = n
                .named_children(&mut cursor)
                .any(|c| matches!(c.kind(), "except_clause" | "except_group_clause" | "finally_clause"));
            if !handled {
                let row = n.start_position().row;
                found = Some(found.map_or(row, |f: usize| f.min(row)));
            }
        }
        if n.kind() == "block" {
            let mut cursor = n.walk();
            let empty = n.named_children(&mut cursor).all(|c| c.kind() == "comment");
            if empty && let Some(parent) = n.parent() {
                let row = parent.start_position().row;
                found = Some(found.map_or(row, |f: usize| f.min(row)));
            }
        }
    });
    found
}

// ---------------------------------------------------------------------------------------------
// Names.

/// Builtins of CPython 3.12 (`dir(builtins)`) and the module attributes every module has.
const BUILTINS: &[&str] = &[
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "BaseException",
    "BaseExceptionGroup",
    "BlockingIOError",
    "BrokenPipeError",
    "BufferError",
    "BytesWarning",
    "ChildProcessError",
    "ConnectionAbortedError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "DeprecationWarning",
    "EOFError",
    "Ellipsis",
    "EncodingWarning",
    "EnvironmentError",
    "Exception",
    "ExceptionGroup",
    "False",
    "FileExistsError",
    "FileNotFoundError",
    "FloatingPointError",
    "FutureWarning",
    "GeneratorExit",
    "IOError",
    "ImportError",
    "ImportWarning",
    "IndentationError",
    "IndexError",
    "InterruptedError",
    "IsADirectoryError",
    "KeyError",
    "KeyboardInterrupt",
    "LookupError",
    "MemoryError",
    "ModuleNotFoundError",
    "NameError",
    "None",
    "NotADirectoryError",
    "NotImplemented",
    "NotImplementedError",
    "OSError",
    "OverflowError",
    "PendingDeprecationWarning",
    "PermissionError",
    "ProcessLookupError",
    "RecursionError",
    "ReferenceError",
    "ResourceWarning",
    "RuntimeError",
    "RuntimeWarning",
    "StopAsyncIteration",
    "StopIteration",
    "SyntaxError",
    "SyntaxWarning",
    "SystemError",
    "SystemExit",
    "TabError",
    "TimeoutError",
    "True",
    "TypeError",
    "UnboundLocalError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "UnicodeError",
    "UnicodeTranslateError",
    "UnicodeWarning",
    "UserWarning",
    "ValueError",
    "Warning",
    "ZeroDivisionError",
    "abs",
    "aiter",
    "all",
    "anext",
    "any",
    "ascii",
    "bin",
    "bool",
    "breakpoint",
    "bytearray",
    "bytes",
    "callable",
    "chr",
    "classmethod",
    "compile",
    "complex",
    "copyright",
    "credits",
    "delattr",
    "dict",
    "dir",
    "divmod",
    "enumerate",
    "eval",
    "exec",
    "exit",
    "filter",
    "float",
    "format",
    "frozenset",
    "getattr",
    "globals",
    "hasattr",
    "hash",
    "help",
    "hex",
    "id",
    "input",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "license",
    "list",
    "locals",
    "map",
    "max",
    "memoryview",
    "min",
    "next",
    "object",
    "oct",
    "open",
    "ord",
    "pow",
    "print",
    "property",
    "quit",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "setattr",
    "slice",
    "sorted",
    "staticmethod",
    "str",
    "sum",
    "super",
    "tuple",
    "type",
    "vars",
    "zip",
    "__import__",
    "__build_class__",
    "__debug__",
    "__name__",
    "__doc__",
    "__file__",
    "__spec__",
    "__loader__",
    "__package__",
    "__builtins__",
    "__path__",
    "__annotations__",
    "__dict__",
    "__cached__",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScopeKind {
    Module,
    Class,
    Function,
    Comprehension,
}

/// A binding (`del: false`) or deletion of a name at a byte position of its scope.
#[derive(Debug, Clone, Copy)]
struct Event {
    pos: usize,
    del: bool,
}

#[derive(Debug)]
struct Scope<'s> {
    kind: ScopeKind,
    parent: Option<usize>,
    events: HashMap<&'s str, Vec<Event>>,
    globals: HashSet<&'s str>,
    nonlocals: HashSet<&'s str>,
    star_import: bool,
    /// The class this scope is the body of (Class scopes).
    class: Option<usize>,
}

/// A load of a name.
#[derive(Debug)]
struct Use<'s> {
    name: &'s str,
    scope: usize,
    pos: usize,
    row: usize,
}

/// A class of the program, for member checks.
#[derive(Debug, Default)]
struct ClassInfo<'s> {
    name: &'s str,
    scope: usize,
    bases: Vec<&'s str>,
    /// Something makes its attributes unknowable (see the module docs).
    opaque: bool,
    /// Attributes assigned through `self`/`cls` in its methods.
    assigned: HashSet<&'s str>,
    /// `self.x`/`cls.x` loads in its methods: (attribute, row).
    loads: Vec<(&'s str, usize)>,
}

/// Where the walk is: the method's class and its `self`/`cls` name, loop depth, function depth.
#[derive(Debug, Clone, Copy, Default)]
struct Frame<'s> {
    method: Option<(usize, &'s str)>,
    in_function: bool,
    in_loop: bool,
}

struct Walker<'s> {
    src: &'s str,
    scopes: Vec<Scope<'s>>,
    uses: Vec<Use<'s>>,
    classes: Vec<ClassInfo<'s>>,
    /// Rows of `return`/`yield`/`await`/`break`/`continue` where Python rejects them.
    misplaced: Vec<usize>,
    /// `from __future__ import annotations`: annotations are strings, never evaluated.
    lazy_annotations: bool,
}

impl<'s> Walker<'s> {
    fn new(src: &'s str) -> Self {
        Walker {
            src,
            scopes: Vec::new(),
            uses: Vec::new(),
            classes: Vec::new(),
            misplaced: Vec::new(),
            lazy_annotations: false,
        }
    }

    fn text(&self, n: Node) -> &'s str {
        text(n, self.src)
    }

    fn new_scope(&mut self, kind: ScopeKind, parent: Option<usize>) -> usize {
        self.scopes.push(Scope {
            kind,
            parent,
            events: HashMap::new(),
            globals: HashSet::new(),
            nonlocals: HashSet::new(),
            star_import: false,
            class: None,
        });
        self.scopes.len() - 1
    }

    fn walk_module(&mut self, root: Node) {
        let mut cursor = root.walk();
        self.lazy_annotations = root
            .named_children(&mut cursor)
            .any(|c| c.kind() == "future_import_statement" && text(c, self.src).contains("annotations"));
        let s = self.new_scope(ScopeKind::Module, None);
        self.walk_children(root, s, Frame::default());
    }

    /// Records a binding of `name` in `scope` at `pos` (a `global` name binds in the module).
    fn bind(&mut self, name: &'s str, scope: usize, pos: usize) {
        self.event(name, scope, pos, false);
    }

    fn event(&mut self, name: &'s str, scope: usize, pos: usize, del: bool) {
        let (target, pos) = if self.scopes[scope].globals.contains(name) {
            (0, 0)
        } else if self.scopes[scope].nonlocals.contains(name) {
            return; // the enclosing function's binding stands
        } else {
            (scope, pos)
        };
        self.scopes[target]
            .events
            .entry(name)
            .or_default()
            .push(Event { pos, del });
    }

    fn load(&mut self, n: Node, scope: usize) {
        self.uses.push(Use {
            name: self.text(n),
            scope,
            pos: n.start_byte(),
            row: n.start_position().row,
        });
    }

    fn walk_children(&mut self, n: Node, scope: usize, frame: Frame<'s>) {
        let mut cursor = n.walk();
        for c in n.named_children(&mut cursor) {
            self.walk(c, scope, frame);
        }
    }

    /// Walks an expression or statement in load context.
    fn walk(&mut self, n: Node<'_>, scope: usize, frame: Frame<'s>) {
        match n.kind() {
            "identifier" => self.load(n, scope),
            "comment" | "string_start" | "string_content" | "string_end" | "escape_sequence" => {}
            "attribute" => {
                if let Some(obj) = n.child_by_field_name("object") {
                    self.walk(obj, scope, frame);
                    self.member_load(obj, n, frame);
                }
            }
            "keyword_argument" => {
                if let Some(v) = n.child_by_field_name("value") {
                    self.walk(v, scope, frame);
                }
            }
            "decorated_definition" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                let decorators: Vec<Node> = children.iter().copied().filter(|c| c.kind() == "decorator").collect();
                for d in &decorators {
                    self.walk_children(*d, scope, frame);
                }
                if let Some(def) = n.child_by_field_name("definition") {
                    self.definition(def, scope, frame, &decorators);
                }
            }
            "function_definition" | "class_definition" => self.definition(n, scope, frame, &[]),
            "lambda" => {
                let inner = self.new_scope(ScopeKind::Function, Some(scope));
                if let Some(p) = n.child_by_field_name("parameters") {
                    self.parameters(p, scope, inner, frame);
                }
                if let Some(b) = n.child_by_field_name("body") {
                    let f = Frame {
                        in_function: true,
                        in_loop: false,
                        ..frame
                    };
                    self.walk(b, inner, f);
                }
            }
            "list_comprehension" | "set_comprehension" | "dictionary_comprehension" | "generator_expression" => {
                self.comprehension(n, scope, frame);
            }
            "assignment" => {
                if let Some(r) = n.child_by_field_name("right") {
                    self.walk(r, scope, frame);
                }
                if let Some(t) = n.child_by_field_name("type") {
                    self.walk(t, scope, frame);
                }
                if let Some(l) = n.child_by_field_name("left") {
                    self.target(l, scope, n.end_byte(), frame);
                }
            }
            "augmented_assignment" => {
                if let Some(r) = n.child_by_field_name("right") {
                    self.walk(r, scope, frame);
                }
                if let Some(l) = n.child_by_field_name("left") {
                    self.walk(l, scope, frame);
                    self.target(l, scope, n.end_byte(), frame);
                }
            }
            "named_expression" => {
                if let Some(v) = n.child_by_field_name("value") {
                    self.walk(v, scope, frame);
                }
                if let Some(name) = n.child_by_field_name("name") {
                    let mut s = scope;
                    while self.scopes[s].kind == ScopeKind::Comprehension {
                        s = self.scopes[s].parent.unwrap_or(0);
                    }
                    self.bind(self.text(name), s, n.end_byte());
                }
            }
            "for_statement" => {
                let right_end = n.child_by_field_name("right").map_or(n.start_byte(), |r| {
                    self.walk(r, scope, frame);
                    r.end_byte()
                });
                if let Some(l) = n.child_by_field_name("left") {
                    self.target(l, scope, right_end, frame);
                }
                let inner = Frame { in_loop: true, ..frame };
                if let Some(b) = n.child_by_field_name("body") {
                    self.walk(b, scope, inner);
                }
                if let Some(a) = n.child_by_field_name("alternative") {
                    self.walk(a, scope, frame);
                }
            }
            "while_statement" => {
                if let Some(c) = n.child_by_field_name("condition") {
                    self.walk(c, scope, frame);
                }
                if let Some(b) = n.child_by_field_name("body") {
                    self.walk(b, scope, Frame { in_loop: true, ..frame });
                }
                if let Some(a) = n.child_by_field_name("alternative") {
                    self.walk(a, scope, frame);
                }
            }
            "as_pattern" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for c in children {
                    if c.kind() == "as_pattern_target" {
                        self.target_children(c, scope, n.end_byte(), frame);
                    } else {
                        self.walk(c, scope, frame);
                    }
                }
            }
            "import_statement" => {
                let mut cursor = n.walk();
                let names: Vec<Node> = n.children_by_field_name("name", &mut cursor).collect();
                for name in names {
                    let bound = match name.kind() {
                        "aliased_import" => name.child_by_field_name("alias"),
                        _ => name.named_child(0),
                    };
                    if let Some(b) = bound {
                        self.bind(self.text(b), scope, n.end_byte());
                    }
                }
            }
            "import_from_statement" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                if children.iter().any(|c| c.kind() == "wildcard_import") {
                    self.scopes[scope].star_import = true;
                }
                let mut cursor = n.walk();
                let names: Vec<Node> = n.children_by_field_name("name", &mut cursor).collect();
                for name in names {
                    let bound = match name.kind() {
                        "aliased_import" => name.child_by_field_name("alias"),
                        _ => {
                            let mut c = name.walk();
                            name.named_children(&mut c).last()
                        }
                    };
                    if let Some(b) = bound {
                        self.bind(self.text(b), scope, n.end_byte());
                    }
                }
            }
            "future_import_statement" => {}
            "type" if self.lazy_annotations => {}
            "global_statement" | "nonlocal_statement" => {
                let mut cursor = n.walk();
                let names: Vec<&'s str> = n
                    .named_children(&mut cursor)
                    .filter(|c| c.kind() == "identifier")
                    .map(|c| text(c, self.src))
                    .collect();
                for name in names {
                    if n.kind() == "global_statement" {
                        self.scopes[scope].globals.insert(name);
                    } else {
                        self.scopes[scope].nonlocals.insert(name);
                    }
                }
            }
            "delete_statement" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for c in children {
                    self.delete(c, scope, n.end_byte(), frame);
                }
            }
            "case_clause" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for c in children {
                    if c.kind() == "case_pattern" {
                        self.pattern(c, scope, n.start_byte(), frame);
                    } else {
                        self.walk(c, scope, frame);
                    }
                }
            }
            "type_alias_statement" => {
                if let Some(l) = n.child_by_field_name("left") {
                    let mut first = None;
                    visit(l, &mut |c| {
                        if first.is_none() && c.kind() == "identifier" {
                            first = Some(c);
                        }
                    });
                    if let Some(name) = first {
                        self.bind(self.text(name), scope, n.start_byte());
                    }
                }
                // The right side may use the alias's type parameters: not checked.
            }
            "dotted_name" => {
                if let Some(first) = n.named_child(0) {
                    self.load(first, scope);
                }
            }
            "return_statement" | "yield" | "await" => {
                if !frame.in_function {
                    self.misplaced.push(n.start_position().row);
                }
                self.walk_children(n, scope, frame);
            }
            "break_statement" | "continue_statement" => {
                if !frame.in_loop {
                    self.misplaced.push(n.start_position().row);
                }
            }
            _ => self.walk_children(n, scope, frame),
        }
    }

    /// A `def` or `class` (with its decorators, already walked).
    fn definition(&mut self, n: Node, scope: usize, frame: Frame<'s>, decorators: &[Node]) {
        let name = n.child_by_field_name("name").map(|c| self.text(c));
        if n.kind() == "function_definition" {
            let inner = self.new_scope(ScopeKind::Function, Some(scope));
            if let Some(tp) = n.child_by_field_name("type_parameters") {
                self.type_parameters(tp, inner);
            }
            let mut method = frame.method;
            if let Some(p) = n.child_by_field_name("parameters") {
                self.parameters(p, scope, inner, frame);
                let class = self.scopes[scope].class;
                let is_static = decorators
                    .iter()
                    .any(|d| self.text(*d).trim_start_matches('@').trim() == "staticmethod");
                if let Some(class) = class
                    && !is_static
                {
                    let mut cursor = p.walk();
                    let first = p.named_children(&mut cursor).next();
                    if let Some(first) = first.filter(|f| f.kind() == "identifier") {
                        method = Some((class, self.text(first)));
                    }
                }
            }
            if let Some(r) = n.child_by_field_name("return_type") {
                self.walk(r, scope, frame);
            }
            if let Some(b) = n.child_by_field_name("body") {
                let f = Frame {
                    method,
                    in_function: true,
                    in_loop: false,
                };
                self.walk(b, inner, f);
            }
        } else {
            if let Some(sc) = n.child_by_field_name("superclasses") {
                self.walk(sc, scope, frame);
            }
            let inner = self.new_scope(ScopeKind::Class, Some(scope));
            if let Some(tp) = n.child_by_field_name("type_parameters") {
                self.type_parameters(tp, inner);
            }
            let class = self.classes.len();
            let mut info = ClassInfo {
                name: name.unwrap_or(""),
                scope: inner,
                ..ClassInfo::default()
            };
            if let Some(sc) = n.child_by_field_name("superclasses") {
                let mut cursor = sc.walk();
                for b in sc.named_children(&mut cursor) {
                    match b.kind() {
                        "identifier" => info.bases.push(text(b, self.src)),
                        _ => info.opaque = true, // dotted bases, metaclass=..., generics
                    }
                }
            }
            if let Some(body) = n.child_by_field_name("body") {
                info.assigned.extend(self.slots(body));
            }
            let body_text = self.text(n);
            info.opaque |= body_text.contains("setattr") || body_text.contains("__dict__");
            info.opaque |= decorators.iter().any(|d| {
                let t = self.text(*d).trim_start_matches('@').trim();
                !(t == "dataclass" || t.starts_with("dataclass(") || t.starts_with("dataclasses.dataclass"))
            });
            self.classes.push(info);
            self.scopes[inner].class = Some(class);
            if let Some(b) = n.child_by_field_name("body") {
                let f = Frame {
                    method: None,
                    in_function: false,
                    in_loop: false,
                };
                self.walk(b, inner, f);
            }
        }
        if let Some(name) = name {
            self.bind(name, scope, n.end_byte());
        }
    }

    /// The names a class body's `__slots__ = ...` lists (its string literals).
    fn slots(&self, body: Node) -> Vec<&'s str> {
        let mut out = Vec::new();
        let mut cursor = body.walk();
        for stmt in body.named_children(&mut cursor) {
            let Some(assign) = stmt.named_child(0).filter(|a| a.kind() == "assignment") else {
                continue;
            };
            let is_slots = assign
                .child_by_field_name("left")
                .is_some_and(|l| self.text(l) == "__slots__");
            if let (true, Some(right)) = (is_slots, assign.child_by_field_name("right")) {
                visit(right, &mut |c| {
                    if c.kind() == "string_content" {
                        out.push(text(c, self.src));
                    }
                });
            }
        }
        out
    }

    fn type_parameters(&mut self, tp: Node, inner: usize) {
        let mut names = Vec::new();
        visit(tp, &mut |c| {
            if c.kind() == "identifier" {
                names.push(c);
            }
        });
        for c in names {
            self.bind(self.text(c), inner, 0);
        }
    }

    /// Parameters: defaults and annotations load in the outer scope, names bind in the inner one.
    fn parameters(&mut self, p: Node, outer: usize, inner: usize, frame: Frame<'s>) {
        let mut cursor = p.walk();
        let params: Vec<Node> = p.named_children(&mut cursor).collect();
        for param in params {
            match param.kind() {
                "identifier" => self.bind(self.text(param), inner, 0),
                "default_parameter" | "typed_default_parameter" => {
                    if let Some(v) = param.child_by_field_name("value") {
                        self.walk(v, outer, frame);
                    }
                    if let Some(t) = param.child_by_field_name("type") {
                        self.walk(t, outer, frame);
                    }
                    if let Some(name) = param.child_by_field_name("name") {
                        self.bind(self.text(name), inner, 0);
                    }
                }
                "typed_parameter" => {
                    if let Some(t) = param.child_by_field_name("type") {
                        self.walk(t, outer, frame);
                    }
                    let mut c = param.walk();
                    let first = param.named_children(&mut c).next();
                    if let Some(first) = first {
                        self.bind_pattern_names(first, inner);
                    }
                }
                "list_splat_pattern" | "dictionary_splat_pattern" => self.bind_pattern_names(param, inner),
                _ => {} // `*`, `/` separators
            }
        }
    }

    fn bind_pattern_names(&mut self, n: Node, scope: usize) {
        let mut names = Vec::new();
        visit(n, &mut |c| {
            if c.kind() == "identifier" {
                names.push(c);
            }
        });
        for c in names {
            self.bind(self.text(c), scope, 0);
        }
    }

    fn comprehension(&mut self, n: Node, scope: usize, frame: Frame<'s>) {
        let inner = self.new_scope(ScopeKind::Comprehension, Some(scope));
        let mut cursor = n.walk();
        let children: Vec<Node> = n.named_children(&mut cursor).collect();
        let mut first = true;
        for c in &children {
            if c.kind() == "for_in_clause" {
                if let Some(r) = c.child_by_field_name("right") {
                    // The first iterable is evaluated in the enclosing scope.
                    self.walk(r, if first { scope } else { inner }, frame);
                }
                first = false;
                if let Some(l) = c.child_by_field_name("left") {
                    self.target(l, inner, 0, frame);
                }
            }
        }
        for c in children {
            if c.kind() != "for_in_clause" {
                self.walk(c, inner, frame);
            }
        }
    }

    /// An assignment target: names bind at `pos`; attributes and subscripts load their objects.
    fn target(&mut self, n: Node, scope: usize, pos: usize, frame: Frame<'s>) {
        match n.kind() {
            "identifier" => self.bind(self.text(n), scope, pos),
            "attribute" => {
                if let Some(obj) = n.child_by_field_name("object") {
                    self.walk(obj, scope, frame);
                    if let Some(attr) = n.child_by_field_name("attribute")
                        && obj.kind() == "identifier"
                    {
                        // Any `x.a = ...` in a method may set an instance attribute (`self =
                        // object.__new__(cls)` in `__new__` or a factory); `C.a = ...` anywhere
                        // sets one on a local class `C`.
                        let a = self.text(attr);
                        if let Some((class, _)) = frame.method {
                            self.classes[class].assigned.insert(a);
                        }
                        let named = self.text(obj);
                        if let Some(c) = self.classes.iter_mut().find(|c| c.name == named) {
                            c.assigned.insert(a);
                        }
                    }
                }
            }
            "subscript" => self.walk(n, scope, frame),
            _ => self.target_children(n, scope, pos, frame),
        }
    }

    fn target_children(&mut self, n: Node, scope: usize, pos: usize, frame: Frame<'s>) {
        let mut cursor = n.walk();
        let children: Vec<Node> = n.named_children(&mut cursor).collect();
        for c in children {
            self.target(c, scope, pos, frame);
        }
    }

    fn delete(&mut self, n: Node, scope: usize, pos: usize, frame: Frame<'s>) {
        match n.kind() {
            "identifier" => {
                self.load(n, scope);
                self.event(self.text(n), scope, pos, true);
            }
            "expression_list" | "tuple" | "list" | "parenthesized_expression" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for c in children {
                    self.delete(c, scope, pos, frame);
                }
            }
            _ => self.walk(n, scope, frame),
        }
    }

    /// A `case` pattern: bare names capture (bind), dotted names and class names load.
    fn pattern(&mut self, n: Node, scope: usize, pos: usize, frame: Frame<'s>) {
        match n.kind() {
            "dotted_name" => {
                let mut cursor = n.walk();
                let parts: Vec<Node> = n.named_children(&mut cursor).collect();
                if parts.len() == 1 {
                    let name = self.text(parts[0]);
                    if name != "_" {
                        self.bind(name, scope, pos);
                    }
                } else if let Some(first) = parts.first() {
                    self.load(*first, scope);
                }
            }
            "class_pattern" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for (i, c) in children.into_iter().enumerate() {
                    if i == 0 && c.kind() == "dotted_name" {
                        if let Some(first) = c.named_child(0) {
                            self.load(first, scope);
                        }
                    } else {
                        self.pattern(c, scope, pos, frame);
                    }
                }
            }
            "keyword_pattern" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).skip(1).collect();
                for c in children {
                    self.pattern(c, scope, pos, frame);
                }
            }
            "identifier" => {
                let name = self.text(n);
                if name != "_" {
                    self.bind(name, scope, pos);
                }
            }
            "as_pattern" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for c in children {
                    if c.kind() == "as_pattern_target" {
                        self.target_children(c, scope, pos, frame);
                    } else {
                        self.pattern(c, scope, pos, frame);
                    }
                }
            }
            "string" | "integer" | "float" | "true" | "false" | "none" | "concatenated_string" => {}
            _ => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for c in children {
                    self.pattern(c, scope, pos, frame);
                }
            }
        }
    }

    /// Records `self.x` / `cls.x` loads in methods.
    fn member_load(&mut self, obj: Node, attr_node: Node, frame: Frame<'s>) {
        if let Some((class, me)) = frame.method
            && obj.kind() == "identifier"
            && self.text(obj) == me
            && let Some(attr) = attr_node.child_by_field_name("attribute")
        {
            let a = self.text(attr);
            let row = attr.start_position().row;
            self.classes[class].loads.push((a, row));
        }
    }

    /// Loads that resolve to nothing (E0602), or to nothing yet (E0601/E0606).
    fn undefined(&self) -> Vec<Flag> {
        let mut out = Vec::new();
        for u in &self.uses {
            if !self.resolves(u) {
                out.push(Flag {
                    row: u.row,
                    rule: "undefined-name",
                });
            }
        }
        out
    }

    fn resolves(&self, u: &Use) -> bool {
        let mut s = u.scope;
        let mut in_order = true; // only class/comprehension bodies between the use and `s`
        let mut first = true;
        loop {
            let scope = &self.scopes[s];
            let visible = first || scope.kind != ScopeKind::Class;
            if visible {
                if scope.globals.contains(u.name) {
                    s = 0;
                    first = false;
                    in_order = false;
                    continue;
                }
                if let Some(events) = scope.events.get(u.name) {
                    if scope.kind == ScopeKind::Comprehension || !in_order {
                        return events.iter().any(|e| !e.del);
                    }
                    match events.iter().filter(|e| e.pos <= u.pos).max_by_key(|e| e.pos) {
                        Some(e) => return !e.del,
                        // Bound only later: a function's local is unbound here (E0601); a module
                        // or class body looks further out at run time (`codec = codec`, builtins).
                        None if scope.kind == ScopeKind::Function => return false,
                        None => {}
                    }
                }
                if scope.kind == ScopeKind::Module && scope.star_import {
                    return true;
                }
            }
            if matches!(scope.kind, ScopeKind::Function) {
                in_order = false;
            }
            first = false;
            match scope.parent {
                Some(p) => s = p,
                None => break,
            }
        }
        BUILTINS.contains(&u.name)
            || (self.scopes[u.scope].kind == ScopeKind::Class && matches!(u.name, "__module__" | "__qualname__"))
            || (u.name == "__class__" && self.in_method(u.scope))
    }

    fn in_method(&self, mut s: usize) -> bool {
        while let Some(p) = self.scopes[s].parent {
            if self.scopes[p].kind == ScopeKind::Class {
                return true;
            }
            s = p;
        }
        false
    }

    /// `self.x` loads no class in the hierarchy defines (E1101), where the hierarchy is known. A
    /// class some other class derives from is not checked: `self` may be an instance of the
    /// subclass, which may define the attribute, or mix in another base that does.
    fn missing_members(&self) -> Vec<Flag> {
        let mut out = Vec::new();
        for (i, c) in self.classes.iter().enumerate() {
            let derived = self.classes.iter().any(|k| k.bases.contains(&c.name));
            if c.loads.is_empty() || derived {
                continue;
            }
            let Some(attrs) = self.attributes(i, &mut Vec::new()) else {
                continue;
            };
            for (a, row) in &c.loads {
                let dunder = a.starts_with("__") && a.ends_with("__");
                if !dunder && !attrs.contains(a) {
                    out.push(Flag {
                        row: *row,
                        rule: "no-member",
                    });
                }
            }
        }
        out
    }

    /// Every attribute class `i` and its bases define, or `None` when unknowable.
    fn attributes(&self, i: usize, seen: &mut Vec<usize>) -> Option<HashSet<&'s str>> {
        if seen.contains(&i) {
            return None;
        }
        seen.push(i);
        let c = &self.classes[i];
        if c.opaque {
            return None;
        }
        let body = &self.scopes[c.scope];
        if ["__getattr__", "__getattribute__", "__setattr__"]
            .iter()
            .any(|d| body.events.contains_key(d))
        {
            return None;
        }
        let mut attrs: HashSet<&'s str> = body.events.keys().copied().collect();
        attrs.extend(c.assigned.iter().copied());
        for base in &c.bases {
            if *base == "object" {
                continue;
            }
            let mut matches = self.classes.iter().enumerate().filter(|(_, k)| k.name == *base);
            let (j, _) = matches.next()?;
            if matches.next().is_some() {
                return None;
            }
            attrs.extend(self.attributes(j, seen)?);
        }
        Some(attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lintseq::lang::Parser;

    /// The 1-based rows the checker flags in `src`, with their rules.
    fn flags(src: &str) -> Vec<(usize, &'static str)> {
        let mut p = Parser::new(&Python);
        let tree = p.parse(src);
        let ctx = Python.context(src);
        let mut v: Vec<(usize, &'static str)> = Python
            .check(src, &tree, &ctx)
            .into_iter()
            .map(|f| (f.row + 1, f.rule))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn rows(src: &str) -> Vec<usize> {
        flags(src).into_iter().map(|(r, _)| r).collect()
    }

    #[test]
    fn clean_programs_are_clean() {
        let src = r#"import os.path as osp, sys
from collections import OrderedDict as OD, deque
from typing import *

CONST = [
    1,
    2,
]


class Point:
    """A point."""

    scale = 2

    def __init__(self, x, y=0, *args, z: int = 1, **kw):
        self.x = x
        self.y = y

    def norm(self):
        total = sum(v * v for v in (self.x, self.y))
        return total ** 0.5 * self.scale

    @staticmethod
    def origin():
        return Point(0, 0)

    @classmethod
    def make(cls, x):
        return cls(x)


def walk(items, depth=0):
    global counter
    counter = 0
    seen = {k: v for k, v in items if k}
    squares = [i * i for i in range(10) if i % 2]
    f = lambda a, *b: a + len(b) + depth
    while True:
        if (n := len(seen)) > 3:
            break
        for k in seen:
            try:
                x = int(k)
            except (ValueError, TypeError) as err:
                print(err)
                continue
            else:
                print(x)
            finally:
                pass
        with open(osp.join("a", "b")) as fh, open("c") as (g):
            data = fh.read() + g.read()
        del data
        return f(n, squares, OD(), deque(), sys.argv)


def outer():
    total = 0

    def inner():
        nonlocal total
        total += 1
        return total

    return inner


def matcher(v):
    match v:
        case Point(x=0, y=yy) if yy > 0:
            return yy
        case [first, *rest]:
            return first, rest
        case {"k": value, **others}:
            return value, others
        case _:
            return None


if __name__ == "__main__":
    print(walk([("1", 2)]), outer()(), matcher(3), counter, __file__)
"#;
        assert_eq!(flags(src), vec![]);
    }

    #[test]
    fn syntax_errors_report_the_first_row() {
        assert_eq!(flags("x = 1\nelse:\n    y = 2\nz = (\n"), vec![(2, "syntax")]);
        assert_eq!(flags("x = (1,\n"), vec![(1, "syntax")]);
        assert_eq!(flags("def f(:\n    pass\n"), vec![(1, "syntax")]);
        assert_eq!(flags("try:\n    x = 1\nprint(2)\n"), vec![(1, "syntax")]);
        // An orphaned `else:` in the last definition of a file (its `if` deleted): the `else`
        // line, not the top of the file.
        let orphan = "import os\n\n\ndef h(a):\n    return a\n\n\ndef f():\n    x = 1\n    else:\n        y = 2\n";
        assert_eq!(flags(orphan), vec![(10, "syntax")]);
        let method = "class A:\n    def m(self):\n        try_it = 1\n        finally:\n            pass\n";
        assert_eq!(flags(method), vec![(4, "syntax")]);
    }

    #[test]
    fn an_empty_block_flags_its_header() {
        assert_eq!(rows("x = 1\ndef f(a):\nx = 2\n"), vec![2]);
        assert_eq!(rows("for i in range(3):\n    # only a comment\nprint(1)\n"), vec![1]);
        assert_eq!(rows("if True:\n    pass\nelse:\n"), vec![3]);
        assert_eq!(rows("def f(a,\n      b):\nreturn 1\n"), vec![1]);
    }

    #[test]
    fn indentation_errors_are_syntax_errors() {
        assert_eq!(flags("x = 1\n    y = 2\n"), vec![(2, "syntax")]);
        assert_eq!(flags("if x:\n        a = 1\n    b = 2\n"), vec![(3, "syntax")]);
        // Continuation lines and strings are not logical lines.
        assert_eq!(flags("x = [\n        1,\n  2]\ny = '''\n  a\n'''\n"), vec![]);
        assert_eq!(flags("x = 1 + \\\n        2\n"), vec![]);
        assert_eq!(flags("from a import b, \\\n\nx = 1\n"), vec![(1, "syntax")]);
        assert_eq!(flags("x = 1\nfrom a import b, \\"), vec![(2, "syntax")]);
        assert_eq!(flags("def f():\n    y = \"a\\\nb\"\n    return y\n"), vec![]);
    }

    #[test]
    fn bad_indentation_uses_the_programs_own_step() {
        assert_eq!(
            flags("def f():\n  return 1\n\ndef g():\n  if f():\n    return 2\n"),
            vec![]
        );
        assert_eq!(
            flags("def f():\n    return 1\n\n\ndef g():\n  return 2\n"),
            vec![(6, "bad-indentation")]
        );
    }

    #[test]
    fn statements_python_rejects_at_compile_time() {
        assert_eq!(flags("x = 1\nreturn x\n"), vec![(2, "syntax")]);
        assert_eq!(flags("x = 1\nbreak\n"), vec![(2, "syntax")]);
        assert_eq!(
            flags("for i in x:\n    def f():\n        continue\n"),
            vec![(3, "syntax")]
        );
        assert_eq!(flags("def f():\n    yield 1\nx = [1 for _ in f()]\n"), vec![]);
    }

    #[test]
    fn undefined_names_follow_scoping() {
        // Module level: use before definition, use after del, builtins.
        assert_eq!(rows("print(x)\nx = 1\nprint(len(x))\n"), vec![1]);
        assert_eq!(rows("x = 1\ndel x\nprint(x)\n"), vec![3]);
        assert_eq!(rows("del y\n"), vec![1]);
        // A function body may use globals bound after it; its own locals must come first.
        assert_eq!(
            rows("def f():\n    return g()\n\ndef g():\n    return 1\n"),
            Vec::<usize>::new()
        );
        assert_eq!(rows("def f():\n    print(v)\n    v = 1\n"), vec![2]);
        assert_eq!(rows("def f():\n    return missing\n"), vec![2]);
        // Class scope is hidden from methods.
        assert_eq!(
            rows("class A:\n    k = 1\n\n    def m(self):\n        return k\n"),
            vec![5]
        );
        assert_eq!(rows("class A:\n    k = 1\n    j = k + 1\n"), Vec::<usize>::new());
        // A class or module body falls back to outer names and builtins: `codec = codec`.
        assert_eq!(
            rows("codec = 1\n\n\nclass A:\n    codec = codec\n\n\nopen = open\n"),
            Vec::<usize>::new()
        );
        // Comprehension variables do not leak; the first iterable is evaluated outside.
        assert_eq!(rows("a = [i for i in range(3)]\nprint(i)\n"), vec![2]);
        assert_eq!(rows("a = [j for j in j]\n"), vec![1]);
        // Lambda parameters are local to the lambda.
        assert_eq!(rows("f = lambda q: q + 1\nprint(q)\n"), vec![2]);
        // global and nonlocal.
        assert_eq!(
            rows("def f():\n    global G\n    G = 1\n\ndef g():\n    return G\n"),
            Vec::<usize>::new()
        );
        assert_eq!(
            rows("def f():\n    n = 0\n    def g():\n        nonlocal n\n        n += 1\n    return g\n"),
            Vec::<usize>::new()
        );
        // Imports bind their first name or their alias.
        assert_eq!(rows("import os.path\nprint(os.sep, path)\n"), vec![2]);
        assert_eq!(rows("import numpy as np\nprint(np, numpy)\n"), vec![2]);
        assert_eq!(rows("from a import *\nprint(anything)\n"), Vec::<usize>::new());
        // except-as, with-as, walrus, match captures.
        assert_eq!(rows("try:\n    pass\nexcept E as e:\n    print(e)\n"), vec![3]);
        assert_eq!(rows("if (n := 3) > 2:\n    print(n)\n"), Vec::<usize>::new());
        assert_eq!(rows("match p:\n    case [a, b]:\n        print(a, b, c)\n"), vec![1, 3]);
        // Annotations are not evaluated under `from __future__ import annotations`.
        let lazy = "from __future__ import annotations\n\n\nclass P:\n    def copy(self) -> P:\n        return self\n";
        assert_eq!(rows(lazy), Vec::<usize>::new());
        assert_eq!(rows(&lazy[35..]), vec![4]);
        // Augmented assignment needs the name first.
        assert_eq!(rows("count += 1\n"), vec![1]);
        // Decorators and defaults are evaluated where the def is.
        assert_eq!(rows("@deco\ndef f(a=default):\n    return a\n"), vec![1, 2]);
    }

    #[test]
    fn deleted_bindings_cascade_to_their_uses() {
        // What LintSeq's backward pass relies on: remove a definition, its uses are flagged.
        assert_eq!(rows("import math\n\nprint(math.pi)\n"), Vec::<usize>::new());
        assert_eq!(rows("\n\nprint(math.pi)\n"), vec![3]);
        assert_eq!(
            rows("def area(r):\n    return 3 * r\n\nprint(area(2))\n"),
            Vec::<usize>::new()
        );
        assert_eq!(rows("print(area(2))\n"), vec![1]);
    }

    #[test]
    fn members_of_local_classes_are_checked() {
        let base = "class A:\n    def __init__(self):\n        self.x = 1\n\n    def get(self):\n        return self.x + self.y\n";
        assert_eq!(flags(base), vec![(6, "no-member")]);
        // Inherited attributes and methods resolve; unknown bases make the class unknowable.
        let sub = "class A:\n    def __init__(self):\n        self.x = 1\n\n\nclass B(A):\n    def get(self):\n        return self.x + self.helper()\n\n    def helper(self):\n        return self.__class__\n";
        assert_eq!(flags(sub), vec![]);
        let ext = "class B(Exception):\n    def get(self):\n        return self.args\n";
        assert_eq!(flags(ext), vec![]);
        let dynamic = "class C:\n    def __getattr__(self, k):\n        return k\n\n    def get(self):\n        return self.anything\n";
        assert_eq!(flags(dynamic), vec![]);
        // Attributes set through another name in a method, through the class, or in __slots__.
        let new = "class E:\n    __slots__ = ('_a', '_b')\n\n    def __new__(cls):\n        obj = object.__new__(cls)\n        obj._c = 1\n        return obj\n\n    def get(self):\n        return self._a, self._b, self._c, self.d\n\n\nE.d = 2\n";
        assert_eq!(flags(new), vec![]);
        // A class something derives from is not checked (the subclass may define the attribute).
        let tmpl = "class Base:\n    def run(self):\n        return self.step()\n\n\nclass Impl(Base):\n    def step(self):\n        return 1\n";
        assert_eq!(flags(tmpl), vec![]);
        // A staticmethod's first parameter is not self.
        let st = "class D:\n    @staticmethod\n    def f(x):\n        return x.anything\n";
        assert_eq!(flags(st), vec![]);
    }

    #[test]
    fn indent_unit_is_the_first_block_step() {
        assert_eq!(
            Python.context("x = (\n        1)\nif x:\n  y = 1\n").indent_unit,
            Some(2)
        );
        assert_eq!(Python.context("x = 1\n").indent_unit, None);
    }
}
