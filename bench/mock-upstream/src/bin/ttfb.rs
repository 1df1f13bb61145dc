//! Time to first byte of a streamed chat completion: sends `--n` streaming requests one after
//! another on one keep-alive connection and times each from sending the request to the first
//! body chunk (the first SSE event), then prints one JSON line with the percentiles.
//!
//! Sequential on purpose: it measures the latency a proxy adds to the first token, not
//! throughput. It talks to loopback only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

#[derive(Parser)]
#[command(about = "Time to first SSE chunk through a proxy (loopback only)")]
struct Args {
    /// Loopback address of the server.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    #[arg(long, default_value = "bench")]
    model: String,
    /// Timed requests.
    #[arg(long, default_value_t = 500)]
    n: usize,
    /// Untimed requests first.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Extra request header, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        return Err(format!("--addr {}: loopback only", args.addr));
    }
    if args.n == 0 {
        return Err("--n must be above 0".into());
    }
    let body = Bytes::from(format!(
        r#"{{"model":"{}","stream":true,"messages":[{{"role":"user","content":"Say something short."}}]}}"#,
        args.model
    ));
    let mut sender = connect(args.addr).await?;
    let mut samples = Vec::with_capacity(args.n);
    for i in 0..args.warmup + args.n {
        if sender.ready().await.is_err() {
            sender = connect(args.addr).await?;
        }
        let mut req = hyper::Request::post(args.path.as_str())
            .header("host", args.addr.to_string())
            .header("content-type", "application/json")
            .header("content-length", body.len());
        for h in &args.headers {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| format!("--header {h:?}: expected `name: value`"))?;
            req = req.header(k.trim(), v.trim());
        }
        let req = req
            .body(Full::new(body.clone()))
            .map_err(|e| format!("bad request: {e}"))?;
        let start = Instant::now();
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request {i}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("request {i}: status {}", resp.status()));
        }
        let mut body = resp.into_body();
        let mut first: Option<Duration> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("request {i}: body: {e}"))?;
            if first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
                first = Some(start.elapsed());
            }
        }
        let first = first.ok_or_else(|| format!("request {i}: empty stream"))?;
        if i >= args.warmup {
            samples.push(first);
        }
    }
    samples.sort();
    let pct = |p: f64| {
        let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[idx].as_secs_f64() * 1e6
    };
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
    println!(
        r#"{{"n":{},"p50_us":{:.1},"p99_us":{:.1},"mean_us":{:.1}}}"#,
        samples.len(),
        pct(0.5),
        pct(0.99),
        mean * 1e6
    );
    Ok(())
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}
