//! `firebrand data import`: JSONL in the layouts people already have, into typed Lance datasets.
//!
//! Accepted layouts, detected per line:
//! - `chat`: OpenAI `{"messages": [{role, content}]}`; ShareGPT `{"conversations": [{from, value}]}`
//!   (with an optional top-level `system`); Alpaca `{instruction, input, output}`; TRL
//!   `{prompt, completion}` with strings or message lists.
//! - `completion`: TRL `{prompt, completion}` (strings); Alpaca (prompt = instruction, a blank line and
//!   input when present; completion = output).
//! - `preference`: TRL `{prompt, chosen, rejected}` with strings or message lists, and TRL's implicit
//!   prompt form (`chosen` and `rejected` as whole conversations sharing the prompt as a prefix).
//! - `prompts`: `{prompt | messages, verifiers?, answer?}`, and IFEval's input file convention
//!   `{key, prompt, instruction_id_list, kwargs}` (verifiers become `[{id, kwargs}]`).
//!
//! Every layout also takes `id` (or IFEval's `key`), `source`, `labels`, `score` and `meta`; any
//! other field is kept in `meta`, so nothing is lost. Choices: a missing id becomes `FILE:LINE`;
//! blank lines are skipped; OpenAI content given as a list of parts keeps its text parts joined by
//! a blank line; `null` content (tool-call turns) is read as empty.
//!
//! Failure: a malformed line is an error naming file, line and field; with `skip_bad` it is counted
//! by reason instead. Either way the output is one Lance transaction: a failed import leaves nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{DataError, Result};
use crate::kind::DatasetKind;
use crate::records::{ChatRow, CompletionRow, Message, PreferenceRow, PromptsRow, Provenance, Record, Role};
use crate::store::{Dataset, DatasetWriter, WriteMode};

/// Options of one import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Kind to write; `None` infers it from the first record.
    pub kind: Option<DatasetKind>,
    /// Count malformed lines and go on, instead of failing.
    pub skip_bad: bool,
    /// What to do when the output exists.
    pub mode: WriteMode,
    /// The `source` of rows that do not name one; defaults to the file name.
    pub source: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// The kind written.
    pub kind: Option<DatasetKind>,
    /// Rows written.
    pub rows: usize,
    /// Rows per detected input layout.
    pub layouts: BTreeMap<&'static str, usize>,
    /// Skipped lines per reason (only with `skip_bad`).
    pub skipped: BTreeMap<String, usize>,
    /// The first few skipped lines' full errors, to show the user.
    pub examples: Vec<String>,
}

/// A problem with one field of one record; the caller adds file and line.
#[derive(Debug)]
struct FieldError {
    field: String,
    problem: String,
    hint: &'static str,
}

type Fr<T> = std::result::Result<T, FieldError>;

fn bad(field: impl Into<String>, problem: impl Into<String>, hint: &'static str) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
        hint,
    }
}

const ROLE_HINT: &str = "roles are system, user, assistant, tool (ShareGPT's human and gpt are accepted)";

/// Infers the kind a JSON record most likely is.
fn infer_kind(obj: &Map<String, Value>) -> Option<DatasetKind> {
    let has = |k: &str| obj.contains_key(k);
    if has("chosen") && has("rejected") {
        Some(DatasetKind::Preference)
    } else if has("verifiers") || has("instruction_id_list") {
        Some(DatasetKind::Prompts)
    } else if has("messages") || has("conversations") || (has("instruction") && has("output")) {
        Some(DatasetKind::Chat)
    } else if has("prompt") && has("completion") {
        Some(DatasetKind::Completion)
    } else {
        None
    }
}

