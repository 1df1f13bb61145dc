//! A fast OpenAI-style upstream for the load benchmark: `POST /v1/chat/completions` (a JSON
//! answer, or `--chunks` SSE chunks (20) when the body says `"stream": true`) and `GET /v1/models`.
//! With `--count-minutes`, `GET /stats` answers how many completion requests arrived in each
//! Unix minute (`{"completions_by_minute": {"29416321": 100}}`), for the limits benchmark.
//!
//! It must stay cheap next to the proxies it measures: it reads the body whole but never parses
//! it as JSON (a byte scan finds `model` and `stream`), and it answers on a single thread unless
//! told otherwise. It listens on loopback only and never calls anything.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Parser, Clone)]
#[command(about = "OpenAI-style mock upstream for benchmarks (loopback only)")]
struct Args {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pause between SSE chunks, in microseconds (0: all chunks at once).
    #[arg(long, default_value_t = 0)]
    chunk_delay_us: u64,
    /// SSE chunks per streamed answer (the last carries `finish_reason`), then `[DONE]`.
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// Model ids listed by GET /v1/models (comma-separated).
    #[arg(long, default_value = "bench-a,bench-b")]
    models: String,
    /// Share of completion requests (in percent, spread evenly: every 1/p-th) whose answer
    /// header waits `--slow-first-byte-ms`, as a provider with a slow tail would.
    #[arg(long, default_value_t = 0)]
    slow_percent: u64,
    /// The wait before a slow answer's header, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    slow_first_byte_ms: u64,
    /// Count completion requests per Unix minute, answered by `GET /stats`.
    #[arg(long)]
    count_minutes: bool,
}

/// Completion requests by the Unix minute they arrived in (`--count-minutes`).
type Minutes = Option<std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<u64, u64>>>>;

fn minutes_json(m: &Minutes) -> Bytes {
    let Some(m) = m else {
        return Bytes::from_static(br#"{"error":{"message":"start with --count-minutes"}}"#);
    };
    let map = m.lock().unwrap_or_else(|p| p.into_inner());
    let rows: Vec<String> = map.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    Bytes::from(format!(
        "{{\"completions_by_minute\":{{{}}}}}",
        rows.join(",")
    ))
}

/// Which requests are slow: the `n`-th is when it carries the running share of
/// `slow_percent` over the next whole number (exactly p of every 100, evenly spread).
#[derive(Clone)]
struct Slowness {
    percent: u64,
    wait: Duration,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Slowness {
    fn next_wait(&self) -> Option<Duration> {
        if self.percent == 0 {
            return None;
        }
        let n = self
            .served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ((n + 1) * self.percent / 100 > n * self.percent / 100).then_some(self.wait)
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        return Err(format!(
            "--listen {}: the mock upstream listens on loopback only",
            args.listen
        ));
    }
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), String> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    eprintln!("mock upstream listening on {}", args.listen);
    let models = Bytes::from(models_json(&args.models));
    let delay = (args.chunk_delay_us > 0).then(|| Duration::from_micros(args.chunk_delay_us));
    let chunks = args.chunks.max(1);
    let slow = Slowness {
        percent: args.slow_percent.min(100),
        wait: Duration::from_millis(args.slow_first_byte_ms),
        served: Default::default(),
    };
    let minutes: Minutes = args.count_minutes.then(Default::default);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let models = models.clone();
        let slow = slow.clone();
        let minutes = minutes.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                handle(
                    req,
                    models.clone(),
                    delay,
                    chunks,
                    slow.clone(),
                    minutes.clone(),
                )
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    models: Bytes,
    delay: Option<Duration>,
    chunks: usize,
    slow: Slowness,
    minutes: Minutes,
) -> Result<Response<Answer>, Infallible> {
    let path = req.uri().path().trim_end_matches('/');
    if req.method() == hyper::Method::GET && path.ends_with("/models") {
        return Ok(json(200, models));
    }
    if req.method() == hyper::Method::GET && path == "/stats" {
        return Ok(json(200, minutes_json(&minutes)));
    }
    if req.method() != hyper::Method::POST || !path.ends_with("/chat/completions") {
        return Ok(json(
            404,
            Bytes::from_static(br#"{"error":{"message":"not found"}}"#),
        ));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(json(
                400,
                Bytes::from_static(br#"{"error":{"message":"bad body"}}"#),
            ))
        }
    };
    if let Some(m) = &minutes {
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 60);
        *m.lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(minute)
            .or_default() += 1;
    }
    let model = string_field(&body, b"\"model\"").unwrap_or("unknown");
    if let Some(wait) = slow.next_wait() {
        tokio::time::sleep(wait).await;
    }
    if bool_field(&body, b"\"stream\"") {
        let mut r = Response::new(Answer::Sse(Sse::new(model, delay, chunks)));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/event-stream"),
        );
        return Ok(r);
    }
    Ok(json(200, Bytes::from(completion(model))))
}

