//! Chat templates that render messages together with a per-token loss mask.
//!
//! Rendering produces the text and the byte spans to train on; [`encode`] tokenizes the whole text
//! at once (exactly as the model will see it at inference, no per-piece tokenization seams) and
//! marks every token whose byte offsets overlap a trained span, as transformers'
//! `return_assistant_tokens_mask` does.
//!
//! Templates (choices where the model cards are silent are noted):
//! - `chatml` (Qwen): `<|im_start|>{role}\n{content}<|im_end|>\n` per turn. Trained: the assistant
//!   content and its `<|im_end|>`, so the model learns to stop; the newline after it is not. No
//!   default system prompt is inserted (Qwen2's Jinja template adds one; we render what the data has).
//! - `llama3`: `<|begin_of_text|>` then `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>`
//!   per turn. Trained: the assistant content and its `<|eot_id|>`.
//! - `plain`: contents concatenated with nothing between them and `<|endoftext|>` after each
//!   assistant turn; meant for completion data (prompt then completion). Trained: the assistant
//!   content and its `<|endoftext|>`.
//! - `model`: the model's own Jinja `chat_template` ([`jinja`]), for every model trained with
//!   one; the default where the tokenizer's folder has one. The built-ins stay for models trained
//!   from scratch.
//!
//! Loss masks: `assistant` trains every assistant turn, `completion` only the last one, `all` every
//! token.

pub mod jinja;

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{DataError, Result};
use crate::records::{Message, Role};
use crate::tokenizer::Tokenizer;

pub use jinja::ChatTemplate;

/// A chat template: a built-in one by name, or a model's own.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// ChatML, as Qwen uses it.
    ChatMl,
    /// Llama 3's header format.
    Llama3,
    /// No markup: contents concatenated, end-of-text after assistant turns.
    Plain,
    /// A model's Jinja `chat_template`.
    Model(Arc<ChatTemplate>),
}

/// Which tokens the loss is computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMode {
    /// Every assistant turn.
    Assistant,
    /// Only the last assistant turn.
    Completion,
    /// Every token.
    All,
}

/// Rendered text and the byte spans of it to train on.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The full text.
    pub text: String,
    /// Sorted, non-overlapping byte ranges of `text` that are trained on.
    pub trained: Vec<Range<usize>>,
}

impl Template {
    /// Every built-in template.
    pub const ALL: [Template; 3] = [Template::ChatMl, Template::Llama3, Template::Plain];

