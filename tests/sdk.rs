//! The official OpenAI and Anthropic Python SDKs (chat, and the audio, moderation and image
//! operations through a failing first target), and NeMo's (`nemo-platform`: its workspace
//! VirtualModel API and OpenAI route), against the real gateway, with mock upstreams of both
//! dialects behind it. `scripts/test.sh` builds the virtual environment and sets
//! MODELGATE_SDK_PYTHON; without it this test says so and stops (MODELGATE_REQUIRE_SDK=1 makes
//! that a failure, as in CI).

mod common;

use common::*;
use serde_json::{json, Value};

fn anthropic_upstream() -> Upstream {
    Upstream::start(&["claude-x"], |s| {
        if s.path.ends_with("/messages/count_tokens") {
            return Reply::Json(200, json!({"input_tokens": 17}));
        }
        let req = s.json();
        let wants_tool = req.get("tools").is_some()
            && req["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|m| m["role"] == "user" && m["content"].is_string());
        let stream = req["stream"] == true;
        let model = req["model"].as_str().unwrap_or("").to_string();
        if wants_tool && !stream {
            return Reply::Json(
                200,
                json!({"id": "msg_t", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
                "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 20, "output_tokens": 9}}),
            );
        }
        if stream {
            let start = format!("event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"{model}\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":10,\"output_tokens\":1}}}}}}\n\n");
            let mut ev = vec![start];
            if wants_tool {
                ev.push("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"get_weather\",\"input\":{}}}\n\n".into());
                ev.push("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n".into());
                ev.push("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n".into());
                ev.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into());
                ev.push("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n".into());
            } else {
                ev.push("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".into());
                for t in ["Hello", " world"] {
                    ev.push(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{t}\"}}}}\n\n"));
                }
                ev.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into());
                ev.push("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\n".into());
            }
            ev.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
            return Reply::Stream(ev.into_iter().map(String::into_bytes).collect(), None);
        }
        Reply::Json(
            200,
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Hi from Claude"}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 4}}),
        )
    })
}

