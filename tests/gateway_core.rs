//! Black-box tests of the gateway core: the real binary against mock upstreams on 127.0.0.1.

mod common;

use common::*;
use serde_json::json;
use std::io::Read;

fn two_provider_config(a: &Upstream, b: &Upstream, vms: &str) -> String {
    format!(
        "providers:\n{}{}virtual_models:\n{vms}",
        provider_block("a", a, &["m1", "m2"]),
        provider_block("b", b, &["m3"])
    )
}

#[test]
fn alias_rewrites_model_and_sends_the_provider_key_not_the_clients() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(
        &two_provider_config(&a, &b, "  - source: fast\n    target: a/m1\n"),
        &[],
    );
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}),
        &[
            ("authorization", "Bearer client-secret"),
            ("x-request-id", "req-123"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("a/m1"));
    assert_eq!(r.header("x-modelgate-virtual-model"), Some("fast"));
    assert_eq!(r.header("x-modelgate-attempts"), Some("1"));
    assert_eq!(r.header("x-request-id"), Some("req-123"));
    assert_eq!(r.json()["model"], "m1");
    let seen = a.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].json()["model"], "m1");
    assert_eq!(seen[0].json()["messages"][0]["content"], "hi");
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-test-a"));
    assert!(b.requests().is_empty());
}

#[test]
fn body_bytes_other_than_model_pass_through() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(
        &two_provider_config(&a, &b, "  - source: fast\n    target: a/m1\n"),
        &[],
    );
    let body = br#"{"zeta": 1.50,  "model" :"fast", "messages":[{"role":"user","content":"x"}], "extra": {"k": [1,2]}}"#;
    let r = g.post_raw("/v1/chat/completions", body, &[]);
    assert_eq!(r.status, 200);
    let want = br#"{"zeta": 1.50,  "model" :"m1", "messages":[{"role":"user","content":"x"}], "extra": {"k": [1,2]}}"#;
    assert_eq!(a.requests()[0].body, want.to_vec());
}

#[test]
fn concrete_model_is_served_directly_without_virtual_header() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_provider_config(&a, &b, "  []\n"), &[]);
    let r = g.chat("a/m2");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("a/m2"));
    assert_eq!(r.header("x-modelgate-virtual-model"), None);
    assert_eq!(a.requests()[0].json()["model"], "m2");
}

#[test]
fn shadow_redirects_a_concrete_name_and_falls_through_when_out_of_scope() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&["m3"]);
    let vms = "  - source: a/m1\n    target: b/m3\n    user_paths: [/team]\n";
    let g = Gateway::start(&two_provider_config(&a, &b, vms), &[]);
    let inside = g.post(
        "/v1/chat/completions",
        &json!({"model": "a/m1", "messages": []}),
        &[("x-modelgate-user-path", "/team/x")],
    );
    assert_eq!(inside.header("x-modelgate-model"), Some("b/m3"));
    assert_eq!(inside.header("x-modelgate-virtual-model"), Some("a/m1"));
    let outside = g.post(
        "/v1/chat/completions",
        &json!({"model": "a/m1", "messages": []}),
        &[("x-modelgate-user-path", "/team-x")],
    );
    assert_eq!(outside.status, 200);
    assert_eq!(outside.header("x-modelgate-model"), Some("a/m1"));
    assert_eq!(outside.header("x-modelgate-virtual-model"), None);
    assert_eq!(a.requests().len(), 1);
    assert_eq!(b.requests().len(), 1);
}

#[test]
fn shadow_may_list_itself_first_and_fall_back() {
    let a = Upstream::start(&["m1"], |_| {
        Reply::Json(500, json!({"error": {"message": "down"}}))
    });
    let b = Upstream::echo(&["m3"]);
    let vms = "  - source: a/m1\n    strategy: priority\n    targets:\n      - {model: a/m1, retry: {attempts: 1}}\n      - b/m3\n";
    let g = Gateway::start(&two_provider_config(&a, &b, vms), &[]);
    let r = g.chat("a/m1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("b/m3"));
    assert_eq!(r.header("x-modelgate-attempts"), Some("2"));
    assert_eq!(a.requests().len(), 1);
}

#[test]
fn redirect_with_no_eligible_target_falls_through_to_the_literal_name() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    // b/zz is not in b's catalog: the shadow is ignored and a/m1 itself answers.
    let vms = "  - source: a/m1\n    target: b/zz\n";
    let g = Gateway::start(&two_provider_config(&a, &b, vms), &[]);
    let r = g.chat("a/m1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("a/m1"));
    assert_eq!(r.header("x-modelgate-virtual-model"), None);
}

#[test]
fn env_virtual_models_replace_file_entries_by_source_case_insensitively() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&["m3"]);
    let g = Gateway::start(
        &two_provider_config(&a, &b, "  - source: Smart\n    target: a/m1\n"),
        &[("VIRTUAL_MODELS", r#"[{"source":"smart","target":"b/m3"}]"#)],
    );
    let r = g.chat("smart");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("b/m3"));
    assert_eq!(
        g.chat("Smart").status,
        404,
        "the file entry is replaced whole"
    );
}

