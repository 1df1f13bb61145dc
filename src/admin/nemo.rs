//! NVIDIA NeMo Inference Gateway's workspace VirtualModel API, as a view of the same store as
//! the REST and GoModel routes: `GET|POST /apis/inference-gateway/v2/workspaces/{workspace}/
//! virtual-models` and `GET|PATCH|DELETE .../virtual-models/{name}`, with NeMo's bodies, fields
//! and codes.
//!
//! The NeMo VirtualModel `{workspace}/{name}` is the virtual model whose source is
//! `workspace/name`; `default_model_entity` is its first target and `models` all of them. Every
//! concrete model of a provider shows as an autoprovisioned passthrough in the workspace named
//! after the provider. Writes go through `writes::commit` like every other admin write; this
//! module only translates NeMo's shapes to entries and back, and never touches Pingora.
//!
//! Here: the routes. `view` (the VirtualModels and their JSON), `list` (paging and sort),
//! `write` (create, PATCH, delete).

mod list;
mod view;
mod write;

use super::{unprocessable, Request, Response};
use crate::app::App;
use crate::proxy::respond::ApiError;

const WORKSPACES: &str = "/apis/inference-gateway/v2/workspaces/";
/// The workspace that stands for all of them in a list.
const ALL_WORKSPACES: &str = "-";

/// A NeMo route, parsed from the path.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `.../workspaces/{workspace}/virtual-models`
    Collection { workspace: String },
    /// `.../workspaces/{workspace}/virtual-models/{name}` (the name may hold slashes).
    Item { workspace: String, name: String },
}

/// The raw workspace segment and name of a NeMo VirtualModel path.
fn split(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix(WORKSPACES)?;
    let (workspace, rest) = rest.split_once('/')?;
    match rest.strip_prefix("virtual-models")? {
        "" | "/" => Some((workspace, None)),
        r => r.strip_prefix('/').map(|name| (workspace, Some(name))),
    }
}

/// Whether a path belongs to this API (it is then an admin path).
pub fn is_api_path(path: &str) -> bool {
    split(path).is_some()
}

fn decode(field: &str, raw: &str) -> Result<String, ApiError> {
    let bad = |why: &str| {
        unprocessable(
            "invalid_path",
            format!("{field} in the path {why}"),
            Some(field.to_string()),
        )
    };
    let s = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| bad("is not UTF-8"))?;
    let s = s.trim();
    if s.is_empty() {
        return Err(bad("is empty"));
    }
    if s.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    Ok(s.to_string())
}

impl Route {
    /// None when the path is not this API's.
    pub fn parse(path: &str) -> Option<Result<Route, ApiError>> {
        let (workspace, name) = split(path)?;
        let parsed = decode("workspace", workspace).and_then(|workspace| {
            if workspace.contains('/') {
                return Err(unprocessable(
                    "invalid_path",
                    "workspace in the path must not contain '/'",
                    Some("workspace".into()),
                ));
            }
            Ok(match name {
                None => Route::Collection { workspace },
                Some(n) => Route::Item {
                    workspace,
                    name: decode("name", n)?,
                },
            })
        });
        Some(parsed)
    }
}

/// Answers a request of this API (already authorized), or None when the path is not its own.
pub fn handle(app: &App, req: &Request) -> Option<Response> {
    let route = match Route::parse(&req.path)? {
        Ok(r) => r,
        Err(e) => return Some(Response::error(&e)),
    };
    let by = req.user_path.as_deref();
    let if_match = req.if_match.as_deref();
    let answer = match (route, req.method.as_str()) {
        (Route::Collection { workspace }, "GET") => {
            list::list(app, &workspace, req.query.as_deref())
        }
        (Route::Collection { workspace }, "POST") => {
            return Some(super::with_json_body(req, || {
                write::create(app, &workspace, &req.body, by)
            }))
        }
        (Route::Collection { .. }, _) => {
            return Some(super::method_not_allowed(&req.path, "GET, POST"))
        }
        (Route::Item { workspace, name }, "GET") => view::get(app, &workspace, &name),
        (Route::Item { workspace, name }, "PATCH") => {
            return Some(super::with_json_body(req, || {
                write::patch(app, &workspace, &name, &req.body, if_match, by)
            }))
        }
        (Route::Item { workspace, name }, "DELETE") => {
            write::delete(app, &workspace, &name, if_match)
        }
        (Route::Item { .. }, _) => {
            return Some(super::method_not_allowed(&req.path, "GET, PATCH, DELETE"))
        }
    };
    Some(answer.unwrap_or_else(|e| Response::error(&e)))
}

/// The workspace of a single-VirtualModel route (`-` only lists).
fn one_workspace(workspace: &str) -> Result<&str, ApiError> {
    if workspace == ALL_WORKSPACES {
        return Err(unprocessable(
            "invalid_path",
            "workspace \"-\" stands for every workspace and only lists; name one workspace",
            Some("workspace".into()),
        ));
    }
    Ok(workspace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_routes() {
        let r = |p: &str| Route::parse(p).map(|r| r.map_err(|e| e.message));
        assert_eq!(
            r("/apis/inference-gateway/v2/workspaces/w/virtual-models"),
            Some(Ok(Route::Collection {
                workspace: "w".into()
            }))
        );
        assert_eq!(
            r("/apis/inference-gateway/v2/workspaces/w/virtual-models/meta%2Fllama"),
            Some(Ok(Route::Item {
                workspace: "w".into(),
                name: "meta/llama".into()
            }))
        );
        assert_eq!(
            r("/apis/inference-gateway/v2/workspaces/w/virtual-models/a/b"),
            Some(Ok(Route::Item {
                workspace: "w".into(),
                name: "a/b".into()
            }))
        );
        assert!(matches!(
            r("/apis/inference-gateway/v2/workspaces/%20/virtual-models"),
            Some(Err(_))
        ));
        assert_eq!(
            r("/apis/inference-gateway/v2/workspaces/w/openai/-/v1/models"),
            None
        );
        assert_eq!(
            r("/apis/inference-gateway/v2/workspaces/w/virtual-modelsx"),
            None
        );
    }
}
