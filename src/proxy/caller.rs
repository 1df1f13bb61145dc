//! Who is calling: the master key or a managed key (`Authorization: Bearer`, or `x-api-key` on
//! the Anthropic routes, through the parser the admin surface shares) and the caller's user
//! path, bound to a managed key's own.

use std::sync::Arc;

use super::Session;
use arc_swap::ArcSwap;

use super::headers::Names;
use super::respond::ApiError;
use crate::auth::Caller;
use crate::config::settings::{Settings, DEFAULT_USER_PATH_HEADER};
use crate::keys::{KeyTable, ManagedKey};
use crate::routing::user_path::UserPath;

/// Identifies the caller (`Authorization: Bearer`, or `x-api-key` on `/v1/messages`): the
/// master key, a managed key, or (no master key set) an open caller. A managed key that is not
/// in the table (revoked, or never made) is refused even on an open gateway.
pub fn authenticate(
    session: &Session,
    settings: &Settings,
    keys: &ArcSwap<KeyTable>,
    anthropic: bool,
    names: Names,
) -> Result<Caller, ApiError> {
    let master = settings.master_key.as_deref();
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
    crate::auth::identify(
        bearer.or(api_key),
        master,
        keys,
        crate::wall_clock::now_secs() as i64,
        "missing API key: send Authorization: Bearer <key>",
    )
}

/// The user path of a request made with a managed key: the key's own, or the header's when it
/// names a path under the key's (narrowing). A header path outside the key's is 403
/// `user_path_forbidden`: a key never widens.
pub fn bind(key: &ManagedKey, header: Option<UserPath>) -> Result<Option<UserPath>, ApiError> {
    match header {
        None if key.user_path.is_root() => Ok(None),
        None => Ok(Some(key.user_path.clone())),
        Some(p) if key.user_path.covers(&p) => Ok(Some(p)),
        Some(p) => Err(ApiError::new(
            403,
            "permission_error",
            "user_path_forbidden",
            format!(
                "API key {:?} is bound to user path {}; the user-path header may only name a path under it, not {p}",
                key.name, key.user_path
            ),
        )),
    }
}

/// What a managed key may do on the client API: call models with scope `inference`.
pub fn check_inference(key: &Arc<ManagedKey>) -> Result<(), ApiError> {
    if key.may_infer() {
        return Ok(());
    }
    Err(crate::auth::forbidden(format!(
        "API key {:?} has no inference scope; it may only manage virtual models",
        key.name
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> ManagedKey {
        serde_json::from_str::<crate::keys::KeySpec>(&format!(r#"{{"user_path":"{path}"}}"#))
            .unwrap()
            .into_key("k", 0)
            .unwrap()
    }

    fn p(s: &str) -> UserPath {
        UserPath::parse(s).unwrap()
    }

    #[test]
    fn a_key_binds_its_path_which_the_header_may_narrow_never_widen() {
        let k = key("/team");
        assert_eq!(bind(&k, None).unwrap(), Some(p("/team")));
        assert_eq!(bind(&k, Some(p("/team/a"))).unwrap(), Some(p("/team/a")));
        assert_eq!(bind(&k, Some(p("/team"))).unwrap(), Some(p("/team")));
        for wider in ["/", "/other", "/team-x"] {
            let e = bind(&k, Some(p(wider))).unwrap_err();
            assert_eq!((e.status, e.code), (403, "user_path_forbidden"), "{wider}");
        }
        assert_eq!(bind(&key("/"), None).unwrap(), None);
        assert_eq!(bind(&key("/"), Some(p("/x"))).unwrap(), Some(p("/x")));
    }
}