    /// The name used on the command line and in recipes.
    pub fn name(&self) -> &'static str {
        match self {
            Template::ChatMl => "chatml",
            Template::Llama3 => "llama3",
            Template::Plain => "plain",
            Template::Model(_) => "model",
        }
    }

    /// The template a recipe or command names (`chatml`, `llama3`, `plain` or `model`), for a
    /// model whose tokenizer lives in `folder` (a folder, or a `tokenizer.json` in one). Unnamed:
    /// the folder's own template when it has one, else `chatml`. A folder template that is the
    /// Jinja of a built-in one (what `firebrand export` writes) is that built-in.
    ///
    /// # Errors
    /// An unknown name, `model` for a folder without a template, or a template that does not
    /// compile.
    pub fn resolve(name: Option<&str>, folder: Option<&Path>) -> Result<Template> {
        match name {
            None => Ok(Template::of_folder(folder)?.unwrap_or(Template::ChatMl)),
            Some("model") => Template::of_folder(folder)?.ok_or_else(|| {
                DataError::Invalid(format!(
                    "template `model`: {} has no chat_template (tokenizer_config.json or chat_template.jinja)\n  hint: name a built-in template: chatml, llama3 or plain",
                    folder.map_or("the tokenizer's folder".into(), |d| d.display().to_string())
                ))
            }),
            Some(other) => other.parse().map_err(DataError::Invalid),
        }
    }

    /// The template of the folder `folder` (or of the folder holding the file `folder`), if it has
    /// one: a built-in one when its Jinja is the built-in's, else [`Template::Model`].
    ///
    /// # Errors
    /// When the folder's files do not read or its template does not compile.
    pub fn of_folder(folder: Option<&Path>) -> Result<Option<Template>> {
        let Some(path) = folder else {
            return Ok(None);
        };
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(Path::new("."))
        };
        Ok(ChatTemplate::from_folder(dir)?.map(|t| {
            Template::ALL
                .into_iter()
                .find(|b| b.jinja() == t.source())
                .unwrap_or_else(|| Template::Model(Arc::new(t)))
        }))
    }

    /// The special tokens the template writes; the tokenizer must hold each as one token (a
    /// model's own template writes the tokens of its tokenizer).
    pub fn special_tokens(&self) -> &'static [&'static str] {
        match self {
            Template::ChatMl => &["<|im_start|>", "<|im_end|>"],
            Template::Llama3 => &[
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ],
            Template::Plain => &["<|endoftext|>"],
            Template::Model(_) => &[],
        }
    }

    /// The token that ends an assistant turn (where generation stops): for a model's template,
    /// its tokenizer's `eos_token`.
    pub fn end_of_turn(&self) -> Option<&str> {
        match self {
            Template::ChatMl => Some("<|im_end|>"),
            Template::Llama3 => Some("<|eot_id|>"),
            Template::Plain => Some("<|endoftext|>"),
            Template::Model(t) => t.specials().eos_token.as_deref(),
        }
    }

    /// The text that asks a model for the next assistant turn: `messages` rendered as in training,
    /// then the assistant's header (`<|im_start|>assistant\n` for chatml).
    ///
    /// # Errors
    /// When a model's template raises on `messages`.
    pub fn generation_prompt(&self, messages: &[Message]) -> Result<String> {
        if let Template::Model(t) = self {
            return t.render(messages, true);
        }
        let mut text = self.render(messages, MaskMode::Assistant)?.text;
        match self {
            Template::ChatMl => text.push_str("<|im_start|>assistant\n"),
            Template::Llama3 => text.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n"),
            Template::Plain | Template::Model(_) => {}
        }
        Ok(text)
    }

    /// The template in Jinja, as `tokenizer_config.json`'s `chat_template`, so that transformers'
    /// `apply_chat_template` renders exactly what [`Template::render`] and
    /// [`Template::generation_prompt`] do.
    pub fn jinja(&self) -> &str {
        match self {
            Template::Model(t) => t.source(),
            Template::ChatMl => concat!(
                "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] ",
                "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}",
                "{% endif %}"
            ),
            Template::Llama3 => concat!(
                "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] ",
                "+ '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}",
                "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
            ),
            Template::Plain => concat!(
                "{% for message in messages %}{{ message['content'] }}{% if message['role'] == 'assistant' %}",
                "{{ '<|endoftext|>' }}{% endif %}{% endfor %}"
            ),
        }
    }

    /// Checks that `tokenizer` has every special token of this template as a single token.
    ///
    /// # Errors
    /// Naming the missing tokens, with a hint.
    pub fn check(&self, tokenizer: &Tokenizer) -> Result<()> {
        let missing: Vec<&str> = self
            .special_tokens()
            .iter()
            .copied()
            .filter(|t| tokenizer.token_to_id(t).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(DataError::Invalid(format!(
            "the tokenizer lacks the special tokens of the `{}` template: {}\n  hint: use the template the tokenizer was made for, or train one with `firebrand tokenizer train` (it has the tokens of every template)",
            self.name(),
            missing.join(", ")
        )))
    }

    /// Renders a conversation and the spans `mask` trains on.
    ///
    /// # Errors
    /// When a model's template raises on `messages` or cannot place an assistant turn.
    pub fn render(&self, messages: &[Message], mask: MaskMode) -> Result<Rendered> {
        if let Template::Model(t) = self {
            let (text, trained) = t.render_masked(messages, mask)?;
            return Ok(Rendered { text, trained });
        }
        let last_assistant = messages.iter().rposition(|m| m.role == Role::Assistant);
        let mut text = String::new();
        let mut trained = Vec::new();
        if *self == Template::Llama3 {
            text.push_str("<|begin_of_text|>");
        }
        for (i, m) in messages.iter().enumerate() {
            let (head, tail_trained, tail_untrained) = match self {
                Template::ChatMl => (format!("<|im_start|>{}\n", m.role.name()), "<|im_end|>", "\n"),
                Template::Llama3 => (
                    format!("<|start_header_id|>{}<|end_header_id|>\n\n", m.role.name()),
                    "<|eot_id|>",
                    "",
                ),
                Template::Plain => {
                    let end = if m.role == Role::Assistant { "<|endoftext|>" } else { "" };
                    (String::new(), end, "")
                }
                Template::Model(_) => unreachable!("rendered by its Jinja above"),
            };
            text.push_str(&head);
            let start = text.len();
            text.push_str(&m.content);
            text.push_str(tail_trained);
            let is_trained = match mask {
                MaskMode::All => false, // covered by one span below
                MaskMode::Assistant => m.role == Role::Assistant,
                MaskMode::Completion => Some(i) == last_assistant,
            };
            if is_trained && text.len() > start {
                trained.push(start..text.len());
            }
            text.push_str(tail_untrained);
        }
        if mask == MaskMode::All && !text.is_empty() {
            trained = std::iter::once(0..text.len()).collect();
        }
        Ok(Rendered { text, trained })
    }
}

