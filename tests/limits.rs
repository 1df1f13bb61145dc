//! Rate limits and budgets black-box: requests per minute, tokens per minute, requests in
//! flight and a daily budget, matched by virtual model, user path and key, with their 429s
//! (`Retry-After`, the client's envelope) and `x-ratelimit-*` headers; reservations given back
//! by failed requests; and counters shared by three gateways through the machine's Redis on
//! 127.0.0.1:6379 (each test under its own key prefix), failing open and closed when Redis is
//! out of reach.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Minute windows are calendar minutes: a test that counts in one waits until it starts well
/// before the minute's end, so its requests all land in the same window.
fn away_from_the_minute_edge() {
    loop {
        let s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if s % 60 < 40 {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn providers(up: &Upstream) -> String {
    format!("providers:\n{}", provider_block("up", up, &["m"]))
}

fn chat(g: &Gateway, model: &str, headers: &[(&str, &str)]) -> Resp {
    g.post(
        "/v1/chat/completions",
        &json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        headers,
    )
}

#[test]
fn requests_per_minute_of_a_virtual_model_with_headers_and_retry_after() {
    let up = Upstream::echo(&["m"]);
    let config = format!(
        "{}virtual_models:\n  - source: smart\n    target: up/m\nlimits:\n  - match: {{virtual_model: smart}}\n    rpm: 2\n    tpm: 100000\n",
        providers(&up)
    );
    let g = Gateway::start(&config, &[]);
    away_from_the_minute_edge();
    let first = chat(&g, "smart", &[]);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("1"));
    assert!(first
        .header("x-ratelimit-reset-requests")
        .unwrap()
        .ends_with('s'));
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("100000"));
    assert!(first.header("x-ratelimit-remaining-tokens").is_some());
    assert!(first.header("x-ratelimit-reset-tokens").is_some());
    assert_eq!(chat(&g, "smart", &[]).status, 200);
    let refused = chat(&g, "smart", &[]);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.error_code(), "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    // The Anthropic route answers in its own envelope.
    let r = g.post(
        "/v1/messages",
        &json!({"model": "smart", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    // Only limited requests are counted; the model itself is not limited.
    assert_eq!(chat(&g, "up/m", &[]).status, 200);
    assert!(chat(&g, "up/m", &[])
        .header("x-ratelimit-limit-requests")
        .is_none());
    assert_eq!(up.requests().len(), 4);
}

#[test]
fn requests_in_flight_are_bounded_and_a_failed_request_gives_its_slot_back() {
    let (release, wait) = gate();
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fail.clone();
    let up = Upstream::start(&["m"], move |s| {
        if s.json()["messages"][0]["content"] == "slow" {
            let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(20));
        }
        if f.load(std::sync::atomic::Ordering::SeqCst) {
            return Reply::Json(500, json!({"error": {"message": "boom"}}));
        }
        Reply::Json(200, chat_reply("m", "ok"))
    });
    let config = format!(
        "{}limits:\n  - match: {{user_path: /team}}\n    max_concurrent: 1\n",
        providers(&up)
    );
    let g = std::sync::Arc::new(Gateway::start(&config, &[]));
    let path = [("x-modelgate-user-path", "/team/a")];
    let g2 = g.clone();
    let slow = std::thread::spawn(move || {
        g2.post(
            "/v1/chat/completions",
            &json!({"model": "up/m", "messages": [{"role": "user", "content": "slow"}]}),
            &[("x-modelgate-user-path", "/team/b")],
        )
        .status
    });
    // Wait until the slow request is upstream, holding the slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.requests().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = chat(&g, "up/m", &path);
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (429, "rate_limited")
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("x-ratelimit-limit-concurrent"), Some("1"));
    assert_eq!(
        refused.header("x-ratelimit-remaining-concurrent"),
        Some("0")
    );
    // Another user path is not limited.
    assert_eq!(
        chat(&g, "up/m", &[("x-modelgate-user-path", "/else")]).status,
        200
    );
    release.send(()).unwrap();
    assert_eq!(slow.join().unwrap(), 200);
    // Failed requests free their slot: each next one gets in.
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(chat(&g, "up/m", &path).status, 500);
    }
}

#[test]
fn a_daily_budget_is_spent_by_real_usage_then_refused() {
    let up = Upstream::echo(&["m"]);
    // Each answer reports 3 + 2 tokens: $0.50 at these prices.
    let config = format!(
        "providers:\n  up:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models:\n      - {{id: m, pricing: {{input_per_mtok: 100000, output_per_mtok: 100000}}}}\nlimits:\n  - match: {{user_path: /}}\n    budget: {{usd: 1.00, period: day}}\n",
        up.base_url()
    );
    let g = Gateway::start(&config, &[]);
    let first = chat(&g, "up/m", &[]);
    assert_eq!(first.status, 200);
    // The reservation's estimate is counted until the answer's usage settles it.
    assert_eq!(first.header("x-ratelimit-limit-budget"), Some("1.00"));
    let remaining: f64 = first
        .header("x-ratelimit-remaining-budget")
        .and_then(|v| v.parse().ok())
        .expect("a remaining budget in USD");
    assert!((0.0..1.0).contains(&remaining), "{remaining}");
    assert!(first
        .header("x-ratelimit-reset-budget")
        .is_some_and(|v| v.ends_with('s')));
    assert_eq!(chat(&g, "up/m", &[]).status, 200);
    let refused = chat(&g, "up/m", &[]);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.error_code(), "budget_exceeded");
    assert_eq!(refused.header("x-ratelimit-remaining-budget"), Some("0.00"));
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("$1.00 per day"));
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert_eq!(up.requests().len(), 2);
}

