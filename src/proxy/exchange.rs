//! The upstream exchange of a routed request, run by the gateway itself.
//!
//! Pingora serves the client's connection and pools the upstream connections; the walk along
//! the plan is ours. One loop takes the plan's attempts in order: it connects, sends the
//! attempt's request, reads the answer's header and asks `Attempts` whether to retry, fall back
//! or deliver. Holding the answer before its header leaves buys three things Pingora's proxy
//! loop cannot give: a non-stream answer goes to the client with its Content-Length in one
//! write even when the provider chunked it; a translated answer that turns out not to be valid
//! JSON becomes a 502, never a 200 with an error for a body; and a mock attempt later in the
//! plan is just another attempt.
//!
//! What is never here: routing (the plan exists before), retry policy (`attempts`), body
//! rewriting and answer translation (`dialect`), error envelopes (`respond`).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::Session;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::v1::client::HttpSession as Upstream;
use pingora::{Error, ErrorType, Result};

use super::attempts::{Failure, Next};
use super::ctx::{Ctx, KeptError};
use super::hedge::{HedgeBudget, HedgeOutcome};
use super::quiet::Quiet;
use super::rate_limit;
use super::respond::{self, ApiError};
use super::{
    attempt_format, attempt_pieces, dialect, local, served_name, upstream_headers, Gateway,
};
use crate::config::providers::ProviderKind;
use crate::mono_clock::now_ms;
use crate::routing::error_class::{self, ErrorClass};
use crate::routing::model::{HedgePolicy, Operation};

/// The largest non-stream answer that is held and sent with its Content-Length in one write;
/// a larger one streams through as it arrives.
pub const WHOLE_LIMIT: usize = 64 * 1024;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// A try that was sent and answered with a header.
struct Answered {
    up: Box<Upstream>,
    peer: Box<HttpPeer>,
    /// The body already read (a failed answer's, to classify it) and whether it is all.
    held: Option<(Bytes, bool)>,
}

/// A hedge's extra request, built for another attempt of the plan than the current one.
struct Leg {
    index: usize,
    peer: Box<HttpPeer>,
    header: Box<RequestHeader>,
    body: Bytes,
    first_byte: Duration,
    shaper: Option<dialect::Shaper>,
    served: smol_str::SmolStr,
}

/// How reading a failed answer's body ended.
enum ErrorBody {
    /// The bytes read (at most `error_class::BODY_LIMIT` and a piece) and whether they are all.
    Read(Bytes, bool),
    Broken {
        timed_out: bool,
    },
    ClientGone,
}

/// How a try ended before anything reached the client.
enum Tried {
    Answered(Answered),
    /// No answer: connecting, sending or reading the header failed or ran out of time.
    NoAnswer {
        timed_out: bool,
    },
    /// The client closed its connection while the upstream was working.
    ClientGone,
}

/// How reading an answer's body ended.
enum Read {
    Piece(Bytes),
    End,
    Broken { timed_out: bool },
    ClientGone,
}

