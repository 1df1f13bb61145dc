//! Answers the gateway gives itself: liveness, readiness and metrics, the mock provider's
//! answers, and the one on-demand catalog refresh for a model no catalog lists yet.

use std::sync::Arc;
use std::time::Duration;

use super::Session;
use bytes::Bytes;
use pingora::{Error, Result};
use serde_json::{json, Value};

use super::ctx::Ctx;
use super::respond::{self, ApiError, Tags};
use super::route::Route;
use super::{mock, Gateway};
use crate::app::App;
use crate::catalog::discovery;
use crate::config::providers::ProviderKind;
use crate::routing::model::Operation;
use crate::routing::plan::Attempt;
use crate::snapshot::Snapshot;

/// Routes open to everyone: liveness and readiness.
pub async fn public_route(gw: &Gateway, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let snap = ctx.snapshot(&gw.app);
    let tags = Tags {
        request_id: &ctx.request_id,
        ..Tags::default()
    };
    match ctx.route {
        Route::Health => {
            respond::write_json(session, 200, &json!({"status": "ok"}), &tags).await?;
            ctx.status = Some(200);
            Ok(())
        }
        Route::Metrics => {
            let body = gw.render_metrics();
            respond::write(
                session,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::from(body),
                &tags,
                &[],
            )
            .await?;
            ctx.status = Some(200);
            Ok(())
        }
        Route::Ready => {
            let body = json!({"status": "ready", "virtual_models": snap.table.models.len(),
                              "providers": snap.providers.len()});
            respond::write_json(session, 200, &body, &tags).await?;
            ctx.status = Some(200);
            Ok(())
        }
        Route::Admin
        | Route::Models
        | Route::Model(_)
        | Route::Api(_)
        | Route::ApiWrongMethod(_)
        | Route::Unknown { .. } => {
            Error::e_explain(pingora::ErrorType::InternalError, "not a public route")
        }
    }
}

