//! Reliability per target, black box: the real binary against mock upstreams on 127.0.0.1 that
//! fail on command. Each test asserts on what the client got and what every upstream saw;
//! none asserts on time (slow or silent upstreams only make the gateway's timers fire).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Providers `a` (models m1, m2) and `b` (m3) at two mock upstreams, plus `extra` YAML at the
/// top level and the given virtual models.
fn config(a: &Upstream, b: &Upstream, extra: &str, vms: &str) -> String {
    format!(
        "{extra}providers:\n{}{}virtual_models:\n{vms}",
        provider_block("a", a, &["m1", "m2"]),
        provider_block("b", b, &["m3"])
    )
}

fn failing(status: u16, message: &str) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let message = message.to_string();
    move |_| Reply::Json(status, json!({"error": {"message": message, "type": "x"}}))
}

fn chat_body(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn served(r: &Resp) -> &str {
    r.header("x-modelgate-model").unwrap_or("")
}

#[test]
fn a_500_is_retried_once_then_falls_back() {
    let a = Upstream::start(&[], failing(500, "a is down"));
    let b = Upstream::echo(&[]);
    let vms = "  - source: smart\n    strategy: priority\n    targets: [a/m1, b/m3]\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    let r = g.chat("smart");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "b/m3");
    // Default retry: 2 tries on a, then b.
    assert_eq!(r.header("x-modelgate-attempts"), Some("3"));
    assert_eq!(a.requests().len(), 2);
    assert_eq!(b.requests().len(), 1);
    assert_eq!(b.requests()[0].json()["model"], "m3");
}

#[test]
fn a_400_goes_to_the_client_without_retry_or_fallback() {
    let a = Upstream::start(&[], failing(400, "temperature is out of range"));
    let b = Upstream::echo(&[]);
    let vms = "  - source: smart\n    strategy: priority\n    targets: [a/m1, b/m3]\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    let r = g.chat("smart");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "temperature is out of range");
    assert_eq!(r.header("x-modelgate-attempts"), Some("1"));
    assert_eq!(a.requests().len(), 1);
    assert!(b.requests().is_empty());
}

#[test]
fn a_retry_that_succeeds_stays_on_the_same_target() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let a = Upstream::start(&[], move |s| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Json(503, json!({"error": {"message": "busy"}}))
        } else {
            Reply::Json(200, chat_reply(s.json()["model"].as_str().unwrap(), "ok"))
        }
    });
    let b = Upstream::echo(&[]);
    let vms = "  - source: smart\n    strategy: priority\n    targets: [a/m1, b/m3]\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    let r = g.chat("smart");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "a/m1");
    assert_eq!(r.header("x-modelgate-attempts"), Some("2"));
    let seen = a.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body, "the retry sends the same body");
    assert!(b.requests().is_empty());
}

#[test]
fn connection_refused_falls_back() {
    let closed = free_port();
    let b = Upstream::echo(&[]);
    let cfg = format!(
        "providers:\n  dead:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{closed}/v1\n    api_key: k\n    models: [m]\n{}virtual_models:\n  - source: smart\n    strategy: priority\n    targets: [dead/m, b/m3]\n",
        provider_block("b", &b, &["m3"])
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.chat("smart");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "b/m3");
    assert_eq!(b.requests().len(), 1);
}

#[test]
fn when_every_target_answers_429_the_client_gets_the_last_one_whole() {
    let a = Upstream::start(&[], |_| {
        Reply::Raw(
            429,
            vec![
                ("content-type".into(), "application/json".into()),
                ("retry-after".into(), "7".into()),
            ],
            br#"{"error":{"message":"a: slow down"}}"#.to_vec(),
        )
    });
    let b = Upstream::start(&[], |_| {
        Reply::Raw(
            429,
            vec![
                ("content-type".into(), "application/json".into()),
                ("retry-after".into(), "9".into()),
            ],
            br#"{"error":{"message":"b: slow down"}}"#.to_vec(),
        )
    });
    let vms = "  - source: smart\n    strategy: priority\n    targets:\n      - {model: a/m1, retry: {attempts: 1}}\n      - {model: b/m3, retry: {attempts: 1}}\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    let r = g.chat("smart");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("9"));
    assert_eq!(r.json()["error"]["message"], "b: slow down");
    assert_eq!(r.header("x-modelgate-attempts"), Some("2"));
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
}

