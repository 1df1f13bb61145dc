//! The Pingora glue: each `ProxyHttp` phase translates between Pingora's session and our own
//! types and calls into `routing`, `health` and `attempts`. Logic that can live outside the trait
//! does.
//!
//! Phases, in order: `request_filter` (auth, local routes, body, plan; local answers end here),
//! `upstream_peer` (the current attempt's peer), `upstream_request_filter` (path, auth and
//! headers), `request_body_filter` (the rewritten body), `upstream_response_filter` (retry or
//! fallback on a bad status before anything reached the client), `response_filter` (our headers),
//! `logging` (health and access log).

pub mod attempts;
pub mod body;
pub mod ctx;
pub mod dialect;
pub mod headers;
pub mod json_scan;
pub mod local;
pub mod mock;
pub mod read_watch;
pub mod respond;
pub mod upstream_headers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use smol_str::SmolStr;

use crate::app::App;
use crate::config::providers::ProviderKind;
use crate::mono_clock::now_ms;
use crate::routing::model::{Operation, WireFormat};
use crate::routing::plan::{self, RouteError};
use crate::snapshot::View;
use attempts::{Failure, Next};
use ctx::Ctx;
use read_watch::ReadWatch;
use respond::{ApiError, Tags};

pub struct Gateway {
    pub app: Arc<App>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The routed endpoints and the upstream path suffix each maps to.
fn operation_for(path: &str) -> Option<Operation> {
    match path.trim_end_matches('/') {
        "/v1/chat/completions" | "/chat/completions" => Some(Operation::Chat),
        "/v1/completions" | "/completions" => Some(Operation::Completion),
        "/v1/embeddings" | "/embeddings" => Some(Operation::Embedding),
        "/v1/responses" | "/responses" => Some(Operation::Responses),
        "/v1/messages" | "/messages" => Some(Operation::Messages),
        "/v1/messages/count_tokens" | "/messages/count_tokens" => Some(Operation::CountTokens),
        _ => None,
    }
}

fn route_error(e: &RouteError) -> ApiError {
    match e {
        RouteError::NotFound { .. } => ApiError::new(
            404,
            "invalid_request_error",
            "model_not_found",
            e.to_string(),
        ),
        RouteError::Unavailable { .. } => ApiError::new(
            404,
            "invalid_request_error",
            "model_not_found",
            e.to_string(),
        ),
        RouteError::AccessDenied { .. } => ApiError::new(
            403,
            "permission_error",
            "model_access_denied",
            e.to_string(),
        ),
        RouteError::Disabled { .. } => ApiError::new(
            403,
            "permission_error",
            "model_access_denied",
            e.to_string(),
        ),
        RouteError::OperationNotAllowed { .. } => ApiError::new(
            422,
            "invalid_request_error",
            "unsupported_operation",
            e.to_string(),
        ),
        RouteError::AllCircuitsOpen { .. } | RouteError::CircuitOpen { .. } => {
            let mut a = ApiError::new(503, "service_unavailable", "circuit_open", e.to_string());
            a.retry_after_s = Some(30);
            a
        }
    }
}

/// What `Gateway::prepare` decided.
enum Prepared {
    /// The plan is in the context: go upstream.
    Proxy,
    /// Answer with this error.
    Fail(ApiError),
    /// The first attempt is the mock provider's: answer locally.
    Mock(plan::Attempt),
    /// The model was not found: refresh the catalog once, then prepare `body` again.
    Refresh {
        body: Vec<u8>,
        model: SmolStr,
        provider: Option<String>,
        now: u64,
    },
}

impl Gateway {
    /// Reads the body, plans, and either answers locally or prepares the first attempt.
    /// Returns `Ok(true)` when a response was written.
    ///
    /// Everything after the read is the synchronous `prepare`, so no routing state lives in
    /// this future across an await (see `future_sizes` below).
    async fn routed(&self, session: &mut Session, ctx: &mut Ctx, op: Operation) -> Result<bool> {
        let snap = ctx.snapshot(&self.app);
        let mut raw = match body::read(session, snap.settings.body_size_limit).await {
            Ok(b) => b,
            Err(e) => return self.fail(session, ctx, &e).await,
        };
        let mut may_refresh = true;
        loop {
            match self.prepare(session, ctx, op, &snap, raw, may_refresh) {
                Prepared::Proxy => return Ok(false),
                Prepared::Fail(e) => return self.fail(session, ctx, &e).await,
                Prepared::Mock(a) => {
                    return Box::pin(local::answer_mock(session, ctx, &a))
                        .await
                        .map(|_| true)
                }
                Prepared::Refresh {
                    body,
                    model,
                    provider,
                    now,
                } => {
                    // One on-demand catalog refresh, then plan again (without another).
                    Box::pin(local::refresh_for(
                        &self.app,
                        &snap,
                        &model,
                        provider.as_deref(),
                        now,
                    ))
                    .await;
                    raw = body;
                    may_refresh = false;
                }
            }
        }
    }

