//! A [`Generator`] for any OpenAI-compatible chat-completions endpoint.
//!
//! Choices where the API is silent or servers differ:
//! - The endpoint may be a base URL (`http://host:8000/v1`) or the full `.../chat/completions`.
//! - The key is read once from an environment variable (default `OPENAI_API_KEY`; none is sent if
//!   it is unset, as local servers expect). It is never formatted: `Debug` prints `key: set|unset`
//!   and errors name only the URL and status.
//! - Every request has a connect timeout and an overall timeout, so a server that accepts the
//!   connection and then hangs costs one timeout per try, never a stuck job.
//! - 429, 5xx, transport errors (refused, reset, timeout) and malformed replies are retried with
//!   exponential backoff (doubling from `backoff`, capped at `max_backoff`; a `Retry-After` in
//!   seconds is honoured within the cap). Other 4xx fail at once with the server's message: a
//!   bad key or model name does not get better by waiting.
//! - Servers that return fewer than `n` choices (some ignore `n`) are asked again for the rest.
//! - At most `concurrency` requests are in flight; conversations are handed to worker threads in
//!   order and the answers come back in input order.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use firebrand_data::records::Message;
use serde_json::{Value, json};

use super::{Answers, GenParams, Generator};

/// Where and how to reach the endpoint.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// Base URL (`.../v1`) or the full chat-completions URL.
    pub endpoint: String,
    /// The `model` field of each request.
    pub model: String,
    /// Environment variable holding the API key.
    pub key_env: String,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time for a whole request, reply included.
    pub timeout: Duration,
    /// Retries after the first try.
    pub max_retries: u32,
    /// First backoff; doubled after each retry.
    pub backoff: Duration,
    /// Longest wait between tries.
    pub max_backoff: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl OpenAiConfig {
    /// Defaults for `endpoint` and `model`: key from `OPENAI_API_KEY`, 10 s to connect, 300 s per
    /// request, 5 retries from 1 s up to 30 s, 8 requests in flight.
    pub fn new(endpoint: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            endpoint: endpoint.into(),
            model: model.into(),
            key_env: "OPENAI_API_KEY".into(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            max_retries: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            concurrency: 8,
        }
    }

    /// The chat-completions URL.
    pub fn url(&self) -> String {
        let e = self.endpoint.trim_end_matches('/');
        if e.ends_with("/chat/completions") {
            e.to_string()
        } else {
            format!("{e}/chat/completions")
        }
    }
}

/// A chat-completions client; see the module docs for its retry and timeout rules.
pub struct OpenAiGenerator {
    config: OpenAiConfig,
    url: String,
    key: Option<String>,
    agent: ureq::Agent,
    /// Tries made and retries among them, for reports and tests.
    stats: Mutex<RequestStats>,
}

/// What the client did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// HTTP requests sent.
    pub requests: usize,
    /// Requests that were retries.
    pub retries: usize,
}

impl std::fmt::Debug for OpenAiGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiGenerator")
            .field("url", &self.url)
            .field("model", &self.config.model)
            .field("key", &if self.key.is_some() { "set" } else { "unset" })
            .finish()
    }
}

/// Why one try failed, and whether another may help.
enum TryError {
    Retry { why: String, after: Option<Duration> },
    Fatal(String),
}