#[test]
fn an_open_breaker_stops_contacting_a_dead_target() {
    let a = Upstream::start(&[], failing(500, "a is down"));
    let b = Upstream::echo(&[]);
    let vms = "  - source: smart\n    strategy: priority\n    targets: [a/m1, b/m3]\n";
    let breaker = "circuit_breaker: {failure_threshold: 5, open_seconds: 3600}\n";
    let g = Gateway::start(&config(&a, &b, breaker, vms), &[]);
    // With the default retry each request tries a twice: 2 + 2 + 1 = 5 consecutive failures,
    // and the try that opens the breaker is not retried.
    for _ in 0..3 {
        let r = g.chat("smart");
        assert_eq!((r.status, served(&r)), (200, "b/m3"), "{}", r.body);
    }
    assert_eq!(a.requests().len(), 5);
    for _ in 0..4 {
        let r = g.chat("smart");
        assert_eq!((r.status, served(&r)), (200, "b/m3"));
        assert_eq!(r.header("x-modelgate-attempts"), Some("1"));
    }
    assert_eq!(
        a.requests().len(),
        5,
        "no request reaches a while its breaker is open"
    );
    assert_eq!(b.requests().len(), 7);
}

#[test]
fn every_breaker_open_is_a_503_with_retry_after() {
    let a = Upstream::start(&[], failing(500, "a is down"));
    let b = Upstream::start(&[], failing(502, "b is down"));
    let vms = "  - source: smart\n    strategy: round_robin\n    targets: [a/m1, b/m3]\n";
    let breaker = "circuit_breaker: {failure_threshold: 1, open_seconds: 3600}\n";
    let g = Gateway::start(&config(&a, &b, breaker, vms), &[]);
    // The first request opens both breakers and gets the last upstream error, whole.
    let r = g.chat("smart");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["message"], "b is down");
    let r = g.chat("smart");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "circuit_open"),
        "{}",
        r.body
    );
    // The virtual model applied, though no upstream request was made.
    assert_eq!(r.header("x-modelgate-virtual-model"), Some("smart"));
    assert_eq!(r.header("x-modelgate-attempts"), Some("0"));
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    // The breakers half-open in an hour, not in some fixed default.
    assert!(after > 3000 && after <= 3600, "Retry-After {after}");
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
}

#[test]
fn an_sla_breach_makes_a_target_ineligible() {
    // a answers correctly but its first byte comes long after the SLA's 5 ms.
    let a = Upstream::start(&[], |s| {
        std::thread::sleep(Duration::from_millis(60));
        Reply::Json(200, chat_reply(s.json()["model"].as_str().unwrap(), "slow"))
    });
    let b = Upstream::echo(&[]);
    let vms = "  - source: smart\n    strategy: priority\n    targets:\n      - {model: a/m1, sla: {time_to_first_token_ms: 5}}\n      - b/m3\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    // A verdict needs 3 samples; each is recorded before its response ends.
    for _ in 0..3 {
        let r = g.chat("smart");
        assert_eq!((r.status, served(&r)), (200, "a/m1"), "{}", r.body);
    }
    for _ in 0..2 {
        let r = g.chat("smart");
        assert_eq!((r.status, served(&r)), (200, "b/m3"), "{}", r.body);
    }
    assert_eq!(a.requests().len(), 3);
}

