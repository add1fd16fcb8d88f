//! A model's own chat template: the Jinja `chat_template` of its `tokenizer_config.json` (or
//! `chat_template.jinja`), rendered in Rust with minijinja as `transformers`'
//! `apply_chat_template` renders it, with the loss mask of the assistant turns.
//!
//! Follows `transformers/utils/chat_template_utils.py` (`_compile_jinja_template`,
//! `render_jinja_template`): `trim_blocks` and `lstrip_blocks` on, loop controls, the globals
//! `raise_exception` and `strftime_now`, a `tojson` filter that writes what Python's `json.dumps`
//! writes (`", "` and `": "` separators, no ASCII escaping), Python's string, dict and list methods
//! (minijinja-contrib's `pycompat`), and the variables `messages`, `add_generation_prompt` and the
//! tokenizer's special tokens (`bos_token`, `eos_token`, `unk_token`, `pad_token`).
//!
//! Loss masks. A template with `{% generation %}` blocks marks what it trains itself: each block
//! becomes a filter block that wraps its output in two private-use characters, whose positions
//! are the trained spans (the same spans `return_assistant_tokens_mask` gives). Other templates
//! (most on the hub) are measured: assistant turn `i` spans from the end of the conversation up to
//! it rendered with `add_generation_prompt` to the end of the conversation through it, trailing
//! whitespace excluded, so the content and the end-of-turn token are trained and the next turn's
//! header is not. Where a template rewrites earlier turns (Qwen3 drops old reasoning), so those
//! prefixes are not prefixes of the whole text, the turn's content is replaced by a probe string
//! and the conversation rendered again: the text around the probe is the text around the turn as
//! rendered, which is trained with the `eos_token` right after it. Choices where `transformers` is
//! silent: a turn that neither way places is an error naming the turn, never a silently empty
//! mask.

use std::ops::Range;
use std::path::Path;

use minijinja::value::Value;
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;

use crate::error::{DataError, Result};
use crate::records::{Message, Role};

use super::MaskMode;

/// Wraps what a `{% generation %}` block renders.
const OPEN: char = '\u{F8F0}';
const CLOSE: char = '\u{F8F1}';
const NAME: &str = "chat";

/// The special tokens a template may read, from `tokenizer_config.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpecialTokens {
    /// `bos_token`.
    pub bos_token: Option<String>,
    /// `eos_token`.
    pub eos_token: Option<String>,
    /// `unk_token`.
    pub unk_token: Option<String>,
    /// `pad_token`.
    pub pad_token: Option<String>,
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    source: String,
    specials: SpecialTokens,
    env: Environment<'static>,
    generation_blocks: bool,
}

impl PartialEq for ChatTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.specials == other.specials
    }
}

fn template_err(problem: impl std::fmt::Display) -> DataError {
    DataError::Invalid(format!("chat template: {problem}"))
}

/// Python's `json.dumps(x, ensure_ascii=False)`: `", "` between items, `": "` after keys.
struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn tojson(value: Value, indent: Option<usize>) -> std::result::Result<Value, JinjaError> {
    // Serialized from the template's value itself, so maps keep their order as Python's do.
    let bad = |e: serde_json::Error| JinjaError::new(ErrorKind::InvalidOperation, e.to_string());
    let mut out = Vec::new();
    match indent {
        Some(n) => {
            let pad = " ".repeat(n);
            let fmt = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            value
                .serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
                .map_err(bad)?;
        }
        None => value
            .serialize(&mut serde_json::Serializer::with_formatter(&mut out, PyFormatter))
            .map_err(bad)?,
    }
    Ok(Value::from_safe_string(String::from_utf8_lossy(&out).into_owned()))
}

