//! Routing no peer has, black box: error classes from each provider's real error bodies,
//! rate-limit steering from their real headers, hedged requests and prompt-cache affinity.
//! The real binary runs against mock upstreams on 127.0.0.1; every test asserts on what the
//! client got and what each upstream saw, never on time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn served(r: &Resp) -> &str {
    r.header("x-modelgate-model").unwrap_or("")
}

fn chat(model: &str, text: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Polls `f` (bounded) until it holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what}: not after 10 s");
}

// ---------------------------------------------------------------- error classes

/// (model, status, body, class): each provider's own error body.
const BODIES: [(&str, u16, &str, &str); 11] = [
    (
        "openai-context",
        400,
        r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130001 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        "context_length_exceeded",
    ),
    (
        "openai-rate",
        429,
        r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 500, Used 500, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        "rate_limited",
    ),
    (
        "openai-quota",
        429,
        r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        "rate_limited",
    ),
    (
        "azure-filter",
        400,
        r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"}}}}}"#,
        "content_filtered",
    ),
    (
        "anthropic-overloaded",
        529,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        "overloaded",
    ),
    (
        "anthropic-rate",
        429,
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
        "rate_limited",
    ),
    (
        "anthropic-too-long",
        400,
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208310 tokens > 200000 maximum"}}"#,
        "context_length_exceeded",
    ),
    (
        "anthropic-auth",
        401,
        r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        "auth",
    ),
    (
        "anthropic-invalid",
        400,
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
        "invalid_request",
    ),
    (
        "anthropic-api",
        500,
        r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
        "server",
    ),
    (
        "vllm-context",
        400,
        r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#,
        "context_length_exceeded",
    ),
];

#[test]
fn every_providers_error_body_gets_its_class_on_the_failure() {
    let up = Upstream::start(&[], |s| {
        let model = s.json()["model"].as_str().unwrap_or("").to_string();
        match BODIES.iter().find(|(m, ..)| *m == model) {
            Some((_, status, body, _)) => Reply::Raw(
                *status,
                vec![("content-type".into(), "application/json".into())],
                body.as_bytes().to_vec(),
            ),
            None => Reply::Json(200, chat_reply(&model, "ok")),
        }
    });
    let mut models: Vec<&str> = BODIES.iter().map(|b| b.0).collect();
    models.push("fine");
    let cfg = format!("providers:\n{}", provider_block("a", &up, &models));
    let g = Gateway::start(&cfg, &[]);
    for (model, status, body, class) in BODIES {
        let r = g.post(
            "/v1/chat/completions",
            &chat(&format!("a/{model}"), "hi"),
            &[],
        );
        assert_eq!(r.status, status, "{model}: {}", r.body);
        assert_eq!(r.header("x-modelgate-error-class"), Some(class), "{model}");
        // The client gets the provider's own body.
        assert_eq!(
            r.json(),
            serde_json::from_str::<serde_json::Value>(body).unwrap()
        );
    }
    // A success carries no class.
    let ok = g.up_check();
    assert_eq!(ok.header("x-modelgate-error-class"), None);
    let (_, metrics) = g.get("/metrics");
    for class in [
        "context_length_exceeded",
        "rate_limited",
        "content_filtered",
        "overloaded",
        "auth",
        "invalid_request",
        "server",
    ] {
        assert!(
            metrics.contains(&format!(
                "modelgate_upstream_errors_total{{provider=\"a\",class=\"{class}\"}}"
            )),
            "{class}: {metrics}"
        );
    }
    eventually("the access log names the class", || {
        g.logs().contains("error_class=content_filtered")
    });
}

trait UpCheck {
    fn up_check(&self) -> Resp;
}

impl UpCheck for Gateway {
    fn up_check(&self) -> Resp {
        self.post("/v1/chat/completions", &chat("a/fine", "hi"), &[])
    }
}