impl Gateway {
    /// Runs the plan in `ctx` until an answer (the upstream's, the mock's or an error) has been
    /// written to the client. Returns `Ok(())`, or an error once the answer's header has left
    /// and its body could not be finished (`fail_to_proxy` then closes the client's connection).
    pub(super) async fn exchange(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        loop {
            let snap = ctx.snapshot(&self.app);
            let Some(plan) = ctx.plan.as_ref() else {
                return Error::e_explain(ErrorType::InternalError, "no plan for a routed request");
            };
            let index = ctx.attempts.index;
            let attempt = plan.attempts[index].clone();
            let provider = &snap.providers[attempt.provider];
            ctx.served = Some(served_name(&provider.config.name, &attempt.model));
            if provider.config.kind == ProviderKind::Mock {
                ctx.attempts.answer_locally(index);
                ctx.error_code = None;
                // Boxed: the mock's future would otherwise size every request's exchange.
                Box::pin(local::answer_mock(session, ctx, &attempt)).await?;
                return Ok(());
            }
            ctx.attempts.begin();
            if ctx.attempt_body.is_none() {
                if let Err(e) = self.prepare_attempt(ctx) {
                    return Box::pin(self.answer_error(session, ctx, &e)).await;
                }
            }
            // A header that cannot be built (a provider key that is no valid header value) fails
            // this attempt like a refused connection: the plan falls back.
            let header = self.upstream_header(session, ctx).ok();
            let body = attempt_pieces(ctx);
            let first_byte = Duration::from_millis(provider.config.timeouts.first_byte_ms);
            let peer = peer_of(provider);
            ctx.attempt_started = Some(Instant::now());
            ctx.first_byte_at = None;
            let tried = match (peer.zip(header), self.hedge_plan(ctx)) {
                (None, _) => Tried::NoAnswer { timed_out: false },
                (Some((peer, header)), None) => {
                    tokio::select! {
                        t = self.send(peer, header, body, first_byte) => t,
                        () = client_gone(session) => Tried::ClientGone,
                    }
                }
                // Boxed: only hedging virtual models pay for the race's larger future.
                (Some((peer, header)), Some(hedge)) => {
                    Box::pin(self.hedged(session, ctx, (peer, header, body, first_byte), hedge))
                        .await
                }
            };
            let next = match tried {
                Tried::ClientGone => return self.client_left(session, ctx),
                Tried::NoAnswer { timed_out } => {
                    ctx.timed_out |= timed_out;
                    self.after_failure(ctx, Failure::Connection, None)
                }
                Tried::Answered(mut a) => {
                    let status = a.up.resp_header().map_or(502, |h| h.status.as_u16());
                    ctx.upstream_status = Some(status);
                    if let Some(h) = a.up.resp_header() {
                        self.observe_rate_limits(ctx, h, status);
                    }
                    if status < 400 {
                        self.record_success(ctx);
                        return self.deliver(session, ctx, a).await;
                    }
                    let retry_after =
                        a.up.get_header("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .map(str::trim);
                    if status == 429 {
                        ctx.retry_after = retry_after.map(str::to_string);
                    }
                    let secs = retry_after.and_then(|v| v.parse::<u64>().ok());
                    // Error bodies are small: read (bounded) to say what went wrong.
                    let idle = self.idle_bound(ctx);
                    let (body, ended) =
                        match Box::pin(read_error_body(session, &mut a.up, idle)).await {
                            ErrorBody::Read(b, ended) => (b, ended),
                            ErrorBody::ClientGone => return self.client_left(session, ctx),
                            ErrorBody::Broken { timed_out } => {
                                ctx.timed_out |= timed_out;
                                ctx.upstream_status = None;
                                let next = self.after_failure(ctx, Failure::Connection, None);
                                if Box::pin(self.carry_out(session, ctx, next))
                                    .await?
                                    .is_break()
                                {
                                    return Ok(());
                                }
                                continue;
                            }
                        };
                    let class = error_class::classify(status, &body).unwrap_or(ErrorClass::Server);
                    ctx.error_class = Some(class);
                    self.metrics
                        .record_error_class(ctx.served.as_deref().unwrap_or(""), class);
                    // Kept for the client in case the tries left get no answer (made here, in
                    // the context, so that nothing more is held across the awaits below).
                    ctx.kept_error = ended.then(|| {
                        Box::new(KeptError {
                            status,
                            body: ctx.shaper.as_ref().map_or_else(
                                || body.clone(),
                                |s| s.error_for_client(status, &body),
                            ),
                            index: ctx.attempts.index,
                            served: ctx.served.clone(),
                            class: Some(class),
                        })
                    });
                    a.held = Some((body, ended));
                    match self.after_failure(ctx, Failure::Status(status, class), secs) {
                        // The client gets the upstream's own answer.
                        Next::GiveUp => {
                            ctx.kept_error = None;
                            return self.deliver(session, ctx, a).await;
                        }
                        next => {
                            if ended {
                                // Read whole: the connection can serve the next request.
                                self.give_back(a.up, &a.peer).await;
                            }
                            next
                        }
                    }
                }
            };
            if Box::pin(self.carry_out(session, ctx, next))
                .await?
                .is_break()
            {
                return Ok(());
            }
        }
    }

    /// Carries out `next` after a failed try: waits before a retry, prepares a fallback, or
    /// answers the client. `Break` when the request is over (answered, or the client left).
    async fn carry_out(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        next: Next,
    ) -> Result<ControlFlow<()>> {
        match next {
            Next::Retry { delay_ms } => {
                if delay_ms > 0 {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                        () = client_gone(session) => {
                            return self.client_left(session, ctx).map(ControlFlow::Break)
                        }
                    }
                }
                Ok(ControlFlow::Continue(()))
            }
            Next::Fallback => {
                ctx.attempt_body = None;
                Ok(ControlFlow::Continue(()))
            }
            Next::GiveUp => Box::pin(self.give_up(session, ctx))
                .await
                .map(ControlFlow::Break),
        }
    }

