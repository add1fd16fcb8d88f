//! The `Generator` trait: how a synthesizer asks an LLM for text. Implementations: the CLI's local
//! model through the sampler (`firebrand_train::generate`), [`openai::OpenAiGenerator`] for any
//! OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp's server, OpenAI itself), and scripted
//! generators in tests. [`responder`] is a small OpenAI-compatible HTTP server for tests and demos.

pub mod openai;
pub mod responder;

use firebrand_data::records::Message;

/// How to sample: the knobs every backend understands.
#[derive(Debug, Clone, PartialEq)]
pub struct GenParams {
    /// Answers per conversation.
    pub n: usize,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
    /// Nucleus mass (1 keeps the whole distribution).
    pub top_p: f32,
    /// Most new tokens per answer.
    pub max_tokens: usize,
    /// Base seed; backends that support seeding derive each request's seed from it.
    pub seed: u64,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            n: 1,
            temperature: 0.7,
            top_p: 0.95,
            max_tokens: 1024,
            seed: 0,
        }
    }
}

/// The answers to one conversation, or why there are none.
pub type Answers = Result<Vec<String>, String>;

/// Something that answers chat conversations: a local model through the sampler, or a remote API.
pub trait Generator: Sync {
    /// `params.n` answers for each conversation, in input order. A conversation whose request
    /// failed (after the backend's own retries) carries the reason, which synthesizers report as
    /// the row's drop reason; the other conversations are unaffected.
    fn generate(&self, conversations: &[Vec<Message>], params: &GenParams) -> Vec<Answers>;
}