/// `{% generation %}` and `{% endgeneration %}` (with their whitespace controls) as a filter
/// block; whether the template had any.
fn rewrite_generation_tags(source: &str) -> (String, bool) {
    let control = |c: &char| *c == '-' || *c == '+';
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut found = false;
    while let Some(open) = rest.find("{%") {
        let Some(len) = rest[open..].find("%}") else {
            break;
        };
        out.push_str(&rest[..open]);
        let body = &rest[open + 2..open + len];
        let lead: String = body.chars().next().filter(control).into_iter().collect();
        let trail: String = body.chars().last().filter(control).into_iter().collect();
        match body.trim_matches(|c: char| control(&c) || c.is_whitespace()) {
            "generation" => {
                found = true;
                out.push_str(&format!("{{%{lead} filter _firebrand_generation {trail}%}}"));
            }
            "endgeneration" => out.push_str(&format!("{{%{lead} endfilter {trail}%}}")),
            _ => out.push_str(&rest[open..open + len + 2]),
        }
        rest = &rest[open + len + 2..];
    }
    out.push_str(rest);
    (out, found)
}

impl ChatTemplate {
    /// Compiles `source` with the tokenizer's special tokens.
    ///
    /// # Errors
    /// When the template does not parse.
    pub fn new(source: &str, specials: SpecialTokens) -> Result<Self> {
        let (rewritten, generation_blocks) = rewrite_generation_tags(source);
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_filter("_firebrand_generation", |s: String| format!("{OPEN}{s}{CLOSE}"));
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |format: String| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            strftime(&format, now)
        });
        env.add_template_owned(NAME, rewritten).map_err(template_err)?;
        Ok(ChatTemplate {
            source: source.to_string(),
            specials,
            env,
            generation_blocks,
        })
    }

    /// The template of a model folder: `chat_template.jinja`, else `tokenizer_config.json`'s
    /// `chat_template` (a string, or the list of named templates, whose `default` is taken);
    /// `None` when the folder has neither.
    ///
    /// # Errors
    /// When a file does not read or the template does not compile.
    pub fn from_folder(dir: &Path) -> Result<Option<Self>> {
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| DataError::Invalid(format!("{}: {e}", config_path.display())))?,
            Err(_) => serde_json::Value::Null,
        };
        let token = |key: &str| -> Option<String> {
            match config.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                v => v.get("content")?.as_str().map(str::to_string),
            }
        };
        let specials = SpecialTokens {
            bos_token: token("bos_token"),
            eos_token: token("eos_token"),
            unk_token: token("unk_token"),
            pad_token: token("pad_token"),
        };
        let file = dir.join("chat_template.jinja");
        let source = if file.exists() {
            Some(std::fs::read_to_string(&file).map_err(|e| DataError::io(&file, e))?)
        } else {
            match config.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Array(named)) => named
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
                _ => None,
            }
        };
        source
            .map(|s| ChatTemplate::new(&s, specials).map_err(|e| DataError::Invalid(format!("{}: {e}", dir.display()))))
            .transpose()
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The tokenizer's special tokens the template sees.
    pub fn specials(&self) -> &SpecialTokens {
        &self.specials
    }

    /// The text of `messages`, and the prompt for the next assistant turn when
    /// `add_generation_prompt`; `{% generation %}` markers are left in.
    fn render_marked(&self, messages: &[Message], add_generation_prompt: bool, tools: Option<&str>) -> Result<String> {
        let tools: Option<Value> = tools
            .map(|t| serde_json::from_str(t).map_err(|e| template_err(format!("tools: {e}"))))
            .transpose()?;
        if let Some(m) = messages.iter().find(|m| m.content.contains([OPEN, CLOSE])) {
            return Err(template_err(format!(
                "a {} message holds U+F8F0 or U+F8F1, which mark trained spans",
                m.role.name()
            )));
        }
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| minijinja::context! { role => m.role.name(), content => m.content.as_str() })
            .collect();
        let s = &self.specials;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            tools => tools,
            bos_token => s.bos_token,
            eos_token => s.eos_token,
            unk_token => s.unk_token,
            pad_token => s.pad_token,
        };
        let template = self.env.get_template(NAME).map_err(template_err)?;
        template.render(ctx).map_err(|e| match e.kind() {
            ErrorKind::InvalidOperation => template_err(e.detail().unwrap_or("raise_exception")),
            _ => template_err(e),
        })
    }

    /// The text of `messages` (with the prompt for the next assistant turn when
    /// `add_generation_prompt`), as `apply_chat_template(..., tokenize=False)` gives it.
    ///
    /// # Errors
    /// When the template raises (e.g. roles that do not alternate) or fails.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, add_generation_prompt, None)
    }

    /// As [`ChatTemplate::render`], with the tools the template offers the model: a JSON list of
    /// schemas, as `apply_chat_template`'s `tools` (its keys keep their order).
    ///
    /// # Errors
    /// As [`ChatTemplate::render`].
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        tools: Option<&str>,
    ) -> Result<String> {
        Ok(strip_marks(&self.render_marked(messages, add_generation_prompt, tools)?).0)
    }

    /// The text of `messages` and the byte spans `mask` trains on.
    ///
    /// # Errors
    /// When rendering fails, or an assistant turn cannot be found in the text.
    pub fn render_masked(&self, messages: &[Message], mask: MaskMode) -> Result<(String, Vec<Range<usize>>)> {
        let last_assistant = messages.iter().rposition(|m| m.role == Role::Assistant);
        let trained = |i: usize| match mask {
            MaskMode::All => false,
            MaskMode::Assistant => messages[i].role == Role::Assistant,
            MaskMode::Completion => Some(i) == last_assistant,
        };
        let (text, marked) = strip_marks(&self.render_marked(messages, false, None)?);
        if mask == MaskMode::All {
            let all: Vec<Range<usize>> = std::iter::once(0..text.len()).filter(|r| !r.is_empty()).collect();
            return Ok((text, all));
        }
        if self.generation_blocks {
            // The template's own spans, in order: the k-th belongs to the k-th assistant turn.
            let turns: Vec<usize> = (0..messages.len())
                .filter(|&i| messages[i].role == Role::Assistant)
                .collect();
            let spans = marked
                .into_iter()
                .enumerate()
                .filter(|(k, _)| turns.get(*k).is_some_and(|&i| trained(i)))
                .map(|(_, s)| s)
                .filter(|s| !s.is_empty())
                .collect();
            return Ok((text, spans));
        }
        let mut spans = Vec::new();
        let mut cursor = 0;
        for i in (0..messages.len()).filter(|&i| messages[i].role == Role::Assistant) {
            let span = self.measure(messages, i, &text, cursor)?;
            cursor = span.end;
            if trained(i) && !span.is_empty() {
                spans.push(span);
            }
        }
        Ok((text, spans))
    }

    /// Where assistant turn `i` lies in `text` (the whole conversation rendered), at or after
    /// `from`.
    fn measure(&self, messages: &[Message], i: usize, text: &str, from: usize) -> Result<Range<usize>> {
        // A template may refuse a conversation cut short (it then falls to the probe below).
        if let (Ok(prompt), Ok(through)) = (self.render(&messages[..i], true), self.render(&messages[..=i], false))
            && through.starts_with(&prompt)
            && text.starts_with(&through)
            && prompt.len() >= from
        {
            let end = prompt.len() + through[prompt.len()..].trim_end().len();
            return Ok(prompt.len()..end);
        }
        // The template renders this turn differently once later turns follow (Qwen3 drops the
        // reasoning of earlier turns), or refuses the shorter conversation: render again with the
        // content replaced by a probe. What comes before and after the probe is what comes before
        // and after the content.
        let mut probe = messages.to_vec();
        probe[i].content = PROBE.to_string();
        let probed = self.render(&probe, false)?;
        let lost = || {
            template_err(format!(
                "assistant turn {} cannot be placed in the rendered text (the template renders it in a way firebrand cannot follow; a template with {{% generation %}} blocks marks it itself)",
                i + 1
            ))
        };
        let at = probed.find(PROBE).ok_or_else(lost)?;
        let after = &probed[at + PROBE.len()..];
        let len = text.len().checked_sub(at + after.len()).ok_or_else(lost)?;
        if at < from || !text.starts_with(&probed[..at]) || !text.ends_with(after) {
            return Err(lost());
        }
        let mut end = at + text[at..at + len].trim_end().len();
        // The end-of-turn token right after the content is trained too.
        if let Some(eot) = self.specials.eos_token.as_deref().filter(|t| !t.is_empty())
            && text[end..].starts_with(eot)
        {
            end += eot.len();
        }
        Ok(at..end)
    }
}

