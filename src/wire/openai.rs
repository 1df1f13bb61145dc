//! OpenAI's wire dialect (and every OpenAI-compatible server's): `Authorization: Bearer`,
//! `/chat/completions` and its siblings (audio, rerank, moderations, images),
//! `prompt_tokens` / `completion_tokens`.

use crate::routing::model::Operation;

/// The header that carries the key (as a bearer token).
pub const KEY_HEADER: &str = "authorization";

/// `usage` keys of input and output tokens.
pub const USAGE_KEYS: (&str, &str) = ("prompt_tokens", "completion_tokens");

/// Where `op` lives under an OpenAI base URL. An Anthropic client's message goes to chat
/// completions (translated); a token count has no OpenAI route and is never sent here.
pub fn path(op: Operation) -> &'static str {
    match op {
        Operation::Chat | Operation::Messages => "/chat/completions",
        Operation::Completion => "/completions",
        Operation::Embedding => "/embeddings",
        Operation::Responses => "/responses",
        Operation::CountTokens => "/messages/count_tokens",
        Operation::Transcription => "/audio/transcriptions",
        Operation::Translation => "/audio/translations",
        Operation::Speech => "/audio/speech",
        Operation::Rerank => "/rerank",
        Operation::Moderation => "/moderations",
        Operation::ImageGeneration => "/images/generations",
    }
}
