//! The request body: reading it whole under the size limit, peeking at the routing fields, and
//! rewriting it for one attempt.
//!
//! The gateway sends each attempt's body itself (`exchange`), so the body is read once, whole,
//! whatever its framing. Rewriting touches only the `model` value's bytes unless the target
//! sets `override_params`, so a same-dialect request passes through byte for byte.

use super::json_scan::{self, Member, ScanError};
use super::respond::ApiError;
use smol_str::SmolStr;

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod peek_tests;

pub use crate::request_body::read;

/// What routing needs from a body, plus where the `model` value sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    /// Inline (no allocation) up to 23 bytes.
    pub model: SmolStr,
    pub stream: bool,
    pub provider: Option<String>,
    /// Byte range of the `model` value (quotes included).
    pub model_span: (usize, usize),
}

/// The routing fields as JSON gives them, before their types are checked.
#[derive(Default)]
struct Fields {
    model: Option<(usize, usize)>,
    stream: Option<serde_json::Value>,
    provider: Option<serde_json::Value>,
}

/// serde_json's recursion limit, less the level the body's own object takes.
const VALUE_DEPTH_LIMIT: usize = 127;

/// Reads the body once: invalid JSON, a non-object or a missing `model` are 400s.
///
/// Accepts and refuses exactly what `serde_json::from_str` into a struct of `model` (a raw
/// value), `stream` and `provider` (values) does, but skips everything else with
/// `json_scan`, which is several times faster on long strings full of escapes. The three fields
/// are small, so they are still read by serde_json. A body that is not UTF-8 (invalid bytes in
/// any string) is refused like serde_json refuses a `&str` that is not one: before anything else.
pub fn peek(body: &[u8]) -> Result<Peek, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request(
            "invalid_json",
            "request body is empty; send a JSON object with a model",
        ));
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(not_an_object());
    }
    let mut f = Fields::default();
    json_scan::scan_object(body, ["model", "stream", "provider"], |k, m| {
        read_field(body, k, m, &mut f)
    })
    .map_err(|e| match e {
        // The scanner checks UTF-8 string by string, so an earlier fault can hide a later
        // invalid byte; a body that is not UTF-8 is refused for that first. A scan that
        // succeeded checked every string, and no non-ASCII byte is valid outside one.
        _ if std::str::from_utf8(body).is_err() => not_utf8(body),
        ScanError::Shape { .. } => not_an_object(),
        ScanError::Syntax { reason, at } => {
            let (line, column) = json_scan::line_column(body, at);
            ApiError::invalid_request(
                "invalid_json",
                format!("request body is not valid JSON: {reason} at line {line} column {column}"),
            )
        }
    })?;
    let (start, end) = f.model.ok_or_else(missing_model)?;
    let (model, stream, provider) = routing_values(&body[start..end], f.stream, f.provider)?;
    Ok(Peek {
        model,
        stream,
        provider,
        model_span: (start, end),
    })
}

/// The peek of a body the request middleware wrote, from its routing fields as the steps left
/// them (`model_span` is where `model`'s value lies in `body`), with `peek`'s checks of their
/// values. The body is valid JSON with unique keys by construction.
pub fn peek_written(
    body: &[u8],
    model_span: (usize, usize),
    stream: Option<serde_json::Value>,
    provider: Option<serde_json::Value>,
) -> Result<Peek, ApiError> {
    let (start, end) = model_span;
    let model_raw = body.get(start..end).ok_or_else(missing_model)?;
    let (model, stream, provider) = routing_values(model_raw, stream, provider)?;
    Ok(Peek {
        model,
        stream,
        provider,
        model_span,
    })
}