#[test]
fn slug_is_a_second_name() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(
        &two_provider_config(
            &a,
            &b,
            "  - source: smart\n    slug: smart-v1\n    target: a/m1\n",
        ),
        &[],
    );
    let r = g.chat("smart-v1");
    assert_eq!(r.header("x-modelgate-virtual-model"), Some("smart"));
    // GET /v1/models/{slug} answers the virtual model's entry.
    let (status, body) = g.get("/v1/models/smart-v1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"],
        "smart"
    );
    assert_eq!(g.get("/v1/models/smart-v2").0, 404);
}

#[test]
fn smooth_weighted_round_robin_interleaves_and_keeps_exact_shares() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&["m3"]);
    let vms = "  - source: lb\n    targets:\n      - {model: a/m1, weight: 2}\n      - {model: b/m3, weight: 1}\n";
    let g = Gateway::start(&two_provider_config(&a, &b, vms), &[]);
    let order: Vec<String> = (0..30)
        .map(|_| {
            g.chat("lb")
                .header("x-modelgate-model")
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        &order[..6],
        &["a/m1", "b/m3", "a/m1", "a/m1", "b/m3", "a/m1"]
    );
    assert_eq!(order.iter().filter(|m| *m == "a/m1").count(), 20);
    assert_eq!(order.iter().filter(|m| *m == "b/m3").count(), 10);
}

#[test]
fn weight_zero_is_fallback_only() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&["m3"]);
    let vms = "  - source: lb\n    targets:\n      - a/m1\n      - {model: b/m3, weight: 0}\n";
    let g = Gateway::start(&two_provider_config(&a, &b, vms), &[]);
    for _ in 0..5 {
        assert_eq!(g.chat("lb").header("x-modelgate-model"), Some("a/m1"));
    }
    assert!(b.requests().is_empty());
}

#[test]
fn weight_zero_target_takes_over_when_the_primary_fails() {
    let a = Upstream::start(&["m1"], |_| {
        Reply::Json(503, json!({"error": {"message": "overloaded"}}))
    });
    let b = Upstream::echo(&["m3"]);
    let vms = "  - source: lb\n    targets:\n      - {model: a/m1, retry: {attempts: 1}}\n      - {model: b/m3, weight: 0}\n";
    let g = Gateway::start(&two_provider_config(&a, &b, vms), &[]);
    let r = g.chat("lb");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("b/m3"));
}

#[test]
fn models_endpoint_lists_concrete_models_and_aliases() {
    let a = Upstream::echo(&["m1", "listed-only"]);
    let b = Upstream::echo(&[]);
    let cfg = two_provider_config(&a, &b, "  - source: fast\n    target: a/m1\n");
    let g = Gateway::start(&cfg, &[]);
    let ids = |body: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, body) = g.get("/v1/models");
    assert_eq!(s, 200);
    let all = ids(&body);
    assert!(all.contains(&"a/m1".to_string()), "{all:?}");
    assert!(all.contains(&"a/m2".to_string()));
    assert!(all.contains(&"fast".to_string()));
    drop(g);
    let g = Gateway::start(&cfg, &[("KEEP_ONLY_ALIASES_AT_MODELS_ENDPOINT", "true")]);
    assert_eq!(ids(&g.get("/v1/models").1), vec!["fast".to_string()]);
    drop(g);
    // A shadow is listed once, in the concrete model's place, with its target.
    let shadow = two_provider_config(
        &a,
        &b,
        "  - source: a/m1
    target: a/m2
",
    );
    let g = Gateway::start(&shadow, &[]);
    let (_, body) = g.get("/v1/models");
    let all = ids(&body);
    assert_eq!(all.iter().filter(|id| *id == "a/m1").count(), 1, "{all:?}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entry = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "a/m1")
        .unwrap()
        .clone();
    assert_eq!(entry["target"], "a/m2", "{entry}");
    assert!(all.contains(&"a/m2".to_string()), "{all:?}");
}

