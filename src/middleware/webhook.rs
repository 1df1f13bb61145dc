//! `webhook`: the post-response record POSTed as JSON to a receiver, off the request path.
//!
//! The request path only offers the encoded record to a bounded queue (`try_send`: a full queue
//! drops the record and counts it; nothing waits and nothing wakes a thread). One sender thread
//! per process wakes every `PERIOD`, takes what is queued and POSTs each record once, bounded
//! by the step's `timeout_ms`; a failure is counted and logged (at most every `LOG_EVERY`), never
//! retried, so a dead or slow receiver costs clients nothing and the queue stays bounded.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::build::{parse_config, FieldProblem};
use super::counters::{Counters, COUNTERS};

/// Records that may wait for the sender; more are dropped (and counted).
pub const QUEUE: usize = 1024;
/// How long a queued record may wait for the sender to wake.
const PERIOD: Duration = Duration::from_millis(20);
/// At most one failure log line per receiver outage window.
const LOG_EVERY: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const MAX_TIMEOUT_MS: u64 = 60_000;

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
}

/// Where and how one webhook step posts.
pub(super) struct Target {
    url: String,
    headers: Vec<(String, String)>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be credentials: never printed.
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("headers", &self.headers.len())
            .finish()
    }
}

impl Target {
    /// The URL without its query, which may carry a token, for log lines.
    fn shown(&self) -> &str {
        self.url.split(['?', '#']).next().unwrap_or("")
    }
}

struct Job {
    target: Arc<Target>,
    body: Arc<str>,
}

/// The bounded queue and its sender thread.
pub struct Dispatcher {
    tx: SyncSender<Job>,
    counters: &'static Counters,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

static GLOBAL: OnceLock<Dispatcher> = OnceLock::new();

impl Dispatcher {
    /// A queue of `capacity` records and its sender thread, counting into `counters`. The
    /// thread ends once the dispatcher is dropped and the queue is empty.
    pub fn start(capacity: usize, counters: &'static Counters) -> std::io::Result<Dispatcher> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        std::thread::Builder::new()
            .name("webhook-sender".into())
            .spawn(move || send_loop(rx, counters, PERIOD))?;
        Ok(Dispatcher { tx, counters })
    }

    /// The process's dispatcher (1024 records, `COUNTERS`), started by the first pipeline
    /// with a webhook, when a snapshot is built.
    pub fn global() -> std::io::Result<&'static Dispatcher> {
        if let Some(d) = GLOBAL.get() {
            return Ok(d);
        }
        let d = Dispatcher::start(QUEUE, &COUNTERS)?;
        // A racing builder may have won; its dispatcher is used and this one ends.
        Ok(GLOBAL.get_or_init(|| d))
    }

    fn send(&self, target: &Arc<Target>, body: &Arc<str>) {
        let job = Job {
            target: target.clone(),
            body: body.clone(),
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.webhook_dropped()
            }
        }
    }
}

/// After a failed delivery, records for that receiver are dropped (and counted) for a pause
/// that doubles from `PAUSE_MIN` up to `PAUSE_MAX` while it keeps failing, so a dead receiver
/// costs one attempt per pause instead of one per request.
const PAUSE_MIN: Duration = Duration::from_secs(1);
const PAUSE_MAX: Duration = Duration::from_secs(30);

fn send_loop(rx: Receiver<Job>, counters: &'static Counters, period: Duration) {
    let mut last_log: Option<Instant> = None;
    // Per receiver URL: until when its records are dropped, and the pause that set it.
    let mut paused: std::collections::HashMap<String, (Instant, Duration)> =
        std::collections::HashMap::new();
    loop {
        std::thread::park_timeout(period);
        loop {
            let job = match rx.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            };
            let now = Instant::now();
            if paused
                .get(&job.target.url)
                .is_some_and(|(until, _)| now < *until)
            {
                counters.webhook_dropped();
                continue;
            }
            match post(&job) {
                Ok(()) => {
                    paused.remove(&job.target.url);
                    counters.webhook_sent()
                }
                Err(e) => {
                    let pause = paused
                        .get(&job.target.url)
                        .map_or(PAUSE_MIN, |(_, p)| (*p * 2).min(PAUSE_MAX));
                    paused.insert(job.target.url.clone(), (Instant::now() + pause, pause));
                    let failed = counters.webhook_failed();
                    if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        last_log = Some(Instant::now());
                        log::warn!(
                            target: super::log_line::TARGET,
                            "webhook {}: {e}; the record is dropped ({failed} failed so far), and so are the next {} s of records",
                            job.target.shown(),
                            pause.as_secs()
                        );
                    }
                }
            }
        }
    }
}

