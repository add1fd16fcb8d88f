//! What a verifier is: an instruction [`Kind`] (id, checker, phrasings, sampler), its stored form
//! [`Spec`] (`{"id": ..., "kwargs": {...}}` in the `verifiers` column), and the built
//! [`Verifier`] that checks responses strictly or loosely as IFEval does.

use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::text;

/// An instruction's parameters (IFEval's `kwargs`).
pub type Kwargs = serde_json::Map<String, Value>;

/// A compiled check of a response.
pub type CheckFn = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// What an instruction is sampled against: the query and what the prompt will show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// The question, without instructions.
    pub query: String,
    /// Retrieved passages, shown numbered from 1.
    pub passages: Vec<Passage>,
    /// The reference answer, when known (aliases separated by `/` or `|`).
    pub answer: Option<String>,
}

/// A retrieved passage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    /// Its title (may be empty).
    #[serde(default)]
    pub title: String,
    /// Its text.
    pub text: String,
}

/// Where a kind comes from: which id scheme and which default pool it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// IFEval and FollowRAG's 22 types.
    FollowRag,
    /// IFEval types FollowRAG dropped (letter frequency, constrained response, two responses).
    IfEvalOnly,
    /// firebrand's RAG types.
    Rag,
}

/// One instruction type.
pub struct Kind {
    /// Canonical id (IFEval's for IFEval types).
    pub id: &'static str,
    /// Other ids accepted when reading (FollowRAG's names).
    pub aliases: &'static [&'static str],
    /// Which pool it belongs to.
    pub origin: Origin,
    /// Compiles the check from kwargs.
    pub build: fn(&Kw) -> Result<CheckFn, VerifierError>,
    /// Prompt phrasings; `{name}` is replaced by kwarg `name` (see [`render`]).
    pub phrasings: &'static [&'static str],
    /// Draws kwargs for a sample, or `None` when the context cannot support this kind.
    pub sample: fn(&mut StdRng, &Context) -> Option<Kwargs>,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id)
    }
}

/// Why a verifier could not be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerifierError {
    /// The id is not a known instruction type.
    #[error("unknown instruction id `{0}`\n  hint: `firebrand eval follow --list` prints the known ids")]
    UnknownId(String),
    /// A kwarg is missing or has the wrong type or value.
    #[error("{id}: kwarg `{name}`: {why}")]
    Kwarg {
        /// The instruction id.
        id: String,
        /// The kwarg.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The `verifiers` JSON does not parse.
    #[error("verifiers are not a JSON list of {{id, kwargs}}: {0}")]
    Json(String),
}

/// An instruction as stored in the `verifiers` column: `{"id": ..., "kwargs": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Instruction id (canonical or alias).
    pub id: String,
    /// Its parameters.
    #[serde(default)]
    pub kwargs: Kwargs,
}

/// Typed access to kwargs, with errors naming the instruction and the kwarg. JSON nulls count
/// as missing (IFEval data lists unused kwargs as null).
pub struct Kw<'a> {
    id: &'a str,
    map: &'a Kwargs,
}

impl<'a> Kw<'a> {
    /// Kwargs of instruction `id`.
    pub fn new(id: &'a str, map: &'a Kwargs) -> Self {
        Kw { id, map }
    }

    /// A kwarg error of this instruction.
    pub(crate) fn err(&self, name: &str, why: impl Into<String>) -> VerifierError {
        VerifierError::Kwarg {
            id: self.id.to_string(),
            name: name.to_string(),
            why: why.into(),
        }
    }

    /// Kwarg `name`, `None` when missing or null.
    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// An integer kwarg (JSON integers, or floats with no fraction).
    pub fn int(&self, name: &str) -> Result<i64, VerifierError> {
        match self.get(name) {
            None => Err(self.err(name, "missing")),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .ok_or_else(|| self.err(name, format!("expected an integer, got {v}"))),
        }
    }

    /// A non-negative integer kwarg (a count or threshold).
    pub fn count(&self, name: &str) -> Result<i64, VerifierError> {
        let n = self.int(name)?;
        if n < 0 {
            return Err(self.err(name, format!("{n} is negative")));
        }
        Ok(n)
    }

    /// A string kwarg.
    pub fn str(&self, name: &str) -> Result<&'a str, VerifierError> {
        match self.get(name) {
            None => Err(self.err(name, "missing")),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(name, format!("expected a string, got {v}"))),
        }
    }

    /// A list-of-strings kwarg.
    pub fn strs(&self, name: &str) -> Result<Vec<String>, VerifierError> {
        let v = self.get(name).ok_or_else(|| self.err(name, "missing"))?;
        let list = v
            .as_array()
            .ok_or_else(|| self.err(name, format!("expected a list of strings, got {v}")))?;
        list.iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.err(name, format!("{s} is not a string")))
            })
            .collect()
    }

    /// IFEval's comparison relation (`"less than"` or `"at least"`) in kwarg `name`.
    pub fn relation(&self, name: &str) -> Result<Relation, VerifierError> {
        match self.str(name)? {
            "less than" => Ok(Relation::LessThan),
            "at least" => Ok(Relation::AtLeast),
            other => Err(self.err(name, format!("`{other}` is not \"less than\" or \"at least\""))),
        }
    }

    /// A regex kwarg compiled case-insensitively (IFEval uses keywords as raw patterns).
    pub fn regex(&self, name: &str, pattern: &str) -> Result<regex::Regex, VerifierError> {
        regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .build()
            .map_err(|e| self.err(name, format!("`{pattern}` is not a valid pattern: {e}")))
    }
}

