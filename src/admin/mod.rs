//! The admin API and dashboard: `/admin/api/v1/...` (REST over the admin store, merged views of
//! every virtual model, status), GoModel's `/admin/virtual-models`, and the embedded dashboard
//! at `/admin/dashboard`.
//!
//! Everything here takes parsed inputs (`Request`) and returns a `Response`, so it is tested
//! without a server; `http` is the thin Pingora glue. This module never runs on the request
//! path of client traffic, never writes the store without first validating a whole new
//! snapshot, and never shows secrets (provider keys, the master key).

pub mod auth;
pub mod compat;
pub mod dashboard;
pub mod entry;
pub mod http;
pub mod nemo;
pub mod patch;
pub mod scope;
pub mod views;
pub mod writes;

use serde_json::{json, Value};

use crate::api_error::ApiError;
use crate::app::App;

/// An admin request, parsed from the HTTP request by `http`.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path as received (percent-encoded).
    pub path: String,
    pub authorization: Option<String>,
    pub if_match: Option<String>,
    pub content_type: Option<String>,
    pub host: Option<String>,
    /// The query string (after `?`), percent-encoded.
    pub query: Option<String>,
    /// The caller's user path, from the user path header; recorded as `created_by`/`updated_by`.
    pub user_path: Option<String>,
    /// Whether the TCP peer is on this machine.
    pub peer_loopback: bool,
    /// What the caller may do (set by `auth::authorize`).
    pub access: auth::Access,
    pub body: Vec<u8>,
}

/// An admin answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn json(status: u16, value: &Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).unwrap_or_default(),
            headers: Vec::new(),
        }
    }

    pub fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn error(e: &ApiError) -> Response {
        let mut r = Response {
            status: e.status,
            content_type: "application/json",
            body: e.openai_body(),
            headers: Vec::new(),
        };
        if let Some(s) = e.retry_after_s {
            r.headers.push(("retry-after", s.to_string()));
        }
        r
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// The JSON body (tests).
    pub fn json_body(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Whether a path belongs to the admin surface (NeMo's workspace VirtualModel API included).
pub fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/") || nemo::is_api_path(path)
}

pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(404, "invalid_request_error", "not_found", message)
}

pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(409, "invalid_request_error", code, message)
}

pub(crate) fn unprocessable(
    code: &'static str,
    message: impl Into<String>,
    param: Option<String>,
) -> ApiError {
    let mut e = ApiError::new(422, "invalid_request_error", code, message);
    e.param = param;
    e
}

pub(crate) fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(500, "server_error", "internal_error", message)
}

const V1: &str = "/admin/api/v1";
const VMS: &str = "/admin/api/v1/virtual-models";
const KEYS: &str = "/admin/api/v1/keys";

/// Authorizes and answers one admin request.
pub fn handle(app: &App, req: &Request) -> Response {
    let master = app.snapshot().settings.master_key.clone();
    match auth::authorize(master.as_deref(), &app.keys, req) {
        Err(e) => Response::error(&e),
        Ok(access) => {
            let mut req = req.clone();
            req.access = access;
            route(app, &req)
        }
    }
}