fn post(job: &Job) -> Result<(), String> {
    let mut request = job
        .target
        .agent
        .post(&job.target.url)
        .set("content-type", "application/json");
    for (name, value) in &job.target.headers {
        request = request.set(name, value);
    }
    match request.send_string(&job.body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(format!("the receiver answered {code}")),
        Err(ureq::Error::Transport(t)) => Err(format!("could not deliver: {}", t.kind())),
    }
}

/// One webhook step.
#[derive(Debug)]
pub(super) struct Webhook {
    target: Arc<Target>,
    dispatcher: &'static Dispatcher,
}

impl Webhook {
    pub fn compile(config: &Value) -> Result<Webhook, Vec<FieldProblem>> {
        Self::compile_with(config, Dispatcher::global)
    }

    fn compile_with(
        config: &Value,
        dispatcher: impl FnOnce() -> std::io::Result<&'static Dispatcher>,
    ) -> Result<Webhook, Vec<FieldProblem>> {
        let c: Config = parse_config(config)?;
        let mut problems = Vec::new();
        let host = c
            .url
            .strip_prefix("http://")
            .or_else(|| c.url.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            problems.push(FieldProblem::invalid(
                "url",
                format!("{:?} is not an http:// or https:// URL with a host", c.url),
            ));
        }
        if c.timeout_ms == 0 || c.timeout_ms > MAX_TIMEOUT_MS {
            problems.push(FieldProblem::invalid(
                "timeout_ms",
                format!(
                    "{} is out of range; use 1 to {MAX_TIMEOUT_MS} (default {DEFAULT_TIMEOUT_MS})",
                    c.timeout_ms
                ),
            ));
        }
        for (name, value) in &c.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(FieldProblem::invalid(
                    format!("headers.{name}"),
                    format!("\"{name}\" is not a valid header name"),
                ));
            } else if HeaderValue::from_str(value).is_err() {
                problems.push(FieldProblem::invalid(
                    format!("headers.{name}"),
                    "the value is not a valid header value (visible ASCII, no line breaks)",
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let dispatcher = dispatcher().map_err(|e| {
            vec![FieldProblem::invalid(
                "",
                format!("the webhook sender thread could not start: {e}"),
            )]
        })?;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(c.timeout_ms))
            .build();
        Ok(Webhook {
            target: Arc::new(Target {
                url: c.url,
                headers: c.headers.into_iter().collect(),
                agent,
            }),
            dispatcher,
        })
    }

    /// Queues the encoded record; never blocks.
    pub fn send(&self, record_json: &Arc<str>) {
        self.dispatcher.send(&self.target, record_json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn leaked_counters() -> &'static Counters {
        Box::leak(Box::new(Counters::new()))
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let counters = leaked_counters();
        // No sender thread: the queue fills and stays full.
        let (tx, _rx) = mpsc::sync_channel(2);
        let dispatcher: &'static Dispatcher = Box::leak(Box::new(Dispatcher { tx, counters }));
        let hook = Webhook::compile_with(&json!({"url": "http://127.0.0.1:9/hook"}), || {
            Ok(dispatcher)
        })
        .expect("valid config");
        let body: Arc<str> = "{}".into();
        for _ in 0..5 {
            hook.send(&body);
        }
        assert_eq!(counters.webhook(), (0, 0, 3));
    }

    #[test]
    fn a_dead_receiver_is_tried_once_then_paused() {
        let counters = leaked_counters();
        let dispatcher: &'static Dispatcher = Box::leak(Box::new(
            Dispatcher::start(16, counters).expect("sender thread"),
        ));
        // Nothing listens on a port that was just free.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("http://127.0.0.1:{port}/hook");
        let hook =
            Webhook::compile_with(&json!({"url": url, "timeout_ms": 500}), || Ok(dispatcher))
                .expect("valid config");
        let body: Arc<str> = "{}".into();
        for _ in 0..6 {
            hook.send(&body);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.webhook().1 + counters.webhook().2 < 6 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // One delivery attempted and failed; the rest dropped during the pause it set.
        assert_eq!(counters.webhook(), (0, 1, 5));
    }

    #[test]
    fn config_mistakes_are_named() {
        let problems = Webhook::compile_with(
            &json!({"url": "ftp://x", "timeout_ms": 0, "headers": {"bad name": "v"}}),
            || Err(std::io::Error::other("not reached")),
        )
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["url", "timeout_ms", "headers.bad name"]);
        let problems = Webhook::compile_with(&json!({"url": "http://x", "retries": 3}), || {
            Err(std::io::Error::other("not reached"))
        })
        .unwrap_err();
        assert!(problems[0]
            .problem
            .to_string()
            .contains("unknown field `retries`"));
    }

    #[test]
    fn the_url_in_logs_has_no_query() {
        let t = Target {
            url: "https://hooks.example/x?token=secret".into(),
            headers: Vec::new(),
            agent: ureq::Agent::new(),
        };
        assert_eq!(t.shown(), "https://hooks.example/x");
    }
}
