//! The error a client sees, in the client's dialect: OpenAI's envelope
//! `{"error": {"message", "type", "param", "code"}}` or Anthropic's
//! `{"type": "error", "error": {"type", "message"}}`. Shared by the client API and the admin
//! surface; it never contains upstream addresses or secrets.

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
            400 | 422 => "invalid_request_error",
            413 => "request_too_large",
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
