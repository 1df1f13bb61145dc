//! What a request says about itself, read from its headers: its id, its metadata (for
//! `metadata_match`) and its session key (for session affinity). Readers only: nothing here
//! answers a request.

use super::Session;
use serde_json::Value;

use super::headers::Names;
use super::respond::ApiError;
use crate::routing::model::VirtualModel;
use crate::routing::user_path::UserPath;

/// Echoes a sane client `X-Request-Id`, else makes one.
pub fn request_id(session: &Session, names: Names) -> String {
    if let Some(v) = names
        .find(&session.req_header().headers, "x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) {
            return v.to_string();
        }
    }
    let mut id = String::with_capacity(27);
    id.push_str("mg-");
    push_hex(&mut id, fastrand::u64(..), 16);
    push_hex(&mut id, u64::from(fastrand::u32(..)), 8);
    id
}

/// Appends the low `digits` hex digits of `v`, zero-padded, lower case.
fn push_hex(out: &mut String, v: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [b'0'; 16];
    let digits = digits.min(16) as usize;
    for (k, slot) in buf[..digits].iter_mut().enumerate() {
        *slot = HEX[((v >> (4 * (digits - 1 - k))) & 0xf) as usize];
    }
    // Hex digits are ASCII: the conversion cannot fail.
    out.push_str(std::str::from_utf8(&buf[..digits]).unwrap_or_default());
}

/// Request metadata from the `X-Modelgate-Metadata` JSON header, for `metadata_match`.
pub fn metadata_header(
    session: &Session,
    names: Names,
) -> Result<Option<serde_json::Map<String, Value>>, ApiError> {
    let Some(v) = names.find(&session.req_header().headers, "x-modelgate-metadata") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid_request(
            "invalid_metadata",
            "X-Modelgate-Metadata must be a JSON object",
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        _ => Err(bad()),
    }
}

/// The body's own `metadata` object (OpenAI's request `metadata`, as the SDKs' `metadata=`
/// sends it), when it has one. Read only for a virtual model with a `metadata_match` target.
pub fn metadata_body(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        metadata: Option<Value>,
    }
    match serde_json::from_slice::<Body>(body).ok()?.metadata? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The session key for affinity: the first session header present (or, with
/// `session_affinity.key: prefix`, the hash of the body's system prompt and first messages),
/// scoped by the caller's (normalized) user path, so that `/team/x` and `team/x/` are one
/// caller. None when the model is no virtual model that uses pins.
pub fn session_key(
    session: &Session,
    vm: &VirtualModel,
    caller: Option<&UserPath>,
    names: Names,
    body: &[u8],
) -> Option<String> {
    if !vm.uses_affinity() {
        return None;
    }
    if let Some(n) = vm.session.prefix_messages {
        // Prompt-cache affinity: the conversation's prefix is the key, no header needed.
        let key = super::prompt::prefix_key(body, n)?;
        let mut s = String::with_capacity(48);
        s.push_str(caller.map_or("", |p| p.as_str()));
        s.push_str("\u{0}prefix:");
        push_hex(&mut s, key, 16);
        return Some(s);
    }
    let h = &session.req_header().headers;
    let value = vm
        .session
        .headers
        .iter()
        .find_map(|name| names.find(h, name).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty())?;
    Some(format!("{}\u{0}{value}", caller.map_or("", |p| p.as_str())))
}

#[cfg(test)]
mod tests {
    use super::push_hex;

    #[test]
    fn hex_matches_format() {
        for v in [
            0u64,
            1,
            0xabc,
            u64::MAX,
            0x0123_4567_89ab_cdef,
            fastrand::u64(..),
        ] {
            let mut s = String::new();
            push_hex(&mut s, v, 16);
            assert_eq!(s, format!("{v:016x}"));
            let mut s = String::new();
            push_hex(&mut s, v, 8);
            assert_eq!(s, format!("{:08x}", v & 0xffff_ffff));
        }
    }
}