/// Token ids and their loss mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Whether each token is trained on.
    pub mask: Vec<bool>,
    /// Byte offset in the text where each token starts.
    pub starts: Vec<usize>,
}

/// Tokenizes a rendered text in one pass and marks tokens overlapping a trained span.
///
/// # Errors
/// When the tokenizer fails on the text.
pub fn encode(tokenizer: &Tokenizer, rendered: &Rendered) -> Result<Encoded> {
    let enc = tokenizer
        .encode(rendered.text.as_str(), false)
        .map_err(|e| DataError::Tokenizer {
            path: "<in memory>".into(),
            problem: e.to_string(),
            hint: String::new(),
        })?;
    let spans = &rendered.trained;
    let mut j = 0;
    let mask = enc
        .get_offsets()
        .iter()
        .map(|&(s, e)| {
            // Offsets ascend, so one cursor over the sorted spans suffices.
            while j < spans.len() && spans[j].end <= s {
                j += 1;
            }
            // Here spans[j] ends after s; an empty token (trimmed offsets) counts by its position.
            j < spans.len()
                && if s == e {
                    spans[j].start <= s
                } else {
                    spans[j].start < e
                }
        })
        .collect();
    Ok(Encoded {
        ids: enc.get_ids().to_vec(),
        mask,
        starts: enc.get_offsets().iter().map(|&(s, _)| s).collect(),
    })
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Template {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Template::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown template `{s}` (templates: chatml, llama3, plain, model)"))
    }
}