#[test]
fn sessions_stick_to_their_target_and_move_when_it_becomes_ineligible() {
    let a = Upstream::echo(&[]);
    let b = Upstream::echo(&[]);
    // a serves only requests whose metadata says region=eu; b serves everyone.
    let vms = "  - source: lb\n    targets:\n      - {model: a/m1, metadata_match: {region: eu}}\n      - b/m3\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    let send = |session: Option<&str>, eu: bool, path: Option<&str>| -> String {
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = session {
            h.push(("x-session-id", s));
        }
        if eu {
            h.push(("x-modelgate-metadata", r#"{"region":"eu"}"#));
        }
        if let Some(p) = path {
            h.push(("x-modelgate-user-path", p));
        }
        let r = g.post("/v1/chat/completions", &chat_body("lb"), &h);
        assert_eq!(r.status, 200, "{}", r.body);
        served(&r).to_string()
    };
    // Without a session, round-robin spreads.
    assert_eq!(
        [send(None, true, None), send(None, true, None)],
        ["a/m1", "b/m3"]
    );
    // A session keeps the target it started on.
    let first = send(Some("s1"), true, None);
    assert_eq!(first, "a/m1");
    for _ in 0..3 {
        assert_eq!(send(Some("s1"), true, None), "a/m1");
    }
    // a is ineligible for a request without the metadata: the session moves to b...
    assert_eq!(send(Some("s1"), false, None), "b/m3");
    // ...and stays there once a is eligible again.
    for _ in 0..3 {
        assert_eq!(send(Some("s1"), true, None), "b/m3");
    }
    // The same session id from another caller is another session; path spellings of one
    // caller are one session.
    let x = send(Some("s2"), true, Some("/team/x"));
    let y = send(Some("s2"), true, Some("/team/y"));
    assert_ne!(x, y, "round-robin gave the second caller the other target");
    // (The rotation's next pick is x's target: only the pin can give y's.)
    assert_eq!(send(Some("s2"), true, Some("team/y/")), y);
    assert_eq!(send(Some("s2"), true, Some("/team/x")), x);
}

#[test]
fn override_params_and_header_rules_reach_the_upstream() {
    let a = Upstream::echo(&[]);
    let b = Upstream::echo(&[]);
    let vms = "  - source: smart\n    targets:\n      - model: a/m1\n        override_params: {temperature: 0.2, max_tokens: 5}\n        headers: {set: {x-team: alpha}, remove: [x-debug]}\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "smart", "temperature": 1.0, "top_p": 0.5, "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-debug", "1"), ("x-keep", "k"), ("x-team", "client")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = &a.requests()[0];
    let body = seen.json();
    assert_eq!(body["temperature"], json!(0.2), "override wins");
    assert_eq!(body["max_tokens"], json!(5));
    assert_eq!(body["top_p"], json!(0.5), "the client's other fields stay");
    assert_eq!(body["model"], "m1");
    assert_eq!(body["messages"][0]["content"], "hi");
    assert_eq!(seen.header("x-team"), Some("alpha"));
    assert_eq!(seen.header("x-debug"), None);
    assert_eq!(seen.header("x-keep"), Some("k"));
}

#[test]
fn a_stream_falls_back_when_the_first_target_fails_before_streaming() {
    let a = Upstream::start(&[], failing(500, "a is down"));
    let b = Upstream::start(&[], |_| {
        Reply::Stream(
            vec![
                b"data: {\"choices\":[{\"delta\":{\"content\":\"from b\"}}]}\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec(),
            ],
            None,
        )
    });
    let vms = "  - source: smart\n    strategy: priority\n    targets:\n      - {model: a/m1, retry: {attempts: 1}}\n      - b/m3\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "smart", "stream": true, "messages": []}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(served(&r), "b/m3");
    assert!(
        r.body.contains("from b") && r.body.ends_with("data: [DONE]\n\n"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("a is down"));
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
    assert_eq!(b.requests()[0].json()["stream"], true);
}

#[test]
fn model_types_refuse_other_operations_with_422() {
    let a = Upstream::echo(&[]);
    let b = Upstream::echo(&[]);
    let vms = "  - source: chatty\n    target: a/m1\n    model_types: [chat]\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    let r = g.post(
        "/v1/embeddings",
        &json!({"model": "chatty", "input": "x"}),
        &[],
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "unsupported_operation"),
        "{}",
        r.body
    );
    assert_eq!(
        r.json()["error"]["message"],
        "virtual model chatty does not serve embedding requests (model_types: chat)"
    );
    assert!(a.requests().is_empty());
    assert_eq!(g.chat("chatty").status, 200);
}

