//! Wire formats through the gateway: OpenAI clients reaching Anthropic upstreams and Anthropic
//! clients reaching OpenAI upstreams, whole and streamed. Upstream fixtures follow the public
//! Anthropic Messages API reference ("Messages" and "Streaming Messages") and the OpenAI Chat
//! Completions reference.

mod common;

use common::*;
use serde_json::json;

fn anthropic_message(model: &str) -> serde_json::Value {
    json!({"id": "msg_01", "type": "message", "role": "assistant", "model": model,
           "content": [{"type": "text", "text": "Hi from Claude"}],
           "stop_reason": "end_turn", "stop_sequence": null,
           "usage": {"input_tokens": 12, "output_tokens": 4}})
}

fn anthropic_stream() -> Vec<Vec<u8>> {
    [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,",
        "\"delta\":{\"type\":\"text_delta\",\"text\":\" world\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn config(oa: &Upstream, an: &Upstream) -> String {
    format!(
        "providers:\n{}  claude:\n    type: anthropic\n    base_url: {}\n    api_key: sk-ant-test\n    models: [claude-x]\nvirtual_models:\n  - source: smart\n    target: claude/claude-x\n  - source: gpt\n    target: oa/gpt-x\n",
        provider_block("oa", oa, &["gpt-x", "emb"]),
        an.base_url()
    )
}

fn sse_data(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn openai_client_reaches_an_anthropic_upstream() {
    let oa = Upstream::echo(&[]);
    let an = Upstream::start(&["claude-x"], |s| {
        Reply::Json(
            200,
            anthropic_message(s.json()["model"].as_str().unwrap_or("")),
        )
    });
    let g = Gateway::start(&config(&oa, &an), &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "smart", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hi from Claude");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    let seen = &an.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-test"));
    assert!(seen.header("anthropic-version").is_some());
    assert!(seen.header("authorization").is_none());
    assert_eq!(seen.json()["system"], "be brief");
    assert_eq!(seen.json()["model"], "claude-x");
    assert_eq!(seen.json()["max_tokens"], 4096);
}

#[test]
fn openai_client_streams_from_an_anthropic_upstream() {
    let oa = Upstream::echo(&[]);
    let an = Upstream::start(&["claude-x"], |_| Reply::Stream(anthropic_stream(), None));
    let g = Gateway::start(&config(&oa, &an), &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "smart", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.trim_end().ends_with("data: [DONE]"), "{}", r.body);
    let chunks = sse_data(&r.body);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{chunks:?}"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
}

#[test]
fn anthropic_client_reaches_an_openai_upstream() {
    let oa = Upstream::echo(&["gpt-x"]);
    let an = Upstream::echo(&[]);
    let g = Gateway::start(&config(&oa, &an), &[("MODELGATE_MASTER_KEY", "gw-key")]);
    let r = g.post(
        "/v1/messages",
        &json!({"model": "gpt", "max_tokens": 100, "system": "terse", "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-api-key", "gw-key"), ("anthropic-version", "2023-06-01")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "ok");
    assert_eq!(v["stop_reason"], "end_turn");
    let seen = &oa.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-test-oa"));
    assert_eq!(seen.json()["messages"][0]["role"], "system");
}

#[test]
fn anthropic_client_streams_from_an_openai_upstream() {
    let oa = Upstream::start(&["gpt-x"], |_| {
        Reply::Stream(
            vec![
                b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n".to_vec(),
                b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hey\"}}]}\n\n".to_vec(),
                b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".to_vec(),
                b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec(),
            ],
            None,
        )
    });
    let an = Upstream::echo(&[]);
    let g = Gateway::start(&config(&oa, &an), &[]);
    let r = g.post("/v1/messages", &json!({"model": "gpt", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]}), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let events: Vec<&str> = r
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    assert!(events.contains(&"content_block_delta"));
    assert!(r.body.contains("\"Hey\""));
    assert_eq!(
        oa.requests()[0].json()["stream_options"]["include_usage"],
        true
    );
}

#[test]
fn anthropic_to_anthropic_passes_bytes_through_except_the_model() {
    let oa = Upstream::echo(&[]);
    let an = Upstream::start(&["claude-x"], |s| {
        Reply::Json(
            200,
            anthropic_message(s.json()["model"].as_str().unwrap_or("")),
        )
    });
    let g = Gateway::start(&config(&oa, &an), &[]);
    let body = br#"{"model":"smart","max_tokens":7,  "messages":[{"role":"user","content":"hi"}]}"#;
    let r = g.post_raw("/v1/messages", body, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        an.requests()[0].body,
        br#"{"model":"claude-x","max_tokens":7,  "messages":[{"role":"user","content":"hi"}]}"#
            .to_vec()
    );
    assert_eq!(r.json()["content"][0]["text"], "Hi from Claude");
}

#[test]
fn upstream_errors_arrive_in_the_callers_envelope() {
    let oa = Upstream::start(&["gpt-x"], |_| {
        Reply::Json(
            400,
            json!({"error": {"message": "bad things", "type": "invalid_request_error", "param": null, "code": null}}),
        )
    });
    let an = Upstream::start(&["claude-x"], |_| {
        Reply::Json(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "claude says no"}}),
        )
    });
    let g = Gateway::start(&config(&oa, &an), &[]);
    let r = g.chat("smart");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "claude says no");
    let r = g.post(
        "/v1/messages",
        &json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        &[],
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["message"], "bad things");
}

