//! Translation between the OpenAI Chat Completions API and the Anthropic Messages API.
//!
//! The gateway uses this to let an OpenAI client reach an Anthropic upstream and an
//! Anthropic client reach an OpenAI(-compatible) upstream: request bodies, whole responses,
//! streamed responses and error bodies are each rewritten into the other dialect. It is
//! pure data transformation and must never do I/O, read clocks or draw random numbers
//! (ids and timestamps are passed in), nor decide routing, models or HTTP statuses.
//!
//! This file only declares the submodules and re-exports their public items.

pub mod error;
pub mod request;
pub mod response;
pub mod sse;
pub mod stream;

pub use error::{
    anthropic_error_to_openai, anthropic_error_type_for_status, openai_error_to_anthropic,
    TranslateError,
};
pub use request::{anthropic_to_openai_chat, openai_chat_to_anthropic};
pub use response::{
    anthropic_response_to_openai, finish_reason_from_stop_reason, openai_response_to_anthropic,
    stop_reason_from_finish_reason,
};
pub use sse::{write_event, SseEvent, SseParser};
pub use stream::{AnthropicToOpenAiStream, OpenAiToAnthropicStream};

/// An Anthropic `tool_use` block as an OpenAI chat `tool_calls` entry: the input object becomes
/// the JSON text of `arguments` (an absent input is `{}`). Shared by the request translation
/// (assistant turns of a conversation) and the answer translation.
pub(crate) fn openai_tool_call(
    id: &str,
    name: &str,
    input: Option<&serde_json::Value>,
) -> serde_json::Value {
    let arguments = match input {
        Some(v) => v.to_string(),
        None => "{}".to_string(),
    };
    serde_json::json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    })
}