impl OpenAiGenerator {
    /// A client for `config`, reading the key from `config.key_env` now.
    ///
    /// # Errors
    /// When the endpoint is not an http(s) URL.
    pub fn new(config: OpenAiConfig) -> Result<Self, String> {
        let url = config.url();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "endpoint `{}` is not an http:// or https:// URL (e.g. http://localhost:8000/v1)",
                config.endpoint
            ));
        }
        let key = std::env::var(&config.key_env).ok().filter(|k| !k.is_empty());
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(config.connect_timeout)
            .timeout(config.timeout)
            .build();
        Ok(OpenAiGenerator {
            url,
            config,
            key,
            agent,
            stats: Mutex::new(RequestStats::default()),
        })
    }

    /// Requests sent so far.
    pub fn stats(&self) -> RequestStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    fn count(&self, retry: bool) {
        if let Ok(mut s) = self.stats.lock() {
            s.requests += 1;
            s.retries += usize::from(retry);
        }
    }

    /// `params.n` answers for one conversation, asking again while the server returns fewer.
    fn answer(&self, conversation: &[Message], params: &GenParams, seed: u64) -> Answers {
        let mut answers = Vec::with_capacity(params.n);
        let mut round = 0u64;
        while answers.len() < params.n {
            let want = params.n - answers.len();
            let got = self.request(conversation, params, want, seed.wrapping_add(round))?;
            if got.is_empty() {
                return Err(format!("{}: the reply has no choices", self.url));
            }
            answers.extend(got.into_iter().take(want));
            round += 1;
        }
        Ok(answers)
    }

    /// One request with retries.
    fn request(
        &self,
        conversation: &[Message],
        params: &GenParams,
        n: usize,
        seed: u64,
    ) -> Result<Vec<String>, String> {
        let messages: Vec<Value> = conversation
            .iter()
            .map(|m| json!({"role": m.role.name(), "content": m.content}))
            .collect();
        let body = json!({
            "model": self.config.model,
            "messages": messages,
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "seed": seed,
        })
        .to_string();
        let mut last = String::new();
        let mut asked: Option<Duration> = None;
        for attempt in 0..=self.config.max_retries {
            if attempt > 0 {
                // Exponential backoff, or the server's Retry-After when it asks for longer.
                let backoff = self.config.backoff.saturating_mul(1 << (attempt - 1).min(16));
                let wait = backoff.max(asked.unwrap_or_default()).min(self.config.max_backoff);
                std::thread::sleep(wait);
            }
            self.count(attempt > 0);
            match self.try_once(&body) {
                Ok(answers) => return Ok(answers),
                Err(TryError::Fatal(why)) => return Err(self.redact(why)),
                Err(TryError::Retry { why, after }) => {
                    asked = after;
                    last = why;
                }
            }
        }
        Err(self.redact(format!("{last} (gave up after {} tries)", self.config.max_retries + 1)))
    }

    /// Replaces the key, should a server or proxy echo it back, by `***`.
    fn redact(&self, text: String) -> String {
        match &self.key {
            Some(k) if k.len() >= 4 && text.contains(k.as_str()) => text.replace(k.as_str(), "***"),
            _ => text,
        }
    }

    fn try_once(&self, body: &str) -> Result<Vec<String>, TryError> {
        let mut req = self.agent.post(&self.url).set("Content-Type", "application/json");
        if let Some(key) = &self.key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        let reply = match req.send_string(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let after = r
                    .header("retry-after")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = r.into_string().unwrap_or_default();
                let why = format!("{}: HTTP {code}: {}", self.url, server_message(&text));
                return Err(if code == 429 || code >= 500 {
                    TryError::Retry { why, after }
                } else {
                    TryError::Fatal(why)
                });
            }
            Err(ureq::Error::Transport(t)) => {
                let why = format!("{}: {t}", self.url);
                // A malformed URL or an unknown scheme does not get better by waiting.
                return Err(match t.kind() {
                    ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => TryError::Fatal(why),
                    _ => TryError::Retry { why, after: None },
                });
            }
        };
        let text = reply.into_string().map_err(|e| TryError::Retry {
            why: format!("{}: reading the reply: {e}", self.url),
            after: None,
        })?;
        parse_choices(&text).map_err(|why| TryError::Retry {
            why: format!("{}: malformed reply: {why}", self.url),
            after: None,
        })
    }
}

/// The `error.message` of an OpenAI-style error body, else the body's start.
fn server_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    if let Some(m) = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
    {
        return m.to_string();
    }
    body.chars().take(200).collect()
}

