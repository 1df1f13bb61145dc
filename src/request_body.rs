//! Reading a request body whole under a size limit, for the client API and the admin surface
//! alike. The body is read once, whatever its framing (Content-Length or chunked).

use crate::proxy::Session;

use crate::api_error::ApiError;

/// Reads the whole request body, refusing more than `limit` bytes (`BODY_SIZE_LIMIT`).
pub async fn read(session: &mut Session, limit: u64) -> Result<Vec<u8>, ApiError> {
    read_limited(session, limit, "BODY_SIZE_LIMIT").await
}

/// Reads the whole request body, refusing more than `limit` bytes; a refusal names `setting`,
/// the variable that sets the limit.
pub async fn read_limited(
    session: &mut Session,
    limit: u64,
    setting: &'static str,
) -> Result<Vec<u8>, ApiError> {
    let declared: Option<u64> = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    if let Some(n) = declared {
        if n > limit {
            return Err(too_large(limit, setting));
        }
    }
    // A client that asked to be told to go on (curl does for bodies over 1 MB) is told so once
    // the declared length is known to fit, instead of waiting a second for nothing.
    let expects = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects {
        let _ = session.write_continue_response().await;
    }
    let mut body: Vec<u8> = Vec::with_capacity(declared.unwrap_or(1024).min(limit) as usize);
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > limit {
                    return Err(too_large(limit, setting));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::invalid_request(
                    "invalid_body",
                    format!("could not read the request body: {:?}", e.etype()),
                ))
            }
        }
    }
    Ok(body)
}

fn too_large(limit: u64, setting: &str) -> ApiError {
    ApiError::new(
        413,
        "invalid_request_error",
        "request_too_large",
        format!("request body exceeds the limit of {limit} bytes ({setting})"),
    )
}
