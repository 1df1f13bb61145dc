//! Prometheus metrics: lock-free counters and histograms recorded after each response, rendered
//! in the Prometheus text exposition format on `/metrics`.
//!
//! Series live in `papaya` maps (lock-free) keyed by their label values; label values come from
//! the configuration (virtual model sources, provider and served model names) or a bounded set
//! (status codes), never from arbitrary request input. Nothing here blocks or does I/O.

use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A latency histogram. Each observation increments one bucket (the first whose bound holds
/// it); the cumulative counts Prometheus expects are summed when rendering.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 14],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Cumulative count per bucket bound.
    fn cumulative(&self) -> [u64; 14] {
        let mut out = [0; 14];
        let mut total = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            out[i] = total;
        }
        out
    }
}

/// Labels of a request series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestLabels {
    pub virtual_model: String,
    pub model: String,
    pub provider: String,
    pub status: u16,
}

/// What one finished request contributes.
#[derive(Debug, Clone, Default)]
pub struct Outcome<'a> {
    pub virtual_model: Option<&'a str>,
    /// `provider/model` that answered (or was last tried).
    pub served: Option<&'a str>,
    pub status: u16,
    pub duration_s: f64,
    pub ttft_s: Option<f64>,
    pub attempts: u32,
    pub fallbacks: u32,
    /// Extra requests a hedge sent (in `attempts` too; not retries).
    pub hedges: u32,
    pub tokens: Option<(u64, u64)>,
    pub cost_usd: Option<f64>,
    /// Seconds of audio a transcription or translation answer reported.
    pub audio_seconds: Option<f64>,
    /// Characters of text a speech request sent.
    pub speech_characters: Option<u64>,
}

type Pair = (String, String);

type Fast = foldhash::fast::RandomState;

/// Every series one (virtual model, served model) pair records into, found with one lookup per
/// request instead of one per metric. The label strings are built once, here.
struct Handles {
    virtual_model: String,
    provider: String,
    model: String,
    by_status: papaya::HashMap<u16, Arc<AtomicU64>, Fast>,
    duration: Arc<Histogram>,
    ttft: OnceLock<Arc<Histogram>>,
    attempts: OnceLock<Arc<AtomicU64>>,
    retries: OnceLock<Arc<AtomicU64>>,
    fallbacks: OnceLock<Arc<AtomicU64>>,
    tokens_in: OnceLock<Arc<AtomicU64>>,
    tokens_out: OnceLock<Arc<AtomicU64>>,
    cost_micro: OnceLock<Arc<AtomicU64>>,
}

#[derive(Default)]
pub struct Metrics {
    /// virtual model -> served model -> the series they record into.
    handles: papaya::HashMap<String, papaya::HashMap<String, Arc<Handles>, Fast>, Fast>,
    requests: papaya::HashMap<RequestLabels, Arc<AtomicU64>>,
    duration: papaya::HashMap<Pair, Arc<Histogram>>,
    ttft: papaya::HashMap<Pair, Arc<Histogram>>,
    attempts: papaya::HashMap<String, Arc<AtomicU64>>,
    retries: papaya::HashMap<String, Arc<AtomicU64>>,
    fallbacks: papaya::HashMap<String, Arc<AtomicU64>>,
    tokens_in: papaya::HashMap<Pair, Arc<AtomicU64>>,
    tokens_out: papaya::HashMap<Pair, Arc<AtomicU64>>,
    /// Estimated cost in micro-dollars.
    cost_micro: papaya::HashMap<Pair, Arc<AtomicU64>>,
    /// Failed upstream answers by (provider, error class).
    error_classes: papaya::HashMap<Pair, Arc<AtomicU64>>,
    /// Hedge races by (virtual model, outcome).
    hedges: papaya::HashMap<Pair, Arc<AtomicU64>>,
    /// Audio transcribed or translated, in milliseconds (audio requests only: looked up per
    /// request, not kept in `Handles`).
    audio_ms: papaya::HashMap<Pair, Arc<AtomicU64>>,
    speech_chars: papaya::HashMap<Pair, Arc<AtomicU64>>,
}

