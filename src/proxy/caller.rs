//! Who is calling: the master key check (`Authorization: Bearer`, or `x-api-key` on the
//! Anthropic routes, through the parser the admin surface shares) and the caller's user path.

use pingora::proxy::Session;

use super::headers::Names;
use super::respond::ApiError;
use crate::config::settings::{Settings, DEFAULT_USER_PATH_HEADER};
use crate::routing::user_path::UserPath;

/// Checks the master key (`Authorization: Bearer`, or `x-api-key` on `/v1/messages`).
pub fn authenticate(
    session: &Session,
    settings: &Settings,
    anthropic: bool,
    names: Names,
) -> Result<(), ApiError> {
    let Some(master) = settings.master_key.as_deref() else {
        return Ok(());
    };
    let h = &session.req_header().headers;
    let bearer = names
        .find(h, "authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token);
    let api_key = if anthropic {
        names
            .find(h, "x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    } else {
        None
    };
    crate::auth::check_master(
        bearer.or(api_key),
        master,
        "missing API key: send Authorization: Bearer <key>",
    )
}

/// The caller's user path from the configured header (or `X-GoModel-User-Path`).
pub fn user_path(
    session: &Session,
    settings: &Settings,
    names: Names,
) -> Result<Option<UserPath>, ApiError> {
    let h = &session.req_header().headers;
    // The default name also accepts GoModel's spelling. A configured name is the only one
    // read: the proxy in front that sets it strips that header from its clients, not ours.
    let default = settings.user_path_header == DEFAULT_USER_PATH_HEADER;
    let raw = names.find(h, &settings.user_path_header).or_else(|| {
        default
            .then(|| names.find(h, "x-gomodel-user-path"))
            .flatten()
    });
    let Some(raw) = raw else {
        return Ok(None);
    };
    let s = raw.to_str().map_err(|_| {
        ApiError::invalid_request("invalid_user_path", "user path header is not valid text")
    })?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    UserPath::parse(s)
        .map(Some)
        .map_err(|e| ApiError::invalid_request("invalid_user_path", e.to_string()))
}