    /// Peeks at the body and plans the request; on success the plan, body and names are in
    /// `ctx`. `Refresh` (only when `may_refresh`) hands the body back for one catalog refresh
    /// and a second try, when the model was not found.
    fn prepare(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        op: Operation,
        snap: &Arc<crate::snapshot::Snapshot>,
        raw: Vec<u8>,
        may_refresh: bool,
    ) -> Prepared {
        let peek = match body::peek(&raw) {
            Ok(p) => p,
            Err(e) => return Prepared::Fail(e),
        };
        ctx.stream = peek.stream;
        ctx.peek = Some(peek.clone());
        let metadata = match local::metadata_header(session, ctx.header_names) {
            Ok(m) => m,
            Err(e) => return Prepared::Fail(e),
        };
        let session_key = local::session_key(
            session,
            snap,
            &peek.model,
            ctx.user_path.as_ref(),
            ctx.header_names,
        );
        let req = plan::Request {
            model: &peek.model,
            provider: peek.provider.as_deref(),
            user_path: ctx.user_path.as_ref(),
            operation: op,
            metadata: metadata.as_ref(),
            session_key: session_key.as_deref(),
        };
        let now = now_ms();
        let view = View {
            snap,
            health: Some(&self.app.health),
            now_ms: now,
            claims_probes: true,
        };
        let mut plan = match plan::plan(&snap.table, &req, &view) {
            Ok(p) => p,
            Err(RouteError::NotFound { .. }) if may_refresh => {
                return Prepared::Refresh {
                    body: raw,
                    model: peek.model,
                    provider: peek.provider,
                    now,
                }
            }
            Err(e) => {
                let mut err = route_error(&e);
                if let RouteError::AllCircuitsOpen { virtual_model } = &e {
                    err.retry_after_s = Some(self.circuits_retry_after_s(snap, virtual_model));
                }
                if let RouteError::CircuitOpen { model } = &e {
                    let ms = self.app.health.concrete.retry_after_ms(model, now);
                    err.retry_after_s = Some(ms.div_ceil(1000).max(1));
                }
                return Prepared::Fail(err);
            }
        };
        // Targets whose wire dialect cannot carry this operation (embeddings to Anthropic, ...)
        // are dropped from the plan; the mock answers every operation itself.
        plan.attempts.retain(|a| {
            snap.providers[a.provider].config.kind == ProviderKind::Mock
                || dialect::can_serve(op, attempt_format(snap, plan.virtual_model, a))
        });
        if plan.attempts.is_empty() {
            return Prepared::Fail(ApiError::new(
                400,
                "invalid_request_error",
                "unsupported_operation",
                format!(
                    "no target of {} can serve {} requests",
                    peek.model.trim(),
                    op.name()
                ),
            ));
        }
        // A token count pins no session: the conversation's next message chooses.
        let pins = op != Operation::CountTokens;
        if let (Some(vi), Some(key), true) = (plan.virtual_model, session_key.as_deref(), pins) {
            let vm = &snap.table.models[vi];
            if let Some(ti) = plan.attempts[0].target {
                if vm.session.enabled {
                    self.app.health.sessions.pin(
                        &vm.source,
                        key,
                        &vm.targets[ti].name,
                        vm.session.ttl_seconds,
                        now,
                    );
                }
            }
        }
        ctx.virtual_model = plan
            .virtual_model
            .map(|vi| SmolStr::new(&snap.table.models[vi].source));
        ctx.body = raw;
        ctx.peek = Some(peek);
        ctx.operation = op;
        // A mock first attempt is answered here.
        let first = &plan.attempts[0];
        let mock = snap.providers[first.provider].config.kind == ProviderKind::Mock;
        let answer = mock.then(|| {
            ctx.attempts_made = 1;
            ctx.served = Some(served_name(
                &snap.providers[first.provider].config.name,
                &first.model,
            ));
            first.clone()
        });
        ctx.plan = Some(plan);
        match answer {
            Some(a) => Prepared::Mock(a),
            None => Prepared::Proxy,
        }
    }

    async fn fail(&self, session: &mut Session, ctx: &mut Ctx, e: &ApiError) -> Result<bool> {
        ctx.status = Some(e.status);
        ctx.error_code = Some(e.code);
        let tags = Tags {
            request_id: &ctx.request_id,
            ..Tags::default()
        };
        // Boxed: errors are rare, and their future would otherwise size every request's.
        Box::pin(respond::write_error(
            session,
            e,
            ctx.anthropic_dialect(),
            &tags,
        ))
        .await?;
        Ok(true)
    }