/// Refreshes the catalog of the provider(s) a missing model could belong to, at most once a
/// minute per provider, waiting for them at most `model_refresh_wait_ms`. True when a refresh
/// was started.
pub async fn refresh_for(
    app: &Arc<App>,
    snap: &Snapshot,
    model: &str,
    provider: Option<&str>,
    now: u64,
) -> bool {
    let model = model.trim();
    let named = provider
        .or_else(|| model.split_once('/').map(|(p, _)| p))
        .and_then(|p| snap.table.provider(p));
    let candidates: Vec<usize> = match named {
        Some(p) => vec![p],
        None => (0..snap.providers.len()).collect(),
    };
    let mut tasks = Vec::new();
    for pi in candidates {
        let p = &snap.providers[pi];
        if p.config.kind == ProviderKind::Mock || !p.config.usable() {
            continue;
        }
        if p.state.claim_on_demand(model, now) {
            /// Ends the claim however the refresh ends.
            struct Running(Arc<crate::catalog::ProviderState>);
            impl Drop for Running {
                fn drop(&mut self) {
                    self.0.on_demand_done();
                }
            }
            let (config, state) = (p.config.clone(), p.state.clone());
            tasks.push(tokio::spawn(async move {
                let _running = Running(state.clone());
                discovery::refresh(config, state).await;
            }));
        }
    }
    let _ = app;
    if tasks.is_empty() {
        return false;
    }
    // One bound for all of them: past it the request is answered from what is known (the
    // refreshes run on, in their own tasks, for the requests that follow).
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(snap.settings.model_refresh_wait_ms);
    for t in tasks {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    true
}

/// Answers a request whose attempt is the built-in mock provider.
pub async fn answer_mock(session: &mut Session, ctx: &mut Ctx, a: &Attempt) -> Result<()> {
    let created = discovery::now_ms() / 1000;
    if let Some(answer) = mock_operation(session, ctx, a, created) {
        return Box::pin(write_mock_operation(session, ctx, answer)).await;
    }
    let req: Value = serde_json::from_slice(&ctx.body).unwrap_or(Value::Null);
    let id = ctx.request_id.clone();
    let served = ctx.served.clone();
    let pipelines_held = ctx.pipelines.clone();
    let pipelines = pipelines_held.as_deref();
    let rate = ctx.rate;
    let tags = Tags {
        request_id: &id,
        model: served.as_deref(),
        virtual_model: ctx.virtual_model.as_deref(),
        attempts: Some(ctx.attempts.made.max(1)),
        prebuilt: (None, None),
        error_class: None,
        rate: rate.as_ref(),
    };
    ctx.status = Some(200);
    let anthropic = matches!(ctx.operation, Operation::Messages | Operation::CountTokens);
    let req = if anthropic {
        // The mock speaks OpenAI: carry an Anthropic request over and the answer back.
        match req
            .as_object()
            .map(crate::translate::anthropic_to_openai_chat)
        {
            Some(Ok(m)) => Value::Object(m),
            Some(Err(e)) => {
                let err = ApiError::invalid_request("invalid_request", e.to_string());
                ctx.status = Some(400);
                return respond::write_error(session, &err, true, &tags).await;
            }
            None => req,
        }
    } else {
        req
    };
    // The Anthropic translation reads usage from the stream; an OpenAI client gets the usage
    // chunk only when it asked for one, as from OpenAI.
    let include_usage = anthropic
        || req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let streamed = ctx
        .stream
        .then(|| mock::stream(ctx.operation, &a.model, &req, &id, created, include_usage))
        .flatten();
    if let Some(s) = streamed {
        ctx.usage = Some(s.usage);
        let mut body = s.body;
        if anthropic {
            let mut t = crate::translate::OpenAiToAnthropicStream::new(&a.model, &id);
            let mut out = t.push(&body);
            out.extend(t.finish());
            body = out;
        }
        if let Some(mut r) = pipelines.and_then(|p| p.stream_redactor(ctx.operation)) {
            let mut out = r.push(&body);
            out.extend(r.finish());
            body = out;
        }
        return respond::write_edited(
            session,
            200,
            "text/event-stream",
            Bytes::from(body),
            &tags,
            &[("cache-control", "no-cache".into())],
            |h| {
                if let Some(p) = pipelines {
                    p.apply_headers(h);
                }
            },
        )
        .await;
    }
    let mut body = mock::respond(ctx.operation, &a.model, &req, &id, created);
    ctx.usage = super::dialect::usage_of(&body);
    // A token count is the same `{"input_tokens": N}` in both dialects.
    if anthropic && ctx.operation == Operation::Messages {
        body = crate::translate::openai_response_to_anthropic(&body).unwrap_or(body);
    }
    if let Some(p) = pipelines.filter(|p| p.redacts()) {
        p.redact_body(&mut body, ctx.operation);
    }
    respond::write_edited(
        session,
        200,
        "application/json",
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        &tags,
        &[],
        |h| {
            if let Some(p) = pipelines {
                p.apply_headers(h);
            }
        },
    )
    .await
}

/// The mock's answer to an operation beyond chat (audio, rerank, moderation, images), or
/// `None` for the chat family.
fn mock_operation(
    session: &Session,
    ctx: &Ctx,
    a: &Attempt,
    created: u64,
) -> Option<super::mock_ops::Answer> {
    let body: &[u8] = ctx.upload.as_deref().unwrap_or(&ctx.body);
    let content_type = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    super::mock_ops::answer(
        ctx.operation,
        &a.model,
        body,
        content_type,
        &ctx.request_id,
        created,
    )
}

async fn write_mock_operation(
    session: &mut Session,
    ctx: &mut Ctx,
    answer: super::mock_ops::Answer,
) -> Result<()> {
    ctx.status = Some(200);
    ctx.usage = answer.usage;
    ctx.audio.seconds = answer.audio.seconds.or(ctx.audio.seconds);
    let pipelines = ctx.pipelines.clone();
    let tags = Tags {
        request_id: &ctx.request_id,
        model: ctx.served.as_deref(),
        virtual_model: ctx.virtual_model.as_deref(),
        attempts: Some(ctx.attempts.made.max(1)),
        prebuilt: (None, None),
        error_class: None,
        rate: ctx.rate.as_ref(),
    };
    respond::write_edited(
        session,
        200,
        answer.content_type,
        Bytes::from(answer.body),
        &tags,
        &[],
        |h| {
            if let Some(p) = pipelines.as_deref() {
                p.apply_headers(h);
            }
        },
    )
    .await
}