    /// The hedge of the current try, when its virtual model hedges, this is the request's
    /// first try and the plan has a further attempt an extra request can go to.
    fn hedge_plan(&self, ctx: &Ctx) -> Option<(HedgePolicy, usize)> {
        let snap = ctx.snap.as_ref()?;
        let plan = ctx.plan.as_ref()?;
        let policy = *snap.table.models[plan.virtual_model?].hedge.as_deref()?;
        if ctx.attempts.made != 1 {
            return None;
        }
        let next = self.next_usable(ctx, ctx.attempts.index + 1, None)?;
        let provider = &snap.providers[plan.attempts[next].provider];
        (provider.config.kind != ProviderKind::Mock).then_some((policy, next))
    }

    /// Sends the current try and, when it has no answer header after `after_ms` and the
    /// budget has room, the same request to attempt `next`: the first header wins, the other
    /// try's future (and with it its connection, never returned to the pool) is dropped.
    async fn hedged(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        (peer, header, body, first_byte): (Box<HttpPeer>, Box<RequestHeader>, [Bytes; 3], Duration),
        (policy, next): (HedgePolicy, usize),
    ) -> Tried {
        let budget = self.hedge_budget(ctx.virtual_model.as_deref().unwrap_or(""));
        budget.request(now_ms());
        let first = self.send(peer, header, body, first_byte);
        tokio::pin!(first);
        tokio::select! {
            t = &mut first => return t,
            () = tokio::time::sleep(Duration::from_millis(policy.after_ms)) => {}
            () = client_gone(session) => return Tried::ClientGone,
        }
        let leg = if budget.try_extra(now_ms(), policy.budget_percent) {
            self.hedge_leg(session, ctx, next)
        } else {
            ctx.hedge = Some(HedgeOutcome::Denied);
            None
        };
        let Some(leg) = leg else {
            return tokio::select! {
                t = &mut first => t,
                () = client_gone(session) => Tried::ClientGone,
            };
        };
        ctx.attempts.begin_hedge(leg.index);
        let started = Instant::now();
        let pieces = super::pieces_with(ctx, leg.body.clone());
        let second = self.send(leg.peer, leg.header, pieces, leg.first_byte);
        tokio::pin!(second);
        let mut first_failed: Option<Tried> = None;
        let mut second_failed = false;
        loop {
            tokio::select! {
                t = &mut first, if first_failed.is_none() => {
                    if matches!(t, Tried::Answered(_)) || second_failed {
                        ctx.hedge = Some(HedgeOutcome::Lost);
                        return t;
                    }
                    first_failed = Some(t);
                }
                t = &mut second, if !second_failed => {
                    if matches!(t, Tried::Answered(_)) {
                        ctx.hedge = Some(HedgeOutcome::Won);
                        ctx.attempts.hedge_won(leg.index);
                        ctx.attempt_body = Some(leg.body);
                        ctx.shaper = leg.shaper;
                        ctx.served = Some(leg.served);
                        ctx.attempt_started = Some(started);
                        return t;
                    }
                    second_failed = true;
                    if let Some(f) = first_failed.take() {
                        ctx.hedge = Some(HedgeOutcome::Lost);
                        return f;
                    }
                }
                () = client_gone(session) => return Tried::ClientGone,
            }
        }
    }

    /// The extra request of a hedge to attempt `index`: its body, header, shaper and peer,
    /// built as that attempt's own would be, leaving the current attempt's untouched.
    fn hedge_leg(&self, session: &Session, ctx: &mut Ctx, index: usize) -> Option<Leg> {
        let snap = ctx.snapshot(&self.app);
        let attempt = ctx.plan.as_ref()?.attempts.get(index)?.clone();
        let provider = &snap.providers[attempt.provider];
        let current = ctx.attempts.index;
        let body = ctx.attempt_body.take();
        let shaper = ctx.shaper.take();
        ctx.attempts.index = index;
        let built = self
            .prepare_attempt(ctx)
            .ok()
            .and_then(|()| self.upstream_header(session, ctx).ok());
        ctx.attempts.index = current;
        let leg_body = std::mem::replace(&mut ctx.attempt_body, body);
        let leg_shaper = std::mem::replace(&mut ctx.shaper, shaper);
        Some(Leg {
            index,
            peer: peer_of(provider)?,
            header: built?,
            body: leg_body?,
            first_byte: Duration::from_millis(provider.config.timeouts.first_byte_ms),
            shaper: leg_shaper,
            served: served_name(&provider.config.name, &attempt.model),
        })
    }

