//! JavaScript (with JSX): the checker stands in for a parse plus ESLint's `no-undef` (what the
//! pylintseq fork that adds JavaScript runs), on tree-sitter-javascript. Rules:
//!
//! 1. **Syntax**: the first tree-sitter `ERROR` or `MISSING` node ([`super::first_syntax_error`]).
//! 2. **Undefined names** (`no-undef`): every identifier read or written that no scope declares
//!    and that is not a known global. Scopes: the program, functions (declarations, expressions,
//!    arrows, methods: parameters, `arguments`, and hoisted `var` and function declarations) and
//!    blocks (`let`, `const`, `class`, and function declarations in the block); `catch` parameters;
//!    `for` heads; imports; destructuring patterns. Declaration order does not matter (hoisting; the
//!    temporal dead zone is a run-time error, not `no-undef`'s). Property names, labels, `typeof x`
//!    (as `no-undef` by default) and lowercase JSX tags (HTML elements) are not reads.
//!
//! Known globals: the ECMAScript built-ins, the browser's common ones and Node's (`require`,
//! `module`, `process`, ...), as ESLint's `browser` + `node` + `es2024` environments.

use std::collections::{BTreeSet, HashSet};

use tree_sitter::{Node, Tree};

use super::{Context, Flag, Language, constructs_by_kind, first_syntax_error, text};

/// JavaScript.
pub struct JavaScript;

impl Language for JavaScript {
    fn name(&self) -> &'static str {
        "javascript"
    }
    fn extensions(&self) -> &'static [&'static str] {
        &["js", "mjs", "cjs", "jsx"]
    }
    fn fence_tags(&self) -> &'static [&'static str] {
        &["javascript", "js", "jsx", "node"]
    }
    fn comment_prefixes(&self) -> &'static [&'static str] {
        &["//", "/*", "* ", "*/"]
    }
    fn grammar(&self) -> tree_sitter::Language {
        tree_sitter_javascript::LANGUAGE.into()
    }

    fn check(&self, src: &str, tree: &Tree, _ctx: &Context) -> Vec<Flag> {
        if let Some(row) = first_syntax_error(tree) {
            return vec![Flag { row, rule: "syntax" }];
        }
        let mut w = Walker {
            src,
            scopes: vec![Scope::default()],
            uses: Vec::new(),
        };
        w.walk(tree.root_node(), 0, 0);
        w.uses
            .iter()
            .filter(|(name, scope, _)| !w.resolves(name, *scope))
            .map(|(_, _, row)| Flag {
                row: *row,
                rule: "undefined-name",
            })
            .collect()
    }

    fn constructs(&self, _src: &str, tree: &Tree) -> BTreeSet<&'static str> {
        constructs_by_kind(
            tree,
            &[
                ("function_declaration", "function"),
                ("function_expression", "function"),
                ("arrow_function", "arrow-function"),
                ("class_declaration", "class"),
                ("class", "class"),
                ("await_expression", "async"),
                ("try_statement", "exceptions"),
                ("throw_statement", "exceptions"),
                ("for_statement", "loop"),
                ("for_in_statement", "loop"),
                ("while_statement", "loop"),
                ("do_statement", "loop"),
                ("import_statement", "module"),
                ("export_statement", "module"),
                ("jsx_element", "jsx"),
                ("jsx_self_closing_element", "jsx"),
                ("template_string", "template-string"),
                ("object_pattern", "destructuring"),
                ("array_pattern", "destructuring"),
                ("generator_function_declaration", "generator"),
                ("regex", "regex"),
            ],
        )
    }
}