#[test]
fn a_class_listed_in_fallback_on_errors_falls_back_and_others_do_not() {
    let a = Upstream::start(&[], |s| {
        let body = if s.json()["model"] == "filtered" {
            BODIES[3].2
        } else {
            BODIES[8].2
        };
        Reply::Raw(400, vec![], body.as_bytes().to_vec())
    });
    let b = Upstream::echo(&[]);
    let cfg = format!(
        "providers:\n{}{}virtual_models:\n  - source: safe\n    strategy: priority\n    targets:\n      - {{model: a/filtered, fallback_on_errors: [content_filtered]}}\n      - b/m3\n  - source: strict\n    strategy: priority\n    targets:\n      - {{model: a/other, fallback_on_errors: [content_filtered]}}\n      - b/m3\n",
        provider_block("a", &a, &["filtered", "other"]),
        provider_block("b", &b, &["m3"])
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.chat("safe");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "b/m3");
    assert_eq!(r.header("x-modelgate-error-class"), None);
    // A 400 of another class is the client's.
    let r = g.chat("strict");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-modelgate-error-class"), Some("invalid_request"));
    assert_eq!(b.requests().len(), 1);
}

#[test]
fn a_prompt_too_long_falls_back_only_to_a_larger_context_window() {
    let a = Upstream::start(&[], |s| {
        if s.json()["model"] == "small" {
            Reply::Raw(400, vec![], BODIES[0].2.as_bytes().to_vec())
        } else {
            Reply::Json(200, chat_reply("same", "ok"))
        }
    });
    let b = Upstream::echo(&[]);
    let cfg = format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models: [{{id: small, context_window: 8000}}, {{id: same, context_window: 8000}}]\n  b:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models: [{{id: large, context_window: 200000}}]\nvirtual_models:\n  - source: long\n    strategy: priority\n    targets:\n      - {{model: a/small, fallback_on_errors: [context_length_exceeded]}}\n      - a/same\n      - b/large\n",
        a.base_url(),
        b.base_url()
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.chat("long");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "b/large");
    // The target with the same window was passed over.
    let seen: Vec<String> = a
        .requests()
        .iter()
        .map(|s| s.json()["model"].to_string())
        .collect();
    assert_eq!(seen, ["\"small\""]);
    assert_eq!(r.header("x-modelgate-attempts"), Some("2"));
}

#[test]
fn a_target_whose_window_is_smaller_than_the_prompt_is_skipped_before_routing() {
    let a = Upstream::echo(&[]);
    let b = Upstream::echo(&[]);
    let cfg = format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models: [{{id: small, context_window: 1000}}]\n  b:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models: [large]\nvirtual_models:\n  - source: v\n    strategy: priority\n    targets: [a/small, b/large]\n",
        a.base_url(),
        b.base_url()
    );
    let g = Gateway::start(&cfg, &[]);
    // 8,000 characters: about 2,000 tokens, over a/small's 1,000.
    let r = g.post(
        "/v1/chat/completions",
        &chat("v", &"word ".repeat(1600)),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "b/large");
    assert!(a.requests().is_empty());
    let r = g.post("/v1/chat/completions", &chat("v", "short"), &[]);
    assert_eq!(served(&r), "a/small");
}

#[test]
fn an_unknown_error_class_is_refused_with_the_known_ones() {
    let cfg = "providers:\n  m:\n    type: mock\n    models: [a, b]\nvirtual_models:\n  - source: v\n    targets:\n      - {model: m/a, fallback_on_errors: [too_long]}\n      - m/b\n";
    let (code, out) = run_cli(cfg, &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(source \"v\")"), "{out}");
    assert!(
        out.contains("targets[0].fallback_on_errors[0]: \"too_long\" is not an error class; use rate_limited, context_length_exceeded, content_filtered, overloaded, auth, invalid_request, server"),
        "{out}"
    );
}

// ---------------------------------------------------------------- rate-limit steering

fn two_targets(a: &Upstream, b: &Upstream, vm_extra: &str) -> String {
    format!(
        "providers:\n{}{}virtual_models:\n  - source: v\n    strategy: priority\n    targets: [a/m1, b/m3]\n{vm_extra}",
        provider_block("a", a, &["m1"]),
        provider_block("b", b, &["m3"])
    )
}

/// An upstream that answers 200 with `headers` on every answer.
fn announcing(headers: Vec<(String, String)>) -> Upstream {
    Upstream::start(&[], move |s| {
        let mut hs = headers.clone();
        hs.push(("content-type".into(), "application/json".into()));
        let body = serde_json::to_vec(&chat_reply(s.json()["model"].as_str().unwrap_or(""), "ok"));
        Reply::Raw(200, hs, body.unwrap())
    })
}