/// The text of a message `content`: a string, `null`, or OpenAI's list of parts.
fn content_text(v: &Value, field: &str) -> Fr<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                match part.get("text").and_then(Value::as_str) {
                    Some(t) => texts.push(t),
                    None if part.get("type").and_then(Value::as_str).is_some() => {} // image and other parts
                    None => return Err(bad(format!("{field}[{i}]"), "a content part without `text`", "")),
                }
            }
            Ok(texts.join("\n\n"))
        }
        other => Err(bad(field, format!("expected a string, found {}", type_name(other)), "")),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Messages from OpenAI (`role`/`content`) or ShareGPT (`from`/`value`) objects.
fn parse_messages(v: &Value, field: &str) -> Fr<Vec<Message>> {
    let list = v.as_array().ok_or_else(|| {
        bad(
            field,
            format!("expected a list of messages, found {}", type_name(v)),
            "",
        )
    })?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("{field}[{i}]");
            let obj = m
                .as_object()
                .ok_or_else(|| bad(&at, format!("expected a message object, found {}", type_name(m)), ""))?;
            let (role_key, content_key) = if obj.contains_key("from") {
                ("from", "value")
            } else {
                ("role", "content")
            };
            let role_value = obj
                .get(role_key)
                .ok_or_else(|| bad(format!("{at}.{role_key}"), "missing", ROLE_HINT))?;
            let role_name = role_value.as_str().ok_or_else(|| {
                bad(
                    format!("{at}.{role_key}"),
                    format!("expected a string, found {}", type_name(role_value)),
                    ROLE_HINT,
                )
            })?;
            let role = Role::parse(role_name).ok_or_else(|| {
                bad(
                    format!("{at}.{role_key}"),
                    format!("unknown role {role_name:?}"),
                    ROLE_HINT,
                )
            })?;
            let content = match obj.get(content_key) {
                Some(c) => content_text(c, &format!("{at}.{content_key}"))?,
                None => return Err(bad(format!("{at}.{content_key}"), "missing", "")),
            };
            Ok(Message::new(role, content))
        })
        .collect()
}

/// A prompt given as a string (one user turn) or as messages.
fn parse_prompt(v: &Value, field: &str) -> Fr<Vec<Message>> {
    match v {
        Value::String(s) => Ok(vec![Message::new(Role::User, s.clone())]),
        _ => parse_messages(v, field),
    }
}

/// A completion given as a string or as a list of assistant messages (TRL's conversational form).
fn parse_completion(v: &Value, field: &str) -> Fr<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(_) => {
            let messages = parse_messages(v, field)?;
            match messages.as_slice() {
                [m] if m.role == Role::Assistant => Ok(m.content.clone()),
                _ => Err(bad(
                    field,
                    "expected one assistant message",
                    "a completion is the assistant's reply only",
                )),
            }
        }
        other => Err(bad(
            field,
            format!("expected a string or messages, found {}", type_name(other)),
            "",
        )),
    }
}

fn take_string(obj: &mut Map<String, Value>, key: &str) -> Fr<Option<String>> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(key, format!("expected a string, found {}", type_name(&other)), "")),
    }
}

fn require_string(obj: &mut Map<String, Value>, key: &str) -> Fr<String> {
    take_string(obj, key)?.ok_or_else(|| bad(key, "missing", ""))
}

/// The provenance columns and id, taking what they consume out of `obj`; what remains goes to meta.
struct Common {
    id: String,
    source: Option<String>,
    labels: Vec<String>,
    score: Option<f32>,
    meta: Map<String, Value>,
}

