//! Middleware pipelines through the real binary: what the upstream received and what the client
//! got, for each built-in middleware, in both client dialects, whole and streamed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// An OpenAI upstream whose answers say `text`; streams split `text` across two events at
/// `split`.
fn upstream(text: &'static str, split: usize) -> Upstream {
    Upstream::start(&["m1", "big"], move |s| {
        let model = s.json()["model"].as_str().unwrap_or("?").to_string();
        if s.json()["stream"] == true {
            let (a, b) = text.split_at(split);
            let chunk = |t: &str| {
                format!(
                    "data: {}\n\n",
                    json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                           "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]})
                )
                .into_bytes()
            };
            Reply::Stream(vec![chunk(a), chunk(b), b"data: [DONE]\n\n".to_vec()], None)
        } else {
            Reply::Raw(
                200,
                vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-upstream-secret".into(), "s3".into()),
                ],
                serde_json::to_vec(&chat_reply(&model, text)).unwrap(),
            )
        }
    })
}

fn config(up: &Upstream, extra_vm: &str) -> String {
    format!(
        r#"providers:
{}virtual_models:
  - source: mw
    target: a/m1
    request_middleware:
      - {{name: set-params, config: {{set: {{temperature: 0.1}}, defaults: {{max_tokens: 64}}, remove: [top_p]}}}}
      - {{name: system-prompt, config: {{text: "Be brief.", position: prepend}}}}
      - {{name: guard, config: {{deny: ["(?i)secret plan"], redact: [{{pattern: "\\d{{4}}-\\d{{4}}", replacement: "[card]"}}], message: "that topic is blocked"}}}}
    response_middleware:
      - {{name: redact, config: {{patterns: [{{pattern: "hunter2", replacement: "***"}}]}}}}
      - {{name: headers, config: {{set: {{x-team: alpha}}, remove: [x-upstream-secret]}}}}
  - source: routed
    target: a/m1
    request_middleware:
      - {{name: router, config: {{rules: [{{when: {{min_input_chars: 100}}, model: a/big}}], default: a/m1}}}}
{extra_vm}"#,
        provider_block("a", up, &["m1", "big"])
    )
}

