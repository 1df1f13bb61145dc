//! Per-request state carried through the proxy phases (Pingora's CTX). No globals.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use smol_str::SmolStr;

use super::attempts::Attempts;
use super::body::Peek;
use crate::app::App;
use crate::routing::model::Operation;
use crate::routing::plan::Plan;
use crate::routing::user_path::UserPath;
use crate::snapshot::Snapshot;

pub struct Ctx {
    pub request_id: String,
    /// Which header names the client's request may carry (`Names::ALL` until it is read).
    pub header_names: super::headers::Names,
    /// Inline (no allocation) for every API route.
    pub path: SmolStr,
    /// What the method and path ask for, parsed once.
    pub route: super::route::Route,
    pub started: Instant,
    /// The snapshot this request started with; it finishes on it even across a reload.
    pub snap: Option<Arc<Snapshot>>,
    pub user_path: Option<UserPath>,
    /// The managed key the request was made with (None: the master key or an open gateway).
    pub key: Option<Arc<crate::keys::ManagedKey>>,
    pub operation: Operation,
    pub stream: bool,
    pub body: Vec<u8>,
    /// An audio upload (multipart), held whole as shared bytes instead of `body`.
    pub upload: Option<Bytes>,
    /// Audio the request used (seconds transcribed, characters spoken), for `/metrics`.
    pub audio: super::audio_usage::AudioUse,
    pub peek: Option<Peek>,
    pub plan: Option<Plan>,
    /// Where the request stands in its plan (`exchange` moves it).
    pub attempts: Attempts,
    /// Probe slots of half-open targets that planning took for this request: (virtual model,
    /// target, hold's end). Those the request never reaches are freed when it ends.
    pub probes: Vec<(usize, usize, u64)>,
    /// The middleware pipelines of the request's virtual model, when it has any.
    pub pipelines: Option<Arc<crate::middleware::Pipelines>>,
    /// The current attempt's upstream body, built once per attempt (retries reuse it).
    pub attempt_body: Option<Bytes>,
    pub attempt_started: Option<Instant>,
    pub first_byte_at: Option<Instant>,
    pub stream_events: u64,
    pub upstream_status: Option<u16>,
    pub retry_after: Option<String>,
    /// A try ran out of time (connect, first byte or idle bound).
    pub timed_out: bool,
    pub status: Option<u16>,
    pub error_code: Option<&'static str>,
    /// `provider/model` of the current attempt (inline up to 23 bytes).
    pub served: Option<SmolStr>,
    pub virtual_model: Option<SmolStr>,
    pub shaper: Option<super::dialect::Shaper>,
    /// (input, output) tokens the upstream reported.
    pub usage: Option<(u64, u64)>,
    /// The health of the attempt (its index) that last needed it.
    pub health: Option<(usize, Arc<crate::health::TargetHealth>)>,
    /// The class of the last upstream failure (`X-Modelgate-Error-Class` when the client's
    /// answer is a failure).
    pub error_class: Option<crate::routing::error_class::ErrorClass>,
    /// How the request's hedge ended, when its virtual model hedges and the race began.
    pub hedge: Option<super::hedge::HedgeOutcome>,
    /// What the request holds under rate limits and budgets (given back when dropped
    /// unsettled), and the `x-ratelimit-*` values its answer carries.
    pub reservation: Option<crate::limits::Reservation>,
    pub rate: Option<crate::limits::RateHeaders>,
    /// The last upstream error answer, when the request went on to another try: what the
    /// client gets if every later try fails without an answer.
    pub kept_error: Option<Box<KeptError>>,
}

/// An upstream's error answer, read whole and put in the client's dialect, and the attempt
/// that got it.
pub struct KeptError {
    pub status: u16,
    pub body: Bytes,
    /// The plan's attempt and its `provider/model`: the answer's `X-Modelgate-Model`.
    pub index: usize,
    pub served: Option<SmolStr>,
    pub class: Option<crate::routing::error_class::ErrorClass>,
}

impl Ctx {
    /// The current attempt's `X-Modelgate-Model` and `X-Modelgate-Virtual-Model` values as the
    /// snapshot built them, when it has them (a target with a declared provider).
    pub fn prebuilt_tags(&self) -> (Option<&http::HeaderValue>, Option<&http::HeaderValue>) {
        let (Some(snap), Some(plan)) = (self.snap.as_ref(), self.plan.as_ref()) else {
            return (None, None);
        };
        let Some(tv) = plan.virtual_model.and_then(|vi| snap.tag_values.get(vi)) else {
            return (None, None);
        };
        let attempt = plan.attempts.get(self.attempts.index);
        let served = attempt
            .zip(attempt.and_then(|a| a.target))
            .and_then(|(a, ti)| match tv.served.get(ti) {
                Some(Some((p, v))) if *p == a.provider && self.served.is_some() => Some(v),
                _ => None,
            });
        (
            served,
            tv.source.as_ref().filter(|_| self.virtual_model.is_some()),
        )
    }

    /// The response tags of the request as it stands: its id, and once an attempt was made
    /// the model that answered, the virtual model and the upstream requests made.
    pub fn tags(&self) -> super::respond::Tags<'_> {
        super::respond::Tags {
            request_id: &self.request_id,
            model: self.served.as_deref(),
            virtual_model: self.virtual_model.as_deref(),
            attempts: Some(self.attempts.made),
            prebuilt: self.prebuilt_tags(),
            rate: self.rate.as_ref(),
            error_class: None,
        }
    }

    /// `tags`, with the error class of the last upstream failure when the answer with
    /// `status` is a failure.
    pub fn tags_for(&self, status: u16) -> super::respond::Tags<'_> {
        super::respond::Tags {
            error_class: self
                .error_class
                .filter(|_| status >= 400)
                .map(crate::routing::error_class::ErrorClass::name),
            ..self.tags()
        }
    }

    pub fn new() -> Ctx {
        crate::server::IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ctx {
            request_id: String::new(),
            header_names: super::headers::Names::ALL,
            path: SmolStr::default(),
            route: super::route::Route::Unknown { anthropic: false },
            started: Instant::now(),
            snap: None,
            user_path: None,
            key: None,
            operation: Operation::Chat,
            stream: false,
            body: Vec::new(),
            upload: None,
            audio: super::audio_usage::AudioUse::default(),
            peek: None,
            plan: None,
            attempts: Attempts::default(),
            probes: Vec::new(),
            pipelines: None,
            attempt_body: None,
            attempt_started: None,
            first_byte_at: None,
            stream_events: 0,
            upstream_status: None,
            retry_after: None,
            timed_out: false,
            status: None,
            error_code: None,
            served: None,
            virtual_model: None,
            shaper: None,
            usage: None,
            health: None,
            error_class: None,
            hedge: None,
            reservation: None,
            rate: None,
            kept_error: None,
        }
    }

    /// The request's snapshot, loaded once on first use.
    pub fn snapshot(&mut self, app: &App) -> Arc<Snapshot> {
        self.snap.get_or_insert_with(|| app.snapshot()).clone()
    }

    /// Whether errors use the Anthropic envelope.
    pub fn anthropic_dialect(&self) -> bool {
        self.route.anthropic()
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        crate::server::IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}
