//! Anthropic's wire dialect: `x-api-key` with `anthropic-version`, `/messages` (and
//! `/messages/count_tokens`), `input_tokens` / `output_tokens`.

use crate::routing::model::Operation;

/// The header that carries the key.
pub const KEY_HEADER: &str = "x-api-key";

/// The header that names the API version.
pub const VERSION_HEADER: &str = "anthropic-version";

/// The `anthropic-version` sent when the client names none.
pub const VERSION: &str = "2023-06-01";

/// `usage` keys of input and output tokens.
pub const USAGE_KEYS: (&str, &str) = ("input_tokens", "output_tokens");

/// Where `op` lives under an Anthropic base URL. Only chat (translated), messages and token
/// counts are served there (`proxy::dialect::can_serve`); the others keep OpenAI's paths so a
/// target with an overridden format still gets a path.
pub fn path(op: Operation) -> &'static str {
    match op {
        Operation::Chat | Operation::Messages => "/messages",
        Operation::CountTokens => "/messages/count_tokens",
        Operation::Completion => "/completions",
        Operation::Embedding => "/embeddings",
        Operation::Responses
        | Operation::Transcription
        | Operation::Translation
        | Operation::Speech
        | Operation::Rerank
        | Operation::Moderation
        | Operation::ImageGeneration => super::openai::path(op),
    }
}