    /// The hedge budget of a virtual model, created at its first hedged request.
    fn hedge_budget(&self, source: &str) -> std::sync::Arc<HedgeBudget> {
        let m = self.hedges.pin();
        if let Some(b) = m.get(source) {
            return b.clone();
        }
        m.get_or_insert_with(source.to_string(), Default::default)
            .clone()
    }

    /// Feeds an answer's rate-limit headers to its target's steering state.
    fn observe_rate_limits(&self, ctx: &mut Ctx, header: &ResponseHeader, status: u16) {
        let Some(reading) = rate_limit::read(&header.headers, crate::wall_clock::now_ms()) else {
            return;
        };
        let snap = ctx.snapshot(&self.app);
        let Some((vi, ti)) = ctx.plan.as_ref().and_then(|p| {
            p.virtual_model
                .zip(p.attempts.get(ctx.attempts.index).and_then(|a| a.target))
        }) else {
            return;
        };
        if let Some(h) = self.attempt_health(ctx, &snap.table.models[vi].targets[ti].name) {
            h.steer.observe(&reading, status, now_ms());
        }
    }

    /// Connects (a pooled connection when there is one), sends the request and reads the
    /// answer's header within `first_byte`. A pooled connection the upstream closed in the
    /// meantime is replaced without counting as a failed try.
    async fn send(
        &self,
        peer: Box<HttpPeer>,
        header: Box<RequestHeader>,
        body: [Bytes; 3],
        first_byte: Duration,
    ) -> Tried {
        // Each stale pooled connection is dropped in turn; a fresh one ends the loop.
        for _ in 0..8 {
            // A pooled connection is the common case; a new one (a much larger future, with
            // TLS) is boxed so that it does not size every request's exchange.
            // The session is boxed at once: held by value it would size this future by 1 KiB.
            let pooled = self.connector.reused_http_session(&*peer).await;
            let (mut up, reused) = match pooled {
                Some(up) => (Box::new(up), true),
                None => match Box::pin(self.connector.get_http_session(&*peer)).await {
                    Ok((up, reused)) => (Box::new(up), reused),
                    Err(e) => {
                        let timed_out = matches!(e.etype(), ErrorType::ConnectTimedout);
                        return Tried::NoAnswer { timed_out };
                    }
                },
            };
            up.write_timeout = Some(first_byte);
            let sent = async {
                up.write_request_header(header.clone()).await?;
                for piece in body.iter().filter(|b| !b.is_empty()) {
                    up.write_body(piece).await?;
                }
                up.finish_body().await?;
                match tokio::time::timeout(first_byte, up.read_response()).await {
                    Ok(r) => r.map(|_| ()),
                    Err(_) => Error::e_explain(ErrorType::ReadTimedout, "no answer in time"),
                }
            }
            .await;
            match sent {
                Ok(()) => {
                    return Tried::Answered(Answered {
                        up,
                        peer,
                        held: None,
                    })
                }
                Err(e) if reused && !matches!(e.etype(), ErrorType::ReadTimedout) => continue,
                Err(e) => {
                    let timed_out = matches!(
                        e.etype(),
                        ErrorType::ReadTimedout | ErrorType::WriteTimedout
                    );
                    return Tried::NoAnswer { timed_out };
                }
            }
        }
        Tried::NoAnswer { timed_out: false }
    }

