//! The header block of an upstream request.
//!
//! Built on the plain header map (one map, names and values prebuilt per snapshot) rather
//! than through `RequestHeader::insert_header`, which parses every name and keeps a second,
//! original-case map.

use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::{Error, ErrorType, OrErr, Result};
use smallvec::SmallVec;

use super::headers;
use crate::routing::model::{Target, WireFormat};
use crate::snapshot::{KeyHeaders, ProviderRuntime};

const X_API_KEY: HeaderName = HeaderName::from_static(crate::wire::anthropic::KEY_HEADER);

/// The upstream request's headers: the client's minus the dropped ones, then host, the
/// provider's key and headers, the target's header rules and the body's length.
pub fn build(
    h: &mut HeaderMap,
    provider: &ProviderRuntime,
    target: Option<&Target>,
    format: WireFormat,
    user_path_header: &str,
    body_len: usize,
) -> Result<()> {
    // One pass over the client's headers finds the few to drop (host and content-length on
    // almost every request), kept inline.
    let dropped: SmallVec<[HeaderName; 4]> = h
        .keys()
        .filter(|k| dropped_name(k.as_str()) || k.as_str().eq_ignore_ascii_case(user_path_header))
        .cloned()
        .collect();
    for k in &dropped {
        h.remove(k);
    }
    if let Some(host) = &provider.host {
        put(h, HOST, host.clone())?;
    }
    match &provider.key {
        KeyHeaders::None => {}
        KeyHeaders::Invalid => {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "the provider's API key is not a valid header value",
            )
        }
        KeyHeaders::Valid { bearer, api_key } => {
            // The values are built once per snapshot; the dialect says which one goes.
            match format {
                WireFormat::AnthropicMessages => put(h, X_API_KEY, api_key.clone())?,
                WireFormat::OpenAiChat => put(h, AUTHORIZATION, bearer.clone())?,
            }
            if let Some((name, default)) = crate::wire::version_header(format) {
                if headers::find(h, name).is_none() {
                    put(
                        h,
                        HeaderName::from_static(name),
                        HeaderValue::from_static(default),
                    )?;
                }
            }
        }
    }
    for (k, v) in &provider.extra_headers {
        put(h, k.clone(), v.clone())?;
    }
    if let Some(t) = target {
        for k in &t.extras().headers_remove {
            h.remove(k.as_str());
        }
        for (k, v) in &t.extras().headers_set {
            let name = HeaderName::from_bytes(k.as_bytes())
                .or_err(ErrorType::InvalidHTTPHeader, "invalid target header name")?;
            let value = HeaderValue::from_str(v)
                .or_err(ErrorType::InvalidHTTPHeader, "invalid target header value")?;
            put(h, name, value)?;
        }
    }
    put(h, CONTENT_LENGTH, HeaderValue::from(body_len))
}

/// Client headers never forwarded upstream: credentials meant for the gateway, hop-by-hop
/// framing (the gateway frames the body itself, and sends it at once: no `Expect`), and the gateway's own request metadata and
/// default user-path headers; `build` drops a configured user-path header too. (A `match`: the
/// names are told apart by length first, instead of comparing each with every entry of a list.)
fn dropped_name(lowercase: &str) -> bool {
    matches!(
        lowercase,
        "authorization"
            | "x-api-key"
            | "proxy-authorization"
            | "cookie"
            | "transfer-encoding"
            | "accept-encoding"
            | "connection"
            | "expect"
            | "x-modelgate-metadata"
            | "x-modelgate-user-path"
            | "x-gomodel-user-path"
    )
}

