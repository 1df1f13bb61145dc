//! Requests answered by the gateway itself (health, model listing, mock provider), and the
//! small header readers the phases share: request id, auth, user path, metadata, session key.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::proxy::Session;
use pingora::Result;
use serde_json::{json, Value};

use super::ctx::Ctx;
use super::headers::Names;
use super::respond::{self, ApiError, Tags};
use super::{mock, Gateway};
use crate::app::App;
use crate::catalog::discovery;
use crate::config::providers::ProviderKind;
use crate::config::settings::{Settings, DEFAULT_USER_PATH_HEADER};
use crate::routing::model::{Kind, Operation};
use crate::routing::plan::{self, Attempt};
use crate::routing::table::Access;
use crate::routing::user_path::{list_admits, UserPath};
use crate::snapshot::{Snapshot, View};

/// Echoes a sane client `X-Request-Id`, else makes one.
pub fn request_id(session: &Session, names: Names) -> String {
    if let Some(v) = names
        .find(&session.req_header().headers, "x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) {
            return v.to_string();
        }
    }
    let mut id = String::with_capacity(27);
    id.push_str("mg-");
    push_hex(&mut id, fastrand::u64(..), 16);
    push_hex(&mut id, u64::from(fastrand::u32(..)), 8);
    id
}

/// Appends the low `digits` hex digits of `v`, zero-padded, lower case.
fn push_hex(out: &mut String, v: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [b'0'; 16];
    let digits = digits.min(16) as usize;
    for (k, slot) in buf[..digits].iter_mut().enumerate() {
        *slot = HEX[((v >> (4 * (digits - 1 - k))) & 0xf) as usize];
    }
    // Hex digits are ASCII: the conversion cannot fail.
    out.push_str(std::str::from_utf8(&buf[..digits]).unwrap_or_default());
}

/// Routes open to everyone: liveness and readiness.
pub async fn public_route(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    method: &http::Method,
    path: &str,
) -> Result<Option<bool>> {
    if method != http::Method::GET && method != http::Method::HEAD {
        return Ok(None);
    }
    let snap = ctx.snapshot(&gw.app);
    let tags = Tags {
        request_id: &ctx.request_id,
        ..Tags::default()
    };
    match path {
        "/health" => {
            respond::write_json(session, 200, &json!({"status": "ok"}), &tags).await?;
            ctx.status = Some(200);
            Ok(Some(true))
        }
        "/metrics" => {
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
            Ok(Some(true))
        }
        "/health/ready" => {
            let body = json!({"status": "ready", "virtual_models": snap.table.models.len(),
                              "providers": snap.providers.len()});
            respond::write_json(session, 200, &body, &tags).await?;
            ctx.status = Some(200);
            Ok(Some(true))
        }
        _ => Ok(None),
    }
}

/// Routes that need the caller to be authenticated: the model listing.
pub async fn authed_route(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    method: &http::Method,
    path: &str,
) -> Result<Option<bool>> {
    if method != http::Method::GET {
        return Ok(None);
    }
    if path.trim_end_matches('/') == "/v1/models" || path.trim_end_matches('/') == "/models" {
        let snap = ctx.snapshot(&gw.app);
        let body = list_models(&snap, &gw.app, ctx.user_path.as_ref());
        ctx.status = Some(200);
        let tags = Tags {
            request_id: &ctx.request_id,
            ..Tags::default()
        };
        respond::write_json(session, 200, &body, &tags).await?;
        return Ok(Some(true));
    }
    if let Some(id) = path
        .strip_prefix("/v1/models/")
        .or_else(|| path.strip_prefix("/models/"))
    {
        // Ids hold a slash (`provider/model`), sent as is or encoded as %2F.
        let id = percent_encoding::percent_decode_str(id).decode_utf8_lossy();
        let snap = ctx.snapshot(&gw.app);
        let entry = find_model(&snap, &gw.app, ctx.user_path.as_ref(), id.trim());
        let tags = Tags {
            request_id: &ctx.request_id,
            ..Tags::default()
        };
        match entry {
            Some(m) => {
                ctx.status = Some(200);
                respond::write_json(session, 200, &m, &tags).await?;
            }
            None => {
                let e = ApiError::new(
                    404,
                    "invalid_request_error",
                    "model_not_found",
                    format!("unsupported model: {}", id.trim()),
                );
                ctx.status = Some(404);
                respond::write_error(session, &e, false, &tags).await?;
            }
        }
        return Ok(Some(true));
    }
    Ok(None)
}