#[test]
fn one_model_is_retrieved_by_id_under_the_list_rules() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let vms = "  - source: fast
    target: a/m1
  - source: team
    target: a/m2
    user_paths: [/team]
";
    let g = Gateway::start(&two_provider_config(&a, &b, vms), &[]);
    let get = |path: &str| {
        let (s, body) = g.get(path);
        (s, serde_json::from_str::<serde_json::Value>(&body).unwrap())
    };
    let (s, m) = get("/v1/models/fast");
    assert_eq!(
        (s, &m["id"], &m["object"]),
        (200, &json!("fast"), &json!("model"))
    );
    assert_eq!(m["target"], "a/m1");
    // A concrete id holds a slash, sent as is or encoded.
    for path in ["/v1/models/a/m1", "/v1/models/a%2Fm1"] {
        let (s, m) = get(path);
        assert_eq!((s, &m["id"]), (200, &json!("a/m1")), "{path}");
    }
    for missing in ["/v1/models/nope", "/v1/models/team"] {
        let (s, e) = get(missing);
        assert_eq!(s, 404, "{missing}");
        assert_eq!(e["error"]["code"], "model_not_found", "{missing}");
    }
    let r = g.call(
        "GET",
        "/v1/models/team",
        None,
        &[("x-modelgate-user-path", "/team/x")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn catalog_discovery_makes_listed_models_routable() {
    let a = Upstream::echo(&["discovered-model"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_provider_config(&a, &b, "  []\n"), &[]);
    // Either the start-up listing or the on-demand refresh finds it.
    let r = g.chat("a/discovered-model");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(a
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.path == "/v1/models"));
}

#[test]
fn a_model_added_upstream_after_a_miss_is_found_on_the_next_request() {
    use std::sync::{Arc, Mutex};
    // The upstream's list grows while the gateway runs.
    let listed = Arc::new(Mutex::new(vec!["m1".to_string()]));
    let l2 = listed.clone();
    let a = Upstream::start_listing(move |s| {
        let listed = l2.lock().unwrap();
        if s.path.ends_with("/models") {
            let data: Vec<serde_json::Value> = listed
                .iter()
                .map(|m| json!({"id": m, "object": "model"}))
                .collect();
            return Reply::Json(200, json!({"object": "list", "data": data}));
        }
        let model = s.json()["model"].as_str().unwrap_or("").to_string();
        Reply::Json(200, chat_reply(&model, "ok"))
    });
    let cfg = format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n",
        a.base_url()
    );
    let g = Gateway::start(&cfg, &[]);
    assert_eq!(g.chat("a/m1").status, 200);
    let listings = || {
        a.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.ends_with("/models"))
            .count()
    };
    // A typo: one refresh, then 404; asked again, no second refresh within the minute.
    let before = listings();
    assert_eq!(g.chat("a/typo").status, 404);
    assert_eq!(g.chat("a/typo").status, 404);
    assert_eq!(listings(), before + 1);
    // The provider lists a new model: the next request naming it refreshes again and is served.
    listed.lock().unwrap().push("m2".into());
    let r = g.chat("a/m2");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(listings(), before + 2);
}

/// An OpenAI-compatible upstream whose `GET /v1/models` answers only once `release` is
/// received (or after 8 s), listing `m1` and `late-model`; chat requests are echoed at once.
fn slow_catalog_upstream() -> (u16, std::sync::mpsc::Sender<()>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut head = Vec::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        head.push(std::mem::take(&mut line));
                    }
                    let Some(first) = head.first() else { return };
                    let len: usize = head
                        .iter()
                        .find_map(|h| {
                            h.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = if first.starts_with("GET") && first.contains("/models") {
                        let _ = gate
                            .lock()
                            .unwrap()
                            .recv_timeout(std::time::Duration::from_secs(8));
                        json!({"object": "list", "data": [{"id": "m1"}, {"id": "late-model"}]})
                    } else {
                        let req: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        chat_reply(req["model"].as_str().unwrap_or("?"), "ok")
                    };
                    let text = answer.to_string();
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                }
            });
        }
    });
    (port, release)
}

