//! `server.base_path` / `BASE_PATH`: the whole surface (client API, admin, health, metrics)
//! served under one prefix, and nothing outside it.
//!
//! Runs first in `request_filter`: a request under the prefix has the prefix taken off its URI,
//! so every later phase sees the path it would see without one; any other request gets a 404.
//! It never looks at the body and keeps the query string as it was.

use super::Session;
use pingora::http::RequestHeader;

use super::ctx::Ctx;
use super::respond::ApiError;
use crate::app::App;

/// The path under `prefix` (`/gw`): `/gw/v1/models` -> `/v1/models`, `/gw` -> `/`; None when
/// the path is outside it (`/gwx`, `/v1/models`).
pub fn strip<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// Rewrites the request's URI to the path under `prefix`; false when it is outside.
fn rewrite(req: &mut RequestHeader, prefix: &str) -> bool {
    let Some(inner) = strip(req.uri.path(), prefix) else {
        return false;
    };
    let mut pq = String::with_capacity(inner.len() + 32);
    pq.push_str(inner);
    if let Some(q) = req.uri.query() {
        pq.push('?');
        pq.push_str(q);
    }
    match pq.parse::<http::Uri>() {
        Ok(uri) => {
            req.set_uri(uri);
            true
        }
        Err(_) => false,
    }
}

/// With a base path set: strips it from the request's URI, or returns the 404 to answer for a
/// path outside it. Synchronous, so the common case (no base path, or a path inside it) costs
/// one comparison and adds nothing to `request_filter`'s future.
pub fn enter(session: &mut Session, ctx: &mut Ctx, app: &App) -> Option<ApiError> {
    // Borrowed, not cloned: the request's later `ctx.snapshot` takes the one reference count
    // it needs (every worker touches that count, so each extra one is a shared cache line).
    let snap = ctx.snap.get_or_insert_with(|| app.snapshot());
    let prefix = snap.settings.base_path.as_deref()?;
    if rewrite(session.req_header_mut(), prefix) {
        return None;
    }
    Some(ApiError::new(
        404,
        "invalid_request_error",
        "not_found",
        format!(
            "no route for {}: this gateway serves under {prefix}",
            session.req_header().uri.path()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_the_prefix_lose_it_and_others_are_outside() {
        assert_eq!(strip("/gw/v1/models", "/gw"), Some("/v1/models"));
        assert_eq!(strip("/gw", "/gw"), Some("/"));
        assert_eq!(strip("/gw/", "/gw"), Some("/"));
        assert_eq!(strip("/gwx/v1/models", "/gw"), None);
        assert_eq!(strip("/v1/models", "/gw"), None);
        assert_eq!(strip("/a/b/health", "/a/b"), Some("/health"));
    }

    #[test]
    fn the_query_string_is_kept() {
        let mut req = RequestHeader::build("GET", b"/gw/admin/api/v1/x?a=1&b=2", None).unwrap();
        assert!(rewrite(&mut req, "/gw"));
        assert_eq!(req.uri.to_string(), "/admin/api/v1/x?a=1&b=2");
        let mut req = RequestHeader::build("GET", b"/elsewhere", None).unwrap();
        assert!(!rewrite(&mut req, "/gw"));
    }
}