/// One entry of the caller's model list (`GET /v1/models/{id}`), under the same rules.
fn find_model(snap: &Snapshot, app: &App, caller: Option<&UserPath>, id: &str) -> Option<Value> {
    let mut list = list_models(snap, app, caller);
    let data = list.get_mut("data")?.as_array_mut()?;
    let at = data.iter().position(|m| m["id"] == id)?;
    Some(data.swap_remove(at))
}

/// The OpenAI model list a caller may use: concrete models and enabled redirects.
pub fn list_models(snap: &Snapshot, app: &App, caller: Option<&UserPath>) -> Value {
    let mut data = Vec::new();
    let created = snap.loaded_at_ms / 1000;
    if !snap.settings.keep_only_aliases {
        for (pi, p) in snap.providers.iter().enumerate() {
            if !p.config.usable() {
                continue;
            }
            for m in snap.models_of(pi) {
                if snap.table.access(&p.config.name, &m, caller) != Access::Allowed {
                    continue;
                }
                data.push(
                    json!({"id": format!("{}/{m}", p.config.name), "object": "model",
                                 "created": created, "owned_by": p.config.name}),
                );
            }
        }
    }
    // Where each concrete id is listed, for the redirects that shadow one.
    let concrete: std::collections::HashMap<String, usize> = data
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((e["id"].as_str()?.to_string(), i)))
        .collect();
    let view = View {
        snap,
        health: Some(&app.health),
        now_ms: crate::mono_clock::now_ms(),
        claims_probes: false,
    };
    for (vi, vm) in snap.table.models.iter().enumerate() {
        if vm.kind != Kind::Redirect || !vm.enabled {
            continue;
        }
        if !vm
            .user_paths
            .as_ref()
            .is_none_or(|l| list_admits(l, caller))
        {
            continue;
        }
        let req = plan::Request {
            model: &vm.source,
            provider: None,
            user_path: caller,
            operation: vm
                .model_types
                .as_ref()
                .and_then(|t| t.first().copied())
                .unwrap_or(Operation::Chat),
            metadata: None,
            session_key: None,
        };
        let first = plan::eligibility(&snap.table, vi, &req, &view)
            .into_iter()
            .enumerate()
            .find(|(_, (_, r))| r.is_ok())
            .map(|(ti, (p, _))| (ti, p));
        let Some((ti, provider)) = first else {
            continue;
        };
        let owner = provider.map_or("", |p| snap.providers[p].config.name.as_str());
        let mut entry = json!({"id": vm.source, "object": "model", "created": created,
                               "owned_by": owner, "target": vm.targets[ti].name});
        if let Some(d) = &vm.description {
            entry["description"] = json!(d);
        }
        // A redirect that shadows a concrete model takes that model's entry: one id, listed
        // with what a request for it is served by.
        match concrete.get(vm.source.as_str()) {
            Some(&at) => data[at] = entry,
            None => data.push(entry),
        }
    }
    json!({"object": "list", "data": data})
}

