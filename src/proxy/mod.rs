//! The Pingora glue: each phase translates between Pingora's server session and our own types
//! and calls into `routing`, `health` and `attempts`. Logic that can live outside the phases
//! does.
//!
//! `connection` runs the phases for each request. Every request is answered in
//! `request_filter`: auth, local routes, body and plan, then the upstream exchange (`exchange`:
//! attempts, retries, fallbacks, the answer). `fail_to_proxy` answers what `request_filter`
//! could not, and `logging` records health windows, metrics and the access log.

pub mod accept;
pub mod access_log;
pub mod attempts;
pub mod audio_usage;
pub mod base_path;
pub mod body;
pub mod caller;
pub mod client_socket;
pub mod connection;
pub mod ctx;
pub mod dialect;
pub mod edits;
pub mod exchange;
pub mod headers;
pub mod hedge;
pub mod json_scan;
pub mod limit;
pub mod local;
pub mod mock;
pub mod mock_ops;
pub mod models;
pub mod multipart;
pub mod nemo_prefix;
pub mod pipeline;
pub mod prompt;
pub mod quiet;
pub mod rate_limit;
pub mod request_info;
pub mod respond;
pub mod route;
pub mod upstream_headers;

use std::sync::Arc;

use pingora::{Error, ErrorSource, ErrorType, Result};
use smol_str::SmolStr;

use crate::app::App;
use crate::config::providers::ProviderKind;
use crate::mono_clock::now_ms;
use crate::routing::error_class::ErrorClass;
use crate::routing::model::{Operation, WireFormat};
use crate::routing::plan::{self, RouteError};
use crate::snapshot::View;
use attempts::{Failure, Next};
use ctx::Ctx;
use respond::{ApiError, Tags};
use route::Route;

/// A client's request as Pingora's HTTP server reads it (HTTP/1 or HTTP/2).
pub type Session = pingora::protocols::http::ServerSession;

pub struct Gateway {
    pub app: Arc<App>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Upstream HTTP/1 connections, pooled per peer.
    pub connector: pingora::connectors::http::v1::Connector,
    /// Hedge budgets per virtual model source (only hedging ones get one); they survive
    /// reloads.
    pub hedges: papaya::HashMap<String, Arc<hedge::HedgeBudget>>,
}