#[test]
fn request_middleware_edits_what_the_upstream_receives() {
    let up = upstream("fine", 1);
    let g = Gateway::start(&config(&up, ""), &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "mw", "top_p": 0.5, "temperature": 1.0,
                "messages": [{"role": "user", "content": "card 1234-5678 please"}]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.requests()[0].json();
    assert_eq!(seen["model"], "m1");
    assert_eq!(seen["temperature"], 0.1, "set wins over the client");
    assert_eq!(seen["max_tokens"], 64, "defaults fill what is absent");
    assert!(seen.get("top_p").is_none(), "remove deletes");
    assert_eq!(seen["messages"][0]["role"], "system");
    assert_eq!(seen["messages"][0]["content"], "Be brief.");
    assert_eq!(seen["messages"][1]["content"], "card [card] please");
}

#[test]
fn fields_no_middleware_edits_reach_the_upstream_as_the_client_wrote_them() {
    let up = upstream("fine", 1);
    let g = Gateway::start(&config(&up, ""), &[]);
    // Escapes a parse-and-write would rewrite (`\u00e9` as `é`, `\/` as `/`), spacing, and a
    // number written in a form of its own.
    let body = br#"{"model": "mw", "n": 1.50e0, "messages": [{"role": "user", "content": "caf\u00e9 \/ ok"}, {"role": "assistant", "content": "a\tb"}]}"#;
    let r = g.post_raw("/v1/chat/completions", body, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = &up.requests()[0];
    let text = String::from_utf8_lossy(&seen.body);
    for message in [
        r#"{"role": "user", "content": "caf\u00e9 \/ ok"}"#,
        r#"{"role": "assistant", "content": "a\tb"}"#,
    ] {
        assert!(text.contains(message), "{message} byte for byte in {text}");
    }
    assert!(text.contains(r#""n":1.50e0"#), "{text}");
    let seen = seen.json();
    assert_eq!(seen["messages"][0]["content"], "Be brief.");
    assert_eq!(seen["messages"][1]["content"], "café / ok");
    assert_eq!(seen["temperature"], 0.1);
}

#[test]
fn a_guard_deny_sends_nothing_upstream_in_either_dialect() {
    let up = upstream("fine", 1);
    let g = Gateway::start(&config(&up, ""), &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "mw", "messages": [{"role": "user", "content": "the SECRET plan"}]}),
        &[],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_code(), "request_blocked");
    assert_eq!(r.json()["error"]["message"], "that topic is blocked");
    let r = g.post(
        "/v1/messages",
        &json!({"model": "mw", "max_tokens": 10,
                "messages": [{"role": "user", "content": "the secret plan"}]}),
        &[],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["type"],
        "error",
        "Anthropic's envelope: {}",
        r.body
    );
    assert_eq!(r.json()["error"]["message"], "that topic is blocked");
    // A repeated key does not get a body past the steps: the later value is the one checked
    // and sent, as when parsed.
    let r = g.post_raw(
        "/v1/chat/completions",
        br#"{"model": "mw", "messages": [{"role": "user", "content": "hi"}],
             "messages": [{"role": "user", "content": "the secret plan"}]}"#,
        &[("content-type", "application/json")],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_code(), "request_blocked");
    // Bodies the steps cannot route are answered by the planner, with its messages.
    for (body, code) in [
        (&br#"{"messages": []}"#[..], "missing_model"),
        (br#"{"model": 7, "messages": []}"#, "invalid_model"),
        (br#"{"model": "mw", "messages": [}"#, "invalid_json"),
    ] {
        let r = g.post_raw(
            "/v1/chat/completions",
            body,
            &[("content-type", "application/json")],
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, code),
            "{}",
            r.body
        );
    }
    assert!(up.requests().is_empty(), "nothing went upstream");
}

#[test]
fn the_router_picks_the_model_by_input_size() {
    let up = upstream("fine", 1);
    let g = Gateway::start(&config(&up, ""), &[]);
    let long = "x".repeat(150);
    for (content, expected) in [("short", "m1"), (long.as_str(), "big")] {
        let r = g.post(
            "/v1/chat/completions",
            &json!({"model": "routed", "messages": [{"role": "user", "content": content}]}),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.header("x-modelgate-model"),
            Some(format!("a/{expected}").as_str())
        );
        // The virtual model applied, though its router chose a concrete model.
        assert_eq!(r.header("x-modelgate-virtual-model"), Some("routed"));
    }
    let models: Vec<String> = up
        .requests()
        .iter()
        .map(|s| s.json()["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(models, ["m1", "big"]);
}

#[test]
fn response_middleware_redacts_whole_answers_and_sets_headers() {
    let up = upstream("the password is hunter2.", 1);
    let g = Gateway::start(&config(&up, ""), &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "mw", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "the password is ***."
    );
    assert_eq!(r.header("x-team"), Some("alpha"));
    assert_eq!(r.header("x-upstream-secret"), None);
    // The Anthropic client gets the translated answer, redacted too.
    let r = g.post(
        "/v1/messages",
        &json!({"model": "mw", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["content"][0]["text"], "the password is ***.");
}

#[test]
fn a_match_split_across_two_stream_events_is_redacted() {
    // "hunter2" arrives as "the password is hun" + "ter2.": neither event holds it whole.
    let up = upstream("the password is hunter2.", 19);
    let g = Gateway::start(&config(&up, ""), &[]);
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "mw", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "mw", "stream": true, "max_tokens": 10,
                   "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let r = g.post(path, &body, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(!r.body.contains("hunter2"), "{path}: {}", r.body);
        assert!(!r.body.contains("hun\""), "{path}: {}", r.body);
        let text: String = r
            .body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .or(v["delta"]["text"].as_str())
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(text, "the password is ***.", "{path}: {}", r.body);
    }
}

/// A webhook receiver on 127.0.0.1 that keeps every record it gets.
fn receiver() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let got = got2.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end().to_ascii_lowercase();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                if let Ok(v) = serde_json::from_slice(&body) {
                    got.lock().unwrap().push(v);
                }
                let mut out = stream;
                let _ = out.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
            });
        }
    });
    (port, got)
}

