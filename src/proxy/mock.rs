//! The built-in `mock` provider: answers chat, completions, embeddings and responses locally,
//! streaming too, so the example config serves requests with no keys and no network.
//!
//! Answers are deterministic (an echo of the last user text) and carry usage like a real upstream.

use serde_json::{json, Value};

use crate::routing::model::Operation;

/// The text the mock answers with.
fn reply_text(req: &Value) -> String {
    let last_user = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|x| x.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content"))
        .map(content_text)
        .or_else(|| req.get("prompt").map(content_text))
        .or_else(|| req.get("input").map(content_text))
        .unwrap_or_default();
    let short: String = last_user.chars().take(200).collect();
    format!("Hello from the modelgate mock provider. You said: {short}")
}

fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or(p.as_str()))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn tokens(s: &str) -> u64 {
    s.split_whitespace().count().max(1) as u64
}

fn prompt_tokens(req: &Value) -> u64 {
    tokens(&req.to_string()) / 2 + 1
}

/// A whole (non-stream) response body.
pub fn respond(op: Operation, model: &str, req: &Value, id: &str, created: u64) -> Value {
    let text = reply_text(req);
    let pt = prompt_tokens(req);
    let ct = tokens(&text);
    match op {
        Operation::Embedding => {
            let inputs: Vec<String> = match req.get("input") {
                Some(Value::Array(a)) => a.iter().map(|x| x.to_string()).collect(),
                Some(v) => vec![v.to_string()],
                None => vec![String::new()],
            };
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": embed(s)}))
                .collect();
            json!({"object": "list", "data": data, "model": model,
                   "usage": {"prompt_tokens": pt, "total_tokens": pt}})
        }
        Operation::Completion => json!({
            "id": format!("cmpl-{id}"), "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        }),
        Operation::Responses => json!({
            "id": format!("resp_{id}"), "object": "response", "created_at": created, "model": model,
            "status": "completed",
            "output": [{"type": "message", "id": format!("msg_{id}"), "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": pt, "output_tokens": ct, "total_tokens": pt + ct}
        }),
        Operation::Chat | Operation::Messages => json!({
            "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        }),
    }
}

/// A chat completion stream as SSE bytes, one chunk per word.
pub fn stream_chat(model: &str, req: &Value, id: &str, created: u64) -> Vec<u8> {
    let text = reply_text(req);
    let pt = prompt_tokens(req);
    let mut out = Vec::new();
    let mut push = |v: Value| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    };
    let chunk = |delta: Value, finish: Value| {
        json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created,
               "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    push(chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    for w in &words {
        push(chunk(json!({"content": w}), Value::Null));
    }
    push(chunk(json!({}), json!("stop")));
    let ct = words.len() as u64;
    push(
        json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}),
    );
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// The usage a mock stream reports: prompt tokens of the request, one token per streamed word.
pub fn usage(req: &Value, stream: &[u8]) -> Option<(u64, u64)> {
    let words = String::from_utf8_lossy(stream)
        .matches("\"content\":")
        .count()
        .saturating_sub(1) as u64;
    Some((prompt_tokens(req), words.max(1)))
}

/// A small deterministic unit vector derived from the input.
fn embed(s: &str) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut v = Vec::with_capacity(8);
    for i in 0..8u64 {
        for b in s.bytes() {
            h = (h ^ b as u64 ^ i).wrapping_mul(0x100000001b3);
        }
        v.push(((h % 2000) as f32 / 1000.0) - 1.0);
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_echoes_last_user_message() {
        let req = json!({"messages": [{"role": "user", "content": "ping"}]});
        let r = respond(Operation::Chat, "mock/demo", &req, "1", 0);
        assert!(r["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .ends_with("ping"));
        assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0);
    }

    #[test]
    fn stream_ends_with_done() {
        let req = json!({"messages": [{"role": "user", "content": "a b"}]});
        let s = String::from_utf8(stream_chat("m", &req, "1", 0)).unwrap();
        assert!(s.ends_with("data: [DONE]\n\n"));
        assert!(s.matches("data: ").count() >= 5);
    }

    #[test]
    fn embeddings_are_unit_vectors() {
        let r = respond(
            Operation::Embedding,
            "m",
            &json!({"input": ["x", "y"]}),
            "1",
            0,
        );
        let e: Vec<f64> = r["data"][1]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let n: f64 = e.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-3);
    }
}
