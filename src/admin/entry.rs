//! Request bodies that carry a config entry: JSON objects in the shape of one `virtual_models`
//! item (GoModel and TrueFoundry spellings accepted). Fields that only views carry (`origin`,
//! `etag`, ...) are ignored, so a client may send back what it read.
//!
//! Syntax errors are 400; a body that is JSON but not a valid entry is 422 naming the field.
//! This module parses only; whether an entry makes sense is `config::validate`'s job.

use serde_json::{Map, Value};

use super::unprocessable;
use crate::api_error::ApiError;
use crate::config::schema::VirtualModelSpec;

/// Keys views add to an entry; ignored in request bodies.
pub const VIEW_KEYS: &[&str] = &[
    "origin",
    "managed",
    "location",
    "kind",
    "valid",
    "overridden",
    "overridden_by",
    "etag",
    "created_at",
    "updated_at",
    "targets_status",
    "error",
    // Server-owned bookkeeping (`decide_write` and `writes::stamp` set them).
    "id",
    "created_by",
    "updated_by",
];

/// Parses a body as a JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request(
            "invalid_json",
            "the request body is empty; send a virtual model object",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid_request(
            "invalid_json",
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::invalid_request(
            "invalid_json",
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

/// Drops the view-only keys.
pub fn strip_view_keys(m: &mut Map<String, Value>) {
    for k in VIEW_KEYS {
        m.remove(*k);
    }
}

/// A request body object as `T`; a shape error is 422 `invalid_field` naming the field's path
/// (as `param` too) and suggesting the nearest known key for an unknown one.
pub fn deserialize<T: serde::de::DeserializeOwned>(m: Map<String, Value>) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(Value::Object(m)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let unknown = inner
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .map(str::to_string);
        // The path of an unknown field already ends with it.
        let param = match path.as_str() {
            "." => unknown,
            p => Some(p.to_string()),
        };
        let message = crate::config::suggest(&inner);
        let message = match &param {
            Some(p) => format!("{p}: {message}"),
            None => message,
        };
        unprocessable("invalid_field", message, param)
    })
}

/// An entry from a JSON object; a shape error is 422 with the field's path as `param`.
pub fn from_object(m: Map<String, Value>) -> Result<VirtualModelSpec, ApiError> {
    let mut spec: VirtualModelSpec = deserialize(m)?;
    if let Some(s) = spec.source.as_mut() {
        *s = s.trim().to_string();
    }
    Ok(spec)
}

/// Parses a body into an entry.
pub fn parse(body: &[u8]) -> Result<VirtualModelSpec, ApiError> {
    let mut m = object(body)?;
    strip_view_keys(&mut m);
    from_object(m)
}

/// The entry's source, required and non-blank.
pub fn required_source(spec: &VirtualModelSpec) -> Result<String, ApiError> {
    match spec.source.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(unprocessable(
            "invalid_field",
            "source: source is required",
            Some("source".into()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_are_400_and_shape_errors_422_with_the_field() {
        assert_eq!(parse(b"").unwrap_err().status, 400);
        assert_eq!(parse(b"{nope").unwrap_err().status, 400);
        assert_eq!(parse(b"[1]").unwrap_err().status, 400);
        let e = parse(br#"{"source":"s","targts":[]}"#).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (422, Some("targts")));
        assert!(
            e.message.contains("did you mean `targets`?"),
            "{}",
            e.message
        );
        let e = parse(br#"{"source":"s","targets":[{"model":"m","weight":"heavy"}]}"#).unwrap_err();
        assert_eq!(e.status, 422);
        assert_eq!(
            e.param.as_deref(),
            Some("targets[0].weight"),
            "{}",
            e.message
        );
    }

    #[test]
    fn view_keys_are_ignored_and_spellings_accepted() {
        let s = parse(
            br#"{"source":" s ","etag":"x","origin":"store","load_balance_targets":[{"target":"a/b"}]}"#,
        )
        .unwrap();
        assert_eq!(s.source.as_deref(), Some("s"));
        assert_eq!(s.targets.unwrap()[0].model.as_deref(), Some("a/b"));
    }
}