    /// Writes the answer of the try `a` to the client: held and sent whole with its
    /// Content-Length when it is not a stream and fits `WHOLE_LIMIT`, else relayed piece by
    /// piece as it arrives.
    async fn deliver(&self, session: &mut Session, ctx: &mut Ctx, a: Answered) -> Result<()> {
        let Answered {
            mut up,
            peer,
            held: read,
        } = a;
        let Some(upstream_header) = up.resp_header() else {
            return Error::e_explain(ErrorType::InternalError, "answer without a header");
        };
        let status = upstream_header.status.as_u16();
        let mut header = Box::new(upstream_header.clone());
        let idle = self.idle_bound(ctx);
        if let Some(shaper) = ctx.shaper.as_mut() {
            shaper.on_status(status);
        }
        // An error answer is a whole JSON body whatever the request asked for. A whole answer
        // that must be translated is held however large: its JSON must be complete to be
        // rewritten, and judged before its status leaves.
        // Audio (speech) is relayed as it comes, like a stream.
        let whole = (!ctx.stream && !ctx.operation.binary_answer()) || status >= 400;
        let translated = ctx.shaper.as_ref().is_some_and(dialect::Shaper::rewrites);
        // So is a whole answer whose text a `redact` middleware rewrites.
        let redacting = !ctx.stream
            && !ctx.operation.binary_answer()
            && ctx.pipelines.as_ref().is_some_and(|p| p.redacts());
        let limit = if translated || redacting {
            usize::MAX
        } else {
            WHOLE_LIMIT
        };
        let mut held = BytesMut::new();
        let mut ended = false;
        if let Some((b, all)) = read {
            held.extend_from_slice(&b);
            ended = all;
        }
        // One timer bounds the quiet time between pieces for the whole answer.
        let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut quiet = Quiet::new(timer, idle);
        if whole && !ended {
            while held.len() <= limit {
                match read_piece(session, &mut up, &mut quiet).await {
                    Read::Piece(b) => {
                        ctx.first_byte_at.get_or_insert_with(Instant::now);
                        held.extend_from_slice(&b);
                    }
                    Read::End => {
                        ended = true;
                        break;
                    }
                    Read::Broken { timed_out } => {
                        // Nothing has reached the client yet: it gets a clean error.
                        ctx.timed_out |= timed_out;
                        return Box::pin(self.give_up(session, ctx)).await;
                    }
                    Read::ClientGone => return self.client_left(session, ctx),
                }
            }
        }
        if ended {
            let mut body = Some(held.freeze());
            let mut status = status;
            if let Some(shaper) = ctx.shaper.as_mut() {
                shaper.on_body(&mut body, true);
                ctx.usage = shaper.usage;
                if shaper.untranslatable() {
                    status = 502;
                    ctx.error_code = Some("upstream_invalid_answer");
                }
            }
            let mut body = body.unwrap_or_default();
            if status < 400 {
                if let Some(p) = ctx.pipelines.as_ref().filter(|p| p.redacts()) {
                    body = redact_whole(p, &body, ctx.operation);
                }
            }
            header.set_status(status)?;
            header.remove_header(&TRANSFER_ENCODING);
            header.insert_header(CONTENT_LENGTH, HeaderValue::from(body.len()))?;
            self.write_head(session, ctx, header).await?;
            ctx.status = Some(status);
            session.write_response_body(body, true).await?;
            self.record_timings(ctx);
            self.give_back(up, &peer).await;
            return Ok(());
        }
        // A stream, or an answer too large to hold: relay it.
        let rewrites = ctx.shaper.as_ref().is_some_and(dialect::Shaper::rewrites);
        if rewrites || header.headers.get(CONTENT_LENGTH).is_none() {
            header.remove_header(&CONTENT_LENGTH);
            header.insert_header(TRANSFER_ENCODING, "chunked")?;
        }
        ctx.status = Some(status);
        self.write_head(session, ctx, header).await?;
        let mut redactor = ctx
            .pipelines
            .as_ref()
            .filter(|_| ctx.stream && status < 400)
            .and_then(|p| p.stream_redactor(ctx.operation));
        let mut pending = (!held.is_empty()).then(|| held.freeze());
        // The stream's last event has reached the client: a client that leaves now has had
        // the whole answer (SDKs close once they read it, before the upstream ends its body).
        let mut delivered_end = false;
        loop {
            let (mut piece, end) = match pending.take() {
                Some(b) => (Some(b), false),
                None => match read_piece_noting_wait(session, &mut up, &mut quiet).await {
                    // A piece that came after a wait came alone, as a model's tokens do: asking
                    // for more would only find nothing (about 550 instructions an event).
                    (Read::Piece(b), Waited::Yes) => (Some(b), false),
                    // A piece that was already here is part of a burst: the rest of it that
                    // has arrived leaves with it, in one write (at most two writes a burst:
                    // the piece that ended the wait, then the rest).
                    (Read::Piece(b), Waited::No) => {
                        let (b, end) = with_ready_pieces(&mut up, b);
                        (Some(b), end)
                    }
                    (Read::End, _) => (None, true),
                    (Read::Broken { timed_out }, _) => {
                        ctx.error_code = Some(if timed_out {
                            "upstream_timeout"
                        } else {
                            "upstream_broken"
                        });
                        return Error::e_explain(
                            ErrorType::ReadError,
                            "the upstream answer broke off",
                        );
                    }
                    (Read::ClientGone, _) if delivered_end => {
                        return self.client_had_all(session, ctx)
                    }
                    (Read::ClientGone, _) => return self.client_left(session, ctx),
                },
            };
            if let Some(shaper) = ctx.shaper.as_mut() {
                shaper.on_body(&mut piece, end);
                if end {
                    ctx.usage = shaper.usage;
                }
            }
            if let Some(r) = redactor.as_mut() {
                let mut out = piece.as_deref().map(|b| r.push(b)).unwrap_or_default();
                if end {
                    out.extend(r.finish());
                }
                piece = Some(Bytes::from(out));
            }
            if let Some(b) = piece.as_ref().filter(|b| !b.is_empty()) {
                ctx.first_byte_at.get_or_insert_with(Instant::now);
                if ctx.stream {
                    ctx.stream_events += dialect::count_events(b);
                }
            }
            if end {
                let written = session
                    .write_response_body(piece.unwrap_or_default(), true)
                    .await;
                if written.is_err() && delivered_end {
                    return self.client_had_all(session, ctx);
                }
                written?;
                self.record_timings(ctx);
                self.give_back(up, &peer).await;
                return Ok(());
            }
            if let Some(b) = piece.filter(|b| !b.is_empty()) {
                let ends = ctx.stream && dialect::ends_stream(ctx.operation, &b);
                if session.write_response_body(b, false).await.is_err() {
                    return if delivered_end {
                        self.client_had_all(session, ctx)
                    } else {
                        self.client_left(session, ctx)
                    };
                }
                delivered_end |= ends;
            }
        }
    }

