//! The load tool of the streams phase (`bench/streams.py`): opens `--streams` streaming chat
//! requests, spread evenly over `--ramp-ms`, from several 127.0.0.x source addresses (one address
//! has about 28,000 ephemeral ports), and holds each open until the answer ends. It prints one
//! JSON object: errors by kind, time to response header p50/p99, the gap between two reads of the
//! same stream p50/p99/max (what a chat client sees as stutter), and the SSE events received per
//! second since start (so the driver can divide the server's CPU time of a window by the events it
//! relayed in that window).
//!
//! It speaks just enough HTTP/1.1 for that: one request per connection with `Connection: close`,
//! the answer read to its end. It never parses JSON and connects to loopback addresses only.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

#[derive(Parser)]
#[command(about = "Hold many streaming chat requests open (loopback only)")]
struct Args {
    /// Address of the server under test.
    #[arg(long)]
    target: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// The `model` of every request.
    #[arg(long, default_value = "bench")]
    model: String,
    /// Streams to open.
    #[arg(long)]
    streams: usize,
    /// Open them evenly over this many milliseconds.
    #[arg(long, default_value_t = 4000)]
    ramp_ms: u64,
    /// Source addresses 127.0.0.1 ..= 127.0.0.N, used in turn.
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Give up on a stream after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// `Authorization: Bearer` key, if the server wants one.
    #[arg(long)]
    key: Option<String>,
}

#[derive(Default)]
struct Tally {
    errors: BTreeMap<&'static str, usize>,
    ok: usize,
    ttfb_us: Vec<u64>,
    gap_us: Vec<u64>,
    events_per_second: Vec<u64>,
    open: usize,
    peak_open: usize,
}

impl Tally {
    fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }
    fn events_at(&mut self, since_start: Duration, n: u64) {
        let s = since_start.as_secs() as usize;
        if self.events_per_second.len() <= s {
            self.events_per_second.resize(s + 1, 0);
        }
        self.events_per_second[s] += n;
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if !args.target.ip().is_loopback() {
        return Err(format!("--target {}: loopback addresses only", args.target));
    }
    if args.sources == 0 {
        return Err("--sources must be at least 1".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let tally = rt.block_on(tokio::task::LocalSet::new().run_until(run(&args)));
    println!("{}", report(&args, &tally));
    Ok(())
}

async fn run(args: &Args) -> Tally {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let request = Rc::new(request(args));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let at =
            start + Duration::from_millis(args.ramp_ms) * i as u32 / args.streams.max(1) as u32;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % args.sources as usize) as u8);
        let (tally, request, target) = (tally.clone(), request.clone(), args.target);
        let timeout = Duration::from_secs(args.timeout_s);
        tasks.push(tokio::task::spawn_local(async move {
            tokio::time::sleep_until(at.into()).await;
            let outcome =
                tokio::time::timeout(timeout, stream(source, target, &request, start, &tally))
                    .await
                    .unwrap_or(Err("timeout"));
            let mut t = tally.borrow_mut();
            match outcome {
                Ok(()) => t.ok += 1,
                Err(kind) => t.error(kind),
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Rc::try_unwrap(tally)
        .map(RefCell::into_inner)
        .unwrap_or_default()
}

fn request(args: &Args) -> Vec<u8> {
    let body = format!(
        r#"{{"model":"{}","stream":true,"messages":[{{"role":"user","content":"Tell me a long story."}}]}}"#,
        args.model
    );
    let auth = args
        .key
        .as_ref()
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        args.path,
        args.target,
        body.len()
    )
    .into_bytes()
}

/// One stream: connect, send, read the header, then every read until the server closes.
async fn stream(
    source: Ipv4Addr,
    target: SocketAddr,
    request: &[u8],
    start: Instant,
    tally: &RefCell<Tally>,
) -> Result<(), &'static str> {
    let socket = TcpSocket::new_v4().map_err(|_| "socket")?;
    socket
        .bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))
        .map_err(|_| "bind")?;
    let mut conn = socket.connect(target).await.map_err(|_| "connect")?;
    let sent = Instant::now();
    conn.write_all(request).await.map_err(|_| "write")?;
    {
        let mut t = tally.borrow_mut();
        t.open += 1;
        t.peak_open = t.peak_open.max(t.open);
    }
    let result = read_answer(&mut conn, sent, start, tally).await;
    tally.borrow_mut().open -= 1;
    result
}

async fn read_answer(
    conn: &mut tokio::net::TcpStream,
    sent: Instant,
    start: Instant,
    tally: &RefCell<Tally>,
) -> Result<(), &'static str> {
    let mut buf = vec![0u8; 4096];
    let mut head = Vec::new();
    // The header, up to its blank line.
    let body_start = loop {
        let n = conn.read(&mut buf).await.map_err(|_| "read")?;
        if n == 0 {
            return Err("closed before the header");
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = memchr::memmem::find(&head, b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > 64 * 1024 {
            return Err("header too large");
        }
    };
    let now = Instant::now();
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err("status not 200");
    }
    let mut last = now;
    let mut events = count_events(&head[body_start..]);
    let mut gaps = Vec::new();
    {
        let mut t = tally.borrow_mut();
        t.ttfb_us.push(now.duration_since(sent).as_micros() as u64);
        t.events_at(now.duration_since(start), events);
    }
    loop {
        let n = conn.read(&mut buf).await.map_err(|_| "read")?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        gaps.push(now.duration_since(last).as_micros() as u64);
        last = now;
        let e = count_events(&buf[..n]);
        events += e;
        tally.borrow_mut().events_at(now.duration_since(start), e);
    }
    if events == 0 {
        return Err("no events");
    }
    tally.borrow_mut().gap_us.extend(gaps);
    Ok(())
}

/// SSE events in one read: lines starting `data:` (an event split across two reads is rare at
/// these rates and counted where its `data:` arrives).
fn count_events(bytes: &[u8]) -> u64 {
    memchr::memmem::find_iter(bytes, b"data:").count() as u64
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn report(args: &Args, t: &Tally) -> String {
    let mut ttfb = t.ttfb_us.clone();
    ttfb.sort_unstable();
    let mut gaps = t.gap_us.clone();
    gaps.sort_unstable();
    let errors: Vec<String> = t
        .errors
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    let per_second: Vec<String> = t.events_per_second.iter().map(u64::to_string).collect();
    format!(
        "{{\"streams\":{},\"ok\":{},\"errors\":{{{}}},\"peak_open\":{},\"ttfb_ms\":{{\"p50\":{:.3},\"p99\":{:.3}}},\"gap_ms\":{{\"p50\":{:.3},\"p99\":{:.3},\"max\":{:.3}}},\"events\":{},\"events_per_second\":[{}]}}",
        args.streams,
        t.ok,
        errors.join(","),
        t.peak_open,
        percentile(&ttfb, 0.5),
        percentile(&ttfb, 0.99),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.last().copied().unwrap_or(0) as f64 / 1000.0,
        t.events_per_second.iter().sum::<u64>(),
        per_second.join(",")
    )
}
