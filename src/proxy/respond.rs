//! Writing local answers (JSON bodies, error envelopes) to the downstream session.
//!
//! Error bodies are OpenAI-shaped `{"error": {"message", "type", "param", "code"}}`, or
//! Anthropic-shaped for `/v1/messages`. They never contain upstream addresses or secrets.

use super::Session;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::{ErrorType::InvalidHTTPHeader, OrErr, Result};

pub use crate::api_error::ApiError;

/// Extra response headers every answer carries.
#[derive(Debug, Default, Clone)]
pub struct Tags<'a> {
    pub request_id: &'a str,
    pub model: Option<&'a str>,
    pub virtual_model: Option<&'a str>,
    pub attempts: Option<u32>,
    /// `model` and `virtual_model` as header values built with the snapshot, when they are
    /// (used instead of building them per response).
    pub prebuilt: (Option<&'a HeaderValue>, Option<&'a HeaderValue>),
    /// The class of the upstream failure behind an error answer.
    pub error_class: Option<&'static str>,
    /// The `x-ratelimit-*` values of a request under a limit.
    pub rate: Option<&'a crate::limits::RateHeaders>,
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_MODEL: HeaderName = HeaderName::from_static("x-modelgate-model");
const X_VIRTUAL_MODEL: HeaderName = HeaderName::from_static("x-modelgate-virtual-model");
const X_ATTEMPTS: HeaderName = HeaderName::from_static("x-modelgate-attempts");
const X_ERROR_CLASS: HeaderName = HeaderName::from_static("x-modelgate-error-class");

/// Adds the tags to a response header.
///
/// The header block is taken apart and put back without its original-case name map: the
/// tags then go into one map under prebuilt names, where `insert_header` would parse and
/// allocate each name and insert it into two maps. Names are written in their canonical case
/// (as HTTP/2 always does); values are unchanged.
pub fn add_tags(h: &mut ResponseHeader, tags: &Tags<'_>) -> Result<()> {
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(h, placeholder).into();
    let result = insert_tags(&mut parts.headers, tags);
    *h = ResponseHeader::from(parts);
    result
}

fn insert_tags(map: &mut HeaderMap, tags: &Tags<'_>) -> Result<()> {
    let _ = map.try_reserve(4);
    put(map, X_REQUEST_ID, value(tags.request_id)?)?;
    match (tags.prebuilt.0, tags.model) {
        (Some(v), _) => put(map, X_MODEL, v.clone())?,
        (None, Some(m)) => put(map, X_MODEL, value(m)?)?,
        (None, None) => {}
    }
    match (tags.prebuilt.1, tags.virtual_model) {
        (Some(v), _) => put(map, X_VIRTUAL_MODEL, v.clone())?,
        (None, Some(m)) => put(map, X_VIRTUAL_MODEL, value(m)?)?,
        (None, None) => {}
    }
    if let Some(a) = tags.attempts {
        const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        let v = match SMALL.get(a as usize) {
            Some(s) => HeaderValue::from_static(s),
            None => HeaderValue::from(a),
        };
        put(map, X_ATTEMPTS, v)?;
    }
    if let Some(c) = tags.error_class {
        put(map, X_ERROR_CLASS, HeaderValue::from_static(c))?;
    }
    if let Some(rate) = tags.rate {
        for (name, v) in rate.pairs() {
            put(map, HeaderName::from_static(name), value(&v)?)?;
        }
    }
    Ok(())
}

fn value(s: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(s).or_err(InvalidHTTPHeader, "invalid response tag value")
}

fn put(map: &mut HeaderMap, name: HeaderName, value: HeaderValue) -> Result<()> {
    map.try_insert(name, value)
        .or_err(InvalidHTTPHeader, "too many response headers")?;
    Ok(())
}

/// Writes a complete response with a body.
pub async fn write(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    tags: &Tags<'_>,
    extra: &[(&str, String)],
) -> Result<()> {
    write_edited(session, status, content_type, body, tags, extra, |_| {}).await
}

/// `write`, with `edit` applied to the header last (the `headers` middleware).
pub async fn write_edited(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    tags: &Tags<'_>,
    extra: &[(&str, String)],
    edit: impl FnOnce(&mut ResponseHeader),
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(6))?;
    h.insert_header("content-type", content_type)?;
    h.insert_header("content-length", body.len().to_string())?;
    add_tags(&mut h, tags)?;
    for (k, v) in extra {
        h.insert_header(k.to_string(), v.as_str())?;
    }
    edit(&mut h);
    session.set_keepalive(Some(60));
    session.write_response_header(Box::new(h)).await?;
    session.write_response_body(body, true).await?;
    Ok(())
}

