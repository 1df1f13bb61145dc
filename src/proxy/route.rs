//! What a request's method and path ask for, parsed once at the edge.
//!
//! Every other part of the request path matches on `Route`, never on the path string again.
//! Pure: no Pingora types, no I/O.

use crate::routing::model::Operation;

/// A request's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET|HEAD /health`: liveness, open to everyone.
    Health,
    /// `GET|HEAD /health/ready`: readiness, open to everyone.
    Ready,
    /// `GET|HEAD` on the metrics endpoint (`/metrics` unless moved or turned off): Prometheus
    /// text, open to everyone.
    Metrics,
    /// `/admin` and everything under it, and NeMo's workspace API: the admin surface
    /// authorizes its callers itself.
    Admin,
    /// `GET /v1/models`: the caller's model list.
    Models,
    /// `GET /v1/models/{id}`: one entry of it (the id percent-decoded: ids hold a slash).
    Model(String),
    /// `POST` to a routed endpoint.
    Api(Operation),
    /// A routed endpoint with a method other than POST (405).
    ApiWrongMethod(Operation),
    /// Anything else (404). `anthropic`: under the Anthropic API's `/v1/messages/` (batches,
    /// ...), so its error takes Anthropic's shape and its caller may use `x-api-key`.
    Unknown { anthropic: bool },
}

impl Route {
    /// The route of `method path` (the path without its query). `metrics` is the metrics
    /// endpoint's path, `None` when it is turned off.
    pub fn parse(method: &http::Method, path: &str, metrics: Option<&str>) -> Route {
        if crate::admin::is_admin_path(path) {
            return Route::Admin;
        }
        let get = method == http::Method::GET || method == http::Method::HEAD;
        let trimmed = path.trim_end_matches('/');
        if let Some(op) = operation_for(trimmed) {
            return if method == http::Method::POST {
                Route::Api(op)
            } else {
                Route::ApiWrongMethod(op)
            };
        }
        let unknown = Route::Unknown {
            anthropic: trimmed.starts_with("/v1/messages/") || trimmed.starts_with("/messages/"),
        };
        if !get {
            return unknown;
        }
        match path {
            "/health" => return Route::Health,
            "/health/ready" => return Route::Ready,
            p if Some(p) == metrics => return Route::Metrics,
            _ => {}
        }
        if method != http::Method::GET {
            return unknown;
        }
        if trimmed == "/v1/models" || trimmed == "/models" {
            return Route::Models;
        }
        match path
            .strip_prefix("/v1/models/")
            .or_else(|| path.strip_prefix("/models/"))
        {
            Some(id) => Route::Model(
                percent_encoding::percent_decode_str(id)
                    .decode_utf8_lossy()
                    .trim()
                    .to_string(),
            ),
            None => unknown,
        }
    }

    /// A client API route (counted in metrics), as opposed to health, metrics or admin.
    pub fn is_api(&self) -> bool {
        match self {
            Route::Api(_) | Route::ApiWrongMethod(_) => true,
            Route::Health
            | Route::Ready
            | Route::Metrics
            | Route::Admin
            | Route::Models
            | Route::Model(_)
            | Route::Unknown { .. } => false,
        }
    }

    /// Whether the route is the Anthropic API's (`/v1/messages` and the routes under it): its
    /// callers authenticate with `x-api-key` too and get errors in Anthropic's shape.
    pub fn anthropic(&self) -> bool {
        match self {
            Route::Api(op) | Route::ApiWrongMethod(op) => match op {
                Operation::Messages | Operation::CountTokens => true,
                Operation::Chat
                | Operation::Completion
                | Operation::Embedding
                | Operation::Responses
                | Operation::Transcription
                | Operation::Translation
                | Operation::Speech
                | Operation::Rerank
                | Operation::Moderation
                | Operation::ImageGeneration => false,
            },
            Route::Unknown { anthropic } => *anthropic,
            Route::Health
            | Route::Ready
            | Route::Metrics
            | Route::Admin
            | Route::Models
            | Route::Model(_) => false,
        }
    }
}