#[test]
fn a_webhook_gets_one_record_per_request_and_a_dead_one_changes_nothing() {
    let up = upstream("fine", 1);
    let (port, got) = receiver();
    let dead = free_port();
    let vms = format!(
        "  - source: hooked\n    target: a/m1\n    post_response_middleware:\n      - {{name: webhook, config: {{url: \"http://127.0.0.1:{port}/hook\", timeout_ms: 2000}}}}\n      - {{name: log, config: {{level: info}}}}\n  - source: deadhook\n    target: a/m1\n    post_response_middleware:\n      - {{name: webhook, config: {{url: \"http://127.0.0.1:{dead}/hook\", timeout_ms: 200}}}}\n"
    );
    let g = Gateway::start(&config(&up, &vms), &[]);
    for _ in 0..3 {
        let r = g.post(
            "/v1/chat/completions",
            &json!({"model": "hooked", "messages": [{"role": "user", "content": "hi"}]}),
            &[("x-request-id", "hook-req")],
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let records = got.lock().unwrap().clone();
    assert_eq!(records.len(), 3, "{records:?}");
    let r = &records[0];
    assert_eq!(r["request_id"], "hook-req");
    assert_eq!(r["virtual_model"], "hooked");
    assert_eq!(r["served_model"], "a/m1");
    assert_eq!(r["status"], 200);
    assert_eq!(r["attempts"], 1);
    assert_eq!(r["usage"]["prompt_tokens"], 3);
    assert_eq!(r["usage"]["completion_tokens"], 2);
    assert!(r.get("cost_usd").is_some() && r.get("duration_ms").is_some());
    assert!(
        g.logs().contains("\"request_id\":\"hook-req\""),
        "the log middleware writes the record: {}",
        g.logs()
    );
    // A receiver that is not there: every client request still succeeds.
    for _ in 0..5 {
        let r = g.post(
            "/v1/chat/completions",
            &json!({"model": "deadhook", "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

#[test]
fn check_and_resolve_print_the_pipelines() {
    let up = upstream("fine", 1);
    let cfg = config(&up, "");
    let (code, out) = run_cli(&cfg, &["check"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("request_middleware: set-params, system-prompt, guard")
            && out.contains("response_middleware: redact, headers"),
        "{out}"
    );
    let (code, out) = run_cli(&cfg, &["resolve", "routed"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("request_middleware: router"), "{out}");
    assert!(
        out.contains("request middleware on an empty chat request: model a/m1"),
        "{out}"
    );
    // What the router rules pick for a sample body.
    let long = format!(
        r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(150)
    );
    let (code, out) = run_cli(&cfg, &["resolve", "routed", "--body", &long], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("request middleware on this body: model a/big"),
        "{out}"
    );
    let (code, out) = run_cli(
        &cfg,
        &[
            "resolve",
            "mw",
            "--body",
            r#"{"messages": [{"role": "user", "content": "the secret plan"}]}"#,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("blocked by request_middleware[2]: that topic is blocked"),
        "{out}"
    );
    let (code, out) = run_cli(&cfg, &["resolve", "routed", "--body", "[1]"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--body \"[1]\" is not a JSON object"), "{out}");
}

#[test]
fn an_unknown_middleware_is_a_start_up_error_naming_the_entry_list_and_index() {
    let up = upstream("fine", 1);
    let cfg = config(
        &up,
        "  - source: bad\n    target: a/m1\n    response_middleware:\n      - {name: redactor, config: {}}\n",
    );
    let (code, out) = run_cli(&cfg, &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("(source \"bad\"): response_middleware[0]") && out.contains("\"redact\""),
        "{out}"
    );
}