fn take_common(obj: &mut Map<String, Value>) -> Fr<Common> {
    let id = match obj.remove("id").or_else(|| obj.remove("key")) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(bad(
                "id",
                format!("expected a string or number, found {}", type_name(&other)),
                "",
            ));
        }
    };
    let source = take_string(obj, "source")?;
    let labels = match obj.remove("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                other => Err(bad(
                    format!("labels[{i}]"),
                    format!("expected a string, found {}", type_name(&other)),
                    "",
                )),
            })
            .collect::<Fr<_>>()?,
        Some(other) => {
            return Err(bad(
                "labels",
                format!("expected a list of strings, found {}", type_name(&other)),
                "",
            ));
        }
    };
    let score = match obj.remove("score") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64().map(|f| f as f32),
        Some(other) => {
            return Err(bad(
                "score",
                format!("expected a number, found {}", type_name(&other)),
                "",
            ));
        }
    };
    let meta = match obj.remove("meta") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => m,
            _ => return Err(bad("meta", "expected a JSON object (or its text)", "")),
        },
        Some(other) => {
            return Err(bad(
                "meta",
                format!("expected an object, found {}", type_name(&other)),
                "",
            ));
        }
    };
    Ok(Common {
        id,
        source,
        labels,
        score,
        meta,
    })
}

/// Everything a converter needs besides the record.
struct LineCtx<'a> {
    default_id: String,
    default_source: &'a str,
}

impl Common {
    fn finish(self, rest: Map<String, Value>, ctx: &LineCtx) -> (String, Provenance) {
        let mut meta = self.meta;
        // Fields no layout consumed are kept, not dropped.
        for (k, v) in rest {
            meta.entry(k).or_insert(v);
        }
        let id = if self.id.is_empty() {
            ctx.default_id.clone()
        } else {
            self.id
        };
        let provenance = Provenance {
            source: self.source.unwrap_or_else(|| ctx.default_source.to_string()),
            labels: self.labels,
            score: self.score,
            meta: Value::Object(meta).to_string(),
        };
        (id, provenance)
    }
}

/// Alpaca's prompt: the instruction, then a blank line and the input when there is one.
fn alpaca_prompt(obj: &mut Map<String, Value>) -> Fr<String> {
    let instruction = require_string(obj, "instruction")?;
    let input = take_string(obj, "input")?.unwrap_or_default();
    Ok(if input.trim().is_empty() {
        instruction
    } else {
        format!("{instruction}\n\n{input}")
    })
}

fn convert_chat(mut obj: Map<String, Value>, ctx: &LineCtx) -> Fr<(ChatRow, &'static str)> {
    let common = take_common(&mut obj)?;
    let (messages, layout) = if let Some(v) = obj.remove("messages") {
        (parse_messages(&v, "messages")?, "openai-messages")
    } else if let Some(v) = obj.remove("conversations") {
        let mut messages = Vec::new();
        if let Some(system) = take_string(&mut obj, "system")?.filter(|s| !s.is_empty()) {
            messages.push(Message::new(Role::System, system));
        }
        messages.extend(parse_messages(&v, "conversations")?);
        (messages, "sharegpt")
    } else if obj.contains_key("instruction") {
        let mut messages = Vec::new();
        if let Some(system) = take_string(&mut obj, "system")?.filter(|s| !s.is_empty()) {
            messages.push(Message::new(Role::System, system));
        }
        messages.push(Message::new(Role::User, alpaca_prompt(&mut obj)?));
        messages.push(Message::new(Role::Assistant, require_string(&mut obj, "output")?));
        (messages, "alpaca")
    } else if let (Some(p), Some(c)) = (obj.remove("prompt"), obj.remove("completion")) {
        let mut messages = parse_prompt(&p, "prompt")?;
        match &c {
            Value::String(s) => messages.push(Message::new(Role::Assistant, s.clone())),
            _ => messages.extend(parse_messages(&c, "completion")?),
        }
        (messages, "trl-prompt-completion")
    } else {
        return Err(bad(
            "messages",
            "missing",
            "chat records have `messages` (OpenAI), `conversations` (ShareGPT), `instruction`/`output` (Alpaca) or `prompt`/`completion` (TRL)",
        ));
    };
    if messages.is_empty() {
        return Err(bad("messages", "the conversation is empty", ""));
    }
    let (id, provenance) = common.finish(obj, ctx);
    Ok((
        ChatRow {
            id,
            messages,
            provenance,
        },
        layout,
    ))
}

