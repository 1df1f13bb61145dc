//! Errors: the one error type of this module, and translation of upstream error bodies.
//!
//! [`TranslateError`] reports a body that cannot be expressed in the other API, naming the
//! offending field by its JSON path so the gateway can hand the client a useful 400.
//! The body converters rewrite an upstream's error response into the client's dialect
//! (OpenAI `{"error":{...}}` or Anthropic `{"type":"error","error":{...}}`); they never fail,
//! whatever the upstream sent, because the gateway needs some error body to answer with.
//! Nothing here performs I/O or chooses the HTTP status: the status passes through unchanged.

use serde_json::{json, Value};

/// A request or response that cannot be translated. The message always starts with the
/// JSON path of the field at fault, e.g. `messages[2].tool_calls[0].function.arguments`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A field the translation needs is absent.
    #[error("{field} is required")]
    Missing { field: String },
    /// A field has the wrong JSON type.
    #[error("{field} must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    /// A string that must hold JSON (tool-call arguments) does not.
    #[error("{field} is not valid JSON: {detail}")]
    InvalidJson { field: String, detail: String },
    /// A field is well-formed but its value cannot be used.
    #[error("{field} {reason}")]
    Invalid { field: String, reason: String },
    /// A feature of one API that the other has no equivalent for.
    #[error("{field} is not supported by the translation: {reason}")]
    Unsupported { field: String, reason: String },
}

impl TranslateError {
    /// The JSON path of the offending field, suitable for OpenAI's `error.param`.
    pub fn field(&self) -> &str {
        match self {
            Self::Missing { field }
            | Self::WrongType { field, .. }
            | Self::InvalidJson { field, .. }
            | Self::Invalid { field, .. }
            | Self::Unsupported { field, .. } => field,
        }
    }

    pub(super) fn missing(field: impl Into<String>) -> Self {
        Self::Missing {
            field: field.into(),
        }
    }

    pub(super) fn wrong_type(field: impl Into<String>, expected: &'static str) -> Self {
        Self::WrongType {
            field: field.into(),
            expected,
        }
    }

    pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(super) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The Anthropic error `type` for an HTTP status, following the table in Anthropic's
/// "Errors" reference. Used when an upstream body does not name a type we can keep.
pub fn anthropic_error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The HTTP status an Anthropic error `type` stands for (Anthropic's "Errors" reference).
/// Stream `error` events carry a type but no status, and OpenAI clients expect a code.
pub(super) fn status_for_anthropic_error_type(error_type: &str) -> Option<u16> {
    Some(match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => return None,
    })
}

/// Every error type the Anthropic API documents; an OpenAI-side type outside this set is
/// replaced by the one the status implies, since Anthropic SDKs dispatch on these names.
const ANTHROPIC_ERROR_TYPES: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "timeout_error",
    "overloaded_error",
];

/// The message used when the upstream body says nothing we can show.
fn generic_message(status: u16) -> String {
    format!("upstream returned HTTP {status} without a readable error message")
}

/// Builds the OpenAI error object (the value of the top-level `error` key).
///
/// `type` keeps the Anthropic type: the two APIs share the `*_error` vocabulary for the
/// common cases (`invalid_request_error` is identical), so nothing is gained by renaming
/// and information would be lost. `code` is the HTTP status as a string, the one thing
/// always known, which OpenAI clients treat as an opaque string.
pub(super) fn openai_error_object(message: &str, error_type: &str, status: Option<u16>) -> Value {
    json!({
        "message": message,
        "type": error_type,
        "param": null,
        "code": status.map(|s| s.to_string()),
    })
}

/// Rewrites an Anthropic error response body (`{"type":"error","error":{"type","message"}}`)
/// as an OpenAI one (`{"error":{"message","type","param","code"}}`). A body that is not
/// JSON, or not shaped like an Anthropic error, yields a generic message naming `status`.
pub fn anthropic_error_to_openai(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| generic_message(status));
    let error_type = error
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| anthropic_error_type_for_status(status));
    let body = json!({ "error": openai_error_object(&message, error_type, Some(status)) });
    body.to_string().into_bytes()
}

/// Rewrites an OpenAI (or OpenAI-compatible) error body as an Anthropic one. Besides the
/// official `{"error":{"message","type"}}` shape it accepts the variants compatible servers
/// send (`{"error":"text"}`, `{"message":"text"}`, `{"detail":"text"}`), since those are
/// what the gateway meets in practice. The Anthropic `type` is kept when the upstream
/// already used an Anthropic name, otherwise derived from `status`.
pub fn openai_error_to_anthropic(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let (message, upstream_type) = match &parsed {
        Some(value) => openai_message_and_type(value),
        None => (None, None),
    };
    let message = message.unwrap_or_else(|| generic_message(status));
    let error_type = upstream_type
        .filter(|t| ANTHROPIC_ERROR_TYPES.contains(t))
        .unwrap_or_else(|| anthropic_error_type_for_status(status));
    anthropic_error_body(error_type, &message)
        .to_string()
        .into_bytes()
}

