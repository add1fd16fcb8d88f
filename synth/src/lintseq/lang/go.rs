//! Go: the checker stands in for what `go build` rejects in one file, on tree-sitter-go. Rules:
//!
//! 1. **Syntax**: the first tree-sitter `ERROR` or `MISSING` node ([`super::first_syntax_error`]).
//! 2. **Undefined names** (`undefined: x`): values (`identifier`), types (`type_identifier`) and
//!    package qualifiers with Go's scoping: the universe (predeclared types, constants and
//!    functions), the file's package scope (functions, types, variables, constants and imports,
//!    visible everywhere in any order), and block scopes inside functions, where a name is visible
//!    only after its declaration (`:=`, `var`, `const`, `type`, parameters, named results, receivers,
//!    type parameters, `range` and `for` clauses, `if`/`switch` initialisers, type-switch aliases,
//!    `select` receives). Field names (`x.f`, struct literal keys, struct fields) are not names.
//!    An import's name is its path's last element (without a `/vN` element or a `.vN` suffix);
//!    where the path does not tell it (`go-thing`), unknown selector operands are accepted.
//!    The `package` clause is never sampled: it opens every state.
//! 3. **Unused imports** (`"fmt" imported and not used`) and **unused local variables**
//!    (`declared and not used`: `:=`, `var`, `range` and `select` receive variables in function
//!    bodies; an assignment is not a use, as in Go): compile errors, so a state that deletes the last use of an import or a variable is
//!    not clean until the declaration goes too.
//!
//! One file is checked alone: names another file of the same package defines are undefined here
//! (as a package missing from pylint's machine is for the reference). A dot import (`import . "x"`)
//! makes undefined names unknowable, and turns that rule off.

use std::collections::{BTreeSet, HashMap};

use tree_sitter::{Node, Tree};

use super::{Context, Flag, Language, constructs_by_kind, first_syntax_error, text};

/// Go.
pub struct Go;

impl Language for Go {
    fn name(&self) -> &'static str {
        "go"
    }
    fn extensions(&self) -> &'static [&'static str] {
        &["go"]
    }
    fn fence_tags(&self) -> &'static [&'static str] {
        &["go", "golang"]
    }
    fn comment_prefixes(&self) -> &'static [&'static str] {
        &["//", "/*", "* ", "*/"]
    }
    fn fixed_line(&self, line: &str) -> bool {
        // The package clause opens every state, as it opens every Go file.
        line.starts_with("package ")
    }
    fn grammar(&self) -> tree_sitter::Language {
        tree_sitter_go::LANGUAGE.into()
    }

    fn check(&self, src: &str, tree: &Tree, _ctx: &Context) -> Vec<Flag> {
        if let Some(row) = first_syntax_error(tree) {
            return vec![Flag { row, rule: "syntax" }];
        }
        let mut c = GoChecker::new(src);
        c.run(tree.root_node());
        c.flags
    }

    fn constructs(&self, _src: &str, tree: &Tree) -> BTreeSet<&'static str> {
        constructs_by_kind(
            tree,
            &[
                ("function_declaration", "function"),
                ("method_declaration", "method"),
                ("struct_type", "struct"),
                ("interface_type", "interface"),
                ("func_literal", "closure"),
                ("go_statement", "goroutine"),
                ("channel_type", "channel"),
                ("send_statement", "channel"),
                ("select_statement", "select"),
                ("defer_statement", "defer"),
                ("for_statement", "loop"),
                ("type_parameter_list", "generics"),
                ("map_type", "map"),
                ("type_switch_statement", "type-switch"),
                ("import_declaration", "import"),
            ],
        )
    }
}

/// The package name an import path gives, where the path tells it: its last element, without a
/// major-version element (`.../v5`) or suffix (`yaml.v3`); `None` when that is not an identifier.
fn package_name(path: &str) -> Option<&str> {
    let mut parts = path.rsplit('/');
    let mut last = parts.next()?;
    let is_version = |p: &str| p.len() > 1 && p.starts_with('v') && p[1..].bytes().all(|b| b.is_ascii_digit());
    if is_version(last) {
        last = parts.next()?;
    }
    if let Some((name, v)) = last.rsplit_once('.')
        && is_version(v)
    {
        last = name;
    }
    let ident = !last.is_empty()
        && !last.starts_with(|c: char| c.is_ascii_digit())
        && last.chars().all(|c| c.is_alphanumeric() || c == '_');
    ident.then_some(last)
}