#[test]
fn a_slow_catalog_refresh_is_waited_for_only_up_to_the_bound() {
    let (port, release) = slow_catalog_upstream();
    let cfg = format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{port}/v1\n    api_key: k\n    models: [m1]\nvirtual_models: []\n"
    );
    let g = Gateway::start(&cfg, &[("MODEL_REFRESH_WAIT_MS", "300")]);
    // The listing is held back (up to 8 s) while the request waits its 300 ms: the usual 404.
    let r = g.chat("a/late-model");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "model_not_found"),
        "{}",
        r.body
    );
    // The refresh finishes in the background; the model is then served without another wait.
    let _ = release.send(());
    let _ = release.send(());
    let mut status = 0;
    for _ in 0..200 {
        status = g.chat("a/late-model").status;
        if status == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status, 200);
}

#[test]
fn allowlist_mode_serves_only_configured_models() {
    let a = Upstream::echo(&["discovered-model"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(
        &two_provider_config(&a, &b, "  []\n"),
        &[("CONFIGURED_PROVIDER_MODELS_MODE", "allowlist")],
    );
    assert_eq!(g.chat("a/discovered-model").status, 404);
    assert_eq!(g.chat("a/m1").status, 200);
}

#[test]
fn invalid_utf8_inside_a_string_is_a_400_that_reaches_no_upstream() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_provider_config(&a, &b, "  []\n"), &[]);
    // A long message, so the bad bytes sit past the scanner's first blocks too.
    let text = "x".repeat(150);
    for bad in [&b"\xff"[..], b"\xc3(", b"\xed\xa0\x80"] {
        let mut body = format!(r#"{{"model":"a/m1","messages":[{{"role":"user","content":"{text}"#)
            .into_bytes();
        body.extend(bad);
        body.extend(br#"!"}]}"#);
        let r = g.post_raw("/v1/chat/completions", &body, &[]);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_json"),
            "{}",
            r.body
        );
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("UTF-8"),
            "{}",
            r.body
        );
    }
    // Valid non-ASCII text passes.
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "a/m1", "messages": [{"role": "user", "content": "héllo 中文 😀"}]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(a.requests().len(), 1, "only the valid body went upstream");
}

#[test]
fn client_errors_have_typed_envelopes() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_provider_config(&a, &b, "  []\n"), &[]);
    let bad = g.post_raw("/v1/chat/completions", b"{nope", &[]);
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_json")
    );
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    let missing = g.post("/v1/chat/completions", &json!({"messages": []}), &[]);
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (400, "missing_model")
    );
    let unknown = g.chat("no-such-model");
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "model_not_found")
    );
    assert_eq!(
        unknown.json()["error"]["message"],
        "unsupported model: no-such-model"
    );
    let path = g.post(
        "/v1/chat/completions",
        &json!({"model": "a/m1"}),
        &[("x-modelgate-user-path", "/a/../b")],
    );
    assert_eq!(
        (path.status, path.error_code().as_str()),
        (400, "invalid_user_path")
    );
    let route = g.post("/v1/nothing", &json!({}), &[]);
    assert_eq!(route.status, 404);
    assert!(a.requests().is_empty());
}

#[test]
fn bodies_over_the_limit_get_413() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(
        &two_provider_config(&a, &b, "  []\n"),
        &[("BODY_SIZE_LIMIT", "1K")],
    );
    let big = json!({"model": "a/m1", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let r = g.post("/v1/chat/completions", &big, &[]);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "request_too_large")
    );
    // Anthropic's envelope names it as Anthropic's API does.
    let big = json!({"model": "a/m1", "max_tokens": 5, "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let r = g.post("/v1/messages", &big, &[]);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["type"], "error", "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "request_too_large", "{}", r.body);
    assert!(a.requests().is_empty());
}

#[test]
fn large_bodies_reach_the_upstream_byte_exact_also_on_fallback() {
    let a = Upstream::start(&["m1"], |_| {
        Reply::Json(502, json!({"error": {"message": "bad gateway"}}))
    });
    let b = Upstream::echo(&["m3"]);
    let vms = "  - source: big\n    strategy: priority\n    targets:\n      - {model: a/m1, retry: {attempts: 1}}\n      - b/m3\n";
    let g = Gateway::start(&two_provider_config(&a, &b, vms), &[]);
    let content: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let body = json!({"model": "big", "messages": [{"role": "user", "content": content}]});
    let r = g.post("/v1/chat/completions", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    for seen in [&a.requests()[0], &b.requests()[0]] {
        assert_eq!(
            seen.json()["messages"][0]["content"]
                .as_str()
                .unwrap()
                .len(),
            200_000
        );
        assert_eq!(
            seen.body.len(),
            seen.header("content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap()
        );
    }
}

#[test]
fn unreachable_upstream_is_a_clean_502() {
    let port = free_port();
    let cfg = format!(
        "providers:\n  dead:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{port}/v1\n    api_key: k\n    models: [m]\n"
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.chat("dead/m");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable"),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("127.0.0.1"),
        "no internal addresses in error bodies"
    );
}

#[test]
fn upstream_client_errors_pass_through_untouched() {
    let a = Upstream::start(&["m1"], |_| {
        Reply::Json(400, json!({"error": {"message": "bad param", "code": "x"}}))
    });
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_provider_config(&a, &b, "  []\n"), &[]);
    let r = g.chat("a/m1");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "bad param");
}

