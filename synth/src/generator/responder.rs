//! A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests and offline demos of
//! the generation loop: it answers from a function of the request, and can be scripted to fail
//! (429, 5xx, malformed JSON, no choices, hanging) to exercise a client's retry rules.
//!
//! It speaks just enough HTTP/1.1 for one request per connection (`Connection: close`), each on
//! its own thread, so a hanging reply never blocks the next request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// What the server does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Answer normally with `n` choices from the answer function.
    Answer,
    /// Reply with this HTTP status and an OpenAI-style error body.
    Status(u16),
    /// Reply 200 with a body that is not JSON.
    Malformed,
    /// Reply 200 with JSON lacking `choices`.
    NoChoices,
    /// Answer with one choice whatever `n` asks.
    OneChoice,
    /// Accept, read the request, and never answer (the connection is closed after 10 s).
    Hang,
}

/// Makes the text of choice `index` for a request (the parsed JSON body).
pub type AnswerFn = dyn Fn(&Value, usize) -> String + Send + Sync;

struct Shared {
    script: Mutex<Vec<Behaviour>>,
    answer: Box<AnswerFn>,
    requests: Mutex<Vec<Value>>,
    authorizations: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// A running server; it stops when dropped.
pub struct Responder {
    port: u16,
    shared: Arc<Shared>,
}

/// The default answer: `echo {index}: {last user message}`.
pub fn echo(request: &Value, index: usize) -> String {
    format!("echo {index}: {}", last_user_message(request))
}

/// The content of the last user message of a chat-completions request body.
pub fn last_user_message(request: &Value) -> &str {
    request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
}

impl Responder {
    /// Starts an echo server that plays `script` (one behaviour per request, in arrival order)
    /// and answers normally once the script is used up.
    pub fn start(script: Vec<Behaviour>) -> Self {
        Self::with_answer(script, echo)
    }

    /// Starts a server answering with `answer`, after playing `script`.
    ///
    /// # Panics
    /// When no port on 127.0.0.1 can be bound (a broken test machine, not a user input).
    pub fn with_answer(
        script: Vec<Behaviour>,
        answer: impl Fn(&Value, usize) -> String + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let mut script = script;
        script.reverse();
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            answer: Box::new(answer),
            requests: Mutex::new(Vec::new()),
            authorizations: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &s);
                });
            }
        });
        Responder { port, shared }
    }

    /// The base URL to give a client: `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The JSON bodies received so far, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The `Authorization` headers received so far.
    pub fn authorizations(&self) -> Vec<String> {
        self.shared.authorizations.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(stream: TcpStream, s: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("authorization")
                && let Ok(mut a) = s.authorizations.lock()
            {
                a.push(value.trim().to_string());
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut r) = s.requests.lock() {
        r.push(request.clone());
    }
    let behaviour = s
        .script
        .lock()
        .ok()
        .and_then(|mut b| b.pop())
        .unwrap_or(Behaviour::Answer);
    let n = request["n"].as_u64().unwrap_or(1).max(1) as usize;
    let (status, text) = match behaviour {
        Behaviour::Answer | Behaviour::OneChoice => {
            let count = if behaviour == Behaviour::OneChoice { 1 } else { n };
            let choices: Vec<Value> = (0..count)
                .map(|i| json!({"index": i, "message": {"role": "assistant", "content": (s.answer)(&request, i)}, "finish_reason": "stop"}))
                .collect();
            (
                200,
                json!({"object": "chat.completion", "model": request["model"], "choices": choices}).to_string(),
            )
        }
        Behaviour::Status(code) => (
            code,
            json!({"error": {"message": format!("test error {code}"), "type": "test"}}).to_string(),
        ),
        Behaviour::Malformed => (200, "{\"choices\": [ this is not json".to_string()),
        Behaviour::NoChoices => (200, json!({"object": "chat.completion"}).to_string()),
        Behaviour::Hang => {
            std::thread::sleep(Duration::from_secs(10));
            return Ok(());
        }
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        if status == 200 { "OK" } else { "Error" },
        text.len()
    )?;
    stream.flush()
}