const UNIVERSE: &[&str] = &[
    "bool",
    "byte",
    "complex64",
    "complex128",
    "error",
    "float32",
    "float64",
    "int",
    "int8",
    "int16",
    "int32",
    "int64",
    "rune",
    "string",
    "uint",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "uintptr",
    "any",
    "comparable",
    "true",
    "false",
    "iota",
    "nil",
    "append",
    "cap",
    "clear",
    "close",
    "complex",
    "copy",
    "delete",
    "imag",
    "len",
    "make",
    "max",
    "min",
    "new",
    "panic",
    "print",
    "println",
    "real",
    "recover",
];

/// A declaration in a block scope.
#[derive(Debug)]
struct Decl {
    row: usize,
    used: bool,
    /// Subject to "declared and not used".
    local_var: bool,
}

struct GoChecker<'s> {
    src: &'s str,
    package: HashMap<&'s str, Decl>,
    imports: HashMap<&'s str, Decl>,
    dot_import: bool,
    /// An import whose package name cannot be told from its path: selector operands nothing
    /// declares may name it.
    unsure_import: bool,
    scopes: Vec<HashMap<&'s str, Decl>>,
    flags: Vec<Flag>,
}

impl<'s> GoChecker<'s> {
    fn new(src: &'s str) -> Self {
        GoChecker {
            src,
            package: HashMap::new(),
            imports: HashMap::new(),
            dot_import: false,
            unsure_import: false,
            scopes: Vec::new(),
            flags: Vec::new(),
        }
    }