fn slot<K: Hash + Eq + Clone, V: Default>(map: &papaya::HashMap<K, Arc<V>>, key: K) -> Arc<V> {
    let m = map.pin();
    if let Some(v) = m.get(&key) {
        return v.clone();
    }
    m.get_or_insert_with(key, || Arc::new(V::default())).clone()
}

fn split(served: Option<&str>) -> (String, String) {
    match served.and_then(|s| s.split_once('/')) {
        Some((p, m)) => (p.to_string(), m.to_string()),
        None => (String::new(), served.unwrap_or("").to_string()),
    }
}

impl Metrics {
    pub fn record(&self, o: &Outcome<'_>) {
        let h = self.handles(o.virtual_model.unwrap_or(""), o.served.unwrap_or(""));
        let requests = {
            let m = h.by_status.pin();
            match m.get(&o.status) {
                Some(c) => c.clone(),
                None => {
                    let c = slot(
                        &self.requests,
                        RequestLabels {
                            virtual_model: h.virtual_model.clone(),
                            model: h.model.clone(),
                            provider: h.provider.clone(),
                            status: o.status,
                        },
                    );
                    m.get_or_insert(o.status, c).clone()
                }
            }
        };
        requests.fetch_add(1, Ordering::Relaxed);
        h.duration.observe(o.duration_s);
        if let Some(t) = o.ttft_s {
            h.ttft
                .get_or_init(|| slot(&self.ttft, (h.virtual_model.clone(), h.provider.clone())))
                .observe(t);
        }
        if o.attempts > 0 {
            h.attempts
                .get_or_init(|| slot(&self.attempts, h.provider.clone()))
                .fetch_add(o.attempts as u64, Ordering::Relaxed);
            let retries = o.attempts.saturating_sub(1 + o.fallbacks + o.hedges);
            if retries > 0 {
                h.retries
                    .get_or_init(|| slot(&self.retries, h.provider.clone()))
                    .fetch_add(retries as u64, Ordering::Relaxed);
            }
        }
        if o.fallbacks > 0 {
            h.fallbacks
                .get_or_init(|| slot(&self.fallbacks, h.virtual_model.clone()))
                .fetch_add(o.fallbacks as u64, Ordering::Relaxed);
        }
        if o.audio_seconds.is_some() || o.speech_characters.is_some() {
            self.record_audio(&h, o);
        }
        if let Some((i, out)) = o.tokens {
            let key = || (h.provider.clone(), h.model.clone());
            h.tokens_in
                .get_or_init(|| slot(&self.tokens_in, key()))
                .fetch_add(i, Ordering::Relaxed);
            h.tokens_out
                .get_or_init(|| slot(&self.tokens_out, key()))
                .fetch_add(out, Ordering::Relaxed);
            if let Some(c) = o.cost_usd {
                h.cost_micro
                    .get_or_init(|| slot(&self.cost_micro, key()))
                    .fetch_add((c * 1e6).round() as u64, Ordering::Relaxed);
            }
        }
    }

    /// A failed upstream answer of `class` from the provider of `served` (`provider/model`).
    /// Failures are rare: the label pair is built per call.
    pub fn record_error_class(&self, served: &str, class: crate::routing::error_class::ErrorClass) {
        let (provider, _) = split(Some(served));
        slot(&self.error_classes, (provider, class.name().to_string()))
            .fetch_add(1, Ordering::Relaxed);
    }