/// ECMAScript, browser and Node globals (ESLint's `es2024`, `browser` and `node`, the common part).
const GLOBALS: &[&str] = &[
    // ECMAScript
    "Array",
    "ArrayBuffer",
    "AggregateError",
    "Atomics",
    "BigInt",
    "BigInt64Array",
    "BigUint64Array",
    "Boolean",
    "DataView",
    "Date",
    "Error",
    "EvalError",
    "FinalizationRegistry",
    "Float32Array",
    "Float64Array",
    "Function",
    "Infinity",
    "Int16Array",
    "Int32Array",
    "Int8Array",
    "Intl",
    "JSON",
    "Map",
    "Math",
    "NaN",
    "Number",
    "Object",
    "Promise",
    "Proxy",
    "RangeError",
    "ReferenceError",
    "Reflect",
    "RegExp",
    "Set",
    "SharedArrayBuffer",
    "String",
    "Symbol",
    "SyntaxError",
    "TypeError",
    "URIError",
    "Uint16Array",
    "Uint32Array",
    "Uint8Array",
    "Uint8ClampedArray",
    "WeakMap",
    "WeakRef",
    "WeakSet",
    "decodeURI",
    "decodeURIComponent",
    "encodeURI",
    "encodeURIComponent",
    "escape",
    "eval",
    "globalThis",
    "isFinite",
    "isNaN",
    "parseFloat",
    "parseInt",
    "undefined",
    "unescape",
    // Browser
    "window",
    "document",
    "navigator",
    "location",
    "history",
    "localStorage",
    "sessionStorage",
    "console",
    "alert",
    "confirm",
    "prompt",
    "fetch",
    "Request",
    "Response",
    "Headers",
    "FormData",
    "URL",
    "URLSearchParams",
    "Blob",
    "File",
    "FileReader",
    "Event",
    "CustomEvent",
    "EventTarget",
    "KeyboardEvent",
    "MouseEvent",
    "HTMLElement",
    "Element",
    "Node",
    "NodeList",
    "XMLHttpRequest",
    "WebSocket",
    "Worker",
    "performance",
    "requestAnimationFrame",
    "cancelAnimationFrame",
    "setTimeout",
    "clearTimeout",
    "setInterval",
    "clearInterval",
    "queueMicrotask",
    "structuredClone",
    "atob",
    "btoa",
    "crypto",
    "Image",
    "Audio",
    "AbortController",
    "AbortSignal",
    "TextEncoder",
    "TextDecoder",
    "MutationObserver",
    "IntersectionObserver",
    "ResizeObserver",
    "getComputedStyle",
    "matchMedia",
    "self",
    "screen",
    "indexedDB",
    "caches",
    "customElements",
    "DOMParser",
    "Notification",
    "ReadableStream",
    "WritableStream",
    // Node
    "require",
    "module",
    "exports",
    "process",
    "Buffer",
    "__dirname",
    "__filename",
    "global",
    "setImmediate",
    "clearImmediate",
];

#[derive(Debug, Default)]
struct Scope<'s> {
    parent: Option<usize>,
    names: HashSet<&'s str>,
    /// A function scope (where `var` and `arguments` live).
    function: bool,
}

struct Walker<'s> {
    src: &'s str,
    scopes: Vec<Scope<'s>>,
    /// (name, scope, row) of every read or write.
    uses: Vec<(&'s str, usize, usize)>,
}

