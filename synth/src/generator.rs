//! The `Generator` trait: how a synthesizer asks an LLM for text. Implementations: the CLI's local
//! model through the sampler (`firebrand_train::generate`), scripted generators in tests; a remote
//! API would be another.

use firebrand_data::records::Message;

/// Something that answers chat conversations: a local model through the sampler, or a remote API.
pub trait Generator: Sync {
    /// One answer per conversation, in order.
    ///
    /// # Errors
    /// When generation fails (the message is reported as the drop reason).
    fn generate(&self, conversations: &[Vec<Message>]) -> Result<Vec<String>, String>;
}