fn openai_upstream() -> Upstream {
    Upstream::start(&["gpt-x"], |s| {
        let req: Value = s.json();
        let model = req["model"].as_str().unwrap_or("").to_string();
        if req["stream"] == true {
            let chunk = |delta: Value, finish: Value| {
                format!(
                    "data: {}\n\n",
                    json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                )
            };
            let mut ev = vec![
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Hello"}), Value::Null),
                chunk(json!({"content": " from GPT"}), Value::Null),
                chunk(json!({}), json!("stop")),
            ];
            if req["stream_options"]["include_usage"] == true {
                ev.push(format!("data: {}\n\n", json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                    "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})));
            }
            ev.push("data: [DONE]\n\n".into());
            return Reply::Stream(ev.into_iter().map(String::into_bytes).collect(), None);
        }
        Reply::Json(
            200,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from GPT"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}),
        )
    })
}

/// The SDK virtual environment's python, or None (said on stderr) when the check cannot run.
fn sdk_python() -> Option<String> {
    let Ok(python) = std::env::var("MODELGATE_SDK_PYTHON") else {
        if std::env::var("MODELGATE_REQUIRE_SDK").as_deref() == Ok("1") {
            panic!("MODELGATE_SDK_PYTHON is not set; run scripts/test.sh, which builds the SDK virtual environment");
        }
        eprintln!("SDK check not run: MODELGATE_SDK_PYTHON is not set (scripts/test.sh sets it)");
        return None;
    };
    Some(python)
}

/// Runs one check script against the gateway; fails with its output and the gateway's log.
fn run_script(python: &str, name: &str, g: &Gateway, key: &str) {
    run_script_with(python, name, g, key, &[]);
}

/// `run_script` with more environment for the script.
fn run_script_with(python: &str, name: &str, g: &Gateway, key: &str, env: &[(&str, &str)]) {
    let script = format!("{}/tests/sdk/{name}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(python)
        .arg(script)
        .env("MODELGATE_URL", format!("http://127.0.0.1:{}", g.port))
        .env("MODELGATE_KEY", key)
        .envs(env.iter().copied())
        .output()
        .expect("run the SDK script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "SDK checks failed:\n{text}\n--- gateway log ---\n{}",
        g.logs()
    );
}

#[test]
fn official_sdks_parse_every_response() {
    let Some(python) = sdk_python() else {
        return;
    };
    let an = anthropic_upstream();
    let oa = openai_upstream();
    let cfg = format!(
        "providers:\n{}  claude:\n    type: anthropic\n    base_url: {}\n    api_key: sk-ant-test\n    models: [claude-x]\n  demo:\n    type: mock\n    models: [echo]\nvirtual_models:\n  - source: claude-smart\n    target: claude/claude-x\n  - source: gpt-smart\n    target: oa/gpt-x\n  - source: local\n    target: demo/echo\n",
        provider_block("oa", &oa, &["gpt-x"]),
        an.base_url()
    );
    let g = Gateway::start(&cfg, &[("MODELGATE_MASTER_KEY", "sdk-key")]);
    run_script(&python, "check_sdks.py", &g, "sdk-key");
}

#[test]
fn official_nemo_sdk_drives_the_workspace_api() {
    let Some(python) = sdk_python() else {
        return;
    };
    let an = anthropic_upstream();
    let oa = openai_upstream();
    let cfg = format!(
        "providers:\n{}  claude:\n    type: anthropic\n    base_url: {}\n    api_key: sk-ant-test\n    models: [claude-x]\n",
        provider_block("oa", &oa, &["gpt-x"]),
        an.base_url()
    );
    let g = Gateway::start(&cfg, &[("MODELGATE_MASTER_KEY", "sdk-key")]);
    run_script(&python, "check_nemo.py", &g, "sdk-key");
}

/// An upstream answering every operation beyond chat the way OpenAI does.
fn operations_upstream() -> Upstream {
    Upstream::start(&["mb"], |s| {
        let path = s.path.as_str();
        if path.ends_with("/audio/transcriptions") || path.ends_with("/audio/translations") {
            let text = if path.ends_with("translations") {
                "translated by b"
            } else {
                "transcribed by b"
            };
            let body = String::from_utf8_lossy(&s.body);
            if body.contains("verbose_json") {
                return Reply::Json(
                    200,
                    json!({"task": "transcribe", "language": "english", "duration": 2.5,
                           "text": text, "segments": []}),
                );
            }
            return Reply::Json(200, json!({"text": text}));
        }
        if path.ends_with("/audio/speech") {
            let audio: Vec<u8> = (0..40).flat_map(|_| 0..=255u8).collect();
            return Reply::Raw(
                200,
                vec![("content-type".into(), "audio/mpeg".into())],
                audio,
            );
        }
        if path.ends_with("/moderations") {
            let flag = |hit: bool| {
                json!({"flagged": hit, "categories": {"violence": hit, "hate": false},
                       "category_scores": {"violence": if hit { 0.9 } else { 0.0 }, "hate": 0.0}})
            };
            return Reply::Json(
                200,
                json!({"id": "modr-1", "model": "mb", "results": [flag(true), flag(false)]}),
            );
        }
        Reply::Json(
            200,
            json!({"created": 1, "data": [{"b64_json": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"}]}),
        )
    })
}

#[test]
fn official_openai_sdk_drives_every_operation_through_a_fallback() {
    let Some(python) = sdk_python() else {
        return;
    };
    let a = Upstream::start(&["ma"], |_| {
        Reply::Json(
            500,
            json!({"error": {"message": "a is down", "type": "server_error"}}),
        )
    });
    let b = operations_upstream();
    let cfg = format!(
        "providers:\n{}{}virtual_models:\n  - source: v\n    strategy: priority\n    targets: [a/ma, b/mb]\n",
        provider_block("a", &a, &["ma"]),
        provider_block("b", &b, &["mb"])
    );
    let g = Gateway::start(&cfg, &[("MODELGATE_MASTER_KEY", "sdk-key")]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("speech.wav");
    let audio: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 256) as u8).collect();
    std::fs::write(&file, &audio).unwrap();
    let path = file.display().to_string();
    run_script_with(
        &python,
        "check_operations.py",
        &g,
        "sdk-key",
        &[("MODELGATE_AUDIO_FILE", path.as_str())],
    );
    // Every call failed over from a to b; b got the upload with the file byte for byte.
    let seen = b.requests();
    let upload = seen
        .iter()
        .find(|s| s.path == "/v1/audio/transcriptions")
        .expect("b got the transcription");
    assert!(
        upload
            .body
            .windows(audio.len())
            .any(|w| w == audio.as_slice()),
        "the file part is not byte-identical"
    );
    assert!(String::from_utf8_lossy(&upload.body).contains("name=\"model\"\r\n\r\nmb\r\n"));
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    for p in [
        "/v1/audio/translations",
        "/v1/audio/speech",
        "/v1/moderations",
        "/v1/images/generations",
    ] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
    // Two tries on a per call until its fifth failure opens its circuit; then a is skipped.
    assert_eq!(a.requests().len(), 5);
    assert_eq!(seen.len(), 6);
}
