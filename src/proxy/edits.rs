//! Every change a request body gets on its way to one attempt, decided in one place: `Edits`
//! says what changes, `apply` decides how.
//!
//! When only the `model` value changes (and, for an OpenAI stream, the request for a final
//! usage chunk is added) the bytes are spliced, so the rest of the body goes upstream byte for
//! byte and is never parsed again. Anything more (a target's `override_params`, dropping the
//! routing-only `provider` field) parses the body, edits the map and writes it once. A body
//! translated to another dialect is already a map: `apply_map` edits it the same way. A
//! property test holds `apply` to `apply_map` over serde_json for every body and every edit.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::body::Peek;

/// What one attempt changes in the client's body. Borrowed from the snapshot (the target's
/// upstream model id and parameters) and the request (two flags): building one allocates
/// nothing.
#[derive(Debug, Clone, Copy)]
pub struct Edits<'a> {
    /// The upstream model id, replacing `model`.
    pub model: &'a str,
    /// Parameters that win over the client's values for the same keys (`override_params`).
    pub set: Option<&'a Map<String, Value>>,
    /// Remove the `provider` field (it chose the provider; the upstream does not know it).
    pub drop_provider: bool,
    /// Ask an OpenAI stream for its final usage chunk, unless the body has `stream_options`.
    pub request_usage: bool,
}

const USAGE_REQUEST: &[u8] = br#","stream_options":{"include_usage":true}"#;

/// The edited body, and whether the usage request was added.
pub fn apply(raw: &[u8], peek: &Peek, e: &Edits<'_>) -> (Bytes, bool) {
    if e.set.is_none() && !e.drop_provider {
        if let Some(done) = splice(raw, peek, e) {
            return done;
        }
    }
    // The body passed `peek`'s validation, which accepts exactly what serde_json accepts.
    let mut map: Map<String, Value> = serde_json::from_slice(raw).unwrap_or_default();
    let added = apply_map(&mut map, e);
    (
        Bytes::from(serde_json::to_vec(&map).unwrap_or_default()),
        added,
    )
}

/// The same edits on a parsed body; returns whether the usage request was added.
pub fn apply_map(map: &mut Map<String, Value>, e: &Edits<'_>) -> bool {
    map.insert("model".into(), Value::String(e.model.to_string()));
    if e.drop_provider {
        map.shift_remove("provider");
    }
    if let Some(set) = e.set {
        for (k, v) in set {
            map.insert(k.clone(), v.clone());
        }
    }
    if e.request_usage && !map.contains_key("stream_options") {
        map.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
        return true;
    }
    false
}