pub async fn write_json(
    session: &mut Session,
    status: u16,
    value: &serde_json::Value,
    tags: &Tags<'_>,
) -> Result<()> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    write(
        session,
        status,
        "application/json",
        Bytes::from(body),
        tags,
        &[],
    )
    .await
}

/// Writes an error in the dialect of the route (`anthropic` for `/v1/messages`).
pub async fn write_error(
    session: &mut Session,
    err: &ApiError,
    anthropic: bool,
    tags: &Tags<'_>,
) -> Result<()> {
    let body = if anthropic {
        err.anthropic_body()
    } else {
        err.openai_body()
    };
    let mut extra = Vec::new();
    if let Some(s) = err.retry_after_s {
        extra.push(("retry-after", s.to_string()));
    }
    write(
        session,
        err.status,
        "application/json",
        Bytes::from(body),
        tags,
        &extra,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(h: &ResponseHeader) -> String {
        let mut buf = Vec::new();
        h.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    fn upstream() -> ResponseHeader {
        let mut h = ResponseHeader::build(201, Some(4)).unwrap();
        h.append_header("Content-Type", "application/json").unwrap();
        h.append_header("OpenAI-Processing-Ms", "12").unwrap();
        h.append_header("set-cookie", "a=1").unwrap();
        h.append_header("set-cookie", "b=2").unwrap();
        h
    }

    #[test]
    fn tags_join_the_upstream_headers() {
        let mut h = upstream();
        let tags = Tags {
            request_id: "req-1",
            model: Some("mock/a"),
            virtual_model: Some("smart"),
            attempts: Some(2),
            ..Tags::default()
        };
        add_tags(&mut h, &tags).unwrap();
        assert_eq!(h.status.as_u16(), 201);
        let got = wire(&h);
        for line in [
            "Content-Type: application/json\r\n",
            "openai-processing-ms: 12\r\n",
            "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
            "x-request-id: req-1\r\n",
            "x-modelgate-model: mock/a\r\n",
            "x-modelgate-virtual-model: smart\r\n",
            "x-modelgate-attempts: 2\r\n",
        ] {
            assert!(got.contains(line), "{line:?} missing from {got:?}");
        }
        assert_eq!(h.headers.len(), 8);
    }

    #[test]
    fn tags_replace_an_upstream_request_id_and_skip_absent_ones() {
        let mut h = upstream();
        h.append_header("X-Request-Id", "upstream-id").unwrap();
        let tags = Tags {
            request_id: "req-2",
            attempts: Some(12),
            ..Tags::default()
        };
        add_tags(&mut h, &tags).unwrap();
        let ids: Vec<_> = h.headers.get_all("x-request-id").iter().collect();
        assert_eq!(ids, ["req-2"]);
        assert_eq!(h.headers["x-modelgate-attempts"], "12");
        assert!(h.headers.get("x-modelgate-model").is_none());
        assert!(h.headers.get("x-modelgate-virtual-model").is_none());
    }

    #[test]
    fn prebuilt_values_are_used_as_they_are() {
        let mut h = upstream();
        let (m, v) = (
            HeaderValue::from_static("p/m"),
            HeaderValue::from_static("vm"),
        );
        let tags = Tags {
            request_id: "req-3",
            model: Some("ignored/when-prebuilt"),
            virtual_model: None,
            prebuilt: (Some(&m), Some(&v)),
            ..Tags::default()
        };
        add_tags(&mut h, &tags).unwrap();
        assert_eq!(h.headers["x-modelgate-model"], "p/m");
        assert_eq!(h.headers["x-modelgate-virtual-model"], "vm");
    }

    #[test]
    fn a_tag_value_that_cannot_be_a_header_is_an_error_and_keeps_the_rest() {
        let mut h = upstream();
        let tags = Tags {
            request_id: "bad\r\nvalue",
            ..Tags::default()
        };
        assert!(add_tags(&mut h, &tags).is_err());
        assert_eq!(h.status.as_u16(), 201);
        assert_eq!(h.headers.len(), 4);
    }
}