fn put(h: &mut HeaderMap, k: HeaderName, v: HeaderValue) -> Result<()> {
    h.try_insert(k, v).or_err(
        ErrorType::InvalidHTTPHeader,
        "too many upstream request headers",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::StateRegistry;
    use crate::config::env::Env;
    use crate::snapshot::Snapshot;

    /// Provider `p` (OpenAI dialect) with a key and a configured header; the virtual model
    /// `vm`'s target sets one header and removes another.
    fn snapshot(key: &str) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let text = format!(
            "providers:\n  p:\n    type: openai_compatible\n    base_url: http://127.0.0.1:9/v1\n    api_key: \"{key}\"\n    models: [m1]\n    headers: {{X-Org: acme}}\nvirtual_models:\n  - source: vm\n    targets:\n      - model: p/m1\n        headers: {{set: {{x-team: alpha}}, remove: [x-debug]}}\n"
        );
        std::fs::write(&path, text).unwrap();
        let loaded = crate::config::load(Some(&path), &Env::default()).unwrap();
        Snapshot::build(&loaded, &[], None, &StateRegistry::default()).unwrap()
    }

    fn client() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("authorization", "Bearer client-key"),
            ("x-api-key", "client-key"),
            ("cookie", "session=1"),
            ("transfer-encoding", "chunked"),
            ("x-modelgate-metadata", "{\"team\":\"a\"}"),
            ("X-User-Path", "/team/a"),
            ("x-debug", "1"),
            ("x-trace", "t-1"),
        ] {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        h
    }

    fn get<'a>(h: &'a HeaderMap, k: &str) -> Vec<&'a str> {
        h.get_all(k).iter().map(|v| v.to_str().unwrap()).collect()
    }

    #[test]
    fn openai_dialect_block() {
        let snap = snapshot("sk-1");
        let target = &snap.table.models[0].targets[0];
        let mut h = client();
        build(
            &mut h,
            &snap.providers[0],
            Some(target),
            WireFormat::OpenAiChat,
            "x-user-path",
            42,
        )
        .unwrap();
        assert_eq!(get(&h, "authorization"), ["Bearer sk-1"]);
        assert!(h["authorization"].is_sensitive());
        assert_eq!(get(&h, "host"), ["127.0.0.1:9"]);
        assert_eq!(get(&h, "content-length"), ["42"]);
        assert_eq!(get(&h, "x-org"), ["acme"]);
        assert_eq!(get(&h, "x-team"), ["alpha"]);
        assert_eq!(get(&h, "content-type"), ["application/json"]);
        assert_eq!(get(&h, "x-trace"), ["t-1"]);
        for gone in [
            "x-api-key",
            "cookie",
            "transfer-encoding",
            "x-modelgate-metadata",
            "x-user-path",
            "x-debug",
        ] {
            assert!(h.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(h.len(), 7);
    }

    /// The block for an Anthropic-dialect attempt without a target.
    fn anthropic(snap: &Snapshot, h: &mut HeaderMap) {
        build(
            h,
            &snap.providers[0],
            None,
            WireFormat::AnthropicMessages,
            "x-user-path",
            0,
        )
        .unwrap();
    }

    #[test]
    fn anthropic_dialect_sends_the_key_and_a_default_version() {
        let snap = snapshot("sk-2");
        let mut h = client();
        anthropic(&snap, &mut h);
        assert_eq!(get(&h, "x-api-key"), ["sk-2"]);
        assert!(h.get("authorization").is_none());
        assert_eq!(get(&h, "anthropic-version"), ["2023-06-01"]);
        // Without a target, the target's rules do not apply.
        assert!(h.get("x-team").is_none());
        assert_eq!(get(&h, "x-debug"), ["1"]);

        let mut h = client();
        h.insert(
            crate::wire::anthropic::VERSION_HEADER,
            HeaderValue::from_static("2024-01-01"),
        );
        anthropic(&snap, &mut h);
        assert_eq!(get(&h, "anthropic-version"), ["2024-01-01"]);
    }

    #[test]
    fn a_key_that_cannot_be_a_header_value_fails_the_request() {
        // Loading refuses such a key (config::providers tests); the request path still refuses
        // to go out without it should one ever get here.
        let mut snap = snapshot("sk-1");
        snap.providers[0].key = KeyHeaders::Invalid;
        let mut h = client();
        let err = build(
            &mut h,
            &snap.providers[0],
            None,
            WireFormat::OpenAiChat,
            "x-user-path",
            0,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("API key is not a valid header value"),
            "{err}"
        );
    }
}