    /// How a hedged request's race ended.
    pub fn record_hedge(&self, virtual_model: &str, outcome: crate::proxy::hedge::HedgeOutcome) {
        slot(
            &self.hedges,
            (virtual_model.to_string(), outcome.name().to_string()),
        )
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Audio use, when the request reported any.
    fn record_audio(&self, h: &Handles, o: &Outcome<'_>) {
        let key = || (h.provider.clone(), h.model.clone());
        if let Some(s) = o.audio_seconds {
            slot(&self.audio_ms, key()).fetch_add((s * 1000.0).round() as u64, Ordering::Relaxed);
        }
        if let Some(c) = o.speech_characters {
            slot(&self.speech_chars, key()).fetch_add(c, Ordering::Relaxed);
        }
    }

    /// The series of one (virtual model, served model) pair; created on first use.
    fn handles(&self, vm: &str, served: &str) -> Arc<Handles> {
        let outer = self.handles.pin();
        if let Some(h) = outer
            .get(vm)
            .and_then(|inner| inner.pin().get(served).cloned())
        {
            return h;
        }
        let inner = outer.get_or_insert_with(vm.to_string(), papaya::HashMap::default);
        let inner = inner.pin();
        inner
            .get_or_insert_with(served.to_string(), || {
                let (provider, model) = split(Some(served));
                Arc::new(Handles {
                    duration: slot(&self.duration, (vm.to_string(), provider.clone())),
                    virtual_model: vm.to_string(),
                    provider,
                    model,
                    by_status: papaya::HashMap::default(),
                    ttft: OnceLock::new(),
                    attempts: OnceLock::new(),
                    retries: OnceLock::new(),
                    fallbacks: OnceLock::new(),
                    tokens_in: OnceLock::new(),
                    tokens_out: OnceLock::new(),
                    cost_micro: OnceLock::new(),
                })
            })
            .clone()
    }

    /// The text exposition. `extra` appends gauges owned elsewhere (breakers, reloads).
    pub fn render(&self, extra: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "modelgate_requests_total",
            "counter",
            "Requests by virtual model, served model, provider and status.",
        );
        let m = self.requests.pin();
        let mut rows: Vec<(&RequestLabels, u64)> = m
            .iter()
            .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
            .collect();
        rows.sort();
        for (k, v) in rows {
            let _ = writeln!(
                out,
                "modelgate_requests_total{{virtual_model=\"{}\",model=\"{}\",provider=\"{}\",status=\"{}\"}} {v}",
                esc(&k.virtual_model),
                esc(&k.model),
                esc(&k.provider),
                k.status
            );
        }
        histograms(
            &mut out,
            "modelgate_request_duration_seconds",
            "Request duration, first byte in to last byte out.",
            &self.duration,
        );
        histograms(
            &mut out,
            "modelgate_time_to_first_token_seconds",
            "Time from the upstream request to its first response byte.",
            &self.ttft,
        );
        counters(
            &mut out,
            "modelgate_upstream_attempts_total",
            "Upstream requests made, retries included.",
            "provider",
            &self.attempts,
        );
        counters(
            &mut out,
            "modelgate_retries_total",
            "Retries on the same target.",
            "provider",
            &self.retries,
        );
        counters(
            &mut out,
            "modelgate_fallbacks_total",
            "Moves to the next target of a plan.",
            "virtual_model",
            &self.fallbacks,
        );
        pair_counters(
            &mut out,
            "modelgate_tokens_input_total",
            "Input tokens reported by upstreams.",
            &self.tokens_in,
            1.0,
        );
        pair_counters(
            &mut out,
            "modelgate_tokens_output_total",
            "Output tokens reported by upstreams.",
            &self.tokens_out,
            1.0,
        );
        pair_counters(
            &mut out,
            "modelgate_cost_usd_total",
            "Estimated cost from usage and list prices.",
            &self.cost_micro,
            1e-6,
        );
        labelled_pairs(
            &mut out,
            "modelgate_upstream_errors_total",
            "Failed upstream answers by provider and error class.",
            ("provider", "class"),
            &self.error_classes,
        );
        labelled_pairs(
            &mut out,
            "modelgate_hedges_total",
            "Hedged requests by virtual model and outcome: won (the extra request answered first), lost (the first did), denied (no budget).",
            ("virtual_model", "outcome"),
            &self.hedges,
        );
        pair_counters(
            &mut out,
            "modelgate_audio_seconds_total",
            "Seconds of audio transcribed or translated, as upstreams reported them.",
            &self.audio_ms,
            1e-3,
        );
        pair_counters(
            &mut out,
            "modelgate_speech_characters_total",
            "Characters of text sent to be spoken.",
            &self.speech_chars,
            1.0,
        );
        header(
            &mut out,
            "modelgate_circuit_breaker_state",
            "gauge",
            "Breaker state per target: 0 closed, 1 open, 2 half-open.",
        );
        for (target, state) in &extra.breakers {
            let _ = writeln!(
                out,
                "modelgate_circuit_breaker_state{{target=\"{}\"}} {state}",
                esc(target)
            );
        }
        if !extra.steering.is_empty() {
            header(
                &mut out,
                "modelgate_target_rate_limited",
                "gauge",
                "1 while a target is left out after a 429 with Retry-After (rate-limit steering).",
            );
            for (target, limited, _) in &extra.steering {
                let _ = writeln!(
                    out,
                    "modelgate_target_rate_limited{{target=\"{}\"}} {}",
                    esc(target),
                    u8::from(*limited)
                );
            }
            header(
                &mut out,
                "modelgate_target_remaining_fraction",
                "gauge",
                "The share of its rate limit a target's provider last announced, until its reset.",
            );
            for (target, _, fraction) in &extra.steering {
                if let Some(f) = fraction {
                    let _ = writeln!(
                        out,
                        "modelgate_target_remaining_fraction{{target=\"{}\"}} {f}",
                        esc(target)
                    );
                }
            }
        }
        if !extra.model_breakers.is_empty() {
            header(
                &mut out,
                "modelgate_model_circuit_breaker_state",
                "gauge",
                "Breaker state per concrete model called directly: 0 closed, 1 open, 2 half-open.",
            );
            for (model, state) in &extra.model_breakers {
                let _ = writeln!(
                    out,
                    "modelgate_model_circuit_breaker_state{{model=\"{}\"}} {state}",
                    esc(model)
                );
            }
        }
        header(
            &mut out,
            "modelgate_config_reloads_total",
            "counter",
            "Config reloads by result.",
        );
        let _ = writeln!(
            out,
            "modelgate_config_reloads_total{{result=\"ok\"}} {}",
            extra.reloads_ok
        );
        let _ = writeln!(
            out,
            "modelgate_config_reloads_total{{result=\"error\"}} {}",
            extra.reloads_failed
        );
        header(
            &mut out,
            "modelgate_config_last_reload_ok",
            "gauge",
            "1 when the last reload succeeded (0: the last good config is still serving).",
        );
        let _ = writeln!(
            out,
            "modelgate_config_last_reload_ok {}",
            u8::from(extra.last_reload_ok)
        );
        header(
            &mut out,
            "modelgate_virtual_models",
            "gauge",
            "Virtual models in the live snapshot.",
        );
        let _ = writeln!(out, "modelgate_virtual_models {}", extra.virtual_models);
        header(
            &mut out,
            "modelgate_in_flight_requests",
            "gauge",
            "Requests being served.",
        );
        let _ = writeln!(out, "modelgate_in_flight_requests {}", extra.in_flight);
        if let Some(store) = &extra.store {
            header(
                &mut out,
                "modelgate_store_revision",
                "gauge",
                "The admin store revision the live snapshot was built at.",
            );
            let _ = writeln!(out, "modelgate_store_revision {}", store.revision);
            header(
                &mut out,
                "modelgate_store_connected",
                "gauge",
                "1 while the admin store answers (0: writes are refused, the last snapshot serves).",
            );
            let _ = writeln!(
                out,
                "modelgate_store_connected {}",
                u8::from(store.connected)
            );
        }
        middleware(&mut out, &crate::middleware::COUNTERS);
        header(
            &mut out,
            "modelgate_log_lines_dropped_total",
            "counter",
            "Log lines dropped because the log queue was full (the output fell behind).",
        );
        let _ = writeln!(
            out,
            "modelgate_log_lines_dropped_total {}",
            crate::log_sink::dropped()
        );
        out
    }
}