    fn text(&self, n: Node) -> &'s str {
        text(n, self.src)
    }

    fn run(&mut self, root: Node) {
        let mut cursor = root.walk();
        let top: Vec<Node> = root.named_children(&mut cursor).collect();
        for n in &top {
            self.declare_top(*n);
        }
        for n in top {
            match n.kind() {
                "import_declaration" | "package_clause" | "comment" => {}
                _ => self.walk(n),
            }
        }
        for (_, d) in self.imports.iter().filter(|(name, d)| !d.used && **name != "_") {
            self.flags.push(Flag {
                row: d.row,
                rule: "unused-import",
            });
        }
    }

    /// Package-scope names: visible everywhere in the file.
    fn declare_top(&mut self, n: Node) {
        let row = n.start_position().row;
        let decl = |row| Decl {
            row,
            used: false,
            local_var: false,
        };
        match n.kind() {
            "function_declaration" => {
                if let Some(name) = n.child_by_field_name("name") {
                    self.package.insert(self.text(name), decl(row));
                }
            }
            "import_declaration" => {
                let mut specs = Vec::new();
                super::visit(n, &mut |c| {
                    if c.kind() == "import_spec" {
                        specs.push(c);
                    }
                });
                for spec in specs {
                    let row = spec.start_position().row;
                    let path = spec.child_by_field_name("path").map(|p| self.text(p).trim_matches('"'));
                    match spec.child_by_field_name("name") {
                        Some(name) if name.kind() == "dot" => self.dot_import = true,
                        Some(name) => {
                            self.imports.insert(self.text(name), decl(row));
                        }
                        None => match path.and_then(package_name) {
                            Some(name) => {
                                self.imports.insert(name, decl(row));
                            }
                            // `github.com/go-chi/chi`: the package name is not the path's.
                            None => self.unsure_import = true,
                        },
                    }
                }
            }
            "var_declaration" | "const_declaration" | "type_declaration" => {
                for name in self.spec_names(n) {
                    self.package.insert(name, decl(row));
                }
            }
            _ => {}
        }
    }

    /// Names a `var`/`const`/`type` declaration introduces.
    fn spec_names(&self, n: Node) -> Vec<&'s str> {
        let mut out = Vec::new();
        let mut specs = Vec::new();
        super::visit(n, &mut |c| {
            if matches!(c.kind(), "var_spec" | "const_spec" | "type_spec" | "type_alias") {
                specs.push(c);
            }
        });
        for spec in specs {
            let mut cursor = spec.walk();
            for name in spec.children_by_field_name("name", &mut cursor) {
                out.push(text(name, self.src));
            }
        }
        out
    }

    fn declare(&mut self, name: Node, local_var: bool) {
        let n = self.text(name);
        if n == "_" {
            return;
        }
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(
                n,
                Decl {
                    row: name.start_position().row,
                    used: false,
                    local_var,
                },
            );
        }
    }

    fn push(&mut self) {
        self.scopes.push(HashMap::new());
    }

    fn pop(&mut self) {
        if let Some(scope) = self.scopes.pop() {
            for d in scope.values().filter(|d| d.local_var && !d.used) {
                self.flags.push(Flag {
                    row: d.row,
                    rule: "unused-variable",
                });
            }
        }
    }

    /// Whether a name is declared anywhere visible (no marking, no flag).
    fn declared(&self, n: Node) -> bool {
        let name = self.text(n);
        self.scopes.iter().any(|s| s.contains_key(name))
            || self.package.contains_key(name)
            || self.imports.contains_key(name)
            || UNIVERSE.contains(&name)
    }

    /// Resolves a name; `used` marks it read.
    fn resolve(&mut self, n: Node, used: bool) {
        let name = self.text(n);
        if name == "_" {
            return;
        }
        for scope in self.scopes.iter_mut().rev() {
            if let Some(d) = scope.get_mut(name) {
                d.used |= used;
                return;
            }
        }
        if self.package.contains_key(name) || UNIVERSE.contains(&name) {
            return;
        }
        if let Some(d) = self.imports.get_mut(name) {
            d.used = true;
            return;
        }
        if !self.dot_import {
            self.flags.push(Flag {
                row: n.start_position().row,
                rule: "undefined-name",
            });
        }
    }

    fn walk_children(&mut self, n: Node) {
        let mut cursor = n.walk();
        let children: Vec<Node> = n.named_children(&mut cursor).collect();
        for c in children {
            self.walk(c);
        }
    }

    fn field(&mut self, n: Node, name: &str) {
        if let Some(c) = n.child_by_field_name(name) {
            self.walk(c);
        }
    }

    fn walk(&mut self, n: Node) {
        match n.kind() {
            "identifier" | "type_identifier" => self.resolve(n, true),
            "package_identifier" => self.resolve(n, true),
            "field_identifier" | "label_name" | "comment" => {}
            "selector_expression" => match n.child_by_field_name("operand") {
                Some(op) if op.kind() == "identifier" && self.unsure_import && !self.declared(op) => {}
                Some(op) => self.walk(op),
                None => {}
            },
            "qualified_type" => self.field(n, "package"),
            "keyed_element" => {
                // `T{Name: v}`: a bare identifier key is a field name (or a map key we cannot tell).
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for (i, c) in children.into_iter().enumerate() {
                    let bare_key = i == 0
                        && c.named_child(0).is_some_and(|k| k.kind() == "identifier")
                        && c.named_child_count() == 1;
                    if !bare_key {
                        self.walk(c);
                    }
                }
            }
            "function_declaration" | "method_declaration" | "func_literal" => {
                self.push();
                if let Some(r) = n.child_by_field_name("receiver") {
                    // `func (s *Stack[T]) ...`: the receiver's type arguments declare T.
                    let mut params = Vec::new();
                    super::visit(r, &mut |c| {
                        if c.kind() == "type_arguments" {
                            let mut cursor = c.walk();
                            params.extend(c.named_children(&mut cursor).flat_map(|t| {
                                if t.kind() == "type_identifier" {
                                    Some(t)
                                } else {
                                    t.named_child(0).filter(|x| x.kind() == "type_identifier")
                                }
                            }));
                        }
                    });
                    for t in params {
                        self.declare(t, false);
                    }
                }
                for field in ["receiver", "type_parameters", "parameters", "result"] {
                    match n.child_by_field_name(field) {
                        Some(p) if p.kind() == "parameter_list" || p.kind() == "type_parameter_list" => {
                            self.parameters(p)
                        }
                        Some(p) => self.walk(p), // a single result type
                        None => {}
                    }
                }
                self.field(n, "body");
                self.pop();
            }
            "block" => {
                self.push();
                self.walk_children(n);
                self.pop();
            }
            "short_var_declaration" => {
                self.field(n, "right");
                if let Some(left) = n.child_by_field_name("left") {
                    let mut cursor = left.walk();
                    let names: Vec<Node> = left.named_children(&mut cursor).collect();
                    for name in names {
                        let exists = self.scopes.last().is_some_and(|s| s.contains_key(self.text(name)));
                        if exists {
                            self.resolve(name, false);
                        } else {
                            self.declare(name, true);
                        }
                    }
                }
            }
            "assignment_statement" | "inc_statement" | "dec_statement" => {
                if let Some(left) = n.child_by_field_name("left").or_else(|| n.named_child(0)) {
                    let mut cursor = left.walk();
                    let targets: Vec<Node> = if left.kind() == "expression_list" {
                        left.named_children(&mut cursor).collect()
                    } else {
                        vec![left]
                    };
                    for t in targets {
                        if t.kind() == "identifier" {
                            self.resolve(t, false);
                        } else {
                            self.walk(t);
                        }
                    }
                }
                self.field(n, "right");
            }
            "var_declaration" | "const_declaration" if !self.scopes.is_empty() => {
                let local_var = n.kind() == "var_declaration";
                let mut specs = Vec::new();
                super::visit(n, &mut |c| {
                    if matches!(c.kind(), "var_spec" | "const_spec") {
                        specs.push(c);
                    }
                });
                for spec in specs {
                    self.field(spec, "type");
                    self.field(spec, "value");
                    let mut cursor = spec.walk();
                    let names: Vec<Node> = spec.children_by_field_name("name", &mut cursor).collect();
                    for name in names {
                        self.declare(name, local_var);
                    }
                }
            }
            "type_declaration" if !self.scopes.is_empty() => {
                let mut specs = Vec::new();
                super::visit(n, &mut |c| {
                    if matches!(c.kind(), "type_spec" | "type_alias") {
                        specs.push(c);
                    }
                });
                for spec in specs {
                    if let Some(name) = spec.child_by_field_name("name") {
                        self.declare(name, false);
                    }
                    self.push();
                    if let Some(tp) = spec.child_by_field_name("type_parameters") {
                        self.parameters(tp);
                    }
                    self.field(spec, "type");
                    self.pop();
                }
            }
            "var_spec" | "const_spec" | "type_spec" | "type_alias" => {
                // Package level: names are declared already; walk types and values, with the
                // type's own type parameters in scope.
                self.push();
                if let Some(tp) = n.child_by_field_name("type_parameters") {
                    self.parameters(tp);
                }
                let mut cursor = n.walk();
                let children: Vec<(Option<&str>, Node)> = n
                    .children(&mut cursor)
                    .enumerate()
                    .map(|(i, c)| (n.field_name_for_child(i as u32), c))
                    .collect();
                for (field, c) in children {
                    if field != Some("name") && field != Some("type_parameters") && c.is_named() {
                        self.walk(c);
                    }
                }
                self.pop();
            }
            "for_statement"
            | "if_statement"
            | "expression_switch_statement"
            | "type_switch_statement"
            | "select_statement"
            | "communication_case"
            | "expression_case"
            | "type_case"
            | "default_case" => {
                self.push();
                if n.kind() == "type_switch_statement"
                    && let Some(alias) = n.child_by_field_name("alias")
                {
                    self.field(n, "value");
                    let mut cursor = alias.walk();
                    let names: Vec<Node> = alias.named_children(&mut cursor).collect();
                    for name in names {
                        self.declare(name, false);
                    }
                    let mut cursor = n.walk();
                    let rest: Vec<Node> = n
                        .named_children(&mut cursor)
                        .filter(|c| c.kind() == "type_case" || c.kind() == "default_case")
                        .collect();
                    for c in rest {
                        self.walk(c);
                    }
                } else {
                    self.walk_children(n);
                }
                self.pop();
            }
            // `for k, v := range xs` and `case v := <-ch` in a `select`: variables Go requires to
            // be used, like any other.
            "range_clause" | "receive_statement" => {
                self.field(n, "right");
                if let Some(left) = n.child_by_field_name("left") {
                    let declares = self.text(n).contains(":=");
                    let mut cursor = left.walk();
                    let names: Vec<Node> = left.named_children(&mut cursor).collect();
                    for name in names {
                        if declares && name.kind() == "identifier" {
                            self.declare(name, true);
                        } else {
                            self.walk(name);
                        }
                    }
                }
            }
            "labeled_statement" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).skip(1).collect();
                for c in children {
                    self.walk(c);
                }
            }
            "parameter_declaration" | "variadic_parameter_declaration" => self.field(n, "type"),
            "field_declaration" | "method_elem" | "method_spec" => {
                // Field and method names are not names; their types are.
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for c in children {
                    if c.kind() != "field_identifier" {
                        self.walk(c);
                    }
                }
            }
            _ => self.walk_children(n),
        }
    }

    /// A parameter list: types resolve, names are declared (never "unused").
    fn parameters(&mut self, list: Node) {
        let mut cursor = list.walk();
        let params: Vec<Node> = list.named_children(&mut cursor).collect();
        // Type parameters first, so the other parameters' types can use them.
        for p in &params {
            if p.kind() == "type_parameter_declaration" {
                let mut c = p.walk();
                let names: Vec<Node> = p.children_by_field_name("name", &mut c).collect();
                for name in names {
                    self.declare(name, false);
                }
            }
        }
        for p in params {
            match p.kind() {
                "parameter_declaration" | "variadic_parameter_declaration" => {
                    self.field(p, "type");
                    let mut c = p.walk();
                    let names: Vec<Node> = p.children_by_field_name("name", &mut c).collect();
                    for name in names {
                        self.declare(name, false);
                    }
                }
                "type_parameter_declaration" => self.field(p, "type"),
                _ => self.walk(p), // a bare result type
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn flags(src: &str) -> Vec<(usize, &'static str)> {
        crate::lintseq::lang::flags_of(&Go, src)
    }

    const CLEAN: &str = r#"package main

import (
	"fmt"
	str "strings"
)

type Point struct {
	X, Y int
}

func (p *Point) Norm() int { return p.X*p.X + p.Y*p.Y }

func Map[T any](xs []T, f func(T) T) []T {
	out := make([]T, 0, len(xs))
	for _, x := range xs {
		out = append(out, f(x))
	}
	return out
}

func main() {
	p := Point{X: 1, Y: 2}
	var total int
	total = p.Norm()
	switch v := any(total).(type) {
	case int:
		fmt.Println(v, str.ToUpper("a"))
	}
	ch := make(chan int, 1)
	go func() { ch <- 1 }()
	select {
	case got := <-ch:
		fmt.Println(got)
	}
loop:
	for i := 0; i < 3; i++ {
		if i == 1 {
			break loop
		}
	}
	fmt.Println(Map([]int{1}, func(x int) int { return x + total }))
}
"#;

    #[test]
    fn a_clean_program_is_clean() {
        assert_eq!(flags(CLEAN), vec![]);
    }

    #[test]
    fn syntax_errors_report_their_row() {
        assert_eq!(
            flags("package main\n\nfunc main() {\n\tx := (1\n}\n"),
            vec![(4, "syntax")]
        );
    }

    #[test]
    fn undefined_names_follow_block_scoping() {
        let src = "package main\n\nfunc main() {\n\tif x := 1; x > 0 {\n\t\ty := x\n\t\t_ = y\n\t}\n\t_ = y\n\t_ = Undeclared{}\n}\n";
        assert_eq!(flags(src), vec![(8, "undefined-name"), (9, "undefined-name")]);
        // Use before declaration in a function body.
        let src = "package main\n\nfunc main() {\n\t_ = a\n\ta := 1\n\t_ = a\n}\n";
        assert_eq!(flags(src), vec![(4, "undefined-name")]);
        // Package-level names are visible in any order.
        let src = "package main\n\nfunc main() { helper() }\n\nfunc helper() {}\n";
        assert_eq!(flags(src), vec![]);
    }

    #[test]
    fn generics_qualified_results_and_versioned_imports_resolve() {
        let src = "package main\n\nimport (\n\t\"time\"\n\t\"gopkg.in/yaml.v3\"\n\t\"github.com/go-chi/chi/v5\"\n\t\"github.com/x/go-thing\"\n)\n\ntype Stack[T any] struct {\n\titems []T\n}\n\nfunc (s *Stack[T]) Push(v T) { s.items = append(s.items, v) }\n\nfunc wait() time.Duration { return time.Second }\n\nfunc main() {\n\t_ = yaml.Marshal\n\t_ = chi.NewRouter\n\t_ = thing.New\n\tvar s Stack[int]\n\ts.Push(1)\n\t_ = wait()\n}\n";
        assert_eq!(flags(src), vec![]);
        assert_eq!(package_name("github.com/go-chi/chi/v5"), Some("chi"));
        assert_eq!(package_name("gopkg.in/yaml.v3"), Some("yaml"));
        assert_eq!(package_name("github.com/x/go-thing"), None);
    }

    #[test]
    fn unused_imports_and_variables_are_errors() {
        let src = "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tx := 1\n\tx = 2\n}\n";
        assert_eq!(flags(src), vec![(3, "unused-import"), (6, "unused-variable")]);
        let src = "package main\n\nfunc main() {\n\tfor i, v := range []int{1} {\n\t\t_ = v\n\t}\n}\n";
        assert_eq!(flags(src), vec![(4, "unused-variable")]);
        // Deleting a use of a package makes its import unused.
        let src = "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() { fmt.Println(1) }\n";
        assert_eq!(flags(src), vec![(5, "unused-import")]);
    }
}