#[test]
fn an_openai_provider_with_no_requests_left_gets_none_until_its_reset() {
    let a = announcing(vec![
        ("x-ratelimit-limit-requests".into(), "100".into()),
        ("x-ratelimit-remaining-requests".into(), "0".into()),
        ("x-ratelimit-reset-requests".into(), "5s".into()),
        ("x-ratelimit-limit-tokens".into(), "30000".into()),
        ("x-ratelimit-remaining-tokens".into(), "29000".into()),
        ("x-ratelimit-reset-tokens".into(), "120ms".into()),
    ]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_targets(&a, &b, ""), &[]);
    assert_eq!(served(&g.chat("v")), "a/m1");
    for _ in 0..5 {
        let r = g.chat("v");
        assert_eq!(r.status, 200);
        assert_eq!(served(&r), "b/m3");
    }
    assert_eq!(a.requests().len(), 1);
}

#[test]
fn an_anthropic_provider_under_the_threshold_is_tried_last() {
    let reset = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(5)).to_string();
    let a = announcing(vec![
        ("anthropic-ratelimit-requests-limit".into(), "50".into()),
        ("anthropic-ratelimit-requests-remaining".into(), "4".into()),
        ("anthropic-ratelimit-requests-reset".into(), reset),
    ]);
    let b = Upstream::echo(&[]);
    // 4 of 50 left is 8 %: under a 10 % threshold, not under the default 5 %.
    let g = Gateway::start(
        &two_targets(&a, &b, "    steer: {min_remaining_fraction: 0.1}\n"),
        &[],
    );
    assert_eq!(served(&g.chat("v")), "a/m1");
    for _ in 0..3 {
        assert_eq!(served(&g.chat("v")), "b/m3");
    }
    assert_eq!(a.requests().len(), 1);
    let a2 = announcing(vec![
        ("anthropic-ratelimit-requests-limit".into(), "50".into()),
        ("anthropic-ratelimit-requests-remaining".into(), "4".into()),
    ]);
    let b2 = Upstream::echo(&[]);
    let g = Gateway::start(&two_targets(&a2, &b2, ""), &[]);
    for _ in 0..3 {
        assert_eq!(served(&g.chat("v")), "a/m1");
    }
}

#[test]
fn a_429_with_retry_after_takes_the_target_out_and_no_429_reaches_the_client() {
    let a = Upstream::start(&[], |_| {
        Reply::Raw(
            429,
            vec![("retry-after".into(), "30".into())],
            BODIES[1].2.as_bytes().to_vec(),
        )
    });
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_targets(&a, &b, ""), &[]);
    for _ in 0..4 {
        let r = g.chat("v");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(served(&r), "b/m3");
    }
    // One request, not retried after the 429 (its Retry-After waits elsewhere), then none.
    assert_eq!(a.requests().len(), 1);
}

/// A Redis key prefix no other test (or run) uses.
fn redis_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("modelgate-test:{test}:{}:{nanos}:", std::process::id())
}

fn redis_is_up() {
    assert!(
        TcpStream::connect("127.0.0.1:6379").is_ok(),
        "no Redis on 127.0.0.1:6379: scripts/setup.sh starts one; this test never skips"
    );
}

fn metrics(g: &Gateway) -> String {
    g.get("/metrics").1
}

/// The value of a `/metrics` line that starts with `series`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_429_one_gateway_saw_steers_another_sharing_redis() {
    redis_is_up();
    // The first request gets OpenAI's 429 with Retry-After; any later one would be served, so
    // a request reaching `a` again shows as served by a/m1.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let a = Upstream::start(&[], move |s| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Raw(
                429,
                vec![("retry-after".into(), "30".into())],
                BODIES[1].2.as_bytes().to_vec(),
            )
        } else {
            Reply::Json(
                200,
                chat_reply(s.json()["model"].as_str().unwrap_or(""), "ok"),
            )
        }
    });
    let b = Upstream::echo(&[]);
    let prefix = redis_prefix("steer429");
    let env = [
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    let config = two_targets(&a, &b, "");
    let one = Gateway::start(&config, &env);
    let two = Gateway::start(&config, &env);
    let r = one.chat("v");
    assert_eq!((r.status, served(&r)), (200, "b/m3"), "{}", r.body);
    assert_eq!(a.requests().len(), 1);
    // The second gateway learns it through Redis, without a request of its own.
    eventually("the second gateway sees a/m1 rate limited", || {
        metric(
            &metrics(&two),
            "modelgate_target_rate_limited{target=\"a/m1\"} ",
        ) == Some(1.0)
    });
    for _ in 0..5 {
        let r = two.chat("v");
        assert_eq!((r.status, served(&r)), (200, "b/m3"), "{}", r.body);
    }
    assert_eq!(a.requests().len(), 1);
    let m = metrics(&one);
    assert!(
        metric(&m, "modelgate_steer_published_total ").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "modelgate_steer_store_errors_total "),
        Some(0.0),
        "{m}"
    );
}