#[test]
fn cost_routes_to_the_cheapest_priced_target_and_falls_back_by_price() {
    let cheap_ok = Arc::new(AtomicBool::new(true));
    let flag = cheap_ok.clone();
    let a = Upstream::echo(&[]);
    let b = Upstream::start(&[], move |s| {
        if flag.load(Ordering::SeqCst) {
            Reply::Json(200, chat_reply(s.json()["model"].as_str().unwrap(), "ok"))
        } else {
            Reply::Json(500, json!({"error": {"message": "down"}}))
        }
    });
    let cfg = format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models:\n      - {{id: m1, pricing: {{input_per_mtok: 5, output_per_mtok: 15}}}}\n      - m2\n  b:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models:\n      - {{id: m3, pricing: {{input_per_mtok: 0.1, output_per_mtok: 0.4}}}}\nvirtual_models:\n  - source: thrifty\n    strategy: cost\n    targets: [a/m2, a/m1, {{model: b/m3, retry: {{attempts: 1}}}}]\n",
        a.base_url(),
        b.base_url()
    );
    let g = Gateway::start(&cfg, &[]);
    for _ in 0..3 {
        assert_eq!(served(&g.chat("thrifty")), "b/m3");
    }
    // The cheapest fails: the next by price answers; the unpriced m2 is the last resort.
    cheap_ok.store(false, Ordering::SeqCst);
    let r = g.chat("thrifty");
    assert_eq!((r.status, served(&r)), (200, "a/m1"), "{}", r.body);
    assert!(a.requests().iter().all(|s| s.json()["model"] == "m1"));
}

#[test]
fn priority_serves_the_lowest_priority_and_falls_back_up_the_chain() {
    let a = Upstream::echo(&[]);
    let b = Upstream::start(&[], failing(503, "b is down"));
    let vms = "  - source: chain\n    strategy: priority\n    targets:\n      - {model: a/m1, priority: 2}\n      - {model: a/m2, priority: 3}\n      - {model: b/m3, priority: 1, retry: {attempts: 1}}\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    let r = g.chat("chain");
    assert_eq!((r.status, served(&r)), (200, "a/m1"), "{}", r.body);
    assert_eq!(b.requests().len(), 1, "priority 1 is tried first");
    assert_eq!(a.requests()[0].json()["model"], "m1");
}

#[test]
fn a_silent_upstream_times_out_per_provider_then_falls_back_or_gets_504() {
    let (release, wait) = gate();
    let a = Upstream::start(&[], move |_| {
        // Never answers while the test runs; the test's end drops `release` and frees it.
        let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(30));
        Reply::Drop
    });
    let b = Upstream::echo(&[]);
    let cfg = format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models: [m1]\n    timeouts: {{connect_ms: 2000, first_byte_ms: 300, idle_ms: 300}}\n{}virtual_models:\n  - source: smart\n    strategy: priority\n    targets:\n      - {{model: a/m1, retry: {{attempts: 1}}}}\n      - b/m3\n",
        a.base_url(),
        provider_block("b", &b, &["m3"])
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.chat("smart");
    assert_eq!((r.status, served(&r)), (200, "b/m3"), "{}", r.body);
    assert_eq!(a.requests().len(), 1);
    let r = g.chat("a/m1");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "upstream_timeout"),
        "{}",
        r.body
    );
    drop(release);
}

/// The SSE events of one chat stream, as the upstream paces them.
fn sse(events: &[(u64, &str)]) -> Vec<(Duration, Vec<u8>)> {
    events
        .iter()
        .map(|(ms, text)| {
            let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m1",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
            (
                Duration::from_millis(*ms),
                format!("data: {chunk}\n\n").into_bytes(),
            )
        })
        .collect()
}

/// Posts a streaming chat request over a plain socket and reads until the gateway closes it:
/// the raw response, so a stream cut in the middle is visible as such.
fn raw_stream(g: &Gateway, model: &str) -> String {
    use std::io::{Read, Write};
    let body =
        json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let addr = g
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A gateway over provider `a` (a paced stream, with `timeouts`) and `b` (an echo), plus the
/// two upstreams (kept alive with it).
fn paced_gateway(
    head_after: Duration,
    chunks: Vec<(Duration, Vec<u8>)>,
    timeouts: &str,
) -> (Gateway, Upstream, Upstream) {
    let a = Upstream::start(&[], move |_| Reply::Paced {
        head_after,
        chunks: chunks.clone(),
    });
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&timeouts_config(&a, &b, timeouts), &[]);
    (g, a, b)
}

fn timeouts_config(a: &Upstream, b: &Upstream, timeouts: &str) -> String {
    format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models: [m1]\n    timeouts: {timeouts}\n{}virtual_models:\n  - source: smart\n    strategy: priority\n    targets:\n      - {{model: a/m1, retry: {{attempts: 1}}}}\n      - b/m3\n",
        a.base_url(),
        provider_block("b", b, &["m3"])
    )
}

