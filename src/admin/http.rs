//! Pingora glue for the admin surface: turns the session into an admin `Request` (after the
//! caller is authorized, so an unauthorized caller's body is never read), runs the handler on
//! a blocking thread (it takes a mutex and does SQLite I/O) and writes the `Response`.
//!
//! No admin logic lives here.

use std::sync::Arc;

use crate::proxy::Session;
use bytes::Bytes;
use pingora::http::ResponseHeader;

use super::{auth, Request, Response};
use crate::api_error::ApiError;
use crate::app::App;
use crate::routing::user_path::UserPath;
use crate::snapshot::Snapshot;

fn header(session: &Session, name: &str) -> Option<String> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Answers an admin request; always writes a response, and returns its status. `user_path`
/// is the caller's, as the user-path header gave it (an invalid one is answered after the
/// caller is authorized).
pub async fn serve(
    app: &Arc<App>,
    session: &mut Session,
    snap: &Snapshot,
    request_id: &str,
    user_path: Result<Option<UserPath>, ApiError>,
) -> pingora::Result<u16> {
    let req_header = session.req_header();
    let host = header(session, "host")
        .or_else(|| req_header.uri.authority().map(|a| a.as_str().to_string()));
    let mut req = Request {
        method: req_header.method.as_str().to_string(),
        path: req_header.uri.path().to_string(),
        query: req_header.uri.query().map(str::to_string),
        user_path: user_path
            .as_ref()
            .ok()
            .and_then(|p| p.as_ref().map(|p| p.as_str().to_string())),
        authorization: header(session, "authorization"),
        if_match: header(session, "if-match"),
        content_type: header(session, "content-type"),
        host,
        // A Unix socket peer is on this machine too.
        peer_loopback: session
            .client_addr()
            .is_some_and(|a| a.as_inet().is_none_or(|i| i.ip().is_loopback())),
        body: Vec::new(),
        access: auth::Access::Full,
    };
    let resp = match auth::authorize(snap.settings.master_key.as_deref(), &app.keys, &req)
        .and_then(|access| user_path.map(|_| access))
    {
        Err(e) => Response::error(&e),
        Ok(access) => match crate::request_body::read(session, snap.settings.body_size_limit).await
        {
            Err(e) => Response::error(&e),
            Ok(b) => {
                req.body = b;
                // A manager's writes are recorded as its key's (`created_by`, `updated_by`)
                // unless it names a user path.
                if let auth::Access::Manager(k) = &access {
                    req.user_path.get_or_insert_with(|| k.name.clone());
                }
                req.access = access;
                let app = app.clone();
                tokio::task::spawn_blocking(move || super::route(&app, &req))
                    .await
                    .unwrap_or_else(|_| {
                        Response::error(&ApiError::new(
                            500,
                            "server_error",
                            "internal_error",
                            "the admin request failed",
                        ))
                    })
            }
        },
    };
    let status = resp.status;
    write(session, request_id, resp).await?;
    Ok(status)
}

async fn write(session: &mut Session, request_id: &str, resp: Response) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(resp.status, Some(8))?;
    let no_body = resp.body.is_empty() && (resp.status == 204 || resp.status == 304);
    if !no_body {
        h.insert_header("content-type", resp.content_type)?;
        h.insert_header("content-length", resp.body.len().to_string())?;
    }
    h.insert_header("cache-control", "no-store")?;
    h.insert_header("x-request-id", request_id)?;
    for (k, v) in &resp.headers {
        h.insert_header(*k, v.as_str())?;
    }
    session.set_keepalive(Some(60));
    let empty = resp.body.is_empty();
    session.write_response_header(Box::new(h)).await?;
    if !empty {
        session
            .write_response_body(Bytes::from(resp.body), true)
            .await?;
    }
    Ok(())
}