#[test]
fn no_requests_left_announced_to_one_gateway_steers_another_sharing_redis() {
    redis_is_up();
    let a = announcing(vec![
        ("x-ratelimit-limit-requests".into(), "100".into()),
        ("x-ratelimit-remaining-requests".into(), "0".into()),
        ("x-ratelimit-reset-requests".into(), "30s".into()),
    ]);
    let b = Upstream::echo(&[]);
    let prefix = redis_prefix("steer-remaining");
    let env = [
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    let config = two_targets(&a, &b, "");
    let one = Gateway::start(&config, &env);
    let two = Gateway::start(&config, &env);
    assert_eq!(served(&one.chat("v")), "a/m1");
    eventually("the second gateway sees a/m1 exhausted", || {
        metric(
            &metrics(&two),
            "modelgate_target_remaining_fraction{target=\"a/m1\"} ",
        ) == Some(0.0)
    });
    for _ in 0..5 {
        let r = two.chat("v");
        assert_eq!((r.status, served(&r)), (200, "b/m3"), "{}", r.body);
    }
    assert_eq!(a.requests().len(), 1);
}

#[test]
fn with_redis_out_of_reach_steering_stays_local_and_requests_are_served() {
    let a = Upstream::start(&[], |_| {
        Reply::Raw(
            429,
            vec![("retry-after".into(), "30".into())],
            BODIES[1].2.as_bytes().to_vec(),
        )
    });
    let b = Upstream::echo(&[]);
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let g = Gateway::start(&two_targets(&a, &b, ""), &[("REDIS_URL", nowhere.as_str())]);
    for _ in 0..4 {
        let r = g.chat("v");
        assert_eq!((r.status, served(&r)), (200, "b/m3"), "{}", r.body);
    }
    assert_eq!(a.requests().len(), 1);
    eventually("the failed rounds are counted", || {
        metric(&metrics(&g), "modelgate_steer_store_errors_total ").unwrap_or(0.0) >= 1.0
    });
    eventually("the outage is logged", || {
        g.logs()
            .contains("rate-limit steering goes on with this gateway's own observations")
    });
}

// ---------------------------------------------------------------- hedged requests

/// What a slow upstream saw of one connection.
#[derive(Debug, Default, Clone, Copy)]
struct Conn {
    answered: bool,
    closed_early: bool,
}

/// An upstream whose answer header comes after `delay`; it notices (and records) a client
/// that closes the connection while it waits.
struct Slow {
    port: u16,
    conns: Arc<Mutex<Vec<Conn>>>,
    requests: Arc<AtomicUsize>,
}

impl Slow {
    fn start(delay: Duration) -> Slow {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, n) = (conns.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (c, n) = (c.clone(), n.clone());
                std::thread::spawn(move || slow_conn(stream, delay, &c, &n));
            }
        });
        Slow {
            port,
            conns,
            requests,
        }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn conns(&self) -> Vec<Conn> {
        self.conns.lock().unwrap().clone()
    }
}

fn slow_conn(stream: TcpStream, delay: Duration, conns: &Mutex<Vec<Conn>>, n: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if path.ends_with("/models") {
            let b = br#"{"object":"list","data":[]}"#;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", b.len());
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(b);
            continue;
        }
        n.fetch_add(1, Ordering::SeqCst);
        let model = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default()["model"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // Wait for the answer's time, watching for the gateway closing the connection.
        let _ = out.set_read_timeout(Some(Duration::from_millis(20)));
        let until = Instant::now() + delay;
        let mut probe = [0u8; 1];
        let mut closed = false;
        while Instant::now() < until {
            match out.read(&mut probe) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            conns.lock().unwrap().push(Conn {
                answered: false,
                closed_early: true,
            });
            return;
        }
        let b = serde_json::to_vec(&chat_reply(&model, "slow")).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            b.len()
        );
        let _ = out.write_all(head.as_bytes());
        let _ = out.write_all(&b);
        conns.lock().unwrap().push(Conn {
            answered: true,
            closed_early: false,
        });
    }
}