/// The routed endpoints (with or without the `/v1` prefix, as OpenAI-compatible clients send
/// them).
fn operation_for(path: &str) -> Option<Operation> {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    Some(match p {
        "/chat/completions" => Operation::Chat,
        "/completions" => Operation::Completion,
        "/embeddings" => Operation::Embedding,
        "/responses" => Operation::Responses,
        "/messages" => Operation::Messages,
        "/messages/count_tokens" => Operation::CountTokens,
        "/audio/transcriptions" => Operation::Transcription,
        "/audio/translations" => Operation::Translation,
        "/audio/speech" => Operation::Speech,
        "/rerank" => Operation::Rerank,
        "/moderations" => Operation::Moderation,
        "/images/generations" => Operation::ImageGeneration,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn parse(method: &Method, path: &str) -> Route {
        Route::parse(method, path, Some("/metrics"))
    }

    #[test]
    fn routed_endpoints_with_and_without_the_version_prefix() {
        for (path, op) in [
            ("/v1/chat/completions", Operation::Chat),
            ("/chat/completions/", Operation::Chat),
            ("/v1/completions", Operation::Completion),
            ("/v1/embeddings", Operation::Embedding),
            ("/v1/responses", Operation::Responses),
            ("/v1/messages", Operation::Messages),
            ("/messages/count_tokens", Operation::CountTokens),
            ("/v1/audio/transcriptions", Operation::Transcription),
            ("/v1/audio/translations", Operation::Translation),
            ("/v1/audio/speech", Operation::Speech),
            ("/v1/rerank", Operation::Rerank),
            ("/rerank", Operation::Rerank),
            ("/v1/moderations", Operation::Moderation),
            ("/v1/images/generations", Operation::ImageGeneration),
        ] {
            assert_eq!(parse(&Method::POST, path), Route::Api(op), "{path}");
            assert_eq!(
                parse(&Method::GET, path),
                Route::ApiWrongMethod(op),
                "{path}"
            );
        }
    }

    #[test]
    fn local_routes_answer_their_methods_only() {
        assert_eq!(parse(&Method::GET, "/health"), Route::Health);
        assert_eq!(parse(&Method::HEAD, "/health/ready"), Route::Ready);
        assert_eq!(parse(&Method::GET, "/metrics"), Route::Metrics);
        let unknown = Route::Unknown { anthropic: false };
        assert_eq!(parse(&Method::POST, "/health"), unknown);
        assert_eq!(parse(&Method::GET, "/v1/models/"), Route::Models);
        assert_eq!(parse(&Method::HEAD, "/v1/models"), unknown);
        assert_eq!(parse(&Method::GET, "/v1/chat"), unknown);
    }

    #[test]
    fn the_metrics_endpoint_is_where_the_settings_put_it() {
        assert_eq!(
            Route::parse(&Method::GET, "/internal/metrics", Some("/internal/metrics")),
            Route::Metrics
        );
        assert_eq!(
            Route::parse(&Method::GET, "/metrics", None),
            Route::Unknown { anthropic: false }
        );
    }

    #[test]
    fn a_model_id_is_decoded() {
        assert_eq!(
            parse(&Method::GET, "/v1/models/openai%2Fgpt-4o"),
            Route::Model("openai/gpt-4o".into())
        );
        assert_eq!(
            parse(&Method::GET, "/models/openai/gpt-4o"),
            Route::Model("openai/gpt-4o".into())
        );
    }

    #[test]
    fn the_admin_surface_whatever_the_method() {
        for m in [Method::GET, Method::POST, Method::DELETE] {
            assert_eq!(parse(&m, "/admin"), Route::Admin);
            assert_eq!(parse(&m, "/admin/api/v1/virtual-models"), Route::Admin);
        }
        assert_eq!(
            parse(&Method::GET, "/administer"),
            Route::Unknown { anthropic: false }
        );
    }

    #[test]
    fn the_anthropic_routes_are_known_by_their_operation() {
        assert!(parse(&Method::POST, "/v1/messages").anthropic());
        assert!(parse(&Method::POST, "/v1/messages/count_tokens").anthropic());
        assert!(parse(&Method::POST, "/v1/messages/batches").anthropic());
        assert!(!parse(&Method::POST, "/v1/chat/completions").anthropic());
        assert!(!parse(&Method::GET, "/v1/models").anthropic());
    }
}
