//! Error classes: what an upstream's failed answer says, read from its status and the
//! provider's own error body (OpenAI, Anthropic, and the OpenAI-compatible servers: vLLM,
//! llama.cpp, Azure), so that fallback can follow what went wrong rather than a status code.
//!
//! Pure: a status and a byte slice in, a class out. It never reads a socket, never allocates
//! beyond one JSON parse of a small body, and never decides what follows (`proxy::attempts`
//! does, with the target's `fallback_on_errors`).

use serde_json::Value;

/// What an upstream failure was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Too many requests or tokens for now (429, OpenAI `rate_limit_exceeded` and
    /// `insufficient_quota`, Anthropic `rate_limit_error`).
    RateLimited,
    /// The prompt does not fit the model's context window (OpenAI `context_length_exceeded`,
    /// Anthropic "prompt is too long", vLLM "maximum context length").
    ContextLengthExceeded,
    /// The provider's content filter refused the request (OpenAI and Azure `content_filter`).
    ContentFiltered,
    /// The provider is out of capacity (Anthropic 529 `overloaded_error`, 503).
    Overloaded,
    /// The key is missing, wrong or lacks permission (401, 403).
    Auth,
    /// The request itself was refused (other 4xx).
    InvalidRequest,
    /// The provider failed (5xx).
    Server,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::RateLimited,
        ErrorClass::ContextLengthExceeded,
        ErrorClass::ContentFiltered,
        ErrorClass::Overloaded,
        ErrorClass::Auth,
        ErrorClass::InvalidRequest,
        ErrorClass::Server,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::ContextLengthExceeded => "context_length_exceeded",
            ErrorClass::ContentFiltered => "content_filtered",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::Auth => "auth",
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::Server => "server",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorClass> {
        let s = s.trim();
        ErrorClass::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Every class name, comma separated, for error messages.
    pub fn names() -> String {
        ErrorClass::ALL.map(ErrorClass::name).join(", ")
    }
}

/// The most of a failed answer's body that is read to classify it.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Classifies a failed answer (`status` >= 400); `None` for a success. `body` may be cut short
/// or not JSON: the status alone then decides.
pub fn classify(status: u16, body: &[u8]) -> Option<ErrorClass> {
    if status < 400 {
        return None;
    }
    match from_body(body) {
        // A generic server error type says less than a 503 or 529 does.
        Some(ErrorClass::Server) => Some(match from_status(status) {
            ErrorClass::Overloaded => ErrorClass::Overloaded,
            ErrorClass::RateLimited
            | ErrorClass::ContextLengthExceeded
            | ErrorClass::ContentFiltered
            | ErrorClass::Auth
            | ErrorClass::InvalidRequest
            | ErrorClass::Server => ErrorClass::Server,
        }),
        Some(c) => Some(c),
        None => Some(from_status(status)),
    }
}

/// The class a status implies on its own.
pub fn from_status(status: u16) -> ErrorClass {
    match status {
        429 => ErrorClass::RateLimited,
        401 | 403 => ErrorClass::Auth,
        503 | 529 => ErrorClass::Overloaded,
        400..=499 => ErrorClass::InvalidRequest,
        _ => ErrorClass::Server,
    }
}

/// The class the provider's error body names, when it names one.
fn from_body(body: &[u8]) -> Option<ErrorClass> {
    let v: Value = serde_json::from_slice(body).ok()?;
    // OpenAI and Anthropic nest the error under `error`; vLLM and llama.cpp's older answers
    // put `type`/`code`/`message` at the top (vLLM: `{"object": "error", ...}`).
    let e = match v.get("error") {
        Some(e @ Value::Object(_)) => e,
        Some(Value::String(s)) => return from_message(s),
        _ => &v,
    };
    let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let code = match e.get("code") {
        Some(Value::String(s)) => s.as_str(),
        _ => "",
    };
    let kind = text("type");
    for word in [code, kind] {
        match word {
            "context_length_exceeded" | "string_above_max_length" | "exceed_context_size_error" => {
                return Some(ErrorClass::ContextLengthExceeded)
            }
            "content_filter" | "content_policy_violation" | "ResponsibleAIPolicyViolation" => {
                return Some(ErrorClass::ContentFiltered)
            }
            "rate_limit_exceeded"
            | "rate_limit_error"
            | "insufficient_quota"
            | "tokens"
            | "requests" => return Some(ErrorClass::RateLimited),
            "overloaded_error" | "server_overloaded" | "overloaded" => {
                return Some(ErrorClass::Overloaded)
            }
            "authentication_error" | "permission_error" | "invalid_api_key" => {
                return Some(ErrorClass::Auth)
            }
            _ => {}
        }
    }
    // Azure nests the filter's verdict one level down.
    if e.get("innererror")
        .and_then(|i| i.get("code"))
        .and_then(Value::as_str)
        == Some("ResponsibleAIPolicyViolation")
    {
        return Some(ErrorClass::ContentFiltered);
    }
    let message = match e.get("message") {
        Some(Value::String(s)) => s.as_str(),
        _ => match v.get("detail") {
            Some(Value::String(s)) => s.as_str(),
            _ => "",
        },
    };
    if let Some(c) = from_message(message) {
        return Some(c);
    }
    match kind {
        "api_error" | "server_error" => Some(ErrorClass::Server),
        _ => None,
    }
}