impl Gateway {
    pub fn new(app: Arc<App>, metrics: Arc<crate::metrics::Metrics>) -> Gateway {
        Gateway {
            app,
            metrics,
            connector: pingora::connectors::http::v1::Connector::new(None),
            hedges: papaya::HashMap::new(),
        }
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
    /// `Ok` once the answer was written (or the client left); an error when none could be.
    ///
    /// Everything after the read is the synchronous `prepare`, so no routing state lives in
    /// this future across an await (see `future_sizes` below).
    async fn routed(&self, session: &mut Session, ctx: &mut Ctx, op: Operation) -> Result<()> {
        let snap = ctx.snapshot(&self.app);
        // An audio upload has its own, larger limit.
        let (limit, setting) = if op.multipart() {
            (snap.settings.audio_body_size_limit, "AUDIO_BODY_SIZE_LIMIT")
        } else {
            (snap.settings.body_size_limit, "BODY_SIZE_LIMIT")
        };
        let raw = match crate::request_body::read_limited(session, limit, setting).await {
            Ok(b) => b,
            Err(e) => return self.fail(session, ctx, &e).await,
        };
        let mut raw = match pipeline::request_phase(session, &snap, ctx, op, raw) {
            Ok(b) => b,
            Err(e) => return self.fail(session, ctx, &e).await,
        };
        let mut may_refresh = true;
        loop {
            match self.prepare(session, ctx, op, &snap, raw, may_refresh) {
                Prepared::Proxy => {
                    // One branch when no limit exists anywhere.
                    if let Some(rules) = self.app.limiter.active() {
                        let reserved = Box::pin(limit::reserve(&self.app, &rules, &snap, ctx));
                        if let Err(e) = reserved.await {
                            return self.fail(session, ctx, &e).await;
                        }
                    }
                    // Boxed: the exchange's future is large, and this one is every request's.
                    return Box::pin(self.exchange(session, ctx)).await;
                }
                Prepared::Fail(e) => return self.fail(session, ctx, &e).await,
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
        // The request phase may have peeked at these very bytes already (`ctx.peek` is then
        // set, and cleared whenever the body changed).
        let peek = match ctx.peek.take() {
            Some(p) => p,
            None if op.multipart() => {
                let content_type = session
                    .req_header()
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                match multipart::peek(content_type, &raw) {
                    Ok(p) => p,
                    Err(e) => return Prepared::Fail(e.to_api()),
                }
            }
            None => match body::peek(&raw) {
                Ok(p) => p,
                Err(e) => return Prepared::Fail(e),
            },
        };
        ctx.stream = peek.stream;
        ctx.peek = Some(peek.clone());
        let metadata = match request_info::metadata_header(session, ctx.header_names) {
            Ok(m) => m,
            Err(e) => return Prepared::Fail(e),
        };
        // The virtual model named, looked up once for what the planner is told beside it.
        let vm = snap
            .table
            .redirect(peek.model.trim())
            .map(|vi| &snap.table.models[vi]);
        // Without the header, the body's own `metadata` (read only when a target matches on it).
        let metadata = match (metadata, vm) {
            (None, Some(vm))
                if vm
                    .targets
                    .iter()
                    .any(|t| !t.extras().metadata_match.is_empty()) =>
            {
                request_info::metadata_body(&raw)
            }
            (m, _) => m,
        };
        let session_key = vm.and_then(|vm| {
            request_info::session_key(session, vm, ctx.user_path.as_ref(), ctx.header_names, &raw)
        });
        let input_tokens = vm.and_then(|vm| estimated_input(vm, &raw, op));
        let req = plan::Request {
            model: &peek.model,
            provider: peek.provider.as_deref(),
            user_path: ctx.user_path.as_ref(),
            operation: op,
            metadata: metadata.as_ref(),
            session_key: session_key.as_deref(),
            input_tokens,
        };
        let now = now_ms();
        let view = View {
            snap,
            health: Some(&self.app.health),
            now_ms: now,
            claims_probes: true,
            probes: Default::default(),
        };
        let planned = plan::plan(&snap.table, &req, &view);
        ctx.probes = view.probes.take();
        let mut plan = match planned {
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
                // The virtual model applied, though no target could be tried.
                if let RouteError::AllCircuitsOpen { virtual_model }
                | RouteError::OperationNotAllowed { virtual_model, .. } = &e
                {
                    ctx.virtual_model = Some(SmolStr::new(virtual_model));
                }
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
        // Targets whose provider cannot serve this operation (embeddings or audio to Anthropic,
        // rerank to OpenAI, ...) are dropped from the plan; the mock answers every operation.
        plan.attempts.retain(|a| {
            let format = attempt_format(snap, plan.virtual_model, a);
            crate::wire::capability::serves(snap.providers[a.provider].config.kind, format, op)
                .is_ok()
        });
        if plan.attempts.is_empty() {
            ctx.virtual_model = plan
                .virtual_model
                .map(|vi| SmolStr::new(&snap.table.models[vi].source));
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
        // The virtual model that routed; else the one whose request steps chose a concrete
        // model (set by the request phase).
        if let Some(vi) = plan.virtual_model {
            ctx.virtual_model = Some(SmolStr::new(&snap.table.models[vi].source));
        }
        pipeline::after_plan(snap, ctx, plan.virtual_model);
        if op == Operation::Speech {
            ctx.audio.characters = audio_usage::speech_characters(&raw);
        }
        if op.multipart() {
            // Held as shared bytes: each attempt sends slices of it around its own model value.
            ctx.upload = Some(bytes::Bytes::from(raw));
        } else {
            ctx.body = raw;
        }
        ctx.peek = Some(peek);
        ctx.operation = op;
        ctx.plan = Some(plan);
        Prepared::Proxy
    }

    async fn fail(&self, session: &mut Session, ctx: &mut Ctx, e: &ApiError) -> Result<()> {
        ctx.status = Some(e.status);
        ctx.error_code = Some(e.code);
        let tags = Tags {
            request_id: &ctx.request_id,
            rate: ctx.rate.as_ref(),
            virtual_model: ctx.virtual_model.as_deref(),
            // Set once a virtual model applied: no upstream request was made.
            attempts: ctx.virtual_model.as_ref().map(|_| ctx.attempts.made),
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
        Ok(())
    }

    /// Records a failed try in the target's health and asks `Attempts` what follows; the
    /// request's cursor has moved accordingly.
    fn after_failure(&self, ctx: &mut Ctx, failure: Failure, retry_after_s: Option<u64>) -> Next {
        let snap = ctx.snapshot(&self.app);
        let Some(plan) = ctx.plan.as_ref() else {
            return Next::GiveUp;
        };
        let attempt = &plan.attempts[ctx.attempts.index];
        let (vm, ti) = (plan.virtual_model, attempt.target);
        let target = vm
            .zip(ti)
            .map(|(vi, ti)| &snap.table.models[vi].targets[ti]);
        // Only a refused connection or a 429/5xx says something about the target's health.
        let (counts, class) = match failure {
            Failure::Connection => (true, None),
            Failure::Status(s, c) => (attempts::is_failure_status(s), Some(c)),
        };
        let now = now_ms();
        let mut opened = false;
        match (target, ctx.served.as_deref()) {
            _ if !counts => {}
            (Some(t), _) => {
                if let Some(h) = self.app.health.get(&t.name) {
                    let cfg = t
                        .provider
                        .map(|p| snap.providers[p].config.breaker)
                        .unwrap_or_default();
                    h.breaker.record_failure(&cfg, now);
                    opened = !h.breaker.allows(now);
                }
            }
            // A concrete model called directly has a breaker of its own.
            (None, Some(name)) => {
                let cfg = snap.providers[attempt.provider].config.breaker;
                opened = self.app.health.concrete.record_failure(name, &cfg, now);
            }
            (None, None) => {}
        }
        let next_usable = self.next_usable(ctx, ctx.attempts.index + 1, class);
        let provider_retry = &snap.providers[attempt.provider].config.retry;
        ctx.attempts.on_failure(
            failure,
            target,
            provider_retry,
            opened,
            next_usable,
            retry_after_s,
            fastrand::f64(),
        )
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
    /// or the local mock), whose circuit has not opened since the plan was made (by this
    /// request or a concurrent one), and that a failure of `class` may fall back to (a prompt
    /// too long goes only to a larger context window: `attempts::admits_fallback`).
    fn next_usable(&self, ctx: &Ctx, from: usize, class: Option<ErrorClass>) -> Option<usize> {
        let snap = ctx.snap.as_ref()?;
        let plan = ctx.plan.as_ref()?;
        let now = now_ms();
        let window = |a: &plan::Attempt| {
            crate::catalog::context_window(&snap.providers[a.provider].config, &a.model)
        };
        let by_window = class == Some(ErrorClass::ContextLengthExceeded);
        let failed_window = plan
            .attempts
            .get(ctx.attempts.index)
            .filter(|_| by_window)
            .and_then(window);
        (from..plan.attempts.len()).find(|i| {
            let a = &plan.attempts[*i];
            if by_window && !attempts::admits_fallback(class, failed_window, window(a)) {
                return false;
            }
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
}

/// The phases `connection` runs for each request, in order.
impl Gateway {
    /// Auth, local routes, body and plan, then the exchange. Answers every request itself:
    /// `Ok` once an answer was written; an error when none could be (`fail_to_proxy` then
    /// answers) or when the answer broke off.
    pub async fn request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<()> {
        ctx.header_names = headers::Names::of(&session.req_header().headers);
        ctx.request_id = request_info::request_id(session, ctx.header_names);
        // The base path is the outermost prefix; NeMo's inference base URL sits under it.
        if let Some(e) = base_path::enter(session, ctx, &self.app) {
            return self.fail(session, ctx, &e).await;
        }
        if let Some(uri) = nemo_prefix::plain_uri(&session.req_header().uri) {
            session.req_header_mut().set_uri(uri);
        }
        let snap = ctx.snapshot(&self.app);
        let req = session.req_header();
        ctx.path = SmolStr::new(req.uri.path());
        ctx.route = Route::parse(
            &req.method,
            &ctx.path,
            snap.settings.metrics_path.as_deref(),
        );
        // Rare branches are boxed where they are awaited (see `future_sizes` below).
        match ctx.route {
            Route::Health | Route::Ready | Route::Metrics => {
                return Box::pin(local::public_route(self, session, ctx)).await
            }
            // The admin surface authorizes its callers itself (master key, or loopback only).
            Route::Admin => {
                let user_path = caller::user_path(session, &snap.settings, ctx.header_names);
                let status = Box::pin(crate::admin::http::serve(
                    &self.app,
                    session,
                    &snap,
                    &ctx.request_id,
                    user_path,
                ))
                .await?;
                ctx.status = Some(status);
                return Ok(());
            }
            Route::Models
            | Route::Model(_)
            | Route::Api(_)
            | Route::ApiWrongMethod(_)
            | Route::Unknown { .. } => {}
        }
        let anthropic = ctx.route.anthropic();
        let who = caller::authenticate(
            session,
            &snap.settings,
            &self.app.keys,
            anthropic,
            ctx.header_names,
        );
        let who = match who {
            Ok(c) => c,
            Err(e) => return self.fail(session, ctx, &e).await,
        };
        match caller::user_path(session, &snap.settings, ctx.header_names) {
            Ok(p) => ctx.user_path = p,
            Err(e) => return self.fail(session, ctx, &e).await,
        }
        if let crate::auth::Caller::Key(key) = who {
            let bound = caller::check_inference(&key)
                .and_then(|()| caller::bind(&key, ctx.user_path.take()));
            match bound {
                Ok(p) => ctx.user_path = p,
                Err(e) => return self.fail(session, ctx, &e).await,
            }
            ctx.key = Some(key);
        }
        let e = match ctx.route {
            Route::Api(op) => {
                ctx.operation = op;
                return self.routed(session, ctx, op).await;
            }
            Route::Models | Route::Model(_) => {
                return Box::pin(models::models_route(self, session, ctx)).await
            }
            Route::ApiWrongMethod(_) => ApiError::new(
                405,
                "invalid_request_error",
                "method_not_allowed",
                format!("{} accepts POST only", ctx.path),
            ),
            // Health, metrics and admin were answered above.
            Route::Unknown { .. }
            | Route::Health
            | Route::Ready
            | Route::Metrics
            | Route::Admin => ApiError::new(
                404,
                "invalid_request_error",
                "not_found",
                format!("no route for {} {}", session.req_header().method, ctx.path),
            ),
        };
        self.fail(session, ctx, &e).await
    }

    /// An error from `request_filter`: a clean JSON error when nothing has been written yet,
    /// never the raw error text (it names internal addresses). Once an answer's header has
    /// left (a stream that broke off), the connection is closed so the client sees the break.
    ///
    /// Returns whether the connection may carry another request: never, after an error.
    pub async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> bool {
        if session.response_written().is_some() {
            log::warn!("request {}: the answer broke off: {e}", ctx.request_id);
            return false;
        }
        let client_gone = matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
        if *e.esource() == ErrorSource::Downstream && client_gone {
            // Nobody to answer; logged and counted as nginx's 499, not as an upstream failure.
            ctx.status = Some(499);
            ctx.error_code = Some("client_closed_request");
            return false;
        }
        let err = match e.etype() {
            ErrorType::HTTPStatus(s) if *s < 500 => {
                ApiError::invalid_request("bad_request", "the request could not be read")
            }
            _ => {
                log::error!("request {}: {e}", ctx.request_id);
                ApiError::new(
                    500,
                    "server_error",
                    "internal_error",
                    "the gateway could not answer this request",
                )
            }
        };
        ctx.status = Some(err.status);
        ctx.error_code = Some(err.code);
        let tags = ctx.tags();
        // The client may be gone already; the connection closes either way.
        let _ = respond::write_error(session, &err, ctx.anthropic_dialect(), &tags).await;
        false
    }

    /// After the answer (or the failure): health windows, metrics, the access log.
    pub fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
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

/// The request's estimated input tokens, when a target of its virtual model has a known
/// context window it might exceed: the cheap bound (body bytes / 4) first, the text's
/// characters / 4 only when the bound exceeds the smallest window.
fn estimated_input(
    vm: &crate::routing::model::VirtualModel,
    raw: &[u8],
    op: Operation,
) -> Option<u64> {
    let smallest = vm.targets.iter().filter_map(|t| t.context_window).min()?;
    (prompt::input_tokens_bound(raw) > smallest).then(|| prompt::input_tokens(raw, op))
}

/// The current attempt's upstream body as the pieces written in order: the body, or for an
/// audio upload the bytes before its `model` value, the attempt's value and the bytes after
/// (slices of the one upload, never copied).
fn attempt_pieces(ctx: &Ctx) -> [bytes::Bytes; 3] {
    pieces_with(ctx, ctx.attempt_body.clone().unwrap_or_default())
}

/// `body` (an attempt's own) as the pieces written in order, as `attempt_pieces`.
fn pieces_with(ctx: &Ctx, body: bytes::Bytes) -> [bytes::Bytes; 3] {
    match (&ctx.upload, ctx.peek.as_ref()) {
        (Some(up), Some(p)) => {
            let (start, end) = p.model_span;
            [up.slice(..start), body, up.slice(end..)]
        }
        _ => [body, bytes::Bytes::new(), bytes::Bytes::new()],
    }
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
    /// Builds the current attempt's upstream body and response shaper.
    fn prepare_attempt(&self, ctx: &mut Ctx) -> std::result::Result<(), ApiError> {
        let snap = ctx.snapshot(&self.app);
        let (Some(plan), Some(peek)) = (ctx.plan.as_ref(), ctx.peek.as_ref()) else {
            return Err(ApiError::invalid_request(
                "bad_request",
                "request was not read",
            ));
        };
        let attempt = &plan.attempts[ctx.attempts.index];
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
                .and_then(|t| t.extras().override_params.as_deref())
                .filter(|_| ctx.operation != Operation::CountTokens),
            drop_provider: peek.provider.is_some(),
            default_max_tokens: snap.settings.anthropic_default_max_tokens,
        };
        let (body, injected) = if ctx.upload.is_some() {
            // An upload's attempt body is its model value; `attempt_pieces` sends the rest.
            (
                bytes::Bytes::copy_from_slice(attempt.model.as_bytes()),
                false,
            )
        } else {
            dialect::upstream_body(&ctx.body, peek, &spec)?
        };
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
        let a = &plan.attempts[ctx.attempts.index];
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
            Some((attempt, h)) if *attempt == ctx.attempts.index => Some(h.clone()),
            _ => {
                let h = self.app.health.get(name)?;
                ctx.health = Some((ctx.attempts.index, h.clone()));
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
        let a = &plan.attempts[ctx.attempts.index];
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
        let answered = ctx
            .plan
            .as_ref()
            .and_then(|p| p.attempts.get(ctx.attempts.index));
        let cost = ctx.usage.zip(answered).and_then(|((i, o), a)| {
            let price = crate::catalog::price(&snap.providers[a.provider].config, &a.model)?;
            Some((i as f64 * price.input_per_mtok + o as f64 * price.output_per_mtok) / 1e6)
        });
        // Only names the gateway knows go into labels: a 404 for an arbitrary name records none.
        let known = ctx.attempts.made > 0;
        if ctx.route.is_api() {
            self.metrics.record(&crate::metrics::Outcome {
                virtual_model: ctx.virtual_model.as_deref(),
                served: if known { ctx.served.as_deref() } else { None },
                status: ctx.status.unwrap_or(0),
                duration_s: elapsed.as_secs_f64(),
                ttft_s: if known { ttft } else { None },
                attempts: ctx.attempts.made,
                fallbacks: ctx.attempts.fallbacks,
                hedges: ctx.attempts.hedges,
                tokens: ctx.usage,
                cost_usd: cost,
                audio_seconds: ctx
                    .audio
                    .seconds
                    .or_else(|| ctx.shaper.as_ref().and_then(|s| s.audio_seconds)),
                speech_characters: ctx.audio.characters,
            });
        }
        if let (Some(vm), Some(outcome)) = (ctx.virtual_model.as_deref(), ctx.hedge) {
            self.metrics.record_hedge(vm, outcome);
        }
        if ctx.reservation.is_some() {
            limit::settle(ctx, cost);
        }
        // Every answered request is a usage row; one whose upstream reported no usage counts
        // as a request with no tokens.
        let answered = ctx.usage.is_some() || ctx.status.is_some_and(|s| s < 400);
        if let (true, Some(model)) = (answered, &ctx.served) {
            let (i, o) = ctx.usage.unwrap_or((0, 0));
            self.app.usage.record(crate::usage::Sample {
                at: crate::wall_clock::now_secs(),
                key: ctx.key.clone(),
                user_path: ctx.user_path.clone(),
                virtual_model: ctx.virtual_model.clone(),
                model: model.clone(),
                input_tokens: i,
                output_tokens: o,
                cost_usd: cost.unwrap_or(0.0),
            });
        }
        access_log::access_log(&snap.settings, ctx, elapsed);
        self.release_unreached_probes(&snap, ctx);
        pipeline::post_phase(
            ctx,
            elapsed.as_millis() as u64,
            ttft.map(|t| (t * 1000.0) as u64),
            cost,
        );
    }

    /// Frees the probe slots planning took for targets this request never tried (a fallback
    /// it did not need, a plan it never ran), so the next request may probe them at once.
    fn release_unreached_probes(&self, snap: &crate::snapshot::Snapshot, ctx: &mut Ctx) {
        for (vm, t, until) in std::mem::take(&mut ctx.probes) {
            let tried = ctx.plan.as_ref().is_some_and(|p| {
                p.virtual_model == Some(vm)
                    && p.attempts
                        .iter()
                        .enumerate()
                        .any(|(i, a)| a.target == Some(t) && ctx.attempts.was_tried(i))
            });
            if !tried {
                self.app.health.release_probe(snap, vm, t, until);
            }
        }
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
        let mut steering: Vec<(String, bool, Option<f64>)> = self
            .app
            .health
            .all()
            .iter()
            .filter_map(|(name, h)| {
                let s = h.steer.state(now);
                (s.rate_limited || s.remaining_fraction.is_some())
                    .then(|| (name.clone(), s.rate_limited, s.remaining_fraction))
            })
            .collect();
        steering.sort_by(|a, b| a.0.cmp(&b.0));
        let reload = self.app.reload_status.load();
        let mut text = self.metrics.render(&crate::metrics::Gauges {
            breakers,
            steering,
            model_breakers: self.app.health.concrete.states(now),
            reloads_ok: reload.ok_count,
            reloads_failed: reload.failed_count,
            last_reload_ok: reload.ok,
            virtual_models: snap.table.models.len(),
            in_flight: crate::server::IN_FLIGHT.load(std::sync::atomic::Ordering::Relaxed),
            store: self.app.store.as_ref().map(|s| s.health().state()),
        });
        self.app.limiter.render(&mut text);
        if self.app.limiter.shared().is_some() {
            self.app.health.steer_sync.render(&mut text);
        }
        self.app.usage.render(&mut text);
        text
    }
}

/// A request's future (`connection`: the header read, the phases) lives in one heap block per
/// request, built on the stack and copied into it: its size is per-request memory traffic, and
/// an open stream's memory for as long as it lasts. Rarely taken branches (admin, local routes, errors, catalog refresh, the mock provider) are
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
        let gw = Gateway::new(Arc::new(app), Arc::new(crate::metrics::Metrics::default()));
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
        let mut session = Session::new_http1(Box::new(io));
        let mut ctx = Box::new(Ctx::new());
        let request_filter = std::mem::size_of_val(&gw.request_filter(&mut session, &mut ctx));
        let exchange = std::mem::size_of_val(&gw.exchange(&mut session, &mut ctx));
        // 2,424 bytes before the rare branches were boxed and planning made synchronous.
        assert!(
            request_filter <= 1024,
            "request_filter's future is {request_filter} bytes"
        );
        // A connection's task is this future: the server session, the header read and the
        // request phase, and the three values the connection borrows. It is the one heap block
        // an open stream keeps for them (2,088 bytes in a debug build). Under Pingora's
        // listening service they were two: its task (8.8 KiB, sized by a TLS handshake) and the
        // connection's future boxed apart (2,000 bytes; before that, under Pingora's generic
        // `ServerApp`, its own connection future of 3,824 bytes, most of it HTTP/2's accept
        // loop, and each request's future boxed apart). Pingora's proxy framework boxed 13.4 KiB
        // in their place, most of it for upstream phases the gateway never enters.
        let (_tx, draining) = tokio::sync::watch::channel(false);
        let gw = Arc::new(gw);
        let (stream, _peer) = tokio::io::duplex(64);
        let connection = std::mem::size_of_val(&accept::connection_task(
            gw.clone(),
            Box::new(stream),
            draining,
        ));
        drop(session);
        assert!(
            connection <= 2176,
            "a connection's task future is {connection} bytes"
        );
        // Boxed once per proxied request, and held for as long as its answer streams (2,496
        // bytes in a debug build before hedging and the three-piece upload bodies, 3,080 after;
        // 1,936 once the upstream session was boxed at once and the pool's, the mock's and the
        // error answer's futures boxed where awaited; a new connection and a hedge race are
        // boxed apart).
        assert!(
            exchange <= 2048,
            "the exchange's future is {exchange} bytes"
        );
    }
}