fn convert_completion(mut obj: Map<String, Value>, ctx: &LineCtx) -> Fr<(CompletionRow, &'static str)> {
    let common = take_common(&mut obj)?;
    let (prompt, completion, layout) = if obj.contains_key("instruction") {
        let prompt = alpaca_prompt(&mut obj)?;
        (prompt, require_string(&mut obj, "output")?, "alpaca")
    } else {
        let prompt = match obj.remove("prompt") {
            Some(Value::String(s)) => s,
            Some(Value::Array(_)) => {
                return Err(bad(
                    "prompt",
                    "a list of messages",
                    "import conversational data with --kind chat",
                ));
            }
            Some(other) => {
                return Err(bad(
                    "prompt",
                    format!("expected a string, found {}", type_name(&other)),
                    "",
                ));
            }
            None => {
                return Err(bad(
                    "prompt",
                    "missing",
                    "completion records have `prompt`/`completion` (TRL) or `instruction`/`output` (Alpaca)",
                ));
            }
        };
        (prompt, require_string(&mut obj, "completion")?, "trl-prompt-completion")
    };
    let (id, provenance) = common.finish(obj, ctx);
    Ok((
        CompletionRow {
            id,
            prompt,
            completion,
            provenance,
        },
        layout,
    ))
}

fn convert_preference(mut obj: Map<String, Value>, ctx: &LineCtx) -> Fr<(PreferenceRow, &'static str)> {
    let common = take_common(&mut obj)?;
    let chosen_v = obj.remove("chosen").ok_or_else(|| bad("chosen", "missing", ""))?;
    let rejected_v = obj.remove("rejected").ok_or_else(|| bad("rejected", "missing", ""))?;
    let (prompt, chosen, rejected, layout) = match obj.remove("prompt") {
        Some(p) => (
            parse_prompt(&p, "prompt")?,
            parse_completion(&chosen_v, "chosen")?,
            parse_completion(&rejected_v, "rejected")?,
            "trl-preference",
        ),
        None => {
            // TRL's implicit prompt: two conversations that differ only in their last assistant turn.
            let chosen = parse_messages(&chosen_v, "chosen")?;
            let rejected = parse_messages(&rejected_v, "rejected")?;
            let split = |m: &[Message], field: &str| -> Fr<(Vec<Message>, String)> {
                match m.split_last() {
                    Some((last, head)) if last.role == Role::Assistant => Ok((head.to_vec(), last.content.clone())),
                    _ => Err(bad(
                        field,
                        "does not end with an assistant turn",
                        "without `prompt`, chosen and rejected are whole conversations ending in the replies",
                    )),
                }
            };
            let (prompt_c, chosen) = split(&chosen, "chosen")?;
            let (prompt_r, rejected) = split(&rejected, "rejected")?;
            if prompt_c != prompt_r {
                return Err(bad(
                    "rejected",
                    "its conversation differs from chosen's before the last turn",
                    "give the shared part as `prompt`",
                ));
            }
            (prompt_c, chosen, rejected, "trl-implicit-prompt")
        }
    };
    let (id, provenance) = common.finish(obj, ctx);
    Ok((
        PreferenceRow {
            id,
            prompt,
            chosen,
            rejected,
            ref_chosen_logp: None,
            ref_rejected_logp: None,
            provenance,
        },
        layout,
    ))
}

