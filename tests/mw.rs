//! The middleware pipelines' webhook sender against real receivers on 127.0.0.1: one record
//! per request, with its usage and cost, and a dead receiver that only moves the counters.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use common::{free_port, Reply, Upstream};
use modelgate::middleware::{MiddlewareCall, Pipelines, Record, Usage, COUNTERS};

fn webhook(url: &str) -> Pipelines {
    let call = MiddlewareCall {
        name: "webhook".into(),
        config_type: Some("webhook_config".into()),
        config: Some(
            json!({"url": url, "headers": {"authorization": "Bearer hook-token"}, "timeout_ms": 2000}),
        ),
        config_id: None,
    };
    Pipelines::build(&[], &[], &[call], &BTreeMap::new()).expect("a valid webhook")
}

fn record(i: u32) -> Record {
    Record {
        request_id: format!("req-{i}"),
        virtual_model: "smart".into(),
        served_model: Some("openai/gpt-4o".into()),
        user_path: Some("/team".into()),
        status: 200,
        attempts: 1,
        duration_ms: 12,
        ttft_ms: Some(5),
        usage: Usage {
            prompt_tokens: Some(10 + u64::from(i)),
            completion_tokens: Some(3),
        },
        cost_usd: Some(0.00042),
    }
}

/// Waits (bounded) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_receiver_gets_one_record_per_request_with_usage_and_cost() {
    let receiver = Upstream::start(&[], |_| Reply::Json(200, json!({"ok": true})));
    let pipelines = webhook(&format!("http://127.0.0.1:{}/hooks/gateway", receiver.port));
    let (sent_before, _, _) = COUNTERS.webhook();
    for i in 0..3 {
        pipelines.run_post(&record(i));
    }
    eventually("three records", || receiver.requests().len() >= 3);
    eventually("the sent counter", || {
        COUNTERS.webhook().0 >= sent_before + 3
    });
    let seen = receiver.requests();
    assert_eq!(seen.len(), 3, "one POST per record, no retries");
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.method, "POST");
        assert_eq!(s.path, "/hooks/gateway");
        assert_eq!(s.header("authorization"), Some("Bearer hook-token"));
        assert_eq!(s.header("content-type"), Some("application/json"));
        let body = s.json();
        assert_eq!(body["request_id"], format!("req-{i}"));
        assert_eq!(body["virtual_model"], "smart");
        assert_eq!(body["served_model"], "openai/gpt-4o");
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 10 + i, "completion_tokens": 3})
        );
        assert_eq!(body["cost_usd"], 0.00042);
        assert_eq!(body["ttft_ms"], 5);
    }
}

#[test]
fn a_dead_receiver_only_counts_failures() {
    // Nothing listens on this port: every POST is refused.
    let pipelines = webhook(&format!("http://127.0.0.1:{}/hook", free_port()));
    let (_, failed_before, dropped_before) = COUNTERS.webhook();
    for i in 0..5 {
        // Returns at once; the request it stands for is not affected.
        pipelines.run_post(&record(i));
    }
    eventually("five failures or drops", || {
        let (_, failed, dropped) = COUNTERS.webhook();
        failed + dropped >= failed_before + dropped_before + 5
    });
}

/// The README's pipeline example is a valid configuration.
#[test]
fn the_readme_example_builds() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let block = readme
        .split("### Middleware pipelines")
        .nth(1)
        .and_then(|s| s.split("```yaml").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("a yaml block in the middleware section");
    let doc: serde_yaml::Value = serde_yaml::from_str(block).expect("the example is YAML");
    let configs: BTreeMap<String, modelgate::middleware::MiddlewareConfigEntry> =
        serde_yaml::from_value(doc["middleware_configs"].clone()).expect("middleware_configs");
    assert!(modelgate::middleware::check_config_entries(&configs).is_empty());
    let vm = &doc["virtual_models"][0];
    let list = |field: &str| -> Vec<MiddlewareCall> {
        serde_yaml::from_value(vm[field].clone()).unwrap_or_else(|e| panic!("{field}: {e}"))
    };
    let (request, response, post) = (
        list("request_middleware"),
        list("response_middleware"),
        list("post_response_middleware"),
    );
    let pipelines = Pipelines::build(&request, &response, &post, &configs)
        .unwrap_or_else(|e| panic!("{}", e[0]));
    let names: Vec<Vec<&str>> = pipelines.describe().into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        names,
        [
            vec!["set-params", "system-prompt", "guard", "router"],
            vec!["redact", "headers"],
            vec!["webhook", "log"],
        ]
    );
}