#[test]
fn first_byte_bound_applies_before_the_header_even_when_idle_is_longer() {
    // The header comes after 3 s: inside idle_ms (10 s), outside first_byte_ms (300 ms).
    let (g, _a, _b) = paced_gateway(
        Duration::from_secs(3),
        sse(&[(0, "late")]),
        "{first_byte_ms: 300, idle_ms: 10000}",
    );
    let r = g.chat("smart");
    assert_eq!((r.status, served(&r)), (200, "b/m3"), "{}", r.body);
    assert_eq!(r.header("x-modelgate-attempts"), Some("2"));
    let r = g.chat("a/m1");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "upstream_timeout"),
        "{}",
        r.body
    );
}

#[test]
fn idle_bound_cuts_a_stream_that_stalls_between_chunks() {
    // The header and the first chunk at once, then 3 s of silence: inside first_byte_ms (10 s),
    // outside idle_ms (300 ms).
    let (g, _a, _b) = paced_gateway(
        Duration::ZERO,
        sse(&[(0, "first"), (3000, "second")]),
        "{first_byte_ms: 10000, idle_ms: 300}",
    );
    let out = raw_stream(&g, "a/m1");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("first"), "{out}");
    assert!(
        !out.contains("second"),
        "the stalled stream was not cut: {out}"
    );
    assert!(
        !out.ends_with("0\r\n\r\n"),
        "a cut stream must not look complete: {out}"
    );
    // The gateway keeps serving, and the cut connection was a failure of that target only.
    assert_eq!(g.chat("b/m3").status, 200);
}

#[test]
fn a_stream_longer_than_its_idle_bound_is_not_cut_while_chunks_keep_coming() {
    // Chunks 150 ms apart for 1.2 s: each gap inside idle_ms (500 ms), the whole stream more
    // than twice as long. The bound runs from the last chunk, not from the first.
    let words = ["w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9"];
    let paced: Vec<(u64, &str)> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (if i == 0 { 0 } else { 150 }, *w))
        .collect();
    let (g, _a, _b) = paced_gateway(
        Duration::ZERO,
        sse(&paced),
        "{first_byte_ms: 10000, idle_ms: 500}",
    );
    let out = raw_stream(&g, "a/m1");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    for word in words {
        assert!(out.contains(word), "{word} missing: {out}");
    }
    assert!(
        out.ends_with("0\r\n\r\n"),
        "the stream must end cleanly: {out}"
    );
}

#[test]
fn a_slow_first_byte_within_its_bound_is_not_cut_by_a_shorter_idle_bound() {
    // The header after 1.2 s (inside first_byte_ms, outside idle_ms), then chunks back to back.
    let (g, _a, _b) = paced_gateway(
        Duration::from_millis(1200),
        sse(&[(0, "one"), (0, "two"), (0, "three")]),
        "{first_byte_ms: 10000, idle_ms: 600}",
    );
    let out = raw_stream(&g, "a/m1");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("x-modelgate-model: a/m1"), "{out}");
    for word in ["one", "two", "three"] {
        assert!(out.contains(word), "{word} missing: {out}");
    }
    assert!(
        out.ends_with("0\r\n\r\n"),
        "the stream must end cleanly: {out}"
    );
}

/// Provider `a` at a mock upstream and the built-in `demo` mock, with the virtual model `smart`
/// over `targets`.
fn with_local_mock(a: &Upstream, targets: &str) -> String {
    format!(
        "providers:\n{}  demo:\n    type: mock\n    models: [local]\nvirtual_models:\n  - source: smart\n    strategy: priority\n    targets: {targets}\n",
        provider_block("a", a, &["m1"])
    )
}

#[test]
fn the_local_mock_answers_as_the_fallback_after_an_upstream_500() {
    let a = Upstream::start(&[], failing(500, "a is down"));
    let g = Gateway::start(&with_local_mock(&a, "[a/m1, demo/local]"), &[]);
    let r = g.chat("smart");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "demo/local");
    assert_eq!(r.header("x-modelgate-virtual-model"), Some("smart"));
    // Two tries on a (the default retry), then the mock.
    assert_eq!(r.header("x-modelgate-attempts"), Some("3"));
    assert_eq!(a.requests().len(), 2);
    assert_eq!(r.json()["object"], "chat.completion");
    assert!(r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .ends_with("hi"));
    // The next request is served the same way, and the fallback is no logged failure: wait
    // (bounded) for both access lines, which follow any error line of their request.
    assert_eq!(g.chat("smart").status, 200);
    let mut logs = g.logs();
    for _ in 0..100 {
        if logs.matches("served=demo/local").count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        logs = g.logs();
    }
    assert_eq!(logs.matches("served=demo/local").count(), 2, "{logs}");
    assert!(!logs.contains("Fail to proxy"), "{logs}");
}