/// The spliced body, or `None` when splicing is not certain to be right: the usage request
/// to add to a body that may already carry `stream_options` (the bytes appear, or an escape
/// could spell them).
fn splice(raw: &[u8], peek: &Peek, e: &Edits<'_>) -> Option<(Bytes, bool)> {
    let quoted = serde_json::to_string(e.model).ok()?;
    let (s, end) = peek.model_span;
    if !e.request_usage {
        let mut out = Vec::with_capacity(raw.len() - (end - s) + quoted.len());
        out.extend_from_slice(&raw[..s]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&raw[end..]);
        return Some((Bytes::from(out), false));
    }
    if memchr::memmem::find(raw, b"stream_options").is_some()
        || memchr::memmem::find(raw, b"\\u").is_some()
    {
        return None;
    }
    // The body is one validated object: its last `}` closes it, and it has a member (model).
    let close = raw.iter().rposition(|b| *b == b'}')?;
    if end > close {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() + quoted.len() + USAGE_REQUEST.len());
    out.extend_from_slice(&raw[..s]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&raw[end..close]);
    out.extend_from_slice(USAGE_REQUEST);
    out.extend_from_slice(&raw[close..]);
    Some((Bytes::from(out), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::body::peek;
    use proptest::prelude::*;

    fn edits(model: &str) -> Edits<'_> {
        Edits {
            model,
            set: None,
            drop_provider: false,
            request_usage: false,
        }
    }

    #[test]
    fn only_the_model_bytes_change() {
        let raw = br#"{"z":1,  "model":"smart","a":[1, 2]}"#;
        let (out, added) = apply(raw, &peek(raw).unwrap(), &edits("gpt-4o"));
        assert_eq!(&out[..], br#"{"z":1,  "model":"gpt-4o","a":[1, 2]}"#);
        assert!(!added);
    }

    #[test]
    fn the_usage_request_is_spliced_before_the_closing_brace() {
        let raw = br#"{"model":"m","stream":true} "#;
        let e = Edits {
            request_usage: true,
            ..edits("up")
        };
        let (out, added) = apply(raw, &peek(raw).unwrap(), &e);
        assert_eq!(
            &out[..],
            br#"{"model":"up","stream":true,"stream_options":{"include_usage":true}} "#
        );
        assert!(added);
    }

    #[test]
    fn a_body_that_asks_for_usage_itself_is_left_its_own_options() {
        let raw = br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#;
        let e = Edits {
            request_usage: true,
            ..edits("up")
        };
        let (out, added) = apply(raw, &peek(raw).unwrap(), &e);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], false);
        assert!(!added);
    }

    #[test]
    fn override_params_win_and_provider_goes() {
        let raw = br#"{"model":"m","temperature":1.0,"provider":"a"}"#;
        let mut set = Map::new();
        set.insert("temperature".into(), serde_json::json!(0.2));
        let e = Edits {
            set: Some(&set),
            drop_provider: true,
            ..edits("x")
        };
        let (out, _) = apply(raw, &peek(raw).unwrap(), &e);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"model": "x", "temperature": 0.2}));
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| serde_json::json!(n)),
            "[ -~é\"\\\\\u{1F600}]{0,12}".prop_map(Value::String),
        ]
    }

    fn body() -> impl Strategy<Value = (Vec<(String, Value)>, String)> {
        let key = prop_oneof![
            Just("temperature".to_string()),
            Just("provider".to_string()),
            Just("stream".to_string()),
            Just("stream_options".to_string()),
            Just("messages".to_string()),
            "[a-z\\\\]{1,6}",
        ];
        (
            proptest::collection::vec((key, scalar()), 0..6),
            "[a-z][ -~é\u{1F600}]{0,9}",
        )
    }

    proptest! {
        /// Whatever the body and the edits, splicing or not, the upstream gets exactly what
        /// the plain serde_json edit gives.
        #[test]
        fn apply_agrees_with_the_serde_json_edit(
            (members, model) in body(),
            upstream in "[ -~é\"\u{1F600}]{1,10}",
            set in proptest::option::of(proptest::collection::vec(("[a-z_]{1,8}", scalar()), 0..3)),
            drop_provider in any::<bool>(),
            request_usage in any::<bool>(),
            spaced in any::<bool>(),
        ) {
            let mut obj = Map::new();
            obj.insert("model".into(), Value::String(model));
            for (k, v) in members {
                if k != "model" {
                    obj.insert(k, v);
                }
            }
            let raw = if spaced {
                serde_json::to_vec_pretty(&obj).unwrap()
            } else {
                serde_json::to_vec(&obj).unwrap()
            };
            let set: Option<Map<String, Value>> = set.map(|s| s.into_iter().collect());
            let e = Edits { model: &upstream, set: set.as_ref(), drop_provider, request_usage };
            // Bodies `peek` refuses (a `stream` that is no boolean) never reach the edits.
            let Ok(p) = peek(&raw) else { return Ok(()) };
            let (out, added) = apply(&raw, &p, &e);
            let got: Value = serde_json::from_slice(&out).unwrap();
            let mut expected = obj.clone();
            let expected_added = apply_map(&mut expected, &e);
            prop_assert_eq!(got, Value::Object(expected));
            prop_assert_eq!(added, expected_added);
        }
    }
}