/// Checks the master key (`Authorization: Bearer`, or `x-api-key` on `/v1/messages`).
pub fn authenticate(
    session: &Session,
    settings: &Settings,
    path: &str,
    names: Names,
) -> Result<(), ApiError> {
    let Some(master) = settings.master_key.as_deref() else {
        return Ok(());
    };
    let h = &session.req_header().headers;
    let bearer = names
        .find(h, "authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or(v.strip_prefix("bearer ")))
        .map(str::trim);
    let api_key = if super::ctx::anthropic_path(path) {
        names
            .find(h, "x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    } else {
        None
    };
    let given = bearer.or(api_key);
    match given {
        Some(k) if constant_time_eq::constant_time_eq(k.as_bytes(), master.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            401,
            "authentication_error",
            "invalid_api_key",
            "invalid API key",
        )),
        None => Err(ApiError::new(
            401,
            "authentication_error",
            "missing_api_key",
            "missing API key: send Authorization: Bearer <key>",
        )),
    }
}

/// The caller's user path from the configured header (or `X-GoModel-User-Path`).
pub fn user_path(
    session: &Session,
    settings: &Settings,
    names: Names,
) -> Result<Option<UserPath>, ApiError> {
    let h = &session.req_header().headers;
    // The default name also accepts GoModel's spelling. A configured name is the only one
    // read: the proxy in front that sets it strips that header from its clients, not ours.
    let default = settings.user_path_header == DEFAULT_USER_PATH_HEADER;
    let raw = names.find(h, &settings.user_path_header).or_else(|| {
        default
            .then(|| names.find(h, "x-gomodel-user-path"))
            .flatten()
    });
    let Some(raw) = raw else {
        return Ok(None);
    };
    let s = raw.to_str().map_err(|_| {
        ApiError::invalid_request("invalid_user_path", "user path header is not valid text")
    })?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    UserPath::parse(s)
        .map(Some)
        .map_err(|e| ApiError::invalid_request("invalid_user_path", e.to_string()))
}

/// Request metadata from the `X-Modelgate-Metadata` JSON header, for `metadata_match`.
pub fn metadata_header(
    session: &Session,
    names: Names,
) -> Result<Option<serde_json::Map<String, Value>>, ApiError> {
    let Some(v) = names.find(&session.req_header().headers, "x-modelgate-metadata") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid_request(
            "invalid_metadata",
            "X-Modelgate-Metadata must be a JSON object",
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        _ => Err(bad()),
    }
}

/// The session key for affinity: the first session header present, scoped by the caller's
/// (normalized) user path, so that `/team/x` and `team/x/` are one caller. None when the model
/// is no virtual model that uses pins.
pub fn session_key(
    session: &Session,
    snap: &Snapshot,
    model: &str,
    caller: Option<&UserPath>,
    names: Names,
) -> Option<String> {
    let vi = snap.table.redirect(model.trim())?;
    let vm = &snap.table.models[vi];
    if !vm.uses_affinity() {
        return None;
    }
    let h = &session.req_header().headers;
    let value = vm
        .session
        .headers
        .iter()
        .find_map(|name| names.find(h, name).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty())?;
    Some(format!("{}\u{0}{value}", caller.map_or("", |p| p.as_str())))
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
        if p.state.claim_on_demand(now, 60_000) {
            tasks.push(tokio::spawn(discovery::refresh(
                p.config.clone(),
                p.state.clone(),
            )));
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
    let req: Value = serde_json::from_slice(&ctx.body).unwrap_or(Value::Null);
    let created = discovery::now_ms() / 1000;
    let id = ctx.request_id.clone();
    let served = ctx.served.clone();
    let tags = Tags {
        request_id: &id,
        model: served.as_deref(),
        virtual_model: ctx.virtual_model.as_deref(),
        attempts: Some(ctx.attempts_made.max(1)),
        prebuilt: (None, None),
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
        return respond::write(
            session,
            200,
            "text/event-stream",
            Bytes::from(body),
            &tags,
            &[("cache-control", "no-cache".into())],
        )
        .await;
    }
    let mut body = mock::respond(ctx.operation, &a.model, &req, &id, created);
    ctx.usage = super::dialect::usage_of(&body);
    // A token count is the same `{"input_tokens": N}` in both dialects.
    if anthropic && ctx.operation == Operation::Messages {
        body = crate::translate::openai_response_to_anthropic(&body).unwrap_or(body);
    }
    respond::write_json(session, 200, &body, &tags).await
}

/// One access-log line per request: never keys or bodies.
pub fn access_log(settings: &Settings, ctx: &Ctx, elapsed: Duration) {
    let requested = ctx.peek.as_ref().map(|p| p.model.as_str()).unwrap_or("");
    let up = ctx.user_path.as_ref().map_or("", |p| p.as_str());
    let status = ctx.status.unwrap_or(0);
    let ms = elapsed.as_secs_f64() * 1000.0;
    if settings.log_json {
        /// Field order is the line's key order.
        #[derive(serde::Serialize)]
        struct Line<'a> {
            request_id: &'a str,
            path: &'a str,
            user_path: &'a str,
            model: &'a str,
            virtual_model: Option<&'a str>,
            served_model: Option<&'a str>,
            attempts: u32,
            status: u16,
            duration_ms: f64,
            stream: bool,
            error: Option<&'static str>,
            tokens_in: Option<u64>,
            tokens_out: Option<u64>,
        }
        let line = Line {
            request_id: &ctx.request_id,
            path: &ctx.path,
            user_path: up,
            model: requested,
            virtual_model: ctx.virtual_model.as_deref(),
            served_model: ctx.served.as_deref(),
            attempts: ctx.attempts_made,
            status,
            duration_ms: (ms * 1000.0).round() / 1000.0,
            stream: ctx.stream,
            error: ctx.error_code,
            tokens_in: ctx.usage.map(|u| u.0),
            tokens_out: ctx.usage.map(|u| u.1),
        };
        crate::log_sink::access(|out| {
            // Serializing plain strings, numbers and booleans cannot fail.
            if let Ok(text) = serde_json::to_string(&line) {
                out.push_str(&text);
            }
        });
    } else {
        crate::log_sink::access(|out| text_line(out, ctx, requested, up, status, elapsed));
    }
}

/// The text access line: `<request id> <path> user_path=.. model=.. virtual=.. served=..
/// attempts=.. status=.. duration_ms=.. tokens=in/out [error=..]`, `-` for what is absent.
fn text_line(
    line: &mut String,
    ctx: &Ctx,
    requested: &str,
    up: &str,
    status: u16,
    elapsed: Duration,
) {
    // Written piece by piece: this runs once per request, and the formatter's generic
    // machinery (float formatting above all) cost more than the line itself.
    line.reserve(160 + ctx.request_id.len() + ctx.path.len() + up.len() + 3 * requested.len());
    let mut n = itoa::Buffer::new();
    line.push_str(&ctx.request_id);
    line.push(' ');
    line.push_str(&ctx.path);
    line.push_str(" user_path=");
    line.push_str(or_dash(up));
    line.push_str(" model=");
    line.push_str(or_dash(requested));
    line.push_str(" virtual=");
    line.push_str(ctx.virtual_model.as_deref().unwrap_or("-"));
    line.push_str(" served=");
    line.push_str(ctx.served.as_deref().unwrap_or("-"));
    line.push_str(" attempts=");
    line.push_str(n.format(ctx.attempts_made));
    line.push_str(" status=");
    line.push_str(n.format(status));
    line.push_str(" duration_ms=");
    push_millis(line, elapsed);
    line.push_str(" tokens=");
    match ctx.usage {
        Some((i, o)) => {
            line.push_str(n.format(i));
            line.push('/');
            line.push_str(n.format(o));
        }
        None => line.push('-'),
    }
    if let Some(code) = ctx.error_code {
        line.push_str(" error=");
        line.push_str(code);
    }
}

/// The value, or `-` when it is empty.
fn or_dash(v: &str) -> &str {
    if v.is_empty() {
        "-"
    } else {
        v
    }
}

/// Milliseconds with three decimals (to the nearest microsecond), as `{:.3}` prints them.
fn push_millis(out: &mut String, d: Duration) {
    let us = (d.as_nanos() + 500) / 1000;
    let mut n = itoa::Buffer::new();
    out.push_str(n.format(us / 1000));
    out.push('.');
    let frac = (us % 1000) as u32;
    if frac < 100 {
        out.push('0');
    }
    if frac < 10 {
        out.push('0');
    }
    out.push_str(n.format(frac));
}

#[cfg(test)]
mod tests {
    use super::{push_hex, push_millis};
    use crate::proxy::ctx::Ctx;
    use std::time::Duration;

    fn text_line(ctx: &Ctx, requested: &str, up: &str, status: u16, d: Duration) -> String {
        let mut line = String::new();
        super::text_line(&mut line, ctx, requested, up, status, d);
        line
    }

    #[test]
    fn text_access_line() {
        let mut ctx = Ctx::new();
        ctx.request_id = "mg-1".into();
        ctx.path = "/v1/chat/completions".into();
        ctx.virtual_model = Some("smart".into());
        ctx.served = Some("openai/gpt-4o".into());
        ctx.attempts_made = 2;
        ctx.usage = Some((12, 34));
        let d = Duration::from_micros(1_234_567);
        assert_eq!(
            text_line(&ctx, "smart", "/team/a", 200, d),
            "mg-1 /v1/chat/completions user_path=/team/a model=smart virtual=smart \
             served=openai/gpt-4o attempts=2 status=200 duration_ms=1234.567 tokens=12/34"
        );
        let mut ctx = Ctx::new();
        ctx.request_id = "mg-2".into();
        ctx.path = "/v1/embeddings".into();
        ctx.error_code = Some("model_not_found");
        assert_eq!(
            text_line(&ctx, "", "", 404, Duration::from_micros(50)),
            "mg-2 /v1/embeddings user_path=- model=- virtual=- served=- attempts=0 status=404 \
             duration_ms=0.050 tokens=- error=model_not_found"
        );
    }

    #[test]
    fn millis_have_three_decimals() {
        for (nanos, text) in [
            (0u64, "0.000"),
            (499, "0.000"),
            (500, "0.001"),
            (1_234_567, "1.235"),
            (12_000_000, "12.000"),
            (987_654_321_000, "987654.321"),
            (5_009_000, "5.009"),
            (5_090_000, "5.090"),
        ] {
            let mut s = String::new();
            push_millis(&mut s, Duration::from_nanos(nanos));
            assert_eq!(s, text, "{nanos} ns");
        }
    }

    #[test]
    fn hex_matches_format() {
        for v in [
            0u64,
            1,
            0xabc,
            u64::MAX,
            0x0123_4567_89ab_cdef,
            fastrand::u64(..),
        ] {
            let mut s = String::new();
            push_hex(&mut s, v, 16);
            assert_eq!(s, format!("{v:016x}"));
            let mut s = String::new();
            push_hex(&mut s, v, 8);
            assert_eq!(s, format!("{:08x}", v & 0xffff_ffff));
        }
    }
}