#[test]
fn the_local_mock_answers_as_the_fallback_when_the_upstream_refuses_connections() {
    let closed = free_port();
    let cfg = format!(
        "providers:\n  dead:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{closed}/v1\n    api_key: k\n    models: [m]\n  demo:\n    type: mock\n    models: [local]\nvirtual_models:\n  - source: smart\n    strategy: priority\n    targets: [dead/m, demo/local]\n"
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "smart", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "demo/local");
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.body.ends_with("data: [DONE]\n\n"), "{}", r.body);
}

#[test]
fn a_fallback_only_mock_is_not_used_while_the_upstream_answers() {
    let a = Upstream::echo(&[]);
    let g = Gateway::start(&with_local_mock(&a, "[a/m1, demo/local]"), &[]);
    let r = g.chat("smart");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "a/m1");
    assert_eq!(r.header("x-modelgate-attempts"), Some("1"));
    assert_eq!(a.requests().len(), 1);
}

#[test]
fn an_upstream_400_is_not_replaced_by_the_mock_fallback() {
    let a = Upstream::start(&[], failing(400, "bad temperature"));
    let g = Gateway::start(&with_local_mock(&a, "[a/m1, demo/local]"), &[]);
    let r = g.chat("smart");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["message"], "bad temperature");
    assert_eq!(served(&r), "a/m1");
}

#[test]
fn statuses_listed_outside_the_defaults_are_retried_and_fall_back() {
    // 408 is listed for retry, 409 for fallback: neither is among the defaults.
    let a = Upstream::start(&[], |s| {
        if s.json()["model"] == "m1" {
            Reply::Json(408, json!({"error": {"message": "timeout", "type": "x"}}))
        } else {
            Reply::Json(409, json!({"error": {"message": "conflict", "type": "x"}}))
        }
    });
    let b = Upstream::echo(&[]);
    let vms = "  - source: retried\n    strategy: priority\n    targets:\n      - {model: a/m1, retry: {attempts: 3, delay_ms: 0, on_status: [408]}}\n  - source: moved\n    strategy: priority\n    targets:\n      - {model: a/m2, fallback_on: [409]}\n      - b/m3\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);

    let r = g.post("/v1/chat/completions", &chat_body("retried"), &[]);
    assert_eq!(r.status, 408, "{}", r.body);
    assert_eq!(r.header("x-modelgate-attempts"), Some("3"));
    assert_eq!(a.requests().len(), 3, "408 must be retried as listed");

    let r = g.post("/v1/chat/completions", &chat_body("moved"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "b/m3", "409 must fall back as listed");
    assert_eq!(b.requests().len(), 1);
}

#[test]
fn a_concrete_model_called_directly_opens_its_circuit() {
    let a = Upstream::start(&[], failing(500, "a is down"));
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&config(&a, &b, "", "  []\n"), &[]);
    // The default retry tries twice per request: 2 + 2 + 1 = 5 consecutive failures (the
    // default threshold), and the try that opens the breaker is not retried.
    for _ in 0..3 {
        let r = g.chat("a/m1");
        assert_eq!(r.status, 500, "{}", r.body);
    }
    assert_eq!(a.requests().len(), 5);
    for _ in 0..5 {
        let r = g.chat("a/m1");
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (503, "circuit_open"),
            "{}",
            r.body
        );
        let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(after > 0 && after <= 30, "Retry-After {after}");
    }
    // The body's `provider` field names the same model, behind the same circuit.
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "m1", "provider": "a", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        a.requests().len(),
        5,
        "an open circuit contacts no upstream"
    );
    // Another model of the same provider keeps its own circuit.
    let r = g.chat("a/m2");
    assert_eq!(r.status, 500, "{}", r.body);
    // `/metrics` shows the model's breaker open, and the other model's closed.
    let (_, metrics) = g.get("/metrics");
    assert!(
        metrics.contains("modelgate_model_circuit_breaker_state{model=\"a/m1\"} 1")
            && metrics.contains("modelgate_model_circuit_breaker_state{model=\"a/m2\"} 0"),
        "{metrics}"
    );
}

