//! Middleware pipelines (NeMo's model): ordered steps a virtual model runs on the request before
//! routing, on the response the client receives, and after the last byte reached the client.
//!
//! `Pipelines::build` turns the raw `MiddlewareCall` lists of a virtual model into checked, compiled
//! steps when a snapshot is built (regular expressions compiled, header names parsed, webhook
//! agents made): nothing is parsed per request, and every way a user can get a call wrong is a
//! `MiddlewareError` naming the list, the index and the field. The runners work on values the
//! proxy already has (the parsed body, the response header map, the SSE bytes, the finished
//! request's record). This module must never do I/O on the request path nor take a lock there:
//! the only I/O, the webhook POSTs, happens on one sender thread behind a bounded queue.

pub mod body;
mod build;
pub mod call;
mod counters;
mod guard;
mod headers;
mod log_line;
mod patterns;
mod record;
mod redact;
mod router;
mod set_params;
mod system_prompt;
pub(crate) mod text;
mod webhook;

use std::time::Instant;

use serde_json::Value;

use crate::routing::model::Operation;

pub use body::Body;
pub use build::{check_config_entries, ConfigEntryError, MiddlewareError, Problem};
pub use call::{MiddlewareCall, MiddlewareConfigEntry};
pub use counters::{Counters, KindCounts, COUNTERS};
pub use headers::HeaderSink;
pub use record::{Record, Usage};
pub use redact::StreamRedactor;
pub use webhook::Dispatcher;

/// Where in a request's life a middleware runs; each built-in runs in exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Request,
    Response,
    PostResponse,
}

impl Phase {
    /// The virtual model's field that holds this phase's list.
    pub fn list_name(self) -> &'static str {
        match self {
            Phase::Request => "request_middleware",
            Phase::Response => "response_middleware",
            Phase::PostResponse => "post_response_middleware",
        }
    }

    /// The `phase` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
            Phase::PostResponse => "post_response",
        }
    }
}