fn convert_prompts(mut obj: Map<String, Value>, ctx: &LineCtx) -> Fr<(PromptsRow, &'static str)> {
    let common = take_common(&mut obj)?;
    let prompt = if let Some(p) = obj.remove("prompt") {
        parse_prompt(&p, "prompt")?
    } else if let Some(m) = obj.remove("messages") {
        parse_messages(&m, "messages")?
    } else {
        return Err(bad(
            "prompt",
            "missing",
            "prompts records have `prompt` (a string or messages) or `messages`",
        ));
    };
    if prompt.last().is_some_and(|m| m.role == Role::Assistant) {
        return Err(bad(
            "prompt",
            "ends with an assistant turn",
            "a prompt is what the model answers; put a reference reply in `answer`",
        ));
    }
    let (verifiers, layout) = if let Some(ids) = obj.remove("instruction_id_list") {
        let ids = ids
            .as_array()
            .ok_or_else(|| bad("instruction_id_list", "expected a list of instruction ids", ""))?
            .clone();
        let kwargs = match obj.remove("kwargs") {
            Some(Value::Array(k)) => k,
            None | Some(Value::Null) => vec![Value::Object(Map::new()); ids.len()],
            Some(other) => {
                return Err(bad(
                    "kwargs",
                    format!("expected a list, found {}", type_name(&other)),
                    "",
                ));
            }
        };
        if kwargs.len() != ids.len() {
            return Err(bad(
                "kwargs",
                format!("{} entries for {} instruction ids", kwargs.len(), ids.len()),
                "IFEval gives one kwargs object per instruction id",
            ));
        }
        let list: Vec<Value> = ids
            .into_iter()
            .zip(kwargs)
            .enumerate()
            .map(|(i, (id, kw))| match id {
                Value::String(_) => Ok(serde_json::json!({"id": id, "kwargs": kw})),
                other => Err(bad(
                    format!("instruction_id_list[{i}]"),
                    format!("expected a string, found {}", type_name(&other)),
                    "",
                )),
            })
            .collect::<Fr<_>>()?;
        (Value::Array(list).to_string(), "ifeval")
    } else {
        let v = match obj.remove("verifiers") {
            None | Some(Value::Null) => Value::Array(Vec::new()),
            Some(Value::String(s)) => {
                serde_json::from_str(&s).map_err(|e| bad("verifiers", format!("not JSON: {e}"), ""))?
            }
            Some(v) => v,
        };
        let list = v
            .as_array()
            .ok_or_else(|| bad("verifiers", "expected a list of {id, kwargs}", ""))?;
        for (i, item) in list.iter().enumerate() {
            if item.get("id").and_then(Value::as_str).is_none() {
                return Err(bad(
                    format!("verifiers[{i}].id"),
                    "missing or not a string",
                    "each verifier is {\"id\": ..., \"kwargs\": {...}}",
                ));
            }
        }
        (v.to_string(), "prompts")
    };
    let answer = match obj.remove("answer") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(bad(
                "answer",
                format!("expected a string or number, found {}", type_name(&other)),
                "",
            ));
        }
    };
    let (id, provenance) = common.finish(obj, ctx);
    Ok((
        PromptsRow {
            id,
            prompt,
            verifiers,
            answer,
            provenance,
        },
        layout,
    ))
}

/// One line of the input, read as bytes so that bad UTF-8 is reported, not a crash.
struct Lines<R> {
    reader: R,
    line: u64,
    buf: Vec<u8>,
    bytes_read: u64,
}

impl<R: BufRead> Lines<R> {
    fn next_line(&mut self) -> std::io::Result<Option<&[u8]>> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        self.bytes_read += n as u64;
        Ok(Some(&self.buf))
    }
}

/// Why a line was skipped, for the report.
fn reason_of(e: &DataError) -> String {
    match e {
        DataError::BadField { field, problem, .. } => {
            let field = field.split(['[', '.']).next().unwrap_or(field);
            let problem = problem.split(':').next().unwrap_or(problem);
            format!("`{field}`: {problem}")
        }
        DataError::BadLine { problem, .. } => problem.split(':').next().unwrap_or(problem).to_string(),
        other => other.to_string(),
    }
}