fn hedged_config(first: &str, second: &str, hedge: &str) -> String {
    format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {first}\n    api_key: k\n    models: [m1]\n  b:\n    type: openai_compatible\n    base_url: {second}\n    api_key: k\n    models: [m3]\nvirtual_models:\n  - source: h\n    strategy: priority\n    targets: [a/m1, b/m3]\n    hedge: {hedge}\n"
    )
}

#[test]
fn a_hedge_wins_over_a_slow_first_target_whose_connection_is_closed() {
    let slow = Slow::start(Duration::from_secs(4));
    let fast = Upstream::echo(&[]);
    let g = Gateway::start(
        &hedged_config(
            &slow.base_url(),
            &fast.base_url(),
            "{after_ms: 200, budget_percent: 100}",
        ),
        &[],
    );
    let r = g.chat("h");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "b/m3");
    // Both upstream requests count.
    assert_eq!(r.header("x-modelgate-attempts"), Some("2"));
    assert_eq!(fast.requests().len(), 1);
    // The loser's connection is closed, before it could answer.
    eventually("the slow upstream sees its connection closed", || {
        !slow.conns().is_empty()
    });
    let c = slow.conns();
    assert!(c[0].closed_early && !c[0].answered, "{c:?}");
    let (_, metrics) = g.get("/metrics");
    assert!(
        metrics.contains("modelgate_hedges_total{virtual_model=\"h\",outcome=\"won\"} 1"),
        "{metrics}"
    );
    eventually("the access log shows the hedge", || {
        g.logs().contains("hedge=won")
    });
}

#[test]
fn when_the_first_target_answers_first_the_hedge_is_cancelled() {
    let first = Slow::start(Duration::from_millis(600));
    let second = Slow::start(Duration::from_secs(4));
    let g = Gateway::start(
        &hedged_config(
            &first.base_url(),
            &second.base_url(),
            "{after_ms: 100, budget_percent: 100}",
        ),
        &[],
    );
    let r = g.chat("h");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "a/m1");
    assert_eq!(r.header("x-modelgate-attempts"), Some("2"));
    eventually("the hedge's connection is closed", || {
        !second.conns().is_empty()
    });
    assert!(second.conns()[0].closed_early);
    assert_eq!(second.requests.load(Ordering::SeqCst), 1);
    let (_, metrics) = g.get("/metrics");
    assert!(
        metrics.contains("modelgate_hedges_total{virtual_model=\"h\",outcome=\"lost\"} 1"),
        "{metrics}"
    );
}

#[test]
fn an_exhausted_budget_sends_no_hedge() {
    let slow = Slow::start(Duration::from_millis(800));
    let fast = Upstream::echo(&[]);
    // 1 % of one request leaves no room.
    let g = Gateway::start(
        &hedged_config(
            &slow.base_url(),
            &fast.base_url(),
            "{after_ms: 100, max_extra: 1, budget_percent: 1}",
        ),
        &[],
    );
    let r = g.chat("h");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served(&r), "a/m1");
    assert_eq!(r.header("x-modelgate-attempts"), Some("1"));
    assert!(fast.requests().is_empty());
    let (_, metrics) = g.get("/metrics");
    assert!(
        metrics.contains("modelgate_hedges_total{virtual_model=\"h\",outcome=\"denied\"} 1"),
        "{metrics}"
    );
}

#[test]
fn hedge_settings_are_validated() {
    let cfg = "providers:\n  m:\n    type: mock\n    models: [a, b]\nvirtual_models:\n  - source: v\n    targets: [m/a, m/b]\n    hedge: {budget_percent: 10}\n";
    let (code, out) = run_cli(cfg, &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("(source \"v\"): hedge.after_ms is required"),
        "{out}"
    );
    let cfg = cfg.replace("{budget_percent: 10}", "{after_ms: 100, budget_percent: 0}");
    let (code, out) = run_cli(&cfg, &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("hedge.budget_percent 0 must be above 0"),
        "{out}"
    );
}

// ---------------------------------------------------------------- prompt-cache affinity