impl<'s> Walker<'s> {
    fn text(&self, n: Node) -> &'s str {
        text(n, self.src)
    }

    fn scope(&mut self, parent: usize, function: bool) -> usize {
        self.scopes.push(Scope {
            parent: Some(parent),
            names: HashSet::new(),
            function,
        });
        self.scopes.len() - 1
    }

    fn declare(&mut self, n: Node, scope: usize) {
        let name = self.text(n);
        self.scopes[scope].names.insert(name);
    }

    fn resolves(&self, name: &str, mut s: usize) -> bool {
        loop {
            let scope = &self.scopes[s];
            if scope.names.contains(name) || (scope.function && s != 0 && name == "arguments") {
                return true;
            }
            match scope.parent {
                Some(p) => s = p,
                None => return GLOBALS.contains(&name),
            }
        }
    }

    fn children(&mut self, n: Node, scope: usize, fs: usize) {
        let mut cursor = n.walk();
        let children: Vec<Node> = n.named_children(&mut cursor).collect();
        for c in children {
            self.walk(c, scope, fs);
        }
    }

    fn field(&mut self, n: Node, name: &str, scope: usize, fs: usize) {
        if let Some(c) = n.child_by_field_name(name) {
            self.walk(c, scope, fs);
        }
    }

    /// Walks `n` in `scope`; `fs` is the enclosing function scope (for `var`).
    fn walk(&mut self, n: Node, scope: usize, fs: usize) {
        match n.kind() {
            "identifier" | "shorthand_property_identifier" => {
                self.uses.push((self.text(n), scope, n.start_position().row));
            }
            "property_identifier"
            | "private_property_identifier"
            | "statement_identifier"
            | "comment"
            | "this"
            | "super" => {}
            "member_expression" => self.field(n, "object", scope, fs),
            "pair" => {
                if let Some(k) = n.child_by_field_name("key")
                    && k.kind() == "computed_property_name"
                {
                    self.walk(k, scope, fs);
                }
                self.field(n, "value", scope, fs);
            }
            "unary_expression" => {
                let typeof_name = n.child(0).is_some_and(|o| o.kind() == "typeof")
                    && n.child_by_field_name("argument")
                        .is_some_and(|a| a.kind() == "identifier");
                if !typeof_name {
                    self.children(n, scope, fs);
                }
            }
            "statement_block" | "class_body" | "switch_body" => {
                let inner = self.scope(scope, false);
                self.children(n, inner, fs);
            }
            "for_statement" | "for_in_statement" => {
                let inner = self.scope(scope, false);
                if n.kind() == "for_in_statement"
                    && let Some(left) = n.child_by_field_name("left")
                {
                    let declares = n.child_by_field_name("kind").is_some();
                    let var = n.child_by_field_name("kind").is_some_and(|k| self.text(k) == "var");
                    if declares {
                        self.pattern(left, if var { fs } else { inner }, inner, fs);
                    } else {
                        self.walk(left, inner, fs);
                    }
                    self.field(n, "right", inner, fs);
                    self.field(n, "body", inner, fs);
                } else {
                    self.children(n, inner, fs);
                }
            }
            "lexical_declaration" | "variable_declaration" => {
                let target = if n.kind() == "variable_declaration" { fs } else { scope };
                let mut cursor = n.walk();
                let decls: Vec<Node> = n
                    .named_children(&mut cursor)
                    .filter(|c| c.kind() == "variable_declarator")
                    .collect();
                for d in decls {
                    if let Some(name) = d.child_by_field_name("name") {
                        self.pattern(name, target, scope, fs);
                    }
                    self.field(d, "value", scope, fs);
                }
            }
            "function_declaration" | "generator_function_declaration" => {
                if let Some(name) = n.child_by_field_name("name") {
                    self.declare(name, scope);
                }
                self.function(n, scope);
            }
            "function_expression" | "generator_function" | "arrow_function" | "method_definition" => {
                if n.kind() == "method_definition"
                    && let Some(k) = n.child_by_field_name("name")
                    && k.kind() == "computed_property_name"
                {
                    self.walk(k, scope, fs);
                }
                self.function(n, scope);
            }
            "class_declaration" | "class" => {
                if let Some(name) = n.child_by_field_name("name") {
                    self.declare(name, scope);
                }
                let mut cursor = n.walk();
                let heritage: Vec<Node> = n
                    .named_children(&mut cursor)
                    .filter(|c| c.kind() == "class_heritage")
                    .collect();
                for h in heritage {
                    self.children(h, scope, fs);
                }
                self.field(n, "body", scope, fs);
            }
            "field_definition" => self.field(n, "value", scope, fs),
            "catch_clause" => {
                let inner = self.scope(scope, false);
                if let Some(p) = n.child_by_field_name("parameter") {
                    self.pattern(p, inner, inner, fs);
                }
                self.field(n, "body", inner, fs);
            }
            "import_statement" => {
                let mut names = Vec::new();
                super::visit(n, &mut |c| match c.kind() {
                    "import_clause" => {
                        let mut cursor = c.walk();
                        names.extend(c.named_children(&mut cursor).filter(|x| x.kind() == "identifier"));
                    }
                    "namespace_import" => {
                        let mut cursor = c.walk();
                        names.extend(c.named_children(&mut cursor).filter(|x| x.kind() == "identifier"));
                    }
                    "import_specifier" => {
                        names.extend(c.child_by_field_name("alias").or_else(|| c.child_by_field_name("name")));
                    }
                    _ => {}
                });
                for name in names {
                    self.declare(name, 0);
                }
            }
            "export_specifier" => self.field(n, "name", scope, fs),
            // `export { a } from './m'`, `export * as ns from './m'`: names of another module.
            "export_statement" if n.child_by_field_name("source").is_some() => {}
            "labeled_statement" => self.field(n, "body", scope, fs),
            "jsx_opening_element" | "jsx_self_closing_element" | "jsx_closing_element" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for (i, c) in children.into_iter().enumerate() {
                    let html_tag =
                        i == 0 && c.kind() == "identifier" && self.text(c).starts_with(|ch: char| ch.is_lowercase());
                    if i == 0 && n.kind() == "jsx_closing_element" || html_tag {
                        continue;
                    }
                    self.walk(c, scope, fs);
                }
            }
            "jsx_attribute" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).skip(1).collect();
                for c in children {
                    self.walk(c, scope, fs);
                }
            }
            _ => self.children(n, scope, fs),
        }
    }

    /// A function: parameters and body in a new function scope.
    fn function(&mut self, n: Node, scope: usize) {
        let inner = self.scope(scope, true);
        if n.kind() == "function_expression"
            && let Some(name) = n.child_by_field_name("name")
        {
            self.declare(name, inner); // a named function expression sees its own name
        }
        if let Some(p) = n.child_by_field_name("parameter") {
            self.pattern(p, inner, inner, inner);
        }
        if let Some(ps) = n.child_by_field_name("parameters") {
            let mut cursor = ps.walk();
            let params: Vec<Node> = ps.named_children(&mut cursor).collect();
            for p in params {
                self.pattern(p, inner, inner, inner);
            }
        }
        if let Some(body) = n.child_by_field_name("body") {
            if body.kind() == "statement_block" {
                // The body shares the function scope (parameters and body-level names together).
                self.children(body, inner, inner);
            } else {
                self.walk(body, inner, inner);
            }
        }
    }

    /// A binding pattern: names declare in `target`; defaults and computed keys read in `scope`.
    fn pattern(&mut self, n: Node, target: usize, scope: usize, fs: usize) {
        match n.kind() {
            "identifier" | "shorthand_property_identifier_pattern" => self.declare(n, target),
            "assignment_pattern" | "object_assignment_pattern" => {
                if let Some(l) = n.child_by_field_name("left") {
                    self.pattern(l, target, scope, fs);
                }
                self.field(n, "right", scope, fs);
            }
            "pair_pattern" => {
                if let Some(k) = n.child_by_field_name("key")
                    && k.kind() == "computed_property_name"
                {
                    self.walk(k, scope, fs);
                }
                if let Some(v) = n.child_by_field_name("value") {
                    self.pattern(v, target, scope, fs);
                }
            }
            "object_pattern" | "array_pattern" | "rest_pattern" => {
                let mut cursor = n.walk();
                let children: Vec<Node> = n.named_children(&mut cursor).collect();
                for c in children {
                    self.pattern(c, target, scope, fs);
                }
            }
            // `[a.b] = x` and similar: a target that is an expression.
            _ => self.walk(n, scope, fs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(src: &str) -> Vec<(usize, &'static str)> {
        crate::lintseq::lang::flags_of(&JavaScript, src)
    }

    const CLEAN: &str = r#"import React, { useState as us } from 'react';
import * as path from 'path';

const { a, b: [c, ...d], e = 1, ...f } = JSON.parse('{}');

function g(x, { y }, z = 2, ...rest) {
  return x + y + z + rest.length + hoisted();
}

function hoisted() {
  var later = 1;
  return later;
}

const h = async (p) => {
  try {
    await p;
  } catch (err) {
    console.log(err, typeof maybeDefined);
  }
};

class K extends React.Component {
  #priv = 1;
  static s = 2;
  m() {
    return this.#priv + super.m() + arguments.length;
  }
}

for (const [k, v] of Object.entries({ a, c, d, e, f })) {
  outer: for (let i = 0; i < 3; i++) {
    if (i > k) break outer;
    console.log(v);
  }
}

const el = <K prop={us}>{path.sep}<div className="x" /></K>;
const w = function named() { return named; };
module.exports = { g, h, el, w };
"#;

    #[test]
    fn a_clean_program_is_clean() {
        assert_eq!(flags(CLEAN), vec![]);
    }

    #[test]
    fn syntax_errors_report_their_row() {
        assert_eq!(
            flags("const a = 1;\nfunction f( {\n  return a;\n}\n")
                .first()
                .map(|f| f.1),
            Some("syntax")
        );
        assert_eq!(flags("if (x) {\n  y();\n"), vec![(1, "syntax")]);
    }

    #[test]
    fn undefined_names_follow_block_scoping() {
        let src =
            "function f() {\n  if (true) {\n    let inner = 1;\n    var hoist = 2;\n  }\n  return inner + hoist;\n}\n";
        assert_eq!(flags(src), vec![(6, "undefined-name")]);
        assert_eq!(flags("const x = y + 1;\n"), vec![(1, "undefined-name")]);
        assert_eq!(
            flags("try { a(); } catch (e) {}\nconsole.log(e);\n"),
            vec![(1, "undefined-name"), (2, "undefined-name")]
        );
        assert_eq!(
            flags("export { a, b as c } from './m';\nexport * as ns from './n';\n"),
            vec![]
        );
        // Deleting an import leaves its uses undefined.
        assert_eq!(flags("\nconsole.log(path.sep);\n"), vec![(2, "undefined-name")]);
    }
}