/// Answers an authorized admin request.
pub fn route(app: &App, req: &Request) -> Response {
    let path = req.path.as_str();
    if let Err(e) = scope::may_route(&req.access, path) {
        return Response::error(&e);
    }
    let _scope = scope::enter(&req.access);
    let method = req.method.as_str();
    let by = req.user_path.as_deref();
    if path == "/admin" || path == "/admin/" {
        let base = app
            .snapshot()
            .settings
            .base_path
            .clone()
            .unwrap_or_default();
        return Response::empty(302).with_header("location", format!("{base}/admin/dashboard"));
    }
    if let Some(asset) = path.strip_prefix("/admin/dashboard") {
        return match method {
            "GET" | "HEAD" => dashboard::asset(asset, app.snapshot().settings.base_path.as_deref()),
            _ => method_not_allowed(path, "GET"),
        };
    }
    if let Some(answer) = nemo::handle(app, req) {
        return answer;
    }
    if path == "/admin/virtual-models" {
        return match method {
            "GET" => compat::list(app),
            "PUT" => with_json_body(req, || compat::upsert(app, &req.body)),
            "DELETE" => with_json_body(req, || compat::delete(app, &req.body)),
            _ => method_not_allowed(path, "GET, PUT, DELETE"),
        };
    }
    let result = if path == format!("{V1}/status") {
        match method {
            "GET" => Ok(Response::json(200, &views::status(app))),
            _ => return method_not_allowed(path, "GET"),
        }
    } else if path == KEYS || path == format!("{KEYS}/") {
        match method {
            "GET" => crate::keys::admin::list(app),
            "POST" => return with_json_body(req, || crate::keys::admin::create(app, &req.body)),
            _ => return method_not_allowed(path, "GET, POST"),
        }
    } else if let Some(raw) = path.strip_prefix(&format!("{KEYS}/")) {
        let name = match decode_source(raw) {
            Ok(s) => s,
            Err(e) => return Response::error(&e),
        };
        match method {
            "DELETE" => crate::keys::admin::delete(app, &name),
            _ => return method_not_allowed(path, "DELETE"),
        }
    } else if path == format!("{V1}/usage") {
        match method {
            "GET" => crate::usage::query(
                app.store.as_deref(),
                req.query.as_deref(),
                crate::store::now_s(),
            )
            .map(|v| Response::json(200, &v)),
            _ => return method_not_allowed(path, "GET"),
        }
    } else if path == format!("{V1}/models") {
        match method {
            "GET" => Ok(Response::json(200, &views::models(&app.snapshot()))),
            _ => return method_not_allowed(path, "GET"),
        }
    } else if path == VMS || path == format!("{VMS}/") {
        match method {
            "GET" => views::list(app)
                .map(|data| Response::json(200, &json!({"object": "list", "data": data}))),
            "POST" => return with_json_body(req, || writes::create(app, &req.body, by)),
            _ => return method_not_allowed(path, "GET, POST"),
        }
    } else if let Some(raw) = path.strip_prefix(&format!("{VMS}/")) {
        let source = match decode_source(raw) {
            Ok(s) => s,
            Err(e) => return Response::error(&e),
        };
        let if_match = req.if_match.as_deref();
        match method {
            "GET" => views::one(app, &source),
            "PUT" => {
                return with_json_body(req, || writes::put(app, &source, &req.body, if_match, by))
            }
            "PATCH" => {
                return with_json_body(req, || writes::patch(app, &source, &req.body, if_match, by))
            }
            "DELETE" => writes::delete(app, &source, if_match),
            _ => return method_not_allowed(path, "GET, PUT, PATCH, DELETE"),
        }
    } else {
        Err(not_found(format!("no admin route for {method} {path}")))
    };
    result.unwrap_or_else(|e| Response::error(&e))
}

/// The source named by a path segment: percent-decoded; slashes may come encoded or not.
pub fn decode_source(raw: &str) -> Result<String, ApiError> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| {
            ApiError::invalid_request("invalid_source", "the source in the path is not UTF-8")
        })?;
    let s = decoded.trim();
    if s.is_empty() {
        return Err(ApiError::invalid_request(
            "invalid_source",
            "the path names no source; URL-encode it, e.g. openai%2Fgpt-4o",
        ));
    }
    Ok(s.to_string())
}

/// Runs a body-taking handler after checking the body is JSON (a browser cannot send that
/// cross-site without a preflight, which the gateway never grants).
pub(crate) fn with_json_body(
    req: &Request,
    f: impl FnOnce() -> Result<Response, ApiError>,
) -> Response {
    let is_json = req
        .content_type
        .as_deref()
        .is_some_and(|c| c.to_ascii_lowercase().contains("json"));
    if !is_json {
        return Response::error(&ApiError::new(
            415,
            "invalid_request_error",
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    f().unwrap_or_else(|e| Response::error(&e))
}

pub(crate) fn method_not_allowed(path: &str, allowed: &str) -> Response {
    Response::error(&ApiError::new(
        405,
        "invalid_request_error",
        "method_not_allowed",
        format!("{path} accepts {allowed}"),
    ))
    .with_header("allow", allowed.to_string())
}

/// RFC 3339 time for unix seconds.
pub(crate) fn rfc3339(seconds: i64) -> Value {
    match jiff::Timestamp::from_second(seconds) {
        Ok(t) => json!(t.to_string()),
        Err(_) => Value::Null,
    }
}