#[test]
fn streams_are_relayed_chunk_by_chunk() {
    let (release, g8) = gate();
    let a = Upstream::start(&["m1"], move |_| {
        Reply::Stream(
            vec![
                b"data: {\"choices\":[{\"delta\":{\"content\":\"first\"}}]}\n\n".to_vec(),
                b"data: {\"choices\":[{\"delta\":{\"content\":\"second\"}}]}\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec(),
            ],
            Some(g8.clone()),
        )
    });
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_provider_config(&a, &b, "  []\n"), &[]);
    let resp = Gateway::agent()
        .post(&g.url("/v1/chat/completions"))
        .send_json(json!({"model": "a/m1", "stream": true, "messages": []}))
        .unwrap();
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let mut reader = std::io::BufReader::new(resp.into_reader());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    // The upstream holds its last chunk until we have seen the first: a buffering gateway
    // would never deliver it and this read would time out.
    assert!(first.contains("first"), "{first}");
    release.send(()).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(
        rest.contains("second") && rest.ends_with("data: [DONE]\n\n"),
        "{rest}"
    );
}

#[test]
fn body_provider_field_bypasses_virtual_models() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&["m1"]);
    let cfg = format!(
        "providers:\n{}{}virtual_models:\n  - source: m1\n    target: a/m1\n",
        provider_block("a", &a, &["m1"]),
        provider_block("b", &b, &["m1"])
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "m1", "provider": "b", "messages": []}),
        &[],
    );
    assert_eq!(r.header("x-modelgate-model"), Some("b/m1"));
    assert!(
        b.requests()[0].json().get("provider").is_none(),
        "provider is not forwarded"
    );
}

#[test]
fn embeddings_and_completions_go_to_their_own_paths() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_provider_config(&a, &b, "  []\n"), &[]);
    g.post(
        "/v1/embeddings",
        &json!({"model": "a/m1", "input": "x"}),
        &[],
    );
    g.post(
        "/v1/completions",
        &json!({"model": "a/m1", "prompt": "x"}),
        &[],
    );
    g.post(
        "/v1/responses",
        &json!({"model": "a/m1", "input": "x"}),
        &[],
    );
    let paths: Vec<String> = a.requests().iter().map(|s| s.path.clone()).collect();
    assert_eq!(
        paths,
        vec!["/v1/embeddings", "/v1/completions", "/v1/responses"]
    );
}

#[test]
fn example_config_serves_with_no_keys() {
    let cfg = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .unwrap();
    let g = Gateway::start(&cfg, &[]);
    let r = g.chat("smart");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("demo/echo-smart"));
    let s = g.post(
        "/v1/chat/completions",
        &json!({"model": "fast", "stream": true, "messages": []}),
        &[],
    );
    assert!(s.body.ends_with("data: [DONE]\n\n"));
}

#[test]
fn an_encoded_answer_reaches_the_client_byte_for_byte() {
    // Bytes that are not UTF-8 and not JSON, as a compressed body is: the gateway neither
    // decodes nor re-encodes an answer, whatever the client accepts.
    let body: Vec<u8> = vec![
        0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, 0x00, 0x80, 0x7f, 0x01, 0x02,
    ];
    let sent = body.clone();
    let a = Upstream::start(&["m1"], move |_| {
        Reply::Raw(
            200,
            vec![
                ("content-type".into(), "application/json".into()),
                ("content-encoding".into(), "gzip".into()),
            ],
            sent.clone(),
        )
    });
    let cfg = format!("providers:\n{}", provider_block("a", &a, &["m1"]));
    let g = Gateway::start(&cfg, &[]);
    for accept in ["gzip, br", "identity"] {
        let resp = Gateway::agent()
            .post(&g.url("/v1/chat/completions"))
            .set("content-type", "application/json")
            .set("accept-encoding", accept)
            .send_bytes(br#"{"model": "a/m1", "messages": []}"#)
            .expect("answer");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.header("content-encoding"), Some("gzip"), "{accept}");
        let mut got = Vec::new();
        resp.into_reader().read_to_end(&mut got).expect("body");
        assert_eq!(got, body, "{accept}");
    }
    // The client's encodings are not forwarded: the upstream is asked for what it would send
    // anyway, so the usage tap can read a plain answer.
    for seen in a.requests() {
        assert_eq!(seen.header("accept-encoding"), None);
    }
}

