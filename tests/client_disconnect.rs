//! A client that hangs up before the answer is the client's doing: the gateway must neither
//! retry the abandoned request upstream nor count it against the target's circuit breaker.
//! (Load tools close their connections with requests in flight at the end of every run.)

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{chat_reply, Gateway, Reply, Upstream};

#[test]
fn client_disconnects_neither_retry_nor_open_the_circuit() {
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let arrived_tx = Mutex::new(arrived_tx);
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let up = Upstream::start(&["m1"], move |s| {
        if s.header("x-test") == Some("hang") {
            let _ = arrived_tx.lock().unwrap().send(());
            // Held until the test ends (the sender is dropped) or a safety bound.
            let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(30));
        }
        Reply::Json(200, chat_reply("m1", "ok"))
    });
    let cfg = format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models: [m1]\n    circuit_breaker: {{failure_threshold: 2}}\nvirtual_models:\n  - source: v\n    targets: [{{model: a/m1, retry: {{attempts: 3}}}}]\n",
        up.base_url()
    );
    let g = Gateway::start(&cfg, &[]);

    let body = br#"{"model":"v","messages":[{"role":"user","content":"hi"}]}"#;
    for n in 1..=3 {
        let mut s = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-test: hang\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        assert!(
            arrived.recv_timeout(Duration::from_secs(10)).is_ok(),
            "request {n} never reached the upstream: {}",
            g.logs()
        );
        drop(s);
        // Wait until the gateway has finished with the abandoned request (its access-log line).
        let deadline = Instant::now() + Duration::from_secs(10);
        let done = || {
            g.logs()
                .lines()
                .filter(|l| l.contains("access]") && l.contains("/v1/chat/completions"))
                .count()
        };
        while done() < n {
            assert!(
                Instant::now() < deadline,
                "no access log line: {}",
                g.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let abandoned: Vec<String> = g
        .logs()
        .lines()
        .filter(|l| l.contains("access]") && l.contains("/v1/chat/completions"))
        .map(str::to_string)
        .collect();
    assert!(
        abandoned
            .iter()
            .all(|l| l.contains("status=499") && l.contains("error=client_closed_request")),
        "{abandoned:#?}"
    );

    let r = g.chat("v");
    assert_eq!(r.status, 200, "{}", r.body);
    let hung = up
        .requests()
        .iter()
        .filter(|s| s.header("x-test") == Some("hang"))
        .count();
    assert_eq!(hung, 3, "abandoned requests were retried upstream");
    drop(release);
}

/// Reads the gateway's answer on `s` until `marker` has arrived (bounded), then hangs up.
fn read_until_then_close(mut s: TcpStream, marker: &str) -> String {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains(marker) {
        assert!(Instant::now() < deadline, "no {marker:?} in {got:?}");
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_client_that_hangs_up_after_the_last_event_had_the_whole_answer() {
    // The upstream ends its body a while after [DONE], as providers do; SDKs close at [DONE].
    let event = |v: serde_json::Value| format!("data: {v}\n\n").into_bytes();
    let chunks = vec![
        (
            Duration::ZERO,
            event(
                serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m1",
                "choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": "stop"}]}),
            ),
        ),
        (
            Duration::ZERO,
            event(
                serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m1",
                "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}),
            ),
        ),
        (Duration::ZERO, b"data: [DONE]\n\n".to_vec()),
        (Duration::from_secs(2), b": done\n\n".to_vec()),
    ];
    let up = Upstream::start(&["m1"], move |_| Reply::Paced {
        head_after: Duration::ZERO,
        chunks: chunks.clone(),
    });
    let cfg = format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models: [m1]\n",
        up.base_url()
    );
    let g = Gateway::start(&cfg, &[]);
    let body = br#"{"model":"a/m1","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut s = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let got = read_until_then_close(s, "data: [DONE]\n\n");
    assert!(got.contains("hello"), "{got}");
    assert!(
        !got.contains("\"usage\""),
        "the client did not ask for usage: {got}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let logs = g.logs();
        if let Some(l) = logs
            .lines()
            .find(|l| l.contains("access]") && l.contains("/v1/chat/completions"))
        {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no access log line: {logs}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("tokens=7/3"), "{line}");
    assert!(!line.contains("client_closed_request"), "{line}");
}