/// The built-in middlewares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    SetParams = 0,
    SystemPrompt = 1,
    Guard = 2,
    Router = 3,
    Redact = 4,
    Headers = 5,
    Webhook = 6,
    Log = 7,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::SetParams,
        Kind::SystemPrompt,
        Kind::Guard,
        Kind::Router,
        Kind::Redact,
        Kind::Headers,
        Kind::Webhook,
        Kind::Log,
    ];

    /// The `name` of a `MiddlewareCall`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SetParams => "set-params",
            Kind::SystemPrompt => "system-prompt",
            Kind::Guard => "guard",
            Kind::Router => "router",
            Kind::Redact => "redact",
            Kind::Headers => "headers",
            Kind::Webhook => "webhook",
            Kind::Log => "log",
        }
    }

    /// The `config_type` its configuration carries.
    pub fn config_type(self) -> &'static str {
        match self {
            Kind::SetParams => "set_params_config",
            Kind::SystemPrompt => "system_prompt_config",
            Kind::Guard => "guard_config",
            Kind::Router => "router_config",
            Kind::Redact => "redact_config",
            Kind::Headers => "headers_config",
            Kind::Webhook => "webhook_config",
            Kind::Log => "log_config",
        }
    }

    pub fn phase(self) -> Phase {
        match self {
            Kind::SetParams | Kind::SystemPrompt | Kind::Guard | Kind::Router => Phase::Request,
            Kind::Redact | Kind::Headers => Phase::Response,
            Kind::Webhook | Kind::Log => Phase::PostResponse,
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// `"set-params", "system-prompt", ... or "log"`, for messages.
    pub fn known_names() -> String {
        let names: Vec<String> = Kind::ALL
            .iter()
            .map(|k| format!("\"{}\"", k.name()))
            .collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

/// What the request phase knows besides the body.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The client's dialect and operation (the body's shape).
    pub operation: Operation,
    /// The raw `X-Modelgate-Metadata` header: a JSON object the `router` rules may test. Parsed
    /// only by a router with metadata conditions; not an object means no metadata.
    pub metadata: Option<&'a [u8]>,
}

/// A request a `guard` refused: the proxy answers 400 `request_blocked` with `message` in the
/// client's error envelope and sends nothing upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The guard's `message`, or a default that says why.
    pub message: String,
    /// The position of the guard in `request_middleware`.
    pub index: usize,
    pub reason: BlockReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockReason {
    /// The text matched `deny[pattern]`.
    Denied { pattern: usize },
    /// The text had `chars` characters, more than `max`.
    TooLong { chars: u64, max: u64 },
}

#[derive(Debug)]
enum RequestStep {
    SetParams(set_params::SetParams),
    SystemPrompt(system_prompt::SystemPrompt),
    Guard(guard::Guard),
    Router(router::Router),
}

#[derive(Debug)]
enum ResponseStep {
    Redact(redact::Redact),
    Headers(headers::Headers),
}

#[derive(Debug)]
enum PostStep {
    Webhook(webhook::Webhook),
    Log(log_line::LogLine),
}

impl RequestStep {
    fn kind(&self) -> Kind {
        match self {
            RequestStep::SetParams(_) => Kind::SetParams,
            RequestStep::SystemPrompt(_) => Kind::SystemPrompt,
            RequestStep::Guard(_) => Kind::Guard,
            RequestStep::Router(_) => Kind::Router,
        }
    }
}

impl ResponseStep {
    fn kind(&self) -> Kind {
        match self {
            ResponseStep::Redact(_) => Kind::Redact,
            ResponseStep::Headers(_) => Kind::Headers,
        }
    }
}

impl PostStep {
    fn kind(&self) -> Kind {
        match self {
            PostStep::Webhook(_) => Kind::Webhook,
            PostStep::Log(_) => Kind::Log,
        }
    }
}

/// The three checked pipelines of one virtual model. Empty by default: a virtual model without
/// middleware holds an empty `Pipelines` and every runner returns at once.
#[derive(Debug, Default)]
pub struct Pipelines {
    request: Vec<RequestStep>,
    response: Vec<ResponseStep>,
    post: Vec<PostStep>,
}

impl Pipelines {
    /// Checks and compiles the three lists; `configs` is the top-level `middleware_configs:` map
    /// that `config_id`s point into. Returns every error, not just the first.
    pub fn build(
        request: &[MiddlewareCall],
        response: &[MiddlewareCall],
        post: &[MiddlewareCall],
        configs: &std::collections::BTreeMap<String, MiddlewareConfigEntry>,
    ) -> Result<Pipelines, Vec<MiddlewareError>> {
        build::build(request, response, post, configs)
    }

    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty() && self.post.is_empty()
    }

    /// Whether the request phase has steps (the body must then be parsed).
    pub fn has_request(&self) -> bool {
        !self.request.is_empty()
    }

    /// Whether the response phase has steps.
    pub fn has_response(&self) -> bool {
        !self.response.is_empty()
    }

    /// Whether the response phase rewrites the answer's text (whole bodies and streams).
    pub fn redacts(&self) -> bool {
        self.response
            .iter()
            .any(|s| matches!(s, ResponseStep::Redact(_)))
    }

    /// Whether the post-response phase has steps (a record must then be made).
    pub fn has_post(&self) -> bool {
        !self.post.is_empty()
    }

    /// The names of each phase's steps, in order, for `check`, `resolve` and the admin views.
    pub fn describe(&self) -> Vec<(Phase, Vec<&'static str>)> {
        vec![
            (
                Phase::Request,
                self.request.iter().map(|s| s.kind().name()).collect(),
            ),
            (
                Phase::Response,
                self.response.iter().map(|s| s.kind().name()).collect(),
            ),
            (
                Phase::PostResponse,
                self.post.iter().map(|s| s.kind().name()).collect(),
            ),
        ]
    }

    /// Every model a `router` step may write into `model`, so the snapshot builder can check
    /// that each resolves.
    pub fn router_models(&self) -> Vec<&str> {
        let mut models = Vec::new();
        for step in &self.request {
            if let RequestStep::Router(r) = step {
                models.extend(r.models());
            }
        }
        models
    }

    /// Runs the request phase, in list order, over the parsed body in the client's dialect.
    /// `model` may change (`set-params`, `router`); the caller resolves the final one.
    pub fn run_request(&self, body: &mut Body, facts: &RequestFacts<'_>) -> Result<(), Blocked> {
        for (index, step) in self.request.iter().enumerate() {
            let started = Instant::now();
            let outcome = match step {
                RequestStep::SetParams(s) => {
                    s.apply(body);
                    Ok(())
                }
                RequestStep::SystemPrompt(s) => {
                    s.apply(body, facts.operation);
                    Ok(())
                }
                RequestStep::Guard(g) => g.apply(body, facts.operation),
                RequestStep::Router(r) => {
                    r.apply(body, facts);
                    Ok(())
                }
            };
            COUNTERS.spent(step.kind(), started.elapsed());
            if let Err((message, reason)) = outcome {
                COUNTERS.blocked(step.kind());
                return Err(Blocked {
                    message,
                    index,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Applies the `headers` steps to the client's response headers.
    pub fn apply_headers<H: HeaderSink + ?Sized>(&self, headers: &mut H) {
        for step in &self.response {
            if let ResponseStep::Headers(h) = step {
                let started = Instant::now();
                h.apply(headers);
                COUNTERS.spent(Kind::Headers, started.elapsed());
            }
        }
    }

    /// Redacts the text of a whole (non-stream) answer in the client's dialect.
    pub fn redact_body(&self, body: &mut Value, operation: Operation) {
        for step in &self.response {
            if let ResponseStep::Redact(r) = step {
                let started = Instant::now();
                r.redact_body(body, operation);
                COUNTERS.spent(Kind::Redact, started.elapsed());
            }
        }
    }

    /// A redactor for one streamed answer in the client's dialect, or `None` when the pipeline
    /// has no `redact` step or the operation answers no text (embeddings, token counts): the
    /// stream then passes untouched.
    pub fn stream_redactor(&self, operation: Operation) -> Option<StreamRedactor> {
        match operation {
            Operation::Embedding
            | Operation::CountTokens
            | Operation::Transcription
            | Operation::Translation
            | Operation::Speech
            | Operation::Rerank
            | Operation::Moderation
            | Operation::ImageGeneration => return None,
            Operation::Chat
            | Operation::Completion
            | Operation::Responses
            | Operation::Messages => {}
        }
        let stages: Vec<_> = self
            .response
            .iter()
            .filter_map(|s| match s {
                ResponseStep::Redact(r) => Some(r.stage()),
                ResponseStep::Headers(_) => None,
            })
            .collect();
        if stages.is_empty() {
            return None;
        }
        Some(StreamRedactor::new(stages, operation))
    }

    /// Runs the post-response phase on a finished request's record: queues it for each webhook
    /// and logs it for each `log` step. Never blocks and never fails the request.
    pub fn run_post(&self, record: &Record) {
        if self.post.is_empty() {
            return;
        }
        let started = Instant::now();
        let json: std::sync::Arc<str> = match serde_json::to_string(record) {
            Ok(json) => json.into(),
            // A record is plain data; serializing it cannot fail, and if it did the request
            // must still not be affected.
            Err(_) => return,
        };
        // Encoding the record is charged to the first step, which needed it first.
        let mut encoding = started.elapsed();
        for step in &self.post {
            let started = Instant::now();
            match step {
                PostStep::Webhook(w) => w.send(&json),
                PostStep::Log(l) => l.write(&json),
            }
            COUNTERS.spent(step.kind(), started.elapsed() + encoding);
            encoding = std::time::Duration::ZERO;
        }
    }
}

#[cfg(test)]
mod tests;