fn turn(system: &str, first: &str, more: usize) -> serde_json::Value {
    let mut messages = vec![
        json!({"role": "system", "content": system}),
        json!({"role": "user", "content": first}),
    ];
    for i in 0..more {
        messages.push(json!({"role": "assistant", "content": format!("answer {i}")}));
        messages.push(json!({"role": "user", "content": format!("follow-up {i}")}));
    }
    json!({"model": "lb", "messages": messages})
}

#[test]
fn requests_sharing_their_prefix_stay_on_one_target_without_a_session_header() {
    let a = Upstream::echo(&[]);
    let b = Upstream::echo(&[]);
    let cfg = format!(
        "providers:\n{}{}virtual_models:\n  - source: lb\n    targets: [a/m1, b/m3]\n    session_affinity: {{key: prefix, prefix_messages: 1, ttl_seconds: 600}}\n",
        provider_block("a", &a, &["m1"]),
        provider_block("b", &b, &["m3"])
    );
    let g = Gateway::start(&cfg, &[]);
    let post = |body: &serde_json::Value| {
        let r = g.post("/v1/chat/completions", body, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        served(&r).to_string()
    };
    let x = post(&turn("You are terse.", "Plan a trip", 0));
    let y = post(&turn("You are terse.", "Write a poem", 0));
    // Round robin put the two conversations on different targets ...
    assert_ne!(x, y);
    // ... and every later turn of each stays where its conversation began.
    for more in 1..4 {
        assert_eq!(post(&turn("You are terse.", "Plan a trip", more)), x);
        assert_eq!(post(&turn("You are terse.", "Write a poem", more)), y);
    }
    // Another system prompt is another conversation: the rotation continues.
    let z = post(&turn("You are verbose.", "Plan a trip", 0));
    assert_eq!(z, x);
    let z2 = post(&turn("You are chatty.", "Plan a trip", 0));
    assert_eq!(z2, y);
}

// ---------------------------------------------------------------- resolve

#[test]
fn resolve_shows_class_rules_steering_hedge_and_the_affinity_key() {
    let cfg = "providers:\n  m:\n    type: mock\n    models: [gpt-4o, {id: small, context_window: 8000}]\nvirtual_models:\n  - source: v\n    targets:\n      - {model: m/small, fallback_on_errors: [context_length_exceeded, overloaded]}\n      - m/gpt-4o\n    hedge: {after_ms: 300}\n    steer: {min_remaining_fraction: 0.1}\n    session_affinity: {key: prefix, prefix_messages: 2, ttl_seconds: 900}\n";
    let body = r#"{"messages":[{"role":"system","content":"S"},{"role":"user","content":"hi"}]}"#;
    let (code, out) = run_cli(cfg, &["resolve", "v", "--body", body], &[]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "session affinity: on (key: prefix, the system prompt and first 2 message(s); ttl 900 s)",
        "affinity key of the sample body: prefix:",
        "hedge: after 300 ms without an answer header, 1 extra request(s) to the next target; budget 10% of requests per minute",
        "rate-limit steering: a target under 10% of its announced rate limit is tried last",
        "(observed state: each gateway's own (REDIS_URL would share it); none offline)",
        "on failure: fall back on status 401, 403, 404, 429, 500, 502, 503 or error class context_length_exceeded, overloaded (context_length_exceeded: only to a larger known window); context window 8000 tokens",
        "context window 128000 tokens",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
}

#[test]
fn resolve_says_when_steering_is_shared_through_redis() {
    let cfg = "providers:\n  m:\n    type: mock\n    models: [a, b]\nvirtual_models:\n  - source: v\n    targets: [m/a, m/b]\n";
    let (code, out) = run_cli(
        cfg,
        &["resolve", "v"],
        &[
            ("REDIS_URL", "redis://:secret@127.0.0.1:6379/2"),
            ("REDIS_KEY_PREFIX", "fleet1:"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("(observed state: shared by every gateway through Redis at redis://***@127.0.0.1:6379/2 (keys fleet1:steer:*); none offline)"),
        "{out}"
    );
    assert!(!out.contains("secret"), "{out}");
}

#[test]
fn a_zero_context_window_is_refused() {
    let cfg = "providers:\n  m:\n    type: mock\n    models: [{id: a, context_window: 0}]\n";
    let (code, out) = run_cli(cfg, &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("providers.m: models[0] (\"a\"): context_window must be above 0"),
        "{out}"
    );
}