    /// Records a failure of the current attempt and decides what comes next.
    fn after_failure(&self, ctx: &mut Ctx, failure: Failure, retry_after_s: Option<u64>) -> Next {
        let snap = ctx.snapshot(&self.app);
        let Some(plan) = ctx.plan.as_ref() else {
            return Next::GiveUp;
        };
        let attempt = &plan.attempts[ctx.attempt];
        let target = plan
            .virtual_model
            .zip(attempt.target)
            .map(|(vi, ti)| &snap.table.models[vi].targets[ti]);
        let now = now_ms();
        let mut tries = ctx.tries_on_target;
        if let Some(t) = target {
            if let Some(h) = self.app.health.get(&t.name) {
                let cfg = t
                    .provider
                    .map(|p| snap.providers[p].config.breaker)
                    .unwrap_or_default();
                h.breaker.record_failure(&cfg, now);
                if !h.breaker.allows(now) {
                    // This failure opened the breaker: the target gets no further try now,
                    // not even the retry its policy would allow.
                    tries = u32::MAX;
                }
            }
        } else if let (None, Some(name)) = (plan.virtual_model, ctx.served.as_deref()) {
            // A concrete model called directly has a breaker of its own.
            let cfg = snap.providers[attempt.provider].config.breaker;
            if self.app.health.concrete.record_failure(name, &cfg, now) {
                tries = u32::MAX;
            }
        }
        let has_next = self.next_usable(ctx, ctx.attempt + 1).is_some();
        let next = attempts::decide(failure, target, tries, has_next, retry_after_s);
        ctx.pending = Some(next);
        next
    }

    /// Seconds until the first breaker of a virtual model half-opens (at least 1).
    fn circuits_retry_after_s(&self, snap: &crate::snapshot::Snapshot, source: &str) -> u64 {
        let now = now_ms();
        snap.table
            .redirect_any(source)
            .map(|vi| &snap.table.models[vi])
            .into_iter()
            .flat_map(|vm| vm.targets.iter())
            .filter_map(|t| self.app.health.get(&t.name))
            .map(|h| h.breaker.retry_after_ms(now))
            .filter(|ms| *ms > 0)
            .min()
            .map_or(1, |ms| ms.div_ceil(1000).max(1))
    }

    /// The index of the next attempt whose provider can take the request (a resolved upstream,
    /// or the local mock) and whose circuit has not opened since the plan was made (by this
    /// request or a concurrent one).
    fn next_usable(&self, ctx: &Ctx, from: usize) -> Option<usize> {
        let snap = ctx.snap.as_ref()?;
        let plan = ctx.plan.as_ref()?;
        let now = now_ms();
        (from..plan.attempts.len()).find(|i| {
            let a = &plan.attempts[*i];
            let p = &snap.providers[a.provider];
            let closed = plan.virtual_model.zip(a.target).is_none_or(|(vi, ti)| {
                let name = &snap.table.models[vi].targets[ti].name;
                self.app
                    .health
                    .get(name)
                    .is_none_or(|h| h.breaker.allows(now))
            });
            (p.config.kind == ProviderKind::Mock || p.addr().is_some()) && closed
        })
    }

    /// When the pending decision is a fallback onto a `mock` attempt, which Pingora cannot
    /// proxy to: takes the decision, notes the attempt for `fail_to_proxy` to answer, and
    /// returns true (the caller then stops Pingora's retry loop).
    fn divert_to_mock(&self, ctx: &mut Ctx) -> bool {
        if ctx.pending != Some(Next::Fallback) {
            return false;
        }
        let Some(next) = self.next_usable(ctx, ctx.attempt + 1) else {
            return false;
        };
        let (Some(snap), Some(plan)) = (ctx.snap.as_ref(), ctx.plan.as_ref()) else {
            return false;
        };
        if snap.providers[plan.attempts[next].provider].config.kind != ProviderKind::Mock {
            return false;
        }
        ctx.pending = None;
        ctx.mock_fallback = Some(next);
        true
    }

    /// Answers with the mock attempt `divert_to_mock` chose, as the plan's next fallback.
    async fn answer_mock_fallback(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        at: usize,
    ) -> Result<()> {
        let snap = ctx.snapshot(&self.app);
        let Some(attempt) = ctx.plan.as_ref().map(|p| p.attempts[at].clone()) else {
            return Error::e_explain(ErrorType::InternalError, "no plan for a mock fallback");
        };
        ctx.attempt = at;
        ctx.attempts_made += 1;
        ctx.fallbacks += 1;
        ctx.error_code = None;
        ctx.served = Some(served_name(
            &snap.providers[attempt.provider].config.name,
            &attempt.model,
        ));
        local::answer_mock(session, ctx, &attempt).await
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new())
    }