/// Polls `/metrics` (bounded) until the breaker of `target` reports `state` (2 = half-open).
fn wait_for_breaker(g: &Gateway, target: &str, state: u8) {
    let line = format!("modelgate_circuit_breaker_state{{target=\"{target}\"}} {state}");
    for _ in 0..200 {
        if g.get("/metrics").1.lines().any(|l| l == line) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the breaker of {target} never reported state {state}");
}

#[test]
fn half_open_admits_one_probe_at_a_time() {
    // Down until `up` is set; then each answer waits for the gate.
    let up = Arc::new(AtomicBool::new(false));
    let (open_gate, gate) = gate();
    let u = up.clone();
    let a = Upstream::start(&[], move |s| {
        if !u.load(Ordering::SeqCst) {
            return Reply::Json(500, json!({"error": {"message": "a is down"}}));
        }
        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(20));
        Reply::Json(200, chat_reply(s.json()["model"].as_str().unwrap(), "ok"))
    });
    let b = Upstream::echo(&[]);
    let vms = "  - source: smart\n    targets:\n      - {model: a/m1, retry: {attempts: 1}}\n";
    let breaker =
        "circuit_breaker: {failure_threshold: 1, open_seconds: 1, success_threshold: 2}\n";
    let g = Arc::new(Gateway::start(&config(&a, &b, breaker, vms), &[]));
    assert_eq!(g.chat("smart").status, 500);
    wait_for_breaker(&g, "a/m1", 2);
    up.store(true, Ordering::SeqCst);

    // Four requests at once while half-open: one is the probe (held at the upstream), the
    // other three are refused without contacting it.
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..4 {
        let (g, tx) = (g.clone(), tx.clone());
        std::thread::spawn(move || {
            let r = g.chat("smart");
            let _ = tx.send((r.status, r.error_code()));
        });
    }
    let mut refused = Vec::new();
    for _ in 0..3 {
        refused.push(rx.recv_timeout(Duration::from_secs(30)).unwrap());
    }
    assert!(
        refused
            .iter()
            .all(|(s, c)| (*s, c.as_str()) == (503, "circuit_open")),
        "{refused:?}"
    );
    // The probe may still be on its way to the upstream: wait for it (bounded).
    for _ in 0..400 {
        if a.requests().len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(a.requests().len(), 2, "the failure, then exactly one probe");
    open_gate.send(()).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap().0, 200);

    // One success of two: still half-open, and the next probe is admitted.
    wait_for_breaker(&g, "a/m1", 2);
    open_gate.send(()).unwrap();
    assert_eq!(g.chat("smart").status, 200);
    // Two successes close the circuit: requests go through side by side again.
    wait_for_breaker(&g, "a/m1", 0);
    assert_eq!(a.requests().len(), 3);
}

#[test]
fn a_probe_slot_taken_for_a_fallback_never_reached_is_freed_when_the_request_ends() {
    let up = Arc::new(AtomicBool::new(false));
    let u = up.clone();
    let a = Upstream::start(&[], move |s| {
        if !u.load(Ordering::SeqCst) {
            return Reply::Json(500, json!({"error": {"message": "a is down"}}));
        }
        Reply::Json(200, chat_reply(s.json()["model"].as_str().unwrap(), "ok"))
    });
    let b = Upstream::echo(&[]);
    // `first` plans a/m1 as its fallback behind b; `only` has a/m1 alone (one breaker: the
    // target's name).
    let vms = "  - source: first\n    strategy: priority\n    targets: [b/m3, {model: a/m1, retry: {attempts: 1}}]\n  - source: only\n    targets:\n      - {model: a/m1, retry: {attempts: 1}}\n";
    let breaker =
        "circuit_breaker: {failure_threshold: 1, open_seconds: 2, success_threshold: 1}\n";
    let g = Gateway::start(&config(&a, &b, breaker, vms), &[]);
    assert_eq!(g.chat("only").status, 500);
    wait_for_breaker(&g, "a/m1", 2);
    up.store(true, Ordering::SeqCst);
    // Planned with a/m1's probe slot as its fallback; b answers, a/m1 is never reached.
    let r = g.chat("first");
    assert_eq!((r.status, served(&r)), (200, "b/m3"), "{}", r.body);
    assert_eq!(a.requests().len(), 1);
    // The slot was freed when that request ended: this request is the probe.
    let r = g.chat("only");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(a.requests().len(), 2);
}

