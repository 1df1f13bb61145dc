//! Writing local answers (JSON bodies, error envelopes) to the downstream session.
//!
//! Error bodies are OpenAI-shaped `{"error": {"message", "type", "param", "code"}}`, or
//! Anthropic-shaped for `/v1/messages`. They never contain upstream addresses or secrets.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// A client-visible error.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    /// The request field the error is about, when there is one.
    pub param: Option<String>,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after_s: None,
        }
    }

    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request_error", code, message)
    }

    /// The OpenAI envelope.
    pub fn openai_body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }))
        .unwrap_or_default()
    }

    /// The Anthropic envelope.
    pub fn anthropic_body(&self) -> Vec<u8> {
        let kind = match self.status {
            400 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        };
        serde_json::to_vec(&serde_json::json!({
            "type": "error",
            "error": {"type": kind, "message": self.message}
        }))
        .unwrap_or_default()
    }
}

/// Extra response headers every answer carries.
#[derive(Debug, Default, Clone)]
pub struct Tags<'a> {
    pub request_id: &'a str,
    pub model: Option<&'a str>,
    pub virtual_model: Option<&'a str>,
    pub attempts: Option<u32>,
}

pub fn add_tags(h: &mut ResponseHeader, tags: &Tags<'_>) -> Result<()> {
    h.insert_header("x-request-id", tags.request_id)?;
    if let Some(m) = tags.model {
        h.insert_header("x-modelgate-model", m)?;
    }
    if let Some(v) = tags.virtual_model {
        h.insert_header("x-modelgate-virtual-model", v)?;
    }
    if let Some(a) = tags.attempts {
        h.insert_header("x-modelgate-attempts", a.to_string())?;
    }
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
    let mut h = ResponseHeader::build(status, Some(6))?;
    h.insert_header("content-type", content_type)?;
    h.insert_header("content-length", body.len().to_string())?;
    add_tags(&mut h, tags)?;
    for (k, v) in extra {
        h.insert_header(k.to_string(), v.as_str())?;
    }
    session.set_keepalive(Some(60));
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await?;
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