/// The class an error message's wording gives away (servers that put no code on it).
fn from_message(message: &str) -> Option<ErrorClass> {
    if message.is_empty() {
        return None;
    }
    let m = message.to_ascii_lowercase();
    const CONTEXT: [&str; 9] = [
        "maximum context length",
        "context length",
        "context window",
        "context size",
        "prompt is too long",
        "maximum model length",
        "input is too long",
        "too many input tokens",
        "reduce the length of the messages",
    ];
    if CONTEXT.iter().any(|p| m.contains(p)) {
        return Some(ErrorClass::ContextLengthExceeded);
    }
    if m.contains("content filter") || m.contains("content management policy") {
        return Some(ErrorClass::ContentFiltered);
    }
    if m.contains("overloaded") {
        return Some(ErrorClass::Overloaded);
    }
    if m.contains("rate limit") {
        return Some(ErrorClass::RateLimited);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(status: u16, body: &str) -> ErrorClass {
        classify(status, body.as_bytes()).expect("a failure has a class")
    }

    #[test]
    fn openai_bodies() {
        assert_eq!(
            class(
                400,
                r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130001 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#
            ),
            ErrorClass::ContextLengthExceeded
        );
        assert_eq!(
            class(
                429,
                r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#
            ),
            ErrorClass::RateLimited
        );
        assert_eq!(
            class(
                429,
                r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#
            ),
            ErrorClass::RateLimited
        );
        assert_eq!(
            class(
                400,
                r#"{"error":{"message":"The response was filtered due to the prompt triggering content management policy.","type":null,"param":"prompt","code":"content_filter","status":400}}"#
            ),
            ErrorClass::ContentFiltered
        );
        assert_eq!(
            class(
                401,
                r#"{"error":{"message":"Incorrect API key provided: sk-xx.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#
            ),
            ErrorClass::Auth
        );
        assert_eq!(
            class(
                400,
                r#"{"error":{"message":"Invalid value for 'temperature'.","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#
            ),
            ErrorClass::InvalidRequest
        );
        assert_eq!(
            class(
                500,
                r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#
            ),
            ErrorClass::Server
        );
        assert_eq!(
            class(
                503,
                r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error"}}"#
            ),
            ErrorClass::Overloaded
        );
    }

    #[test]
    fn a_generic_server_error_type_on_a_503_is_overloaded() {
        let api_error =
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#;
        assert_eq!(class(503, api_error), ErrorClass::Overloaded);
        assert_eq!(class(529, api_error), ErrorClass::Overloaded);
        assert_eq!(class(500, api_error), ErrorClass::Server);
        assert_eq!(
            class(503, r#"{"error":{"message":"x","type":"server_error"}}"#),
            ErrorClass::Overloaded
        );
    }

    #[test]
    fn anthropic_bodies() {
        assert_eq!(
            class(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            ErrorClass::Overloaded
        );
        assert_eq!(
            class(
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#
            ),
            ErrorClass::RateLimited
        );
        assert_eq!(
            class(
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#
            ),
            ErrorClass::ContextLengthExceeded
        );
        assert_eq!(
            class(
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#
            ),
            ErrorClass::InvalidRequest
        );
        assert_eq!(
            class(
                401,
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#
            ),
            ErrorClass::Auth
        );
        assert_eq!(
            class(
                403,
                r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#
            ),
            ErrorClass::Auth
        );
        assert_eq!(
            class(
                500,
                r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#
            ),
            ErrorClass::Server
        );
    }

    #[test]
    fn openai_compatible_bodies() {
        // vLLM, older and newer wording.
        assert_eq!(
            class(
                400,
                r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#
            ),
            ErrorClass::ContextLengthExceeded
        );
        assert_eq!(
            class(
                400,
                r#"{"error":{"message":"The decoder prompt (length 5000) is longer than the maximum model length of 4096. Make sure that `max_model_len` is no smaller than the number of text tokens.","type":"BadRequestError","param":null,"code":400}}"#
            ),
            ErrorClass::ContextLengthExceeded
        );
        // llama.cpp's server.
        assert_eq!(
            class(
                400,
                r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}"#
            ),
            ErrorClass::ContextLengthExceeded
        );
        // Azure OpenAI's content filter.
        assert_eq!(
            class(
                400,
                r#"{"error":{"message":"The response was filtered","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}"#
            ),
            ErrorClass::ContentFiltered
        );
    }

    #[test]
    fn the_status_decides_when_the_body_says_nothing() {
        assert_eq!(class(429, "slow down"), ErrorClass::RateLimited);
        assert_eq!(class(503, ""), ErrorClass::Overloaded);
        assert_eq!(class(529, "{}"), ErrorClass::Overloaded);
        assert_eq!(class(502, "<html>bad gateway</html>"), ErrorClass::Server);
        assert_eq!(
            class(404, r#"{"error":"no such model"}"#),
            ErrorClass::InvalidRequest
        );
        assert_eq!(class(403, "{}"), ErrorClass::Auth);
        assert_eq!(classify(200, b"{}"), None);
    }

    #[test]
    fn names_round_trip() {
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(c.name()), Some(c));
        }
        assert_eq!(ErrorClass::parse("ratelimited"), None);
        assert!(ErrorClass::names().starts_with("rate_limited, context_length_exceeded"));
    }
}