/// The `choices[].message.content` of a chat-completions reply. A choice without text content
/// (a refusal by a content filter, a tool call) is skipped; the caller asks again for the rest.
fn parse_choices(text: &str) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let choices = v
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| "no `choices` list".to_string())?;
    if choices.iter().any(|c| c.get("message").is_none()) {
        return Err("a choice has no `message`".into());
    }
    Ok(choices
        .iter()
        .filter_map(|c| {
            c.pointer("/message/content")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect())
}

impl Generator for OpenAiGenerator {
    fn generate(&self, conversations: &[Vec<Message>], params: &GenParams) -> Vec<Answers> {
        let slots: Vec<Mutex<Option<Answers>>> = conversations.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let workers = self.config.concurrency.clamp(1, conversations.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(conversation) = conversations.get(i) else {
                            break;
                        };
                        let seed = params.seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9));
                        let answer = self.answer(conversation, params, seed);
                        if let Ok(mut slot) = slots[i].lock() {
                            *slot = Some(answer);
                        }
                    }
                });
            }
        });
        slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| Err("a worker thread panicked".to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use firebrand_data::records::Role;

    use super::super::responder::{Behaviour, Responder};
    use super::*;

    fn config(url: &str) -> OpenAiConfig {
        OpenAiConfig {
            timeout: Duration::from_millis(500),
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            max_retries: 3,
            key_env: "FIREBRAND_TEST_NO_SUCH_KEY".into(),
            ..OpenAiConfig::new(url, "test-model")
        }
    }

    fn convo(text: &str) -> Vec<Message> {
        vec![Message::new(Role::User, text)]
    }

    #[test]
    fn url_accepts_base_or_full_path() {
        assert_eq!(
            OpenAiConfig::new("http://h/v1/", "m").url(),
            "http://h/v1/chat/completions"
        );
        assert_eq!(
            OpenAiConfig::new("http://h/v1/chat/completions", "m").url(),
            "http://h/v1/chat/completions"
        );
    }

    #[test]
    fn answers_in_order_with_n_choices_and_concurrency() {
        let server = Responder::start(vec![]);
        let g = OpenAiGenerator::new(OpenAiConfig {
            concurrency: 4,
            ..config(&server.url())
        })
        .unwrap();
        let convos: Vec<_> = (0..10).map(|i| convo(&format!("question {i}"))).collect();
        let params = GenParams {
            n: 3,
            ..Default::default()
        };
        let out = g.generate(&convos, &params);
        assert_eq!(out.len(), 10);
        for (i, a) in out.iter().enumerate() {
            let a = a.as_ref().unwrap();
            assert_eq!(a.len(), 3);
            // The echo responder answers with the last user message and the choice index.
            assert_eq!(a[0], format!("echo 0: question {i}"));
            assert_eq!(a[2], format!("echo 2: question {i}"));
        }
        let seen = server.requests();
        assert_eq!(seen.len(), 10);
        assert!(seen.iter().all(|r| r["model"] == "test-model" && r["n"] == 3));
    }

    #[test]
    fn retries_429_and_500_then_succeeds() {
        let server = Responder::start(vec![
            Behaviour::Status(429),
            Behaviour::Status(500),
            Behaviour::Status(503),
        ]);
        let g = OpenAiGenerator::new(config(&server.url())).unwrap();
        let out = g.generate(&[convo("hi")], &GenParams::default());
        assert_eq!(out[0].as_deref().unwrap(), ["echo 0: hi".to_string()]);
        assert_eq!(
            g.stats(),
            RequestStats {
                requests: 4,
                retries: 3
            }
        );
    }

    #[test]
    fn gives_up_after_max_retries_and_names_the_status() {
        let server = Responder::start(vec![Behaviour::Status(500); 10]);
        let g = OpenAiGenerator::new(config(&server.url())).unwrap();
        let out = g.generate(&[convo("hi")], &GenParams::default());
        let err = out[0].as_ref().unwrap_err();
        assert!(
            err.contains("HTTP 500") && err.contains("gave up after 4 tries"),
            "{err}"
        );
        assert_eq!(g.stats().requests, 4);
    }

    #[test]
    fn client_errors_are_not_retried() {
        let server = Responder::start(vec![Behaviour::Status(401)]);
        let g = OpenAiGenerator::new(config(&server.url())).unwrap();
        let err = g.generate(&[convo("hi")], &GenParams::default()).remove(0).unwrap_err();
        assert!(err.contains("HTTP 401") && err.contains("test error 401"), "{err}");
        assert_eq!(g.stats().requests, 1);
    }

    #[test]
    fn malformed_replies_are_retried_and_reported() {
        let server = Responder::start(vec![Behaviour::Malformed; 10]);
        let g = OpenAiGenerator::new(config(&server.url())).unwrap();
        let err = g.generate(&[convo("hi")], &GenParams::default()).remove(0).unwrap_err();
        assert!(err.contains("malformed reply"), "{err}");
        let server = Responder::start(vec![Behaviour::Malformed, Behaviour::NoChoices]);
        let g = OpenAiGenerator::new(config(&server.url())).unwrap();
        assert!(g.generate(&[convo("hi")], &GenParams::default())[0].is_ok());
    }

    #[test]
    fn a_hanging_server_costs_one_timeout_per_try() {
        let server = Responder::start(vec![Behaviour::Hang; 10]);
        let g = OpenAiGenerator::new(OpenAiConfig {
            timeout: Duration::from_millis(200),
            max_retries: 1,
            ..config(&server.url())
        })
        .unwrap();
        let t = Instant::now();
        let err = g.generate(&[convo("hi")], &GenParams::default()).remove(0).unwrap_err();
        assert!(err.contains("gave up after 2 tries"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn bad_urls_fail_at_once() {
        let err = OpenAiGenerator::new(config("localhost:8000/v1")).unwrap_err();
        assert!(err.contains("not an http"), "{err}");
    }

    #[test]
    fn fewer_choices_than_n_are_topped_up() {
        let server = Responder::start(vec![Behaviour::OneChoice, Behaviour::OneChoice]);
        let g = OpenAiGenerator::new(config(&server.url())).unwrap();
        let out = g.generate(
            &[convo("hi")],
            &GenParams {
                n: 3,
                ..Default::default()
            },
        );
        assert_eq!(out[0].as_ref().unwrap().len(), 3);
        let ns: Vec<Value> = server.requests().iter().map(|r| r["n"].clone()).collect();
        assert_eq!(ns, [json!(3), json!(2), json!(1)]);
    }

    #[test]
    fn the_key_is_sent_but_never_printed() {
        // SAFETY: the variable name is unique to this test; no other thread reads it.
        unsafe { std::env::set_var("FIREBRAND_TEST_KEY_7", "sk-secret-123") };
        let server = Responder::start(vec![Behaviour::Status(401)]);
        let g = OpenAiGenerator::new(OpenAiConfig {
            key_env: "FIREBRAND_TEST_KEY_7".into(),
            ..config(&server.url())
        })
        .unwrap();
        let err = g.generate(&[convo("hi")], &GenParams::default()).remove(0).unwrap_err();
        assert!(!err.contains("sk-secret") && !format!("{g:?}").contains("sk-secret"));
        assert!(format!("{g:?}").contains("key: \"set\""));
        assert_eq!(server.authorizations(), ["Bearer sk-secret-123".to_string()]);
    }
}