#[test]
fn a_chunked_non_stream_answer_reaches_the_client_whole_with_its_length() {
    // The upstream chunks its JSON answer in three pieces; the client asked for no stream, so
    // it gets one body with Content-Length.
    let answer = serde_json::to_vec(&chat_reply("m1", "framed")).unwrap();
    let pieces: Vec<Vec<u8>> = answer.chunks(40).map(<[u8]>::to_vec).collect();
    assert!(pieces.len() >= 3);
    let a = Upstream::start(&["m1"], move |_| Reply::Stream(pieces.clone(), None));
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_provider_config(&a, &b, "  []\n"), &[]);
    let r = g.chat("a/m1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "framed");
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(r.header("transfer-encoding"), None);
}

#[test]
fn a_chunked_request_body_of_any_size_is_forwarded_whole() {
    use std::io::{Read, Write};
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_provider_config(&a, &b, "  []\n"), &[]);
    let content: String = (0..150_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let body = serde_json::to_vec(
        &json!({"model": "a/m1", "messages": [{"role": "user", "content": content}]}),
    )
    .unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    for piece in body.chunks(10_000) {
        write!(s, "{:x}\r\n", piece.len()).unwrap();
        s.write_all(piece).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = &a.requests()[0];
    // Byte for byte but the model, which names the upstream's id.
    let expected = String::from_utf8(body)
        .unwrap()
        .replace("\"a/m1\"", "\"m1\"");
    assert_eq!(
        seen.body,
        expected.as_bytes(),
        "the upstream got the body whole"
    );
}

/// Sends `raw` on a new connection and reads the answer to its end (the gateway closes).
fn raw_exchange(port: u16, raw: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(raw).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The JSON body of a raw HTTP/1 answer (everything after its header).
fn raw_json_body(answer: &str) -> serde_json::Value {
    let start = answer.find("\r\n\r\n").expect("an answer with a header") + 4;
    serde_json::from_str(&answer[start..]).expect("a JSON body")
}

/// A gateway on two echoing upstreams, the first serving `m1`.
fn echo_gateway() -> (Upstream, Upstream, Gateway) {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two_provider_config(&a, &b, "  []\n"), &[]);
    (a, b, g)
}

#[test]
fn a_malformed_request_header_is_answered_with_a_json_400_and_the_connection_closed() {
    let (a, _b, g) = echo_gateway();
    let answer = raw_exchange(
        g.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nbad header line\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    let v = raw_json_body(&answer);
    assert_eq!(v["error"]["type"], "invalid_request_error", "{answer}");
    assert_eq!(v["error"]["code"], "bad_request", "{answer}");
    assert!(a.requests().is_empty());
    // The gateway serves the next client as before.
    assert_eq!(g.chat("a/m1").status, 200);
}

#[test]
fn a_connect_request_is_refused_with_a_json_405() {
    let (a, _b, g) = echo_gateway();
    let answer = raw_exchange(
        g.port,
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let v = raw_json_body(&answer);
    assert_eq!(v["error"]["code"], "method_not_allowed", "{answer}");
    assert!(a.requests().is_empty());
}

#[test]
fn one_kept_alive_connection_carries_requests_one_after_another() {
    use std::io::{BufRead, BufReader, Read, Write};
    let (a, _b, g) = echo_gateway();
    let s = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let body = br#"{"model":"a/m1","messages":[{"role":"user","content":"hi"}]}"#;
    for i in 0..3 {
        write!(
            w,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        w.write_all(body).unwrap();
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "request {i}: {status}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            assert!(
                !lower.starts_with("connection: close"),
                "request {i}: {line}"
            );
        }
        let mut answer = vec![0; length];
        r.read_exact(&mut answer).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(v["object"], "chat.completion", "request {i}");
    }
    assert_eq!(a.requests().len(), 3);
}