    /// The answer's header, with our tags, to the client.
    async fn write_head(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut header: Box<ResponseHeader>,
    ) -> Result<()> {
        let tags = ctx.tags_for(header.status.as_u16());
        respond::add_tags(&mut header, &tags)?;
        if let Some(p) = ctx.pipelines.as_ref() {
            p.apply_headers(&mut *header);
        }
        session.set_keepalive(Some(60));
        session.write_response_header(header).await
    }

    /// The upstream request's header for the current attempt: its path, host, the provider's
    /// auth and headers, the target's header rules and the body's length.
    fn upstream_header(&self, session: &Session, ctx: &mut Ctx) -> Result<Box<RequestHeader>> {
        let snap = ctx.snapshot(&self.app);
        let Some(plan) = ctx.plan.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no plan");
        };
        let attempt = &plan.attempts[ctx.attempts.index];
        let provider = &snap.providers[attempt.provider];
        let Some(base) = provider.config.base.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no base URL");
        };
        let target = plan
            .virtual_model
            .zip(attempt.target)
            .map(|(vi, ti)| &snap.table.models[vi].targets[ti]);
        let format = attempt_format(&snap, plan.virtual_model, attempt);
        let client = session.req_header();
        let query = client.uri.query();
        let uri = match (query, provider.upstream_uri(ctx.operation, format)) {
            (None, Some(uri)) => uri.clone(),
            _ => {
                let mut path = String::with_capacity(base.path.len() + 24);
                path.push_str(&base.path);
                path.push_str(crate::wire::path(ctx.operation, format));
                // The provider's own query (Azure's `api-version`), then the client's.
                let mut sep = '?';
                for q in [provider.config.query.as_deref(), query]
                    .into_iter()
                    .flatten()
                {
                    path.push(sep);
                    path.push_str(q);
                    sep = '&';
                }
                path.parse()
                    .map_err(|_| Error::explain(ErrorType::InternalError, "bad upstream path"))?
            }
        };
        // The header block is rebuilt as plain parts: one map, prebuilt names and values,
        // instead of `insert_header`'s name parsing and second (original-case) map. Client
        // headers keep their values; names go upstream in canonical case.
        let mut parts: http::request::Parts = client.clone().into();
        parts.uri = uri;
        parts.method = http::Method::POST;
        parts.version = http::Version::HTTP_11;
        let len = attempt_pieces(ctx).iter().map(Bytes::len).sum();
        upstream_headers::build(
            &mut parts.headers,
            provider,
            target,
            format,
            &snap.settings.user_path_header,
            len,
        )?;
        Ok(Box::new(RequestHeader::from(parts)))
    }

    /// The bound on the wait for each piece of an answer's body.
    fn idle_bound(&self, ctx: &mut Ctx) -> Duration {
        let snap = ctx.snapshot(&self.app);
        let ms = ctx.plan.as_ref().map_or(60_000, |p| {
            snap.providers[p.attempts[ctx.attempts.index].provider]
                .config
                .timeouts
                .idle_ms
        });
        Duration::from_millis(ms)
    }

    /// Every try failed, the last without an answer to pass on: the client gets the last
    /// upstream error answer when there was one, else the gateway's own error (classed
    /// `server` when nothing else classed the failure).
    async fn give_up(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if let Some(kept) = ctx.kept_error.take() {
            return self.answer_kept(session, ctx, *kept).await;
        }
        let e = self.gave_up(ctx);
        if e.status >= 500 {
            ctx.error_class.get_or_insert(ErrorClass::Server);
        }
        self.answer_error(session, ctx, &e).await
    }

    /// A kept upstream error answer, as the answer of the attempt that got it.
    async fn answer_kept(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        kept: KeptError,
    ) -> Result<()> {
        ctx.attempts.index = kept.index;
        ctx.served = kept.served;
        ctx.error_class = kept.class;
        ctx.status = Some(kept.status);
        ctx.error_code = Some("upstream_error");
        let mut header = ResponseHeader::build(kept.status, Some(4))?;
        header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        header.insert_header(CONTENT_LENGTH, HeaderValue::from(kept.body.len()))?;
        if kept.status == 429 {
            if let Some(v) = ctx.retry_after.as_deref() {
                header.insert_header(http::header::RETRY_AFTER, v)?;
            }
        }
        self.write_head(session, ctx, Box::new(header)).await?;
        session.write_response_body(kept.body, true).await
    }

    /// The gateway's own error when no attempt produced an answer to pass on.
    fn gave_up(&self, ctx: &Ctx) -> ApiError {
        match ctx.upstream_status {
            Some(s) if s >= 400 => {
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
            _ if ctx.timed_out => ApiError::new(
                504,
                "upstream_error",
                "upstream_timeout",
                "the upstream did not answer in time",
            ),
            _ => ApiError::new(
                502,
                "upstream_error",
                "upstream_unavailable",
                "no upstream could be reached for this model",
            ),
        }
    }

    /// Writes `e` as the request's answer, with the attempt tags.
    /// Gives a connection whose answer was read whole back to the pool. Boxed where awaited:
    /// the pool's future (about 2 KiB) runs once, at an answer's end, and in line it would size
    /// the future every open stream holds.
    async fn give_back(&self, up: Box<Upstream>, peer: &HttpPeer) {
        Box::pin(
            self.connector
                .release_http_session(*up, peer, Some(POOL_IDLE)),
        )
        .await;
    }

    async fn answer_error(&self, session: &mut Session, ctx: &mut Ctx, e: &ApiError) -> Result<()> {
        ctx.status = Some(e.status);
        ctx.error_code = Some(e.code);
        let tags = ctx.tags_for(e.status);
        respond::write_error(session, e, ctx.anthropic_dialect(), &tags).await?;
        Ok(())
    }

    /// The client left after the stream's last event, before the upstream ended its body: the
    /// request is complete, with the usage counted so far.
    fn client_had_all(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if let Some(shaper) = ctx.shaper.as_ref() {
            ctx.usage = shaper.usage_so_far();
        }
        self.record_timings(ctx);
        session.set_keepalive(None);
        Ok(())
    }

    /// The client went away: nobody to answer. Logged and counted as nginx's 499, not as an
    /// upstream failure (no retry, no breaker failure).
    fn client_left(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.status = Some(499);
        ctx.error_code = Some("client_closed_request");
        session.set_keepalive(None);
        Ok(())
    }
}

