//! Where LintSeq's programs come from, streamed one at a time:
//! - a folder: every file (recursively, in sorted order, hidden entries skipped) whose extension
//!   belongs to a language (or to the one asked for), bare code with an empty instruction; the id
//!   is the path relative to the folder;
//! - a JSONL file of instruction + response pairs (OSS-Instruct's fields by default, the
//!   reference's input), the code taken from the response's fenced blocks ([`super::extract`]);
//!   the id is the record's `id` or `line-N`;
//! - a `chat` dataset (first user turn, last assistant turn) or a `completion` dataset (prompt,
//!   completion), the code extracted the same way; the id is the row's.
//!
//! An input that cannot be a program (a file that is not UTF-8, a record without code) arrives as
//! `Err(reason)`, for the job to count as dropped; a malformed JSONL line or an unreadable dataset
//! stops the job with the place it was found.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use firebrand_data::{ChatRow, CompletionRow, DataError, Dataset, DatasetKind, Role};

use super::Program;
use super::extract::code_of;
use super::lang::{self, Language};

/// An input: its id and the program, or why it is not one.
pub type Item = (String, Result<Program, String>);

/// Field names of a JSONL input.
#[derive(Debug, Clone)]
pub struct JsonlFields {
    /// The instruction field.
    pub instruction: String,
    /// The field holding the response with the code.
    pub response: String,
}

impl Default for JsonlFields {
    fn default() -> Self {
        JsonlFields {
            instruction: "instruction".into(),
            response: "response".into(),
        }
    }
}

/// A source of programs and how many inputs it holds (for the progress bar).
pub struct Source {
    /// Inputs in the source.
    pub total: usize,
    /// The inputs, in order.
    pub items: Box<dyn Iterator<Item = firebrand_data::Result<Item>>>,
}

/// Opens `path` as a folder, a `.jsonl` file or a Lance dataset. `language` restricts a folder
/// to one language and names the language of JSONL and dataset code (default Python).
///
/// # Errors
/// When the path does not exist, a folder cannot be listed, or a dataset is of another kind.
pub fn open(
    path: &Path,
    language: Option<&'static dyn Language>,
    fields: &JsonlFields,
) -> firebrand_data::Result<Source> {
    if path.is_dir() && path.extension().is_none_or(|e| e != "lance") {
        return folder(path, language);
    }
    let lang = language.unwrap_or(&lang::python::Python);
    if path.extension().is_some_and(|e| e == "jsonl" || e == "json") {
        return jsonl(path, lang, fields.clone());
    }
    dataset(path, lang)
}

fn folder(root: &Path, language: Option<&'static dyn Language>) -> firebrand_data::Result<Source> {
    let mut files: Vec<(PathBuf, &'static dyn Language)> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| DataError::Invalid(format!("{}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| DataError::Invalid(format!("{}: {e}", dir.display())))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Some(lang) = path.extension().and_then(|e| e.to_str()).and_then(lang::by_extension)
                && language.is_none_or(|l| l.name() == lang.name())
            {
                files.push((path, lang));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let root = root.to_path_buf();
    let total = files.len();
    let items = files.into_iter().map(move |(path, lang)| {
        let id = path.strip_prefix(&root).unwrap_or(&path).display().to_string();
        let program = match std::fs::read(&path) {
            Err(e) => Err(format!("unreadable ({})", e.kind())),
            Ok(bytes) => match String::from_utf8(bytes) {
                Err(_) => Err("not UTF-8".to_string()),
                Ok(code) => Ok(Program {
                    instruction: String::new(),
                    code: code.replace("\r\n", "\n"),
                    language: lang,
                    source_file: path.display().to_string(),
                }),
            },
        };
        Ok((id, program))
    });
    Ok(Source {
        total,
        items: Box::new(items),
    })
}

fn jsonl(path: &Path, lang: &'static dyn Language, fields: JsonlFields) -> firebrand_data::Result<Source> {
    let read = |p: &Path| std::fs::File::open(p).map_err(|e| DataError::Invalid(format!("{}: {e}", p.display())));
    let total = BufReader::new(read(path)?)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .count();
    let file = read(path)?;
    let path = path.to_path_buf();
    let items = BufReader::new(file)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(move |(i, line)| {
            let bad = |problem: String, hint: &str| DataError::BadLine {
                path: path.clone(),
                line: i as u64 + 1,
                problem,
                hint: hint.to_string(),
            };
            let line = line.map_err(|e| bad(e.to_string(), ""))?;
            let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(format!("not JSON: {e}"), ""))?;
            let field = |name: &str| v.get(name).and_then(|x| x.as_str());
            let id = match v.get("id") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => format!("line-{}", i + 1),
            };
            let Some(response) = field(&fields.response) else {
                return Err(bad(
                    format!("no `{}` string field", fields.response),
                    "name the code's field with --code-field (and the instruction's with --instruction-field)",
                ));
            };
            let code = code_of(&response.replace("\r\n", "\n"), lang);
            let program = if code.trim().is_empty() {
                Err("no code".to_string())
            } else {
                Ok(Program {
                    instruction: field(&fields.instruction).unwrap_or("").to_string(),
                    code,
                    language: lang,
                    source_file: format!("{}:{}", path.display(), i + 1),
                })
            };
            Ok((id, program))
        });
    Ok(Source {
        total,
        items: Box::new(items),
    })
}

fn dataset(path: &Path, lang: &'static dyn Language) -> firebrand_data::Result<Source> {
    let ds = Dataset::open(path)?;
    let total = ds.len()?;
    let name = path.display().to_string();
    let make = move |id: String, instruction: String, response: &str| -> Item {
        let code = code_of(&response.replace("\r\n", "\n"), lang);
        let program = if code.trim().is_empty() {
            Err("no code".to_string())
        } else {
            Ok(Program {
                instruction,
                code,
                language: lang,
                source_file: format!("{name}#{id}"),
            })
        };
        (id, program)
    };
    let items: Box<dyn Iterator<Item = firebrand_data::Result<Item>>> = match ds.kind() {
        DatasetKind::Chat => Box::new(ds.rows::<ChatRow>(1024)?.map(move |r| {
            let r = r?;
            let user = r
                .messages
                .iter()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.clone());
            let answer = r.messages.iter().rev().find(|m| m.role == Role::Assistant);
            Ok(match answer {
                Some(a) => make(r.id, user.unwrap_or_default(), &a.content),
                None => (r.id, Err("no assistant turn".to_string())),
            })
        })),
        DatasetKind::Completion => Box::new(
            ds.rows::<CompletionRow>(1024)?
                .map(move |r| r.map(|r| make(r.id, r.prompt, &r.completion))),
        ),
        other => {
            return Err(DataError::Invalid(format!(
                "{}: LintSeq reads a folder of source files, a JSONL file of instruction + response pairs, or a `chat` or `completion` dataset; this dataset is `{other}`",
                path.display()
            )));
        }
    };
    Ok(Source { total, items })
}