/// IFEval's comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// `count < n`.
    LessThan,
    /// `count >= n`.
    AtLeast,
}

impl Relation {
    /// Whether `count` satisfies the relation to `n`.
    pub fn holds(self, count: i64, n: i64) -> bool {
        match self {
            Relation::LessThan => count < n,
            Relation::AtLeast => count >= n,
        }
    }
}

/// Every kind: IFEval's 25, then ours.
pub fn kinds() -> impl Iterator<Item = &'static Kind> {
    crate::ifeval::KINDS.iter().chain(crate::rag::KINDS.iter())
}

/// The kind with this id or alias.
pub fn kind(id: &str) -> Option<&'static Kind> {
    kinds().find(|k| k.id == id || k.aliases.contains(&id))
}

/// A built instruction: its kind, its stored form and its compiled check.
pub struct Verifier {
    /// The instruction type.
    pub kind: &'static Kind,
    /// Its stored form.
    pub spec: Spec,
    pub(crate) check: CheckFn,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("spec", &self.spec).finish()
    }
}

/// Strict or loose checking (IFEval `evaluation_lib`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The response as given.
    Strict,
    /// Any of 8 variants: without the first and/or last line, and with `*` removed.
    Loose,
}

impl Verifier {
    /// Builds the verifier of `spec`.
    ///
    /// # Errors
    /// Unknown ids and missing or malformed kwargs.
    pub fn build(spec: Spec) -> Result<Self, VerifierError> {
        let kind = kind(&spec.id).ok_or_else(|| VerifierError::UnknownId(spec.id.clone()))?;
        let check = (kind.build)(&Kw::new(kind.id, &spec.kwargs))?;
        Ok(Verifier { kind, spec, check })
    }

    /// Builds `id` with `kwargs` (a JSON object).
    ///
    /// # Errors
    /// As [`Verifier::build`], and when `kwargs` is not an object.
    pub fn new(id: &str, kwargs: Value) -> Result<Self, VerifierError> {
        let kwargs = match kwargs {
            Value::Object(m) => m,
            Value::Null => Kwargs::new(),
            other => {
                return Err(VerifierError::Json(format!(
                    "kwargs of {id} are not an object: {other}"
                )));
            }
        };
        Self::build(Spec {
            id: id.to_string(),
            kwargs,
        })
    }

    /// Whether `response` follows the instruction. As in IFEval, a blank response follows nothing.
    pub fn follows(&self, response: &str, mode: Mode) -> bool {
        match mode {
            Mode::Strict => !text::py_strip(response).is_empty() && (self.check)(response),
            Mode::Loose => loose_variants(response)
                .iter()
                .any(|v| !text::py_strip(v).is_empty() && (self.check)(v)),
        }
    }

    /// The instruction in words, with phrasing `i` (modulo the number of phrasings).
    pub fn describe(&self, i: usize) -> String {
        render(self.kind.phrasings[i % self.kind.phrasings.len()], &self.spec.kwargs)
    }
}

/// IFEval's eight loose variants of a response, in its order.
pub fn loose_variants(response: &str) -> [String; 8] {
    let lines: Vec<&str> = response.split('\n').collect();
    let n = lines.len();
    let first = text::py_strip(&lines[1..].join("\n")).to_string();
    let last = text::py_strip(&lines[..n.saturating_sub(1)].join("\n")).to_string();
    let both = if n >= 2 {
        text::py_strip(&lines[1..n - 1].join("\n")).to_string()
    } else {
        String::new()
    };
    let star = |s: &str| s.replace('*', "");
    [
        response.to_string(),
        star(response),
        first.clone(),
        last.clone(),
        both.clone(),
        star(&first),
        star(&last),
        star(&both),
    ]
}

/// Fills `{name}` placeholders from kwargs: strings as they are, numbers in decimal, lists of
/// strings quoted and joined ("a", "b" and "c"), language codes as their English names.
pub fn render(template: &str, kwargs: &Kwargs) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        let name = &rest[open + 1..open + close];
        out.push_str(&rest[..open]);
        match kwargs.get(name) {
            Some(v) => out.push_str(&display(name, v)),
            None => out.push_str(&rest[open..=open + close]),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

fn display(name: &str, v: &Value) -> String {
    match v {
        Value::String(s) if name == "language" => text::language_name(s).unwrap_or(s).to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let quoted: Vec<String> = items
                .iter()
                .map(|i| format!("\"{}\"", i.as_str().map_or_else(|| i.to_string(), str::to_string)))
                .collect();
            match quoted.split_last() {
                None => String::new(),
                Some((last, [])) => last.clone(),
                Some((last, init)) => format!("{} and {last}", init.join(", ")),
            }
        }
        other => other.to_string(),
    }
}

/// Parses a `verifiers` column value (a JSON list of specs) into built verifiers.
///
/// # Errors
/// When the JSON is not a list of `{id, kwargs}`, or a verifier cannot be built.
pub fn parse_verifiers(json: &str) -> Result<Vec<Verifier>, VerifierError> {
    let specs: Vec<Spec> = serde_json::from_str(json).map_err(|e| VerifierError::Json(e.to_string()))?;
    specs.into_iter().map(Verifier::build).collect()
}

/// The `verifiers` column value of `specs`.
pub fn verifiers_json(specs: &[Spec]) -> String {
    serde_json::to_string(specs).unwrap_or_else(|_| "[]".to_string())
}