/// A whole answer with the `redact` middlewares applied to its text; unchanged when it is not
/// JSON (nothing to find the text in).
fn redact_whole(p: &crate::middleware::Pipelines, body: &Bytes, op: Operation) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut v) => {
            p.redact_body(&mut v, op);
            serde_json::to_vec(&v).map_or_else(|_| body.clone(), Bytes::from)
        }
        Err(_) => body.clone(),
    }
}

/// The upstream peer of a provider with a resolved address and a base URL.
fn peer_of(provider: &crate::snapshot::ProviderRuntime) -> Option<Box<HttpPeer>> {
    let t = provider.config.timeouts;
    match (provider.addr(), provider.config.base.as_ref()) {
        (Some(addr), Some(base)) => {
            let mut peer = HttpPeer::new(addr, base.tls, base.host.clone());
            peer.options.connection_timeout = Some(Duration::from_millis(t.connect_ms));
            peer.options.idle_timeout = Some(POOL_IDLE);
            Some(Box::new(peer))
        }
        _ => None,
    }
}

/// A failed answer's body, up to `error_class::BODY_LIMIT`.
async fn read_error_body(session: &mut Session, up: &mut Upstream, idle: Duration) -> ErrorBody {
    let mut held = BytesMut::new();
    let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut quiet = Quiet::new(timer, idle);
    while held.len() <= error_class::BODY_LIMIT {
        match read_piece(session, up, &mut quiet).await {
            Read::Piece(b) => held.extend_from_slice(&b),
            Read::End => return ErrorBody::Read(held.freeze(), true),
            Read::Broken { timed_out } => return ErrorBody::Broken { timed_out },
            Read::ClientGone => return ErrorBody::ClientGone,
        }
    }
    ErrorBody::Read(held.freeze(), false)
}