/// The middleware pipelines' counters: a series per middleware once it has run, and the
/// webhook records once any was offered.
fn middleware(out: &mut String, counters: &crate::middleware::Counters) {
    let kinds = counters.kinds();
    if !kinds.is_empty() {
        header(
            out,
            "modelgate_middleware_calls_total",
            "counter",
            "Middleware runs by phase and middleware (a stream counts each chunk).",
        );
        for k in &kinds {
            let _ = writeln!(
                out,
                "modelgate_middleware_calls_total{{phase=\"{}\",middleware=\"{}\"}} {}",
                k.kind.phase().label(),
                k.kind.name(),
                k.calls
            );
        }
        header(
            out,
            "modelgate_middleware_seconds_total",
            "counter",
            "Time spent in middleware by phase and middleware.",
        );
        for k in &kinds {
            let _ = writeln!(
                out,
                "modelgate_middleware_seconds_total{{phase=\"{}\",middleware=\"{}\"}} {}",
                k.kind.phase().label(),
                k.kind.name(),
                k.seconds
            );
        }
        header(
            out,
            "modelgate_middleware_blocks_total",
            "counter",
            "Requests a middleware refused (answered 400 request_blocked).",
        );
        for k in kinds.iter().filter(|k| k.blocks > 0) {
            let _ = writeln!(
                out,
                "modelgate_middleware_blocks_total{{phase=\"{}\",middleware=\"{}\"}} {}",
                k.kind.phase().label(),
                k.kind.name(),
                k.blocks
            );
        }
    }
    let (sent, failed, dropped) = counters.webhook();
    if sent + failed + dropped > 0 {
        header(
            out,
            "modelgate_middleware_webhook_records_total",
            "counter",
            "Webhook records by result: sent, failed (receiver error or timeout, not retried), dropped (queue full).",
        );
        for (result, n) in [("sent", sent), ("failed", failed), ("dropped", dropped)] {
            let _ = writeln!(
                out,
                "modelgate_middleware_webhook_records_total{{result=\"{result}\"}} {n}"
            );
        }
    }
}

