//! Where the request path meets a virtual model's middleware pipelines (`crate::middleware`):
//! the request phase before routing, the response phase on what the client receives, the
//! post-response phase once the last byte left.
//!
//! A request naming no virtual model with middleware pays one branch: nothing is parsed. With
//! request middleware the body is read once and written once per request, never per attempt,
//! and only the fields a step edits are parsed (`middleware::Body`).

use std::sync::Arc;

use super::Session;

use super::body;
use super::ctx::Ctx;
use super::headers::Names;
use super::respond::ApiError;
use crate::middleware::{Body, Pipelines, Record, RequestFacts, Usage};
use crate::routing::model::Operation;
use crate::routing::user_path::list_admits;
use crate::snapshot::Snapshot;

/// The pipelines of the virtual model a request names, when it has any and applies to the
/// caller (a redirect whose `user_paths` do not cover the caller is ignored, and so is its
/// middleware).
fn named(snap: &Snapshot, model: &str, ctx: &Ctx) -> Option<(usize, Arc<Pipelines>)> {
    let vi = snap.table.redirect(model.trim())?;
    let vm = &snap.table.models[vi];
    let covered = vm
        .user_paths
        .as_deref()
        .is_none_or(|l| l.is_empty() || list_admits(l, ctx.user_path.as_ref()));
    if !covered {
        return None;
    }
    Some((vi, snap.pipelines.get(vi)?.clone()?))
}

/// Runs the request phase of the named virtual model over `raw`, and keeps that virtual model's
/// pipelines in `ctx` for the later phases. Returns the body to route (the same bytes when
/// nothing ran), or the error to answer (a `guard` block: 400 `request_blocked`).
pub fn request_phase(
    session: &Session,
    snap: &Snapshot,
    ctx: &mut Ctx,
    op: Operation,
    raw: Vec<u8>,
) -> Result<Vec<u8>, ApiError> {
    if !snap.any_pipelines {
        return Ok(raw);
    }
    // One walk of the body finds the model (for the planner too) and serves the steps.
    let mut value = match Body::parse_or_return(raw) {
        Ok(b) => b,
        // Malformed bodies are refused by the planner's own peek, with its messages; one it
        // accepts that the steps cannot read is refused here.
        Err((e, raw)) => {
            return match body::peek(&raw) {
                Err(_) => Ok(raw),
                Ok(_) => Err(ApiError::invalid_request(
                    "invalid_json",
                    format!("request body is not valid JSON: {e}"),
                )),
            }
        }
    };
    let peek = if value.has_duplicate_keys() {
        // The planner's rules for repeated keys are `peek`'s own.
        body::peek(value.raw()).ok()
    } else {
        peek_of(&value, value.span_of("model"), value.raw())
    };
    let Some(peek) = peek else {
        return Ok(value.into_raw());
    };
    let named = named(snap, &peek.model, ctx);
    let named_vi = named.as_ref().map(|(vi, _)| *vi);
    let named = named.map(|(_, p)| p);
    if let Some(p) = &named {
        ctx.pipelines = Some(p.clone());
    }
    // GoModel's guardrails first (a gateway-wide policy), then the virtual model's own steps.
    let guardrails = snap.guardrails.as_ref().filter(|_| chat_shaped(op));
    let own = named.as_ref().filter(|p| p.has_request());
    if guardrails.is_none() && own.is_none() {
        // The body is unchanged: the planner takes this peek rather than making another.
        ctx.peek = Some(peek);
        return Ok(value.into_raw());
    }
    let metadata = metadata_bytes(session, ctx.header_names);
    let facts = RequestFacts {
        operation: op,
        metadata: metadata.as_deref(),
    };
    for p in [guardrails, own].into_iter().flatten() {
        if let Err(b) = p.run_request(&mut value, &facts) {
            let mut e = ApiError::invalid_request("request_blocked", b.message);
            e.param = Some(format!("request_middleware[{}]", b.index));
            return Err(e);
        }
    }
    // The planner takes the peek of the bytes written, read off the fields as the steps left
    // them, rather than scanning the whole body again; where it cannot (a step removed the
    // model) the planner peeks and answers with its own message.
    let (bytes, model_span) = value.to_vec_with_span("model");
    ctx.peek = peek_of(&value, model_span, &bytes);
    // Steps of a virtual model that chose another model: the virtual model applied, and stays
    // the answer's `X-Modelgate-Virtual-Model` when the chosen model is a concrete one (another
    // virtual model replaces it when it routes).
    let rerouted = ctx.peek.as_ref().is_some_and(|p| p.model != peek.model);
    if let (Some(vi), true) = (named_vi, rerouted) {
        ctx.virtual_model = Some(smol_str::SmolStr::new(&snap.table.models[vi].source));
    }
    Ok(bytes)
}

/// The planner's peek of `bytes`, the body `value` is or wrote, read off its fields; the model
/// lies at `model_span` in `bytes`. `None` (no model, or one that is not a string) leaves the
/// answer to the planner's own peek, with its messages.
fn peek_of(value: &Body, model_span: Option<(usize, usize)>, bytes: &[u8]) -> Option<body::Peek> {
    let read = |key| value.get(key).map(|v| v.value().into_owned());
    body::peek_written(bytes, model_span?, read("stream"), read("provider")).ok()
}

/// The operations with a conversation (and a system prompt) to act on.
fn chat_shaped(op: Operation) -> bool {
    match op {
        Operation::Chat | Operation::Responses | Operation::Messages => true,
        Operation::Completion
        | Operation::Embedding
        | Operation::CountTokens
        | Operation::Transcription
        | Operation::Translation
        | Operation::Speech
        | Operation::Rerank
        | Operation::Moderation
        | Operation::ImageGeneration => false,
    }
}

fn metadata_bytes(session: &Session, names: Names) -> Option<Vec<u8>> {
    names
        .find(&session.req_header().headers, "x-modelgate-metadata")
        .map(|v| v.as_bytes().to_vec())
}

/// The pipelines of the virtual model the plan resolved, when the client named none with
/// middleware (those were kept by `request_phase`).
pub fn after_plan(snap: &Snapshot, ctx: &mut Ctx, vi: Option<usize>) {
    if ctx.pipelines.is_none() {
        ctx.pipelines = vi.and_then(|vi| snap.pipelines.get(vi).cloned().flatten());
    }
}

/// The post-response phase: one record of the finished request to every `webhook` and `log`.
pub fn post_phase(ctx: &Ctx, duration_ms: u64, ttft_ms: Option<u64>, cost_usd: Option<f64>) {
    let Some(p) = ctx.pipelines.as_ref().filter(|p| p.has_post()) else {
        return;
    };
    let record = Record {
        request_id: ctx.request_id.clone(),
        virtual_model: ctx.virtual_model.as_deref().unwrap_or("").to_string(),
        served_model: ctx.served.as_deref().map(str::to_string),
        user_path: ctx.user_path.as_ref().map(|u| u.as_str().to_string()),
        status: ctx.status.unwrap_or(0),
        attempts: ctx.attempts.made,
        duration_ms,
        ttft_ms,
        usage: Usage {
            prompt_tokens: ctx.usage.map(|u| u.0),
            completion_tokens: ctx.usage.map(|u| u.1),
        },
        cost_usd,
    };
    p.run_post(&record);
}