/// Imports a JSONL file into a new dataset at `out`.
///
/// `progress` is called with the bytes read so far, for a progress bar.
///
/// # Errors
/// On the first malformed line unless `skip_bad`; on an empty input; when the kind cannot be
/// inferred; when the output exists and the mode is `Create`. A failed import leaves no dataset.
pub fn import_jsonl(
    input: &Path,
    out: &Path,
    opts: &ImportOptions,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport> {
    let file = std::fs::File::open(input).map_err(|e| DataError::io(input, e))?;
    let mut lines = Lines {
        reader: BufReader::with_capacity(1 << 20, file),
        line: 0,
        buf: Vec::new(),
        bytes_read: 0,
    };
    let default_source = opts.source.clone().unwrap_or_else(|| {
        input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let stem = input
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut report = ImportReport::default();
    let mut sink: Option<Sink> = None;
    let mut saw_content = false;
    loop {
        let line_no = lines.line + 1;
        let bytes = match lines.next_line().map_err(|e| DataError::io(input, e))? {
            Some(b) => b,
            None => break,
        };
        let parsed = parse_line(input, line_no, bytes);
        let obj = match parsed {
            Ok(None) => continue,
            Ok(Some(obj)) => obj,
            Err(e) => {
                saw_content = true;
                skip_or_fail(e, opts, &mut report)?;
                continue;
            }
        };
        saw_content = true;
        if sink.is_none() {
            let kind = match opts.kind {
                Some(k) => k,
                None => infer_kind(&obj).ok_or_else(|| DataError::BadLine {
                    path: input.to_path_buf(),
                    line: line_no,
                    problem: "cannot tell which dataset kind this record is".into(),
                    hint: "pass --kind chat|completion|preference|prompts".into(),
                })?,
            };
            if !matches!(
                kind,
                DatasetKind::Chat | DatasetKind::Completion | DatasetKind::Preference | DatasetKind::Prompts
            ) {
                return Err(DataError::Invalid(format!(
                    "`data import` writes chat, completion, preference or prompts datasets, not `{kind}`\n  hint: `{kind}` datasets are written by `firebrand synth` or `data tokenize`"
                )));
            }
            report.kind = Some(kind);
            sink = Some(Sink::new(kind, DatasetWriter::create(out, kind, opts.mode)?));
        }
        let ctx = LineCtx {
            default_id: format!("{stem}:{line_no}"),
            default_source: &default_source,
        };
        let s = sink.as_mut().expect("created above");
        match s.push(obj, &ctx) {
            Ok(layout) => {
                *report.layouts.entry(layout).or_default() += 1;
                report.rows += 1;
            }
            Err(fe) => {
                let e = DataError::BadField {
                    path: input.to_path_buf(),
                    location: format!("line {line_no}"),
                    field: fe.field,
                    problem: fe.problem,
                    hint: fe.hint.to_string(),
                };
                skip_or_fail(e, opts, &mut report)?;
            }
        }
        if s.buffered() >= 4096 {
            s.write()?;
            progress(lines.bytes_read);
        }
    }
    progress(lines.bytes_read);
    if !saw_content {
        return Err(DataError::Empty {
            path: input.to_path_buf(),
            what: "the file has no records".into(),
        });
    }
    match sink {
        Some(mut s) => {
            s.write()?;
            s.writer.commit()?;
        }
        None => {
            return Err(DataError::Empty {
                path: input.to_path_buf(),
                what: format!(
                    "no line could be imported ({} skipped)",
                    report.skipped.values().sum::<usize>()
                ),
            });
        }
    }
    Ok(report)
}

fn skip_or_fail(e: DataError, opts: &ImportOptions, report: &mut ImportReport) -> Result<()> {
    if !opts.skip_bad {
        return Err(e);
    }
    *report.skipped.entry(reason_of(&e)).or_default() += 1;
    if report.examples.len() < 5 {
        report.examples.push(e.to_string());
    }
    Ok(())
}

/// Parses one line: `None` for a blank line, an object otherwise.
fn parse_line(path: &Path, line: u64, bytes: &[u8]) -> Result<Option<Map<String, Value>>> {
    let bad_line = |problem: String, hint: &str| DataError::BadLine {
        path: path.to_path_buf(),
        line,
        problem,
        hint: hint.to_string(),
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        bad_line(
            format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1),
            "re-encode the file as UTF-8, e.g. with `iconv -f latin1 -t utf-8`",
        )
    })?;
    let text = text.trim_start_matches('\u{feff}');
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => Ok(Some(obj)),
        Ok(other) => Err(bad_line(
            format!("expected a JSON object, found {}", type_name(&other)),
            "each line of a JSONL file is one object",
        )),
        Err(e) => Err(bad_line(
            format!("not JSON: {e}"),
            if text.trim_start().starts_with('[') {
                "this looks like a JSON array; JSONL has one object per line"
            } else {
                ""
            },
        )),
    }
}