/// Gauges read from other parts at scrape time.
#[derive(Debug, Default)]
pub struct Gauges {
    pub breakers: Vec<(String, u8)>,
    /// Rate-limit steering per target that has any: (target, rate limited, remaining share).
    pub steering: Vec<(String, bool, Option<f64>)>,
    /// Breakers of concrete models called directly, by `provider/model`.
    pub model_breakers: Vec<(String, u8)>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub last_reload_ok: bool,
    pub virtual_models: usize,
    pub in_flight: usize,
    /// None without an admin store.
    pub store: Option<crate::store::StoreState>,
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn counters(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    map: &papaya::HashMap<String, Arc<AtomicU64>>,
) {
    header(out, name, "counter", help);
    let m = map.pin();
    let mut rows: Vec<(&String, u64)> = m
        .iter()
        .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
        .collect();
    rows.sort();
    for (k, v) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", esc(k));
    }
}

/// A counter whose series are labelled by a pair; nothing (not even its header) before the
/// first count.
fn labelled_pairs(
    out: &mut String,
    name: &str,
    help: &str,
    labels: (&str, &str),
    map: &papaya::HashMap<Pair, Arc<AtomicU64>>,
) {
    let m = map.pin();
    let mut rows: Vec<(&Pair, u64)> = m
        .iter()
        .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
        .collect();
    if rows.is_empty() {
        return;
    }
    header(out, name, "counter", help);
    rows.sort();
    for ((a, b), v) in rows {
        let _ = writeln!(
            out,
            "{name}{{{}=\"{}\",{}=\"{}\"}} {v}",
            labels.0,
            esc(a),
            labels.1,
            esc(b)
        );
    }
}

fn pair_counters(
    out: &mut String,
    name: &str,
    help: &str,
    map: &papaya::HashMap<Pair, Arc<AtomicU64>>,
    scale: f64,
) {
    header(out, name, "counter", help);
    let m = map.pin();
    let mut rows: Vec<(&Pair, u64)> = m
        .iter()
        .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
        .collect();
    rows.sort();
    for ((p, model), v) in rows {
        let value = if scale == 1.0 {
            v.to_string()
        } else {
            format!("{}", v as f64 * scale)
        };
        let _ = writeln!(
            out,
            "{name}{{provider=\"{}\",model=\"{}\"}} {value}",
            esc(p),
            esc(model)
        );
    }
}