/// An Anthropic error body; also the payload of an Anthropic stream `error` event.
pub(super) fn anthropic_error_body(error_type: &str, message: &str) -> Value {
    json!({
        "type": "error",
        "error": { "type": error_type, "message": message },
    })
}

/// Extracts message and type from the OpenAI error shapes seen in the wild.
pub(super) fn openai_message_and_type(value: &Value) -> (Option<String>, Option<&str>) {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    match value.get("error") {
        Some(Value::Object(error)) => (
            text(error.get("message")),
            error.get("type").and_then(Value::as_str),
        ),
        Some(Value::String(message)) => (Some(message.clone()), None),
        _ => (
            text(value.get("message")).or_else(|| text(value.get("detail"))),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn translate_error_messages_name_the_field() {
        let err = TranslateError::InvalidJson {
            field: "messages[2].tool_calls[0].function.arguments".into(),
            detail: "EOF while parsing".into(),
        };
        assert!(err
            .to_string()
            .starts_with("messages[2].tool_calls[0].function.arguments is not valid JSON"));
        assert_eq!(err.field(), "messages[2].tool_calls[0].function.arguments");
        assert_eq!(
            TranslateError::wrong_type("stop", "a string or an array of strings").to_string(),
            "stop must be a string or an array of strings"
        );
        assert_eq!(
            TranslateError::missing("messages").to_string(),
            "messages is required"
        );
    }

    // Fixture follows the error shape in Anthropic's "Errors" reference.
    #[test]
    fn anthropic_error_becomes_openai_error() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
        assert_eq!(
            parse(&anthropic_error_to_openai(429, body)),
            json!({"error": {
                "message": "Number of request tokens has exceeded your per-minute rate limit",
                "type": "rate_limit_error",
                "param": null,
                "code": "429"
            }})
        );
    }

    #[test]
    fn non_json_anthropic_error_gets_generic_message() {
        let out = parse(&anthropic_error_to_openai(502, b"<html>Bad Gateway</html>"));
        assert_eq!(out["error"]["type"], "api_error");
        assert_eq!(out["error"]["code"], "502");
        assert!(out["error"]["message"].as_str().unwrap().contains("502"));
        let out = parse(&anthropic_error_to_openai(401, b""));
        assert_eq!(out["error"]["type"], "authentication_error");
    }

    // Fixture follows the error object in OpenAI's API reference ("Error codes" guide).
    #[test]
    fn openai_error_becomes_anthropic_error() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-abc.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        assert_eq!(
            parse(&openai_error_to_anthropic(401, body)),
            json!({"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "Incorrect API key provided: sk-abc."
            }})
        );
        // An OpenAI-only type is replaced by the one the status implies.
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            parse(&openai_error_to_anthropic(429, body))["error"]["type"],
            "rate_limit_error"
        );
    }

    #[test]
    fn openai_error_variants_and_non_json_bodies() {
        let cases: [(u16, &[u8], &str, &str); 8] = [
            (
                400,
                br#"{"error":"bad thing"}"#,
                "invalid_request_error",
                "bad thing",
            ),
            (
                404,
                br#"{"detail":"Not Found"}"#,
                "not_found_error",
                "Not Found",
            ),
            (403, br#"{"message":"nope"}"#, "permission_error", "nope"),
            (413, b"too big", "request_too_large", "413"),
            (500, b"Internal Server Error", "api_error", "500"),
            (503, b"", "overloaded_error", "503"),
            (529, b"{}", "overloaded_error", "529"),
            (422, b"[1,2]", "invalid_request_error", "422"),
        ];
        for (status, body, error_type, message_part) in cases {
            let out = parse(&openai_error_to_anthropic(status, body));
            assert_eq!(out["type"], "error");
            assert_eq!(out["error"]["type"], error_type, "status {status}");
            let message = out["error"]["message"].as_str().unwrap();
            assert!(message.contains(message_part), "{message}");
        }
    }

    #[test]
    fn status_table_round_trips() {
        for status in [400, 401, 403, 404, 413, 429, 500, 529] {
            let error_type = anthropic_error_type_for_status(status);
            assert_eq!(status_for_anthropic_error_type(error_type), Some(status));
        }
        assert_eq!(status_for_anthropic_error_type("mystery"), None);
    }
}