/// Rows of the output kind, buffered between writes.
struct Sink {
    writer: DatasetWriter,
    rows: Rows,
}

enum Rows {
    Chat(Vec<ChatRow>),
    Completion(Vec<CompletionRow>),
    Preference(Vec<PreferenceRow>),
    Prompts(Vec<PromptsRow>),
}

impl Sink {
    fn new(kind: DatasetKind, writer: DatasetWriter) -> Self {
        let rows = match kind {
            DatasetKind::Chat => Rows::Chat(Vec::new()),
            DatasetKind::Completion => Rows::Completion(Vec::new()),
            DatasetKind::Preference => Rows::Preference(Vec::new()),
            _ => Rows::Prompts(Vec::new()),
        };
        Sink { writer, rows }
    }

    fn push(&mut self, obj: Map<String, Value>, ctx: &LineCtx) -> Fr<&'static str> {
        fn add<R>(rows: &mut Vec<R>, r: Fr<(R, &'static str)>) -> Fr<&'static str> {
            let (row, layout) = r?;
            rows.push(row);
            Ok(layout)
        }
        match &mut self.rows {
            Rows::Chat(r) => add(r, convert_chat(obj, ctx)),
            Rows::Completion(r) => add(r, convert_completion(obj, ctx)),
            Rows::Preference(r) => add(r, convert_preference(obj, ctx)),
            Rows::Prompts(r) => add(r, convert_prompts(obj, ctx)),
        }
    }

    fn buffered(&self) -> usize {
        match &self.rows {
            Rows::Chat(r) => r.len(),
            Rows::Completion(r) => r.len(),
            Rows::Preference(r) => r.len(),
            Rows::Prompts(r) => r.len(),
        }
    }

    fn write(&mut self) -> Result<()> {
        fn flush<R: Record>(w: &mut DatasetWriter, rows: &mut Vec<R>) -> Result<()> {
            w.write(rows)?;
            rows.clear();
            Ok(())
        }
        match &mut self.rows {
            Rows::Chat(r) => flush(&mut self.writer, r),
            Rows::Completion(r) => flush(&mut self.writer, r),
            Rows::Preference(r) => flush(&mut self.writer, r),
            Rows::Prompts(r) => flush(&mut self.writer, r),
        }
    }
}

/// Writes every row of a dataset as one JSON object per line, in the layout `import` reads back
/// (`meta` as an object); `progress` gets the rows written so far. Returns the number of rows
/// written.
///
/// # Errors
/// When the dataset cannot be read or `out` cannot be written.
pub fn export_jsonl(ds: &Dataset, out: &mut dyn std::io::Write, mut progress: impl FnMut(usize)) -> Result<usize> {
    let mut n = 0;
    for batch in ds.scan(None, 4096)? {
        let batch = batch?;
        for row in 0..batch.num_rows() {
            let obj = crate::records::row_json(&batch, row)?;
            serde_json::to_writer(&mut *out, &Value::Object(obj))
                .map_err(|e| DataError::Invalid(format!("writing JSON: {e}")))?;
            out.write_all(b"\n")
                .map_err(|e| DataError::io(PathBuf::from("<output>"), e))?;
            n += 1;
        }
        progress(n);
    }
    Ok(n)
}