fn histograms(
    out: &mut String,
    name: &str,
    help: &str,
    map: &papaya::HashMap<Pair, Arc<Histogram>>,
) {
    header(out, name, "histogram", help);
    let m = map.pin();
    let mut rows: Vec<(&Pair, &Arc<Histogram>)> = m.iter().collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    for ((vm, p), h) in rows {
        let labels = format!("virtual_model=\"{}\",provider=\"{}\"", esc(vm), esc(p));
        // Count first, buckets clamped to it: a request recorded while this renders may reach
        // a bucket before the count, and a bucket must never exceed `+Inf`.
        let count = h.count.load(Ordering::Relaxed);
        for (b, n) in BUCKETS.iter().zip(h.cumulative()) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {}", n.min(count));
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_gauges_show_the_revision_and_connection() {
        let m = Metrics::default();
        assert!(!m.render(&Gauges::default()).contains("modelgate_store"));
        let text = m.render(&Gauges {
            store: Some(crate::store::StoreState {
                revision: 7,
                connected: false,
                last_error: Some("gone".into()),
            }),
            ..Gauges::default()
        });
        assert!(text.contains("\nmodelgate_store_revision 7\n"), "{text}");
        assert!(text.contains("\nmodelgate_store_connected 0\n"), "{text}");
    }

    #[test]
    fn records_and_renders() {
        let m = Metrics::default();
        m.record(&Outcome {
            virtual_model: Some("smart"),
            served: Some("openai/gpt-4o"),
            status: 200,
            duration_s: 0.2,
            ttft_s: Some(0.05),
            attempts: 3,
            fallbacks: 1,
            hedges: 0,
            tokens: Some((10, 5)),
            cost_usd: Some(0.000075),
            audio_seconds: None,
            speech_characters: None,
        });
        m.record(&Outcome {
            virtual_model: Some("speak"),
            served: Some("openai/tts-1"),
            status: 200,
            speech_characters: Some(42),
            ..Outcome::default()
        });
        m.record(&Outcome {
            served: Some("openai/whisper-1"),
            status: 200,
            audio_seconds: Some(2.5),
            ..Outcome::default()
        });
        let text = m.render(&Gauges::default());
        assert!(
            text.contains(
                "modelgate_speech_characters_total{provider=\"openai\",model=\"tts-1\"} 42"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "modelgate_audio_seconds_total{provider=\"openai\",model=\"whisper-1\"} 2.5"
            ),
            "{text}"
        );
        assert!(text.contains("modelgate_requests_total{virtual_model=\"smart\",model=\"gpt-4o\",provider=\"openai\",status=\"200\"} 1"));
        assert!(text.contains("modelgate_request_duration_seconds_bucket{virtual_model=\"smart\",provider=\"openai\",le=\"0.25\"} 1"));
        assert!(text.contains("modelgate_request_duration_seconds_bucket{virtual_model=\"smart\",provider=\"openai\",le=\"0.1\"} 0"));
        assert!(text.contains("modelgate_retries_total{provider=\"openai\"} 1"));
        assert!(text.contains("modelgate_fallbacks_total{virtual_model=\"smart\"} 1"));
        assert!(
            text.contains("modelgate_tokens_output_total{provider=\"openai\",model=\"gpt-4o\"} 5")
        );
        assert!(text
            .contains("modelgate_cost_usd_total{provider=\"openai\",model=\"gpt-4o\"} 0.000075"));
        assert!(text.contains("# TYPE modelgate_log_lines_dropped_total counter\n"));
        assert!(text.contains(&format!(
            "\nmodelgate_log_lines_dropped_total {}\n",
            crate::log_sink::dropped()
        )));
    }

    #[test]
    fn buckets_render_cumulative_and_series_split_by_status() {
        let m = Metrics::default();
        for (status, seconds) in [
            (200, 0.003),
            (200, 0.04),
            (200, 0.04),
            (500, 3.0),
            (200, 500.0),
        ] {
            m.record(&Outcome {
                virtual_model: Some("smart"),
                served: Some("openai/gpt-4o"),
                status,
                duration_s: seconds,
                attempts: 1,
                ..Outcome::default()
            });
        }
        let text = m.render(&Gauges::default());
        let bucket = |le: &str| {
            format!("modelgate_request_duration_seconds_bucket{{virtual_model=\"smart\",provider=\"openai\",le=\"{le}\"}} ")
        };
        for (le, n) in [
            ("0.005", 1),
            ("0.025", 1),
            ("0.05", 3),
            ("2.5", 3),
            ("5", 4),
            ("120", 4),
            ("+Inf", 5),
        ] {
            assert!(
                text.contains(&format!("{}{n}\n", bucket(le))),
                "le={le}:\n{text}"
            );
        }
        assert!(text.contains("modelgate_request_duration_seconds_count{virtual_model=\"smart\",provider=\"openai\"} 5"));
        assert!(text.contains("modelgate_requests_total{virtual_model=\"smart\",model=\"gpt-4o\",provider=\"openai\",status=\"200\"} 4"));
        assert!(text.contains("modelgate_requests_total{virtual_model=\"smart\",model=\"gpt-4o\",provider=\"openai\",status=\"500\"} 1"));
        assert!(text.contains("modelgate_upstream_attempts_total{provider=\"openai\"} 5"));
        // Never recorded: no series.
        assert!(!text.contains("modelgate_retries_total{"));
        assert!(!text.contains("modelgate_time_to_first_token_seconds_count{"));
    }

    #[test]
    fn middleware_counters_render_per_phase_and_middleware() {
        use crate::middleware::{Counters, MiddlewareCall, Pipelines, RequestFacts};
        let mut out = String::new();
        middleware(&mut out, &Counters::new());
        assert!(out.is_empty(), "nothing before any middleware ran: {out}");
        // A guard that blocks, run through the process's counters.
        let call = MiddlewareCall {
            name: "guard".into(),
            config_type: None,
            config: Some(serde_json::json!({"max_input_chars": 1})),
            config_id: None,
        };
        let p = Pipelines::build(&[call], &[], &[], &Default::default()).expect("valid");
        let mut body = crate::middleware::Body::from(serde_json::json!({"prompt": "too long"}));
        let facts = RequestFacts {
            operation: crate::routing::model::Operation::Completion,
            metadata: None,
        };
        assert!(p.run_request(&mut body, &facts).is_err());
        let text = Metrics::default().render(&Gauges::default());
        assert!(text
            .contains("modelgate_middleware_calls_total{phase=\"request\",middleware=\"guard\"} "));
        assert!(text.contains(
            "modelgate_middleware_seconds_total{phase=\"request\",middleware=\"guard\"} "
        ));
        assert!(text.contains(
            "modelgate_middleware_blocks_total{phase=\"request\",middleware=\"guard\"} "
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn error_classes_and_hedges_are_counted_by_label() {
        let m = Metrics::default();
        assert!(!m
            .render(&Gauges::default())
            .contains("modelgate_hedges_total"));
        use crate::routing::error_class::ErrorClass;
        m.record_error_class("anthropic/claude-sonnet-4-6", ErrorClass::Overloaded);
        m.record_error_class("anthropic/claude-haiku-4-5", ErrorClass::Overloaded);
        m.record_hedge("smart", crate::proxy::hedge::HedgeOutcome::Won);
        let text = m.render(&Gauges::default());
        assert!(text.contains(
            "modelgate_upstream_errors_total{provider=\"anthropic\",class=\"overloaded\"} 2\n"
        ));
        assert!(
            text.contains("modelgate_hedges_total{virtual_model=\"smart\",outcome=\"won\"} 1\n")
        );
        // A hedge's extra request is no retry.
        m.record(&Outcome {
            virtual_model: Some("smart"),
            served: Some("openai/gpt-4o"),
            status: 200,
            attempts: 2,
            hedges: 1,
            ..Outcome::default()
        });
        assert!(!m
            .render(&Gauges::default())
            .contains("modelgate_retries_total{"));
    }
}