impl FromStr for MaskMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "assistant" => Ok(MaskMode::Assistant),
            "completion" => Ok(MaskMode::Completion),
            "all" => Ok(MaskMode::All),
            _ => Err(format!("unknown loss mask `{s}` (masks: assistant, completion, all)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{TrainOptions, train_bpe};

    fn convo() -> Vec<Message> {
        vec![
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Hi"),
            Message::new(Role::Assistant, "Hello!"),
            Message::new(Role::User, "2+2?"),
            Message::new(Role::Assistant, "4"),
        ]
    }

    fn trained_text(r: &Rendered) -> Vec<&str> {
        r.trained.iter().map(|s| &r.text[s.clone()]).collect()
    }

    #[test]
    fn generation_prompt_is_the_training_text_up_to_the_answer() {
        let convo = convo();
        let (question, answer) = convo.split_at(4);
        for t in Template::ALL {
            let full = t.render(&convo, MaskMode::Assistant).unwrap().text;
            let prompt = t.generation_prompt(question).unwrap();
            let rest = full
                .strip_prefix(prompt.as_str())
                .unwrap_or_else(|| panic!("{}: {full:?} does not start with {prompt:?}", t.name()));
            assert!(rest.starts_with(&answer[0].content), "{}: {rest:?}", t.name());
        }
    }

    #[test]
    fn chatml_renders_like_qwen_and_trains_assistant_turns_with_their_end() {
        let r = Template::ChatMl.render(&convo(), MaskMode::Assistant).unwrap();
        assert_eq!(
            r.text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
        );
        assert_eq!(trained_text(&r), vec!["Hello!<|im_end|>", "4<|im_end|>"]);
        let last = Template::ChatMl.render(&convo(), MaskMode::Completion).unwrap();
        assert_eq!(trained_text(&last), vec!["4<|im_end|>"]);
        let all = Template::ChatMl.render(&convo(), MaskMode::All).unwrap();
        assert_eq!(trained_text(&all), vec![all.text.as_str()]);
    }

    #[test]
    fn llama3_renders_headers() {
        let r = Template::Llama3.render(&convo()[1..3], MaskMode::Assistant).unwrap();
        assert_eq!(
            r.text,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        );
        assert_eq!(trained_text(&r), vec!["Hello!<|eot_id|>"]);
    }

    #[test]
    fn encoded_mask_is_true_exactly_on_assistant_tokens() {
        let texts: Vec<String> = (0..50).map(|i| format!("Hello! Be brief. 2+2? {i} Hi")).collect();
        let tok = train_bpe(
            &texts,
            &TrainOptions {
                vocab_size: 320,
                min_frequency: 2,
                extra_special: Vec::new(),
            },
        )
        .unwrap();
        for template in Template::ALL {
            template.check(&tok).unwrap();
            let r = template.render(&convo(), MaskMode::Assistant).unwrap();
            let enc = encode(&tok, &r).unwrap();
            let trained: Vec<u32> = enc
                .ids
                .iter()
                .zip(&enc.mask)
                .filter(|(_, m)| **m)
                .map(|(i, _)| *i)
                .collect();
            let decoded = tok.decode(&trained, false).unwrap();
            let expected: String = trained_text(&r).concat();
            assert_eq!(decoded, expected, "{template}");
        }
    }

    #[test]
    fn a_folder_template_resolves_to_the_model_template_unless_it_is_a_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let config = |template: &str| {
            let v = serde_json::json!({"chat_template": template, "eos_token": {"content": "<end>"}});
            std::fs::write(dir.path().join("tokenizer_config.json"), v.to_string()).unwrap();
        };
        assert_eq!(Template::resolve(None, Some(dir.path())).unwrap(), Template::ChatMl);
        let e = Template::resolve(Some("model"), Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no chat_template") && e.contains("hint"), "{e}");
        config(Template::Llama3.jinja());
        assert_eq!(Template::resolve(None, Some(dir.path())).unwrap(), Template::Llama3);
        config(concat!(
            "{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}",
            "{% if add_generation_prompt %}[assistant] {% endif %}"
        ));
        let t = Template::resolve(None, Some(&dir.path().join("tokenizer.json"))).unwrap();
        assert_eq!(t.name(), "model");
        assert_eq!(t.end_of_turn(), Some("<end>"));
        let r = t.render(&convo()[1..3], MaskMode::Assistant).unwrap();
        assert_eq!(r.text, "[user] Hi<end>[assistant] Hello!<end>");
        assert_eq!(trained_text(&r), vec!["Hello!<end>"]);
        assert_eq!(
            Template::resolve(Some("plain"), Some(dir.path())).unwrap(),
            Template::Plain
        );
        assert!(
            Template::resolve(Some("vicuna"), None)
                .unwrap_err()
                .to_string()
                .contains("model")
        );
        // chat_template.jinja wins over tokenizer_config.json, as in transformers.
        std::fs::write(dir.path().join("chat_template.jinja"), "{{ messages[0].content }}").unwrap();
        let t = Template::resolve(Some("model"), Some(dir.path())).unwrap();
        assert_eq!(t.render(&convo(), MaskMode::All).unwrap().text, "Be brief.");
    }

    #[test]
    fn a_tokenizer_without_the_template_tokens_is_refused() {
        let bare = Tokenizer::new(tokenizers::ModelWrapper::BPE(Default::default()));
        let err = Template::ChatMl.check(&bare).unwrap_err().to_string();
        assert!(err.contains("<|im_start|>") && err.contains("hint"), "{err}");
    }
}