#[test]
fn a_stream_request_that_fails_gets_the_upstreams_error_body() {
    let up = Upstream::start(&["m1"], |_| {
        Reply::Json(
            400,
            json!({"error": {"message": "context too long", "type": "invalid_request_error", "param": "messages", "code": "too_long"}}),
        )
    });
    let g = Gateway::start(
        &format!("providers:\n{}", provider_block("a", &up, &["m1"])),
        &[],
    );
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "a/m1", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["message"], "context too long", "{}", r.body);
    assert_eq!(v["error"]["code"], "too_long");
    // The upstream was asked for its usage chunk: the gateway counts tokens of streams.
    assert_eq!(
        up.requests()[0].json()["stream_options"]["include_usage"],
        true
    );
}

#[test]
fn when_the_last_try_gets_no_answer_the_client_gets_the_last_upstream_error() {
    let a = Upstream::start(&["m1"], |_| {
        Reply::Json(
            500,
            json!({"error": {"message": "a is down", "type": "server_error", "code": "a_down"}}),
        )
    });
    let dead = free_port();
    let cfg = format!(
        "providers:\n{}  dead:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{dead}/v1\n    api_key: k\n    models: [x]\nvirtual_models:\n  - source: mixed\n    strategy: priority\n    targets:\n      - {{model: a/m1, retry: {{attempts: 1}}}}\n      - {{model: dead/x, retry: {{attempts: 1}}}}\n",
        provider_block("a", &a, &["m1"])
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.chat("mixed");
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "a_down", "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("a/m1"));
    assert_eq!(r.header("x-modelgate-attempts"), Some("2"));
    assert_eq!(r.header("x-modelgate-error-class"), Some("server"));
    // Through the Anthropic dialect, the same answer comes in Anthropic's envelope.
    let r = g.post(
        "/v1/messages",
        &json!({"model": "mixed", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.json()["type"], "error", "{}", r.body);
    assert!(r.body.contains("a is down"), "{}", r.body);
    // No upstream answered at all: the gateway's 502, classed too.
    let r = g.chat("dead/x");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.error_code(), "upstream_unavailable");
    assert_eq!(r.header("x-modelgate-error-class"), Some("server"));
}

#[test]
fn metadata_match_reads_the_header_else_the_bodys_metadata() {
    let a = Upstream::echo(&[]);
    let b = Upstream::echo(&[]);
    let vms = "  - source: meta\n    strategy: priority\n    targets:\n      - {model: a/m1, metadata_match: {tier: enterprise}}\n      - b/m3\n";
    let g = Gateway::start(&config(&a, &b, "", vms), &[]);
    let send = |body_meta: Option<serde_json::Value>, header: Option<&str>| {
        let mut body = chat_body("meta");
        if let Some(m) = body_meta {
            body["metadata"] = m;
        }
        let h: Vec<(&str, &str)> = header
            .map(|v| vec![("x-modelgate-metadata", v)])
            .unwrap_or_default();
        let r = g.post("/v1/chat/completions", &body, &h);
        assert_eq!(r.status, 200, "{}", r.body);
        served(&r).to_string()
    };
    assert_eq!(send(None, None), "b/m3");
    // The OpenAI SDK's `metadata=` parameter.
    assert_eq!(send(Some(json!({"tier": "enterprise"})), None), "a/m1");
    assert_eq!(send(Some(json!({"tier": "free"})), None), "b/m3");
    assert_eq!(send(Some(json!("not an object")), None), "b/m3");
    // The header, when given, is the request's metadata.
    assert_eq!(send(None, Some(r#"{"tier":"enterprise"}"#)), "a/m1");
    assert_eq!(
        send(
            Some(json!({"tier": "enterprise"})),
            Some(r#"{"tier":"free"}"#)
        ),
        "b/m3"
    );
    // The body goes upstream as the client sent it.
    assert_eq!(a.requests()[0].json()["metadata"]["tier"], "enterprise");
    // A header that is no JSON object is the client's error.
    let r = g.post(
        "/v1/chat/completions",
        &chat_body("meta"),
        &[("x-modelgate-metadata", "notjson")],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_code(), "invalid_metadata");
}