    /// No downstream modules. Pingora's default adds its response compression module, disabled
    /// (level 0), which still builds a context and filters every response's header and body;
    /// the gateway passes answers through as the provider encoded them.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// Auth, local routes, body and plan. May answer locally; never contacts an upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<bool> {
        ctx.header_names = headers::Names::of(&session.req_header().headers);
        ctx.request_id = local::request_id(session, ctx.header_names);
        ctx.path = SmolStr::new(session.req_header().uri.path());
        let path = ctx.path.clone();
        let snap = ctx.snapshot(&self.app);
        let method = session.req_header().method.clone();
        ctx.api = operation_for(&path).is_some();
        // Rare branches are boxed where they are awaited (see `future_sizes` below).
        let get = method == http::Method::GET || method == http::Method::HEAD;
        if get {
            if let Some(done) =
                Box::pin(local::public_route(self, session, ctx, &method, &path)).await?
            {
                return Ok(done);
            }
        }
        // The admin surface authorizes its callers itself (master key, or loopback only).
        if crate::admin::is_admin_path(&path) {
            return Box::pin(crate::admin::http::serve(&self.app, session, ctx)).await;
        }
        if let Err(e) = local::authenticate(session, &snap.settings, &path, ctx.header_names) {
            return self.fail(session, ctx, &e).await;
        }
        match local::user_path(session, &snap.settings, ctx.header_names) {
            Ok(p) => ctx.user_path = p,
            Err(e) => return self.fail(session, ctx, &e).await,
        }
        if get {
            if let Some(done) =
                Box::pin(local::authed_route(self, session, ctx, &method, &path)).await?
            {
                return Ok(done);
            }
        }
        match operation_for(&path) {
            Some(op) if method == http::Method::POST => {
                ctx.operation = op;
                self.routed(session, ctx, op).await
            }
            Some(_) => {
                let e = ApiError::new(
                    405,
                    "invalid_request_error",
                    "method_not_allowed",
                    format!("{path} accepts POST only"),
                );
                self.fail(session, ctx, &e).await
            }
            None => {
                let e = ApiError::new(
                    404,
                    "invalid_request_error",
                    "not_found",
                    format!("no route for {method} {path}"),
                );
                self.fail(session, ctx, &e).await
            }
        }
    }

    /// The peer for the current attempt; applies a pending retry delay or fallback first.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<Ctx>,
    ) -> Result<Box<HttpPeer>> {
        match ctx.pending.take() {
            Some(Next::Retry { delay_ms }) => {
                ctx.tries_on_target += 1;
                if delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
            }
            Some(Next::Fallback) => {
                let next = self.next_usable(ctx, ctx.attempt + 1);
                ctx.attempt = next.unwrap_or(ctx.attempt);
                ctx.tries_on_target = 1;
                ctx.fallbacks += 1;
                ctx.attempt_body = None;
            }
            _ => {
                if ctx.attempts_made == 0 {
                    ctx.tries_on_target = 1;
                }
            }
        }
        ctx.body_sent = false;
        ctx.attempts_made += 1;
        let snap = ctx.snapshot(&self.app);
        let Some(plan) = ctx.plan.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no plan for a proxied request");
        };
        let attempt = plan.attempts[ctx.attempt].clone();
        let provider = &snap.providers[attempt.provider];
        ctx.served = Some(served_name(&provider.config.name, &attempt.model));
        let Some(addr) = provider.addr() else {
            return Error::e_explain(
                ErrorType::ConnectNoRoute,
                "provider address is not resolved",
            );
        };
        let Some(base) = provider.config.base.as_ref() else {
            return Error::e_explain(ErrorType::ConnectNoRoute, "provider has no base URL");
        };
        if ctx.attempt_body.is_none() {
            if let Err(e) = self.prepare_attempt(ctx) {
                ctx.client_error = Some(e);
                return Error::e_explain(
                    ErrorType::InternalError,
                    "the request cannot be expressed in this target's dialect",
                );
            }
        }
        let mut peer = HttpPeer::new(addr, base.tls, base.host.clone());
        let t = provider.config.timeouts;
        peer.options.connection_timeout = Some(Duration::from_millis(t.connect_ms));
        peer.options.read_timeout = Some(Duration::from_millis(t.first_byte_ms.max(t.idle_ms)));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        ctx.attempt_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    /// Starts the first-byte/idle watch of this attempt when the provider's bounds differ
    /// (Pingora's own per-read timeout is the larger of the two).
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        ctx.read_watch = None;
        let snap = ctx.snapshot(&self.app);
        let Some(plan) = ctx.plan.as_ref() else {
            return Ok(());
        };
        let t = snap.providers[plan.attempts[ctx.attempt].provider]
            .config
            .timeouts;
        if t.first_byte_ms != t.idle_ms {
            ctx.read_watch = ReadWatch::start(
                fd,
                Duration::from_millis(t.first_byte_ms),
                Duration::from_millis(t.idle_ms),
            );
        }
        Ok(())
    }

    /// Path, host, the provider's auth and headers, the target's header rules, Content-Length.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let snap = ctx.snapshot(&self.app);
        let Some(plan) = ctx.plan.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no plan");
        };
        let attempt = &plan.attempts[ctx.attempt];
        let provider = &snap.providers[attempt.provider];
        let Some(base) = provider.config.base.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no base URL");
        };
        let target = plan
            .virtual_model
            .zip(attempt.target)
            .map(|(vi, ti)| &snap.table.models[vi].targets[ti]);
        let format = attempt_format(&snap, plan.virtual_model, attempt);
        let query = session.req_header().uri.query();
        let uri = match (query, provider.upstream_uri(ctx.operation, format)) {
            (None, Some(uri)) => uri.clone(),
            _ => {
                let mut path = String::with_capacity(base.path.len() + 24);
                path.push_str(&base.path);
                path.push_str(ctx.operation.upstream_suffix(format));
                if let Some(q) = query {
                    path.push('?');
                    path.push_str(q);
                }
                path.parse()
                    .map_err(|_| Error::explain(ErrorType::InternalError, "bad upstream path"))?
            }
        };
        // The header block is rebuilt as plain parts: one map, prebuilt names and values,
        // instead of `insert_header`'s name parsing and second (original-case) map. Client
        // headers keep their values; names go upstream in canonical case.
        let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
        let mut parts: http::request::Parts = std::mem::replace(req, placeholder).into();
        parts.uri = uri;
        let len = ctx.attempt_body.as_ref().map_or(0, Bytes::len);
        let result = upstream_headers::build(
            &mut parts.headers,
            provider,
            target,
            format,
            &snap.settings.user_path_header,
            len,
        );
        *req = RequestHeader::from(parts);
        result
    }

    /// Swaps the replayed retry buffer for this attempt's whole rewritten body.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        if ctx.body_sent {
            *body = None;
            return Ok(());
        }
        if end_of_stream || body.is_some() {
            *body = ctx.attempt_body.clone();
            ctx.body_sent = true;
        }
        Ok(())
    }

    /// Retry or fall back on a bad status while nothing has reached the client.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        if let Some(w) = &ctx.read_watch {
            w.progress();
        }
        if let Some(shaper) = ctx.shaper.as_mut() {
            shaper.on_status(status);
            if shaper.rewrites() {
                resp.remove_header("content-length");
                resp.insert_header("transfer-encoding", "chunked")?;
            }
        }
        if attempts::is_failure_status(status) || status == 401 || status == 403 || status == 404 {
            let retry_after = resp
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if status == 429 {
                ctx.retry_after = resp
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
            }
            let failure = if attempts::is_failure_status(status) {
                Failure::Status(status)
            } else {
                // 401/403/404 say nothing about the target's health.
                ctx.pending = None;
                let snap = ctx.snapshot(&self.app);
                let target = ctx.plan.as_ref().and_then(|p| {
                    let a = &p.attempts[ctx.attempt];
                    p.virtual_model
                        .zip(a.target)
                        .map(|(vi, ti)| snap.table.models[vi].targets[ti].clone())
                });
                let has_next = self.next_usable(ctx, ctx.attempt + 1).is_some();
                let next = attempts::decide(
                    Failure::Status(status),
                    target.as_ref(),
                    u32::MAX,
                    has_next,
                    None,
                );
                if next == Next::Fallback {
                    ctx.pending = Some(next);
                    return Err(self.status_error(ctx, status));
                }
                return Ok(());
            };
            match self.after_failure(ctx, failure, retry_after) {
                Next::GiveUp => {
                    ctx.pending = None;
                }
                _ => return Err(self.status_error(ctx, status)),
            }
        } else {
            self.record_success(ctx);
        }
        // The body passes through untouched, so the upstream's framing stays; our tags go in
        // response_filter.
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        ctx.status = Some(resp.status.as_u16());
        let tags = Tags {
            request_id: &ctx.request_id,
            model: ctx.served.as_deref(),
            virtual_model: ctx.virtual_model.as_deref(),
            attempts: Some(ctx.attempts_made),
            prebuilt: ctx.prebuilt_tags(),
        };
        respond::add_tags(resp, &tags)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<Option<Duration>> {
        if let Some(w) = &ctx.read_watch {
            if end_of_stream {
                w.disarm();
            } else {
                w.progress();
            }
        }
        Ok(None)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<Option<Duration>> {
        if let Some(shaper) = ctx.shaper.as_mut() {
            shaper.on_body(body, end_of_stream);
            if end_of_stream {
                ctx.usage = shaper.usage;
            }
        }
        if let Some(b) = body {
            if !b.is_empty() && ctx.first_byte_at.is_none() {
                ctx.first_byte_at = Some(Instant::now());
            }
            if ctx.stream {
                ctx.stream_events += dialect::count_events(b);
            }
        }
        if end_of_stream {
            // Here, not in `logging`: the last bytes have not reached the client yet, so the
            // client's next request is planned with this one's timings (SLA, latency).
            self.record_timings(ctx);
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<Ctx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failures += 1;
        let next = self.after_failure(ctx, Failure::Connection, None);
        e.set_retry(next != Next::GiveUp && !self.divert_to_mock(ctx));
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<Ctx>,
        _client_reused: bool,
    ) -> Box<Error> {
        // The attempt's connection is gone: let it close (the watch holds a duplicate).
        if let Some(w) = &ctx.read_watch {
            w.disarm();
        }
        let mut e = e.more_context(format!("peer {}", peer.sni));
        // A client that went away says nothing about the target: no retry, no breaker failure.
        if session.response_written().is_some() || *e.esource() == ErrorSource::Downstream {
            e.set_retry(false);
            return e;
        }
        // A status decision was already taken in upstream_response_filter.
        if matches!(ctx.pending, Some(Next::Retry { .. } | Next::Fallback)) {
            e.set_retry(true);
            return e;
        }
        if ctx.mock_fallback.is_some() {
            e.set_retry(false);
            return e;
        }
        let next = self.after_failure(ctx, Failure::Connection, None);
        e.set_retry(next != Next::GiveUp && !self.divert_to_mock(ctx));
        e
    }

    /// A clean JSON error; never the raw error text (it names internal addresses).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<Ctx>,
    ) -> FailToProxy {
        if session.response_written().is_some() {
            if ctx.read_watch.as_ref().is_some_and(ReadWatch::fired) {
                ctx.error_code = Some("upstream_timeout");
            }
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let client_gone = matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
        if *e.esource() == ErrorSource::Downstream && client_gone {
            // Nobody to answer; logged and counted as nginx's 499, not as an upstream failure.
            ctx.status = Some(499);
            ctx.error_code = Some("client_closed_request");
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if let Some(at) = ctx.mock_fallback {
            // Boxed: rare, and its future would otherwise size every failure's.
            let answered = Box::pin(self.answer_mock_fallback(session, ctx, at)).await;
            return FailToProxy {
                error_code: if answered.is_ok() { 200 } else { 0 },
                can_reuse_downstream: false,
            };
        }
        // Pingora's own timeout, or the first-byte/idle watch that cut the connection.
        let timed_out = matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
        ) || ctx.read_watch.as_ref().is_some_and(ReadWatch::fired);
        let err = match (e.etype(), ctx.upstream_status) {
            _ if ctx.client_error.is_some() => ctx
                .client_error
                .clone()
                .unwrap_or_else(|| ApiError::invalid_request("bad_request", "bad request")),
            (ErrorType::HTTPStatus(s), _) if *s < 500 && *s != 429 && ctx.plan.is_none() => {
                ApiError::invalid_request("bad_request", "the request could not be read")
            }
            (_, Some(s)) if s >= 400 => {
                let mut a = ApiError::new(
                    s,
                    "upstream_error",
                    "upstream_error",
                    format!("every attempt failed; the last upstream answered {s}"),
                );
                if s == 429 {
                    a.kind = "rate_limit_error";
                    a.code = "rate_limit_exceeded";
                    a.retry_after_s = ctx.retry_after.as_deref().and_then(|v| v.parse().ok());
                }
                a
            }
            _ if timed_out => ApiError::new(
                504,
                "upstream_error",
                "upstream_timeout",
                "the upstream did not answer in time",
            ),
            _ if ctx.plan.is_none() => {
                ApiError::invalid_request("bad_request", "the request could not be read")
            }
            _ => ApiError::new(
                502,
                "upstream_error",
                "upstream_unavailable",
                "no upstream could be reached for this model",
            ),
        };
        ctx.status = Some(err.status);
        ctx.error_code = Some(err.code);
        let tags = Tags {
            request_id: &ctx.request_id,
            model: ctx.served.as_deref(),
            virtual_model: ctx.virtual_model.as_deref(),
            attempts: Some(ctx.attempts_made),
            prebuilt: ctx.prebuilt_tags(),
        };
        let code = err.status;
        if respond::write_error(session, &err, ctx.anthropic_dialect(), &tags)
            .await
            .is_err()
        {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A failed attempt answered by a mock fallback is no proxy failure to log.
    fn suppress_error_log(&self, _session: &Session, ctx: &Box<Ctx>, _error: &Error) -> bool {
        ctx.mock_fallback.is_some() && ctx.error_code.is_none()
    }

    fn suppress_proxy_warn_log(
        &self,
        _s: &Session,
        _c: &Box<Ctx>,
        _e: &Error,
        _x: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<Ctx>) {
        self.observe(session, e, ctx);
    }
}

/// The wire dialect an attempt speaks: the target's `backend_format`, else the provider type's.
fn attempt_format(
    snap: &crate::snapshot::Snapshot,
    vm: Option<usize>,
    a: &plan::Attempt,
) -> WireFormat {
    vm.zip(a.target)
        .and_then(|(vi, ti)| snap.table.models[vi].targets[ti].backend_format)
        .unwrap_or(snap.providers[a.provider].config.kind.wire_format())
}

/// `provider/model`, without an allocation when it fits inline.
fn served_name(provider: &str, model: &str) -> SmolStr {
    let mut b = smol_str::SmolStrBuilder::new();
    b.push_str(provider);
    b.push('/');
    b.push_str(model);
    b.finish()
}

impl Gateway {
    /// The error that ends an attempt on a bad status: retried by Pingora, unless the fallback
    /// is a `mock` attempt, which `fail_to_proxy` answers.
    fn status_error(&self, ctx: &mut Ctx, status: u16) -> Box<Error> {
        let mut e = Error::explain(
            ErrorType::HTTPStatus(status),
            "upstream status triggers retry or fallback",
        );
        e.set_retry(!self.divert_to_mock(ctx));
        e
    }

    /// Builds the current attempt's upstream body and response shaper.
    fn prepare_attempt(&self, ctx: &mut Ctx) -> std::result::Result<(), ApiError> {
        let snap = ctx.snapshot(&self.app);
        let (Some(plan), Some(peek)) = (ctx.plan.as_ref(), ctx.peek.as_ref()) else {
            return Err(ApiError::invalid_request(
                "bad_request",
                "request was not read",
            ));
        };
        let attempt = &plan.attempts[ctx.attempt];
        let target = plan
            .virtual_model
            .zip(attempt.target)
            .map(|(vi, ti)| &snap.table.models[vi].targets[ti]);
        let format = attempt_format(&snap, plan.virtual_model, attempt);
        let spec = dialect::BodySpec {
            op: ctx.operation,
            target: format,
            upstream_model: &attempt.model,
            // Sampling parameters mean nothing to a token count (Anthropic refuses them).
            override_params: target
                .and_then(|t| t.override_params.as_ref())
                .filter(|_| ctx.operation != Operation::CountTokens),
            drop_provider: peek.provider.is_some(),
            default_max_tokens: snap.settings.anthropic_default_max_tokens,
        };
        let (body, injected) = dialect::upstream_body(&ctx.body, peek, &spec)?;
        ctx.attempt_body = Some(body);
        ctx.shaper = Some(dialect::Shaper::new(
            ctx.operation,
            format,
            peek.stream,
            injected,
            &ctx.request_id,
            &attempt.model,
            crate::wall_clock::now_secs(),
        ));
        Ok(())
    }

    fn record_success(&self, ctx: &mut Ctx) {
        let snap = ctx.snapshot(&self.app);
        let Some(plan) = ctx.plan.as_ref() else {
            return;
        };
        let a = &plan.attempts[ctx.attempt];
        if let Some((vi, ti)) = plan.virtual_model.zip(a.target) {
            let t = &snap.table.models[vi].targets[ti];
            if let Some(h) = self.attempt_health(ctx, &t.name) {
                let cfg = t
                    .provider
                    .map(|p| snap.providers[p].config.breaker)
                    .unwrap_or_default();
                h.breaker.record_success(&cfg, now_ms());
            }
        } else if let (None, Some(name)) = (plan.virtual_model, ctx.served.as_deref()) {
            let cfg = snap.providers[a.provider].config.breaker;
            self.app
                .health
                .concrete
                .record_success(name, &cfg, now_ms());
        }
    }

    /// The current attempt's target health, looked up once per attempt.
    fn attempt_health(
        &self,
        ctx: &mut Ctx,
        name: &str,
    ) -> Option<Arc<crate::health::TargetHealth>> {
        match &ctx.health {
            Some((attempt, h)) if *attempt == ctx.attempt => Some(h.clone()),
            _ => {
                let h = self.app.health.get(name)?;
                ctx.health = Some((ctx.attempt, h.clone()));
                Some(h)
            }
        }
    }

    /// A successful answer's timings into the target's windows: time to first byte, and time
    /// per output token for streams or total time otherwise. Called once, at the end of the
    /// answer's body.
    fn record_timings(&self, ctx: &mut Ctx) {
        // A token count's quick answer says nothing of how fast the target generates.
        if ctx.status.is_none_or(|s| s >= 400) || ctx.operation == Operation::CountTokens {
            return;
        }
        let (Some(start), Some(first)) = (ctx.attempt_started, ctx.first_byte_at) else {
            return;
        };
        let snap = ctx.snapshot(&self.app);
        let Some(plan) = ctx.plan.as_ref() else {
            return;
        };
        let a = &plan.attempts[ctx.attempt];
        let Some((vi, ti)) = plan.virtual_model.zip(a.target) else {
            return;
        };
        let Some(h) = self.attempt_health(ctx, &snap.table.models[vi].targets[ti].name) else {
            return;
        };
        let now = now_ms();
        let total = start.elapsed();
        let ttft = first.saturating_duration_since(start);
        h.ttft_ms.record(now, ttft.as_millis() as u64);
        if ctx.stream {
            let per = total.saturating_sub(ttft).as_micros() as u64 / ctx.stream_events.max(1);
            h.tpot_us.record(now, per);
            h.latency_us.record(now, per);
        } else {
            h.latency_us.record(now, total.as_micros() as u64);
        }
    }

    /// After the response: metrics and the access log.
    fn observe(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let elapsed = ctx.started.elapsed();
        let snap = ctx.snapshot(&self.app);
        let ttft = ctx
            .first_byte_at
            .zip(ctx.attempt_started)
            .map(|(f, s)| f.saturating_duration_since(s).as_secs_f64());
        // Priced by the attempt that answered (the one `served` names).
        let answered = ctx.plan.as_ref().and_then(|p| p.attempts.get(ctx.attempt));
        let cost = ctx.usage.zip(answered).and_then(|((i, o), a)| {
            let price = crate::catalog::price(&snap.providers[a.provider].config, &a.model)?;
            Some((i as f64 * price.input_per_mtok + o as f64 * price.output_per_mtok) / 1e6)
        });
        // Only names the gateway knows go into labels: a 404 for an arbitrary name records none.
        let known = ctx.attempts_made > 0;
        if ctx.api {
            self.metrics.record(&crate::metrics::Outcome {
                virtual_model: ctx.virtual_model.as_deref(),
                served: if known { ctx.served.as_deref() } else { None },
                status: ctx.status.unwrap_or(0),
                duration_s: elapsed.as_secs_f64(),
                ttft_s: if known { ttft } else { None },
                attempts: ctx.attempts_made,
                fallbacks: ctx.fallbacks,
                tokens: ctx.usage,
                cost_usd: cost,
            });
        }
        local::access_log(&snap.settings, ctx, elapsed);
    }

    /// The `/metrics` text.
    pub fn render_metrics(&self) -> String {
        let snap = self.app.snapshot();
        let now = now_ms();
        let mut breakers: Vec<(String, u8)> = self
            .app
            .health
            .all()
            .iter()
            .map(|(name, h)| (name.clone(), h.breaker.state(now).as_metric()))
            .collect();
        breakers.sort();
        let reload = self.app.reload_status.load();
        self.metrics.render(&crate::metrics::Gauges {
            breakers,
            reloads_ok: reload.ok_count,
            reloads_failed: reload.failed_count,
            last_reload_ok: reload.ok,
            virtual_models: snap.table.models.len(),
            in_flight: crate::server::IN_FLIGHT.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

/// The hooks' futures live in one heap block each per request (Pingora boxes every hook's
/// future), built on the stack and copied into it: their size is per-request memory traffic.
/// Rarely taken branches (admin, local routes, errors, catalog refresh, the mock provider) are
/// boxed where they are awaited, and planning holds no state across an await, so they do not
/// set the size of every request's future.
#[cfg(test)]
mod future_sizes {
    use super::*;
    use crate::app::ConfigSource;

    fn gateway() -> (Gateway, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "providers:\n  m:\n    type: mock\n    models: [a]\nvirtual_models:\n  - source: v\n    targets: [m/a]\n",
        )
        .expect("write config");
        let source = ConfigSource {
            path: Some(path),
            env_file: None,
            overrides: Vec::new(),
        };
        let app = App::start(source, None).expect("app");
        let gw = Gateway {
            app: Arc::new(app),
            metrics: Arc::new(crate::metrics::Metrics::default()),
        };
        (gw, dir)
    }

    #[test]
    fn hook_futures_stay_small() {
        let (gw, _dir) = gateway();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let (io, _peer) = tokio::io::duplex(64);
        let mut session = Session::new_h1(Box::new(io));
        let mut ctx = gw.new_ctx();
        let request_filter = std::mem::size_of_val(&*gw.request_filter(&mut session, &mut ctx));
        let upstream_peer = std::mem::size_of_val(&*gw.upstream_peer(&mut session, &mut ctx));
        let mut req = RequestHeader::build("POST", b"/", None).expect("header");
        let upstream_request_filter =
            std::mem::size_of_val(&*gw.upstream_request_filter(&mut session, &mut req, &mut ctx));
        let mut resp = ResponseHeader::build(200, None).expect("header");
        let response_filter =
            std::mem::size_of_val(&*gw.response_filter(&mut session, &mut resp, &mut ctx));
        let logging = std::mem::size_of_val(&*gw.logging(&mut session, None, &mut ctx));
        let mut body = None;
        let request_body_filter = std::mem::size_of_val(&*gw.request_body_filter(
            &mut session,
            &mut body,
            true,
            &mut ctx,
        ));
        let upstream_response_filter =
            std::mem::size_of_val(&*gw.upstream_response_filter(&mut session, &mut resp, &mut ctx));
        // 2,424 bytes before the rare branches were boxed and planning made synchronous.
        assert!(
            request_filter <= 1024,
            "request_filter's future is {request_filter} bytes"
        );
        for (hook, size) in [
            ("upstream_peer", upstream_peer),
            ("upstream_request_filter", upstream_request_filter),
            ("response_filter", response_filter),
            ("logging", logging),
            ("request_body_filter", request_body_filter),
            ("upstream_response_filter", upstream_response_filter),
        ] {
            assert!(size <= 512, "{hook}'s future is {size} bytes");
        }
    }
}
