//! The former `peek`, kept for tests as the oracle the scanner must agree with: one
//! `serde_json::from_str` into a derived struct (so a body must be UTF-8, as serde_json requires
//! of a `&str`).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::super::respond::ApiError;
use super::Peek;

/// The routing fields of a body, borrowed from it.
#[derive(Deserialize)]
struct PeekFields<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    provider: Option<serde_json::Value>,
}

pub fn peek(body: &[u8]) -> Result<Peek, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request(
            "invalid_json",
            "request body is empty; send a JSON object with a model",
        ));
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_request(
            "invalid_json",
            "request body must be a JSON object",
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::invalid_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let p: PeekFields<'_> = serde_json::from_str(text).map_err(|e| {
        let what = if e.is_data() {
            "request body must be a JSON object".to_string()
        } else {
            format!("request body is not valid JSON: {e}")
        };
        ApiError::invalid_request("invalid_json", what)
    })?;
    let raw = p.model.ok_or_else(|| {
        ApiError::invalid_request("missing_model", "you must provide a model parameter")
    })?;
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    let end = start + raw.get().len();
    // How the three values are judged is shared; what this oracle checks is the parse around
    // them (validation, locating the fields, duplicates, nulls).
    let (model, stream, provider) =
        super::routing_values(raw.get().as_bytes(), p.stream, p.provider)?;
    Ok(Peek {
        model,
        stream,
        provider,
        model_span: (start, end),
    })
}