/// Whether a read had to wait: nothing was there when it was first asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waited {
    Yes,
    No,
}

/// `read_piece`, and whether it had to wait.
async fn read_piece_noting_wait(
    session: &mut Session,
    up: &mut Upstream,
    quiet: &mut Quiet<'_>,
) -> (Read, Waited) {
    let mut waited = Waited::No;
    let mut read = std::pin::pin!(read_piece(session, up, quiet));
    let r = std::future::poll_fn(|cx| {
        let p = std::future::Future::poll(read.as_mut(), cx);
        if p.is_pending() {
            waited = Waited::Yes;
        }
        p
    })
    .await;
    (r, waited)
}

/// The next piece of an answer's body, within the quiet-time bound, unless the client leaves
/// first.
async fn read_piece(session: &mut Session, up: &mut Upstream, quiet: &mut Quiet<'_>) -> Read {
    // In this order, without drawing a random one first: a piece that is here goes out before
    // the bound or the client's side is looked at.
    tokio::select! {
        biased;
        r = up.read_body_bytes() => match r {
            Ok(Some(b)) => {
                quiet.heard();
                Read::Piece(b)
            }
            Ok(None) => Read::End,
            Err(_) => Read::Broken { timed_out: false },
        },
        () = quiet.over() => Read::Broken { timed_out: true },
        () = client_gone(session) => Read::ClientGone,
    }
}

/// `first` joined with every piece of the answer that is already here (read without waiting),
/// and whether the answer ended with them.
fn with_ready_pieces(up: &mut Upstream, first: Bytes) -> (Bytes, bool) {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    let mut joined: Option<BytesMut> = None;
    let mut end = false;
    loop {
        // One poll: a piece already buffered or on the socket comes back now; otherwise
        // nothing was consumed and the read is dropped.
        let next = std::pin::pin!(up.read_body_bytes()).poll(&mut cx);
        match next {
            Poll::Ready(Ok(Some(more))) => joined
                .get_or_insert_with(|| BytesMut::from(&first[..]))
                .extend_from_slice(&more),
            Poll::Ready(Ok(None)) => {
                end = true;
                break;
            }
            // A broken read shows again on the next wait, where it is handled.
            Poll::Ready(Err(_)) | Poll::Pending => break,
        }
    }
    (joined.map_or(first, BytesMut::freeze), end)
}

/// Completes when the client closes its connection (its request body was read whole before).
async fn client_gone(session: &mut Session) {
    if session.read_body_or_idle(true).await.is_err() {
        return;
    }
    // Bytes of a next, pipelined request: not a close. Keep waiting on the other branch.
    std::future::pending::<()>().await
}