/// The routing fields' values, checked: `model` (its raw JSON) a non-blank string, `stream` a
/// boolean or null, `provider` a non-blank string or null.
fn routing_values(
    model_raw: &[u8],
    stream: Option<serde_json::Value>,
    provider: Option<serde_json::Value>,
) -> Result<(SmolStr, bool, Option<String>), ApiError> {
    let model = model_string(model_raw)
        .ok_or_else(|| ApiError::invalid_request("invalid_model", "model must be a string"))?;
    if model.trim().is_empty() {
        return Err(missing_model());
    }
    let stream = match stream {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(_) => {
            return Err(ApiError::invalid_request(
                "invalid_stream",
                "stream must be a boolean",
            ))
        }
    };
    let provider = match provider {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(_) => {
            return Err(ApiError::invalid_request(
                "invalid_provider",
                "provider must be a non-empty string",
            ))
        }
    };
    Ok((model, stream, provider))
}

/// The `model` value as a string, `None` when it is not a JSON string. Without escapes (the
/// usual case) the text between the quotes is the value: the scanner has already checked it
/// is a well-formed JSON string (no control characters) of UTF-8; escapes go through serde_json.
fn model_string(raw: &[u8]) -> Option<SmolStr> {
    if let [b'"', inner @ .., b'"'] = raw {
        if !inner.contains(&b'\\') {
            return std::str::from_utf8(inner).ok().map(SmolStr::new);
        }
    }
    serde_json::from_slice::<String>(raw)
        .ok()
        .map(SmolStr::from)
}

/// Reads one routing field as serde_json did: `null` is an absent field; `model` is kept raw
/// (but must be UTF-8); `stream` and `provider` become values, nested no deeper than the
/// recursion limit left inside the body's object.
fn read_field(body: &[u8], k: usize, m: Member, f: &mut Fields) -> Result<(), ScanError> {
    let (start, end) = m.span;
    let raw = &body[start..end];
    if raw == b"null" {
        return Ok(());
    }
    if k == 0 {
        if let Err(e) = std::str::from_utf8(raw) {
            return Err(ScanError::Syntax {
                reason: "invalid unicode code point".into(),
                at: start + e.valid_up_to(),
            });
        }
        f.model = Some(m.span);
        return Ok(());
    }
    if m.depth >= VALUE_DEPTH_LIMIT {
        return Err(ScanError::Syntax {
            reason: "recursion limit exceeded".into(),
            at: start,
        });
    }
    let value: serde_json::Value = serde_json::from_slice(raw).map_err(|e| ScanError::Syntax {
        reason: json_scan::reason_of(&e).into(),
        at: start,
    })?;
    if k == 1 {
        f.stream = Some(value);
    } else {
        f.provider = Some(value);
    }
    Ok(())
}

/// A body with invalid UTF-8, located at its first invalid byte.
fn not_utf8(body: &[u8]) -> ApiError {
    let at = std::str::from_utf8(body)
        .err()
        .map_or(0, |e| e.valid_up_to());
    let (line, column) = json_scan::line_column(body, at);
    ApiError::invalid_request(
        "invalid_json",
        format!(
            "request body is not valid JSON: invalid UTF-8 at line {line} column {column}; send \
             UTF-8 text"
        ),
    )
}

fn not_an_object() -> ApiError {
    ApiError::invalid_request("invalid_json", "request body must be a JSON object")
}

fn missing_model() -> ApiError {
    ApiError::invalid_request("missing_model", "you must provide a model parameter")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_finds_model_span() {
        let body = br#"{"messages":[],"model" : "smart","stream":true}"#;
        let p = peek(body).unwrap();
        assert_eq!(p.model, "smart");
        assert!(p.stream);
        assert_eq!(&body[p.model_span.0..p.model_span.1], br#""smart""#);
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(peek(b"{not json").unwrap_err().code, "invalid_json");
        assert_eq!(peek(b"[1]").unwrap_err().code, "invalid_json");
        assert_eq!(
            peek(br#"{"messages":[]}"#).unwrap_err().code,
            "missing_model"
        );
        assert_eq!(peek(br#"{"model":5}"#).unwrap_err().code, "invalid_model");
        assert_eq!(peek(br#"{"model":" "}"#).unwrap_err().code, "missing_model");
    }
}