/// What replaces an assistant turn's content to find where the template puts it.
const PROBE: &str = "\u{F8F2}firebrand-probe\u{F8F3}";

/// Python's `strftime` of the UTC time `secs` after the epoch, for the directives chat templates
/// use (`%d %b %Y` in Llama 3.1's): `%Y %y %m %d %e %b %B %a %A %H %I %M %S %p %j %%`; others
/// are written as they are. (`transformers` uses the local time; a server's is usually UTC.)
fn strftime(format: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][(month - 1) as usize];
    let yday = before + day + i64::from(leap && month > 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let (hour, minute, second) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let m = MONTHS[(month - 1) as usize];
        match d {
            'Y' => out.push_str(&year.to_string()),
            'y' => out.push_str(&format!("{:02}", year % 100)),
            'm' => out.push_str(&format!("{month:02}")),
            'd' => out.push_str(&format!("{day:02}")),
            'e' => out.push_str(&format!("{day:2}")),
            'b' => out.push_str(&m[..3]),
            'B' => out.push_str(m),
            'a' => out.push_str(&DAYS[weekday][..3]),
            'A' => out.push_str(DAYS[weekday]),
            'H' => out.push_str(&format!("{hour:02}")),
            'I' => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            'M' => out.push_str(&format!("{minute:02}")),
            'S' => out.push_str(&format!("{second:02}")),
            'p' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            'j' => out.push_str(&format!("{yday:03}")),
            '%' => out.push('%'),
            other => {
                out.push('%');
                out.push(other);
            }
        }
    }
    out
}