#[test]
fn gateway_errors_on_messages_use_the_anthropic_envelope() {
    let oa = Upstream::echo(&[]);
    let an = Upstream::echo(&[]);
    let g = Gateway::start(&config(&oa, &an), &[("MODELGATE_MASTER_KEY", "k")]);
    let r = g.post(
        "/v1/messages",
        &json!({"model": "nope"}),
        &[("x-api-key", "wrong")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = g.post(
        "/v1/messages",
        &json!({"model": "nope", "max_tokens": 1, "messages": []}),
        &[("x-api-key", "k")],
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
}

#[test]
fn backend_format_overrides_the_provider_type() {
    let oa = Upstream::start(&["claude-like"], |s| {
        Reply::Json(
            200,
            anthropic_message(s.json()["model"].as_str().unwrap_or("")),
        )
    });
    let cfg = format!(
        "providers:\n{}virtual_models:\n  - source: v\n    targets: [{{model: oa/claude-like, backend_format: ANTHROPIC_MESSAGES}}]\n",
        provider_block("oa", &oa, &["claude-like"])
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.chat("v");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(oa.requests()[0].path, "/v1/messages");
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hi from Claude"
    );
}

#[test]
fn operations_anthropic_cannot_serve_are_refused() {
    let oa = Upstream::echo(&[]);
    let an = Upstream::echo(&["claude-x"]);
    let g = Gateway::start(&config(&oa, &an), &[]);
    let r = g.post(
        "/v1/embeddings",
        &json!({"model": "smart", "input": "x"}),
        &[],
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "unsupported_operation"),
        "{}",
        r.body
    );
    assert!(an.requests().is_empty());
}

/// The built-in mock provider alone, behind the virtual model `m`.
const MOCK_ONLY: &str =
    "providers:\n  demo:\n    type: mock\nvirtual_models:\n  - source: m\n    target: demo/x\n";

#[test]
fn mock_provider_speaks_the_anthropic_dialect_too() {
    let g = Gateway::start(MOCK_ONLY, &[]);
    let r = g.post(
        "/v1/messages",
        &json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "yo"}]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["type"], "message");
    assert!(r.json()["content"][0]["text"]
        .as_str()
        .unwrap()
        .ends_with("yo"));
}

