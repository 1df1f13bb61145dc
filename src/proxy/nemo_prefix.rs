//! NeMo's inference base URL: `/apis/inference-gateway/v2/workspaces/{workspace}/openai/-/v1/...`
//! (what NeMo's SDK hands to OpenAI clients) is the plain `/v1/...` API.
//!
//! One pure function of the URI, applied once at the start of `request_filter` so that every
//! later step (local routes, auth, routing, the upstream path) sees the plain path. The
//! workspace is not a scope here: `model` names `workspace/name` as everywhere.

use http::Uri;

const WORKSPACES: &str = "/apis/inference-gateway/v2/workspaces/";

/// The plain-path URI for a NeMo inference URI (query kept), or None when `uri` is not one.
pub fn plain_uri(uri: &Uri) -> Option<Uri> {
    let rest = uri.path().strip_prefix(WORKSPACES)?;
    let (workspace, rest) = rest.split_once('/')?;
    if workspace.is_empty() {
        return None;
    }
    let v1 = rest.strip_prefix("openai/-")?;
    if v1 != "/v1" && !v1.starts_with("/v1/") {
        return None;
    }
    let text = match uri.query() {
        Some(q) => format!("{v1}?{q}"),
        None => v1.to_string(),
    };
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> Option<String> {
        plain_uri(&s.parse().unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn the_workspace_openai_prefix_maps_to_the_plain_path() {
        assert_eq!(
            plain("/apis/inference-gateway/v2/workspaces/default/openai/-/v1/chat/completions")
                .as_deref(),
            Some("/v1/chat/completions")
        );
        assert_eq!(
            plain("/apis/inference-gateway/v2/workspaces/w/openai/-/v1/models?x=1").as_deref(),
            Some("/v1/models?x=1")
        );
    }

    #[test]
    fn other_paths_are_left_alone() {
        assert_eq!(plain("/v1/chat/completions"), None);
        assert_eq!(
            plain("/apis/inference-gateway/v2/workspaces/w/virtual-models"),
            None
        );
        assert_eq!(
            plain("/apis/inference-gateway/v2/workspaces//openai/-/v1/models"),
            None
        );
        assert_eq!(
            plain("/apis/inference-gateway/v2/workspaces/w/openai/-/v10/models"),
            None
        );
    }
}