/// `text` without the generation marks, and the spans they enclosed.
fn strip_marks(text: &str) -> (String, Vec<Range<usize>>) {
    let mut out = String::with_capacity(text.len());
    let mut spans = Vec::new();
    let mut open = None;
    for c in text.chars() {
        match c {
            OPEN => open = Some(out.len()),
            CLOSE => {
                if let Some(start) = open.take() {
                    spans.push(start..out.len());
                }
            }
            c => out.push(c),
        }
    }
    (out, spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture's tools, keys in the order the script wrote them.
    const TOOLS: &str = r#"[{"type": "function", "function": {"name": "add", "description": "Adds.", "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}]"#;

    /// What transformers renders (benches/hf/make_template_fixtures.py).
    const FIXTURES: &str = include_str!("../../tests/fixtures/chat_templates.json");

    fn messages(v: &serde_json::Value) -> Vec<Message> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let role = Role::parse(m["role"].as_str().unwrap()).unwrap();
                Message::new(role, m["content"].as_str().unwrap())
            })
            .collect()
    }

    fn specials(v: &serde_json::Value) -> SpecialTokens {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        SpecialTokens {
            bos_token: s("bos_token"),
            eos_token: s("eos_token"),
            ..Default::default()
        }
    }

    #[test]
    fn renders_what_transformers_renders() {
        let fixtures: serde_json::Value = serde_json::from_str(FIXTURES).unwrap();
        let date = strftime("%d %b %Y", {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        });
        let mut checked = 0;
        for case in fixtures["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let t = ChatTemplate::new(case["template"].as_str().unwrap(), specials(&case["specials"])).unwrap();
            // The tools as JSON text in the fixture's key order.
            let tools = case.get("tools").filter(|t| !t.is_null()).map(|_| TOOLS);
            for convo in case["conversations"].as_array().unwrap() {
                let m = messages(&convo["messages"]);
                if let Some(error) = convo.get("error") {
                    let ours = t.render(&m, false).unwrap_err().to_string();
                    assert!(ours.contains(error.as_str().unwrap()), "{name}: {ours}");
                    checked += 1;
                    continue;
                }
                for (key, prompt) in [("text", false), ("prompt", true)] {
                    let ours = t.render_with_tools(&m, prompt, tools).unwrap().replace(&date, "{DATE}");
                    assert_eq!(ours, convo[key].as_str().unwrap(), "{name} {key}");
                    checked += 1;
                }
                if let Some(spans) = convo.get("spans") {
                    let (_, ours) = t.render_masked(&m, MaskMode::Assistant).unwrap();
                    let theirs: Vec<Range<usize>> = spans
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s[0].as_u64().unwrap() as usize..s[1].as_u64().unwrap() as usize)
                        .collect();
                    assert_eq!(ours, theirs, "{name} spans");
                }
            }
        }
        assert_eq!(checked, 19);
    }

    fn trained(t: &ChatTemplate, m: &[Message], mask: MaskMode) -> Vec<String> {
        let (text, spans) = t.render_masked(m, mask).unwrap();
        spans.into_iter().map(|s| text[s].to_string()).collect()
    }

    #[test]
    fn assistant_turns_are_trained_with_their_end_of_turn_in_every_template() {
        let fixtures: serde_json::Value = serde_json::from_str(FIXTURES).unwrap();
        let case = |name: &str| {
            let c = fixtures["cases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap();
            let t = ChatTemplate::new(c["template"].as_str().unwrap(), specials(&c["specials"])).unwrap();
            (t, messages(&c["conversations"][0]["messages"]))
        };
        for (name, end) in [
            ("qwen25", "<|im_end|>"),
            ("llama31", "<|eot_id|>"),
            ("gemma", "<end_of_turn>"),
            ("generation", "<|im_end|>"),
        ] {
            let (t, m) = case(name);
            assert_eq!(
                trained(&t, &m, MaskMode::Assistant),
                vec![format!("Hello! ✓{end}"), format!("4{end}")],
                "{name}"
            );
            assert_eq!(trained(&t, &m, MaskMode::Completion), vec![format!("4{end}")], "{name}");
            let (text, all) = t.render_masked(&m, MaskMode::All).unwrap();
            assert_eq!(all, vec![0..text.len()]);
        }
        // Qwen3 drops the reasoning of the first turn once another follows: what is trained is
        // what the model sees.
        let (t, m) = case("qwen3");
        assert_eq!(
            trained(&t, &m, MaskMode::Assistant),
            vec![
                "4<|im_end|>".to_string(),
                "<think>\nadd again\n</think>\n\n6<|im_end|>".to_string()
            ]
        );
    }

    #[test]
    fn a_template_that_refuses_a_cut_conversation_is_probed_instead() {
        let source = concat!(
            "{% if messages|length % 2 == 1 %}{{ raise_exception('pairs only') }}{% endif %}",
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}"
        );
        let specials = SpecialTokens {
            eos_token: Some("<end>".into()),
            ..Default::default()
        };
        let t = ChatTemplate::new(source, specials).unwrap();
        let m = [Message::new(Role::User, "Hi"), Message::new(Role::Assistant, "Hello!")];
        assert_eq!(trained(&t, &m, MaskMode::Assistant), vec!["Hello!<end>".to_string()]);
    }

    #[test]
    fn generation_tags_keep_their_whitespace_control() {
        let (out, found) = rewrite_generation_tags("a {%- generation -%} b {% endgeneration %}{%+ if x %}");
        assert!(found);
        assert_eq!(
            out,
            "a {%- filter _firebrand_generation -%} b {% endfilter %}{%+ if x %}"
        );
    }

    #[test]
    fn strftime_writes_the_directives_templates_use() {
        // 2024-07-26 15:05:09 UTC, a Friday (Llama 3.1's default date).
        let t = 1_722_006_309;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %e, %y %H:%M:%S %p %j %%", t),
            "Friday July 26, 24 15:05:09 PM 208 %"
        );
    }

    #[test]
    fn a_template_that_raises_or_does_not_parse_is_an_error() {
        assert!(ChatTemplate::new("{% for %}", SpecialTokens::default()).is_err());
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", SpecialTokens::default()).unwrap();
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
    }
}