#[test]
fn mock_provider_streams_completions_and_responses_in_their_own_shapes() {
    let g = Gateway::start(MOCK_ONLY, &[]);
    let r = g.post(
        "/v1/completions",
        &json!({"model": "m", "prompt": "yo", "stream": true}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.body.ends_with("data: [DONE]\n\n"));
    let chunks = sse_data(&r.body);
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert!(text.ends_with("yo"), "{text}");

    let r = g.post(
        "/v1/responses",
        &json!({"model": "m", "input": "yo", "stream": true}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = sse_data(&r.body);
    assert_eq!(events[0]["type"], "response.created");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "response.completed");
    let text = done["response"]["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(text.ends_with("yo"), "{text}");
}

#[test]
fn mock_chat_stream_has_a_usage_chunk_only_when_asked() {
    let g = Gateway::start(MOCK_ONLY, &[]);
    let ask = |usage: bool| {
        let mut body =
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "a"}]});
        if usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let r = g.post("/v1/chat/completions", &body, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        sse_data(&r.body)
    };
    assert!(ask(false).iter().all(|c| c["choices"][0].is_object()));
    let with = ask(true);
    let last = with.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

/// An Anthropic upstream that counts 42 tokens at `/messages/count_tokens` and answers
/// messages otherwise.
fn counting_anthropic() -> Upstream {
    Upstream::start(&["claude-x"], |s| {
        if s.path.ends_with("/messages/count_tokens") {
            Reply::Json(200, json!({"input_tokens": 42}))
        } else {
            Reply::Json(
                200,
                anthropic_message(s.json()["model"].as_str().unwrap_or("")),
            )
        }
    })
}

fn count_body(model: &str) -> serde_json::Value {
    json!({"model": model, "system": "be brief",
           "messages": [{"role": "user", "content": "how many tokens is this?"}]})
}

#[test]
fn count_tokens_reaches_the_anthropic_target_as_sent() {
    let oa = Upstream::echo(&[]);
    let an = counting_anthropic();
    let cfg = format!(
        "providers:\n{}  claude:\n    type: anthropic\n    base_url: {}\n    api_key: sk-ant-test\n    models: [claude-x]\nvirtual_models:\n  - source: smart\n    targets:\n      - {{model: claude/claude-x, override_params: {{temperature: 0.1}}}}\n  - source: gpt\n    target: oa/gpt-x\n  - source: both\n    targets: [oa/gpt-x, claude/claude-x]\n",
        provider_block("oa", &oa, &["gpt-x"]),
        an.base_url()
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.post("/v1/messages/count_tokens", &count_body("smart"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"input_tokens": 42}));
    assert_eq!(r.header("x-modelgate-model"), Some("claude/claude-x"));
    let seen = an.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/messages/count_tokens");
    assert_eq!(seen[0].header("x-api-key"), Some("sk-ant-test"));
    // The body as the client sent it, but for the model: no max_tokens, no sampling overrides.
    let body = seen[0].json();
    assert_eq!(body["model"], "claude-x");
    assert_eq!(body["system"], "be brief");
    assert!(body.get("max_tokens").is_none(), "{body}");
    assert!(body.get("temperature").is_none(), "{body}");

    // Over an OpenAI and an Anthropic target, every count goes to the Anthropic one.
    for _ in 0..3 {
        let r = g.post("/v1/messages/count_tokens", &count_body("both"), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-modelgate-model"), Some("claude/claude-x"));
    }
    assert!(oa.requests().is_empty());
    // ... and leaves the rotation alone: the next messages go oa first.
    let r = g.post(
        "/v1/messages",
        &json!({"model": "both", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(
        r.header("x-modelgate-model"),
        Some("oa/gpt-x"),
        "{}",
        r.body
    );

    // An OpenAI-only model cannot count: an Anthropic-shaped error, so clients estimate instead.
    let r = g.post("/v1/messages/count_tokens", &count_body("gpt"), &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["type"], "error");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("count_tokens"));
    assert_eq!(oa.requests().len(), 1);
}

#[test]
fn count_tokens_follows_model_types_and_the_mock_counts_locally() {
    let an = counting_anthropic();
    let cfg = format!(
        "providers:\n  claude:\n    type: anthropic\n    base_url: {}\n    api_key: sk-ant-test\n    models: [claude-x]\n  demo:\n    type: mock\n    models: [echo]\nvirtual_models:\n  - source: msgs\n    target: claude/claude-x\n    model_types: [messages]\n  - source: chat-only\n    target: claude/claude-x\n    model_types: [chat]\n  - source: local\n    target: demo/echo\n",
        an.base_url()
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.post("/v1/messages/count_tokens", &count_body("msgs"), &[]);
    assert_eq!(
        (r.status, r.json()["input_tokens"].clone()),
        (200, json!(42)),
        "{}",
        r.body
    );
    let r = g.post("/v1/messages/count_tokens", &count_body("chat-only"), &[]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(an.requests().len(), 1);
    let r = g.post("/v1/messages/count_tokens", &count_body("local"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let n = r.json()["input_tokens"].as_u64().unwrap();
    assert!(n > 0, "{}", r.body);
    assert_eq!(r.json().as_object().unwrap().len(), 1, "{}", r.body);
}

#[test]
fn an_answer_that_cannot_be_translated_is_a_502_never_a_200() {
    // The Anthropic upstream says 200 but its body is not JSON: the OpenAI client must not get
    // a 200 whose body is an error.
    let oa = Upstream::start(&[], |_| {
        Reply::Raw(
            200,
            vec![("content-type".into(), "application/json".into())],
            b"{\"id\": \"chatcmpl-1\", \"choices\": [".to_vec(),
        )
    });
    let an = Upstream::start(&["claude-x"], |_| {
        Reply::Raw(
            200,
            vec![("content-type".into(), "application/json".into())],
            b"<html>gateway timeout</html>".to_vec(),
        )
    });
    let g = Gateway::start(&config(&oa, &an), &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.json()["error"]["message"].is_string(), "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("claude/claude-x"));
    // The reverse: an Anthropic client, an OpenAI upstream whose JSON is cut short.
    let r = g.post("/v1/messages", &anthropic_request("gpt"), &[]);
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["type"], "error", "{}", r.body);
}

fn anthropic_request(model: &str) -> serde_json::Value {
    json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
}