fn json(status: u16, body: Bytes) -> Response<Answer> {
    let mut r = Response::new(Answer::Full(Full::new(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The string value after the first occurrence of `key` (a quoted JSON key), without escapes.
fn string_field<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let at = memchr::memmem::find(body, key)? + key.len();
    let rest = skip_ws(&body[at..]).strip_prefix(b":")?;
    let rest = skip_ws(rest).strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Whether the first occurrence of `key` (a quoted JSON key) is followed by `true`.
fn bool_field(body: &[u8], key: &[u8]) -> bool {
    memchr::memmem::find(body, key)
        .and_then(|at| skip_ws(&body[at + key.len()..]).strip_prefix(b":"))
        .is_some_and(|rest| skip_ws(rest).starts_with(b"true"))
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn models_json(ids: &str) -> String {
    let data: Vec<String> = ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|id| format!(r#"{{"id":"{id}","object":"model","created":0,"owned_by":"bench"}}"#))
        .collect();
    format!(r#"{{"object":"list","data":[{}]}}"#, data.join(","))
}

fn completion(model: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"This is a benchmark answer of a typical short length, about twenty tokens long."}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":20,"total_tokens":32}}}}"#
    )
}

fn chunk(model: &str, i: usize, n: usize) -> Bytes {
    let (content, finish) = if i + 1 == n {
        ("", r#""stop""#)
    } else {
        ("tok ", "null")
    };
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":{finish}}}]}}\n\n"
    ))
}

/// A response body: whole, or SSE chunks released one by one.
enum Answer {
    Full(Full<Bytes>),
    Sse(Sse),
}

struct Sse {
    chunks: VecDeque<Bytes>,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    first: bool,
}

impl Sse {
    fn new(model: &str, delay: Option<Duration>, n: usize) -> Sse {
        let mut chunks: VecDeque<Bytes> = (0..n).map(|i| chunk(model, i, n)).collect();
        chunks.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        Sse {
            chunks,
            delay,
            sleep: None,
            first: true,
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Answer::Full(f) => Pin::new(f).poll_frame(cx),
            Answer::Sse(s) => {
                // The first chunk goes out with the headers; each later one waits `delay`.
                if let (Some(d), false) = (s.delay, s.first) {
                    let sleep = s
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    s.sleep = None;
                }
                s.first = false;
                Poll::Ready(s.chunks.pop_front().map(|c| Ok(Frame::data(c))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::Full(f) => f.is_end_stream(),
            Answer::Sse(s) => s.chunks.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_without_parsing() {
        let b = br#"{"model" : "bench", "messages":[], "stream":true}"#;
        assert_eq!(string_field(b, b"\"model\""), Some("bench"));
        assert!(bool_field(b, b"\"stream\""));
        assert!(!bool_field(br#"{"stream": false}"#, b"\"stream\""));
        assert!(!bool_field(br#"{"model":"m"}"#, b"\"stream\""));
    }

    #[test]
    fn slow_answers_are_the_given_share_evenly_spread() {
        let s = Slowness {
            percent: 20,
            wait: Duration::from_millis(1),
            served: Default::default(),
        };
        let slow: Vec<bool> = (0..100).map(|_| s.next_wait().is_some()).collect();
        assert_eq!(slow.iter().filter(|x| **x).count(), 20);
        assert!(slow[..10].iter().filter(|x| **x).count() == 2);
    }
}