#[test]
fn a_keys_own_limits_count_its_requests() {
    let up = Upstream::echo(&["m"]);
    let g = Gateway::start(&providers(&up), &[("MODELGATE_MASTER_KEY", "mk")]);
    let r = g.call(
        "POST",
        "/admin/api/v1/keys",
        Some(&json!({"name": "bot", "limits": [{"rpm": 1}]})),
        &[("authorization", "Bearer mk")],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let auth = format!("Bearer {}", r.json()["key"].as_str().unwrap());
    away_from_the_minute_edge();
    let first = chat(&g, "up/m", &[("authorization", &auth)]);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("1"));
    assert_eq!(chat(&g, "up/m", &[("authorization", &auth)]).status, 429);
    // The master key is not that key.
    assert_eq!(
        chat(&g, "up/m", &[("authorization", "Bearer mk")]).status,
        200
    );
}

#[test]
fn a_limit_in_the_config_that_does_not_hold_names_file_entry_and_field() {
    let (code, out) = run_cli(
        "limits:\n  - match: {virtual_model: a}\n    rpm: 5\n  - match: {user_path: /t, key: k}\n    rpm: 1\n",
        &["check"],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("config.yaml: limits[1].match: "), "{out}");
    let (code, out) = run_cli(
        "limits:\n  - match: {key: k}\n    rmp: 5\n",
        &["check"],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rpm"), "{out}");
}

fn redis_prefix(test: &str) -> String {
    format!(
        "modelgate-test:{test}:{}:{}:",
        std::process::id(),
        fastrand_u64()
    )
}

fn fastrand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn redis_is_up() {
    assert!(
        std::net::TcpStream::connect("127.0.0.1:6379").is_ok(),
        "no Redis on 127.0.0.1:6379: scripts/setup.sh starts one; this test never skips"
    );
}

#[test]
fn three_gateways_share_one_counter_through_redis() {
    redis_is_up();
    let up = Upstream::echo(&["m"]);
    let config = format!(
        "{}limits:\n  - match: {{virtual_model: shared}}\n    rpm: 5\nvirtual_models:\n  - source: shared\n    target: up/m\n",
        providers(&up)
    );
    let prefix = redis_prefix("three");
    let env = [
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    let gs: Vec<Gateway> = (0..3).map(|_| Gateway::start(&config, &env)).collect();
    away_from_the_minute_edge();
    // 24 clients at once, 8 on each gateway: the shared counter lets exactly 5 through.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let g = &gs[i % 3];
                s.spawn(move || chat(g, "shared", &[]).status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let served = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((served, refused), (5, 19), "{statuses:?}");
    assert_eq!(up.requests().len(), 5);
    // Settled and freed: nothing in flight is left counted in Redis.
    for g in &gs {
        let (_, metrics) = g.get("/metrics");
        assert!(
            metrics.contains("modelgate_limits_store_errors_total 0"),
            "{metrics}"
        );
    }
}

#[test]
fn concurrent_requests_on_one_key_never_pass_its_limit() {
    let up = Upstream::echo(&["m"]);
    let g = Gateway::start(&providers(&up), &[("MODELGATE_MASTER_KEY", "mk")]);
    let r = g.call(
        "POST",
        "/admin/api/v1/keys",
        Some(&json!({"name": "busy", "limits": [{"rpm": 10}]})),
        &[("authorization", "Bearer mk")],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let auth = format!("Bearer {}", r.json()["key"].as_str().unwrap());
    away_from_the_minute_edge();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let (g, auth) = (&g, auth.as_str());
                s.spawn(move || chat(g, "up/m", &[("authorization", auth)]).status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(up.requests().len(), 10);
}

#[test]
fn redis_out_of_reach_fails_open_by_default_and_closed_when_told() {
    let up = Upstream::echo(&["m"]);
    let config = format!(
        "{}limits:\n  - match: {{user_path: /}}\n    rpm: 1\n",
        providers(&up)
    );
    let nowhere = format!("redis://127.0.0.1:{}", free_port());
    let open = Gateway::start(&config, &[("REDIS_URL", nowhere.as_str())]);
    for _ in 0..3 {
        assert_eq!(chat(&open, "up/m", &[]).status, 200);
    }
    let (_, metrics) = open.get("/metrics");
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("modelgate_limits_store_errors_total "))
        .expect("the store error counter")
        .trim()
        .parse()
        .unwrap();
    assert!(errors >= 3.0, "{errors}");
    let closed = Gateway::start(
        &config,
        &[
            ("REDIS_URL", nowhere.as_str()),
            ("LIMITS_FAIL_OPEN", "false"),
        ],
    );
    let r = chat(&closed, "up/m", &[]);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "limits_unavailable")
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(up.requests().len(), 3);
}

#[test]
fn a_stream_settles_with_the_usage_of_its_final_event() {
    let up = Upstream::start(&["m"], |_| {
        Reply::Stream(
            vec![
                b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n".to_vec(),
                b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec(),
            ],
            None,
        )
    });
    // Each request is estimated at about 520 tokens (max_tokens 500): a second estimate kept
    // in full would pass the limit; settled to the 5 tokens reported, three fit.
    let config = format!(
        "{}limits:\n  - match: {{user_path: /}}\n    tpm: 600\n",
        providers(&up)
    );
    let g = Gateway::start(&config, &[]);
    away_from_the_minute_edge();
    for i in 0..3 {
        let r = g.post(
            "/v1/chat/completions",
            &json!({"model": "up/m", "stream": true, "max_tokens": 500,
                    "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        );
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert!(r.body.contains("[DONE]"));
    }
}

#[test]
fn gomodel_budgets_are_user_path_budgets() {
    let up = Upstream::echo(&["m"]);
    // $0.50 an answer (see the daily budget test); GoModel's spelling of a $0.90 daily budget.
    let config = format!(
        "providers:\n  up:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models:\n      - {{id: m, pricing: {{input_per_mtok: 100000, output_per_mtok: 100000}}}}\nbudgets:\n  enabled: true\n  user_paths:\n    - path: /team\n      limits: [{{period: daily, amount: 0.9}}]\n",
        up.base_url()
    );
    let g = Gateway::start(&config, &[("SET_BUDGET_OPS", "hourly=100")]);
    let team = [("x-modelgate-user-path", "/team/a")];
    assert_eq!(chat(&g, "up/m", &team).status, 200);
    assert_eq!(chat(&g, "up/m", &team).status, 200);
    let refused = chat(&g, "up/m", &team);
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (429, "budget_exceeded")
    );
    // Other paths are not under that budget; the variable's budget for /ops is large.
    assert_eq!(
        chat(&g, "up/m", &[("x-modelgate-user-path", "/ops")]).status,
        200
    );
    assert_eq!(chat(&g, "up/m", &[]).status, 200);
}

#[test]
fn shared_counters_settle_spend_and_free_slots_in_redis() {
    redis_is_up();
    let up = Upstream::echo(&["m"]);
    // $0.50 an answer; one request at a time; $1.00 a day.
    let config = format!(
        "providers:\n  up:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models:\n      - {{id: m, pricing: {{input_per_mtok: 100000, output_per_mtok: 100000}}}}\nlimits:\n  - match: {{user_path: /}}\n    max_concurrent: 1\n    budget: {{usd: 1.00, period: day}}\n",
        up.base_url()
    );
    let prefix = redis_prefix("settle");
    let g = Gateway::start(
        &config,
        &[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("REDIS_KEY_PREFIX", prefix.as_str()),
        ],
    );
    // Settling runs after the answer: until it lands, the slot is still taken (429
    // rate_limited, nothing goes upstream). Poll until each outcome shows.
    let mut codes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let r = chat(&g, "up/m", &[]);
        match r.status {
            200 => {
                // The shared script answers the spend with the reservation.
                assert_eq!(r.header("x-ratelimit-limit-budget"), Some("1.00"));
                assert!(r.header("x-ratelimit-remaining-budget").is_some());
                // This request holds the one slot while its answer is made.
                assert_eq!(r.header("x-ratelimit-remaining-concurrent"), Some("0"));
                codes.push("ok".to_string())
            }
            429 if r.error_code() == "budget_exceeded" => {
                assert_eq!(r.header("x-ratelimit-remaining-budget"), Some("0.00"));
                codes.push(r.error_code());
                break;
            }
            429 => assert_eq!(r.error_code(), "rate_limited"),
            s => panic!("unexpected {s}: {}", r.body),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(codes, ["ok", "ok", "budget_exceeded"]);
    assert_eq!(up.requests().len(), 2);
}

/// Issue 20's budget target as a test: 32 concurrent streams on a $1.00 budget. Each answer
/// reports 3 + 2 tokens, $0.05 at these prices, and streams for a while, so many are in flight at
/// once. Spend ends between $1.00 and $1.00 plus one request's estimate: without reservations
/// all 32 first streams would pass at once ($1.60).
#[test]
fn thirty_two_concurrent_streams_end_a_budget_within_one_estimate_of_it() {
    let chunk = |c: &str| {
        format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{c}\"}},\"finish_reason\":null}}]}}\n\n").into_bytes()
    };
    let up = Upstream::start(&["m"], move |_| {
        Reply::Paced {
        head_after: Duration::from_millis(5),
        chunks: vec![
            (Duration::from_millis(20), chunk("a")),
            (Duration::from_millis(20), chunk("b")),
            (Duration::from_millis(20), b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n".to_vec()),
            (Duration::ZERO, b"data: [DONE]\n\n".to_vec()),
        ],
    }
    });
    let config = format!(
        "providers:\n  up:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models:\n      - {{id: m, pricing: {{input_per_mtok: 10000, output_per_mtok: 10000}}}}\nlimits:\n  - match: {{user_path: /}}\n    budget: {{usd: 1.00, period: day}}\n",
        up.base_url()
    );
    let g = std::sync::Arc::new(Gateway::start(&config, &[]));
    let body = json!({"model": "up/m", "stream": true, "max_tokens": 2,
                      "messages": [{"role": "user", "content": "hi"}]});
    // The gateway's estimate: the body's length / 4 as input tokens, plus max_tokens.
    let estimate_tokens = serde_json::to_vec(&body).unwrap().len().div_ceil(4) + 2;
    let estimate_usd = estimate_tokens as f64 * 0.01;
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let send = |g: &Gateway| {
        let r = g.post("/v1/chat/completions", &body, &[]);
        match r.status {
            200 => {
                assert!(r.body.contains("[DONE]"), "{}", r.body);
                true
            }
            429 => {
                assert_eq!(r.error_code(), "budget_exceeded", "{}", r.body);
                false
            }
            s => panic!("unexpected {s}: {}", r.body),
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..32 {
            let (g, served) = (g.clone(), served.clone());
            scope.spawn(move || {
                // Each client streams until the budget refuses it (bounded).
                for _ in 0..100 {
                    if !send(&g) {
                        break;
                    }
                    served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    // Settled estimates may leave room the concurrent phase was refused: one client goes on
    // until the budget refuses it with nothing in flight.
    for _ in 0..100 {
        if !send(&g) {
            break;
        }
        served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let served = served.load(std::sync::atomic::Ordering::SeqCst);
    let spend = served as f64 * 0.05;
    eprintln!("{served} streams served, ${spend:.2} spent, estimate ${estimate_usd:.2}");
    assert!(
        (1.0 - 1e-9..=1.0 + estimate_usd + 1e-9).contains(&spend),
        "{served} streams served: ${spend:.2} spent; allowed $1.00 to ${:.2}",
        1.0 + estimate_usd
    );
    assert_eq!(
        up.requests().len(),
        served,
        "every served stream went upstream once"
    );
}
