//! The built-in `mock` provider: answers chat, completions, embeddings and responses locally,
//! streaming too (the other operations: `mock_ops`), so the example config serves requests with no keys and no network.
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
        Operation::CountTokens => json!({"input_tokens": pt}),
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
        // Answered by `mock_ops` before this is reached.
        Operation::Transcription
        | Operation::Translation
        | Operation::Speech
        | Operation::Rerank
        | Operation::Moderation
        | Operation::ImageGeneration => Value::Null,
        Operation::Chat | Operation::Messages => json!({
            "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        }),
    }
}

/// A streamed answer: its SSE bytes and the usage it reports (prompt, completion tokens).
pub struct Streamed {
    pub body: Vec<u8>,
    pub usage: (u64, u64),
}

/// The streamed answer for `op`, one delta per word, in the shape the real API streams: chat
/// completion chunks, text completion chunks (both ending with a usage chunk when
/// `include_usage`, then `[DONE]`), or the Responses API's typed events. `None` for operations that do not
/// stream (embeddings).
pub fn stream(
    op: Operation,
    model: &str,
    req: &Value,
    id: &str,
    created: u64,
    include_usage: bool,
) -> Option<Streamed> {
    let text = reply_text(req);
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let usage = (prompt_tokens(req), words.len() as u64);
    let mut out = Sse::default();
    match op {
        Operation::Embedding
        | Operation::CountTokens
        | Operation::Transcription
        | Operation::Translation
        | Operation::Speech
        | Operation::Rerank
        | Operation::Moderation
        | Operation::ImageGeneration => return None,
        Operation::Chat | Operation::Messages => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk",
                       "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            out.data(&chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            for w in &words {
                out.data(&chunk(json!({"content": w}), Value::Null));
            }
            out.data(&chunk(json!({}), json!("stop")));
            if include_usage {
                out.data(&usage_chunk(
                    format!("chatcmpl-{id}"),
                    "chat.completion.chunk",
                    created,
                    model,
                    usage,
                ));
            }
            out.done();
        }
        Operation::Completion => {
            let chunk = |text: &str, finish: Value| {
                json!({"id": format!("cmpl-{id}"), "object": "text_completion", "created": created,
                       "model": model,
                       "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}]})
            };
            for w in &words {
                out.data(&chunk(w, Value::Null));
            }
            out.data(&chunk("", json!("stop")));
            if include_usage {
                out.data(&usage_chunk(
                    format!("cmpl-{id}"),
                    "text_completion",
                    created,
                    model,
                    usage,
                ));
            }
            out.done();
        }
        Operation::Responses => {
            responses_events(&mut out, model, id, created, &text, &words, usage)
        }
    }
    Some(Streamed { body: out.0, usage })
}

/// The Responses API's event sequence for one text message.
fn responses_events(
    out: &mut Sse,
    model: &str,
    id: &str,
    created: u64,
    text: &str,
    words: &[&str],
    usage: (u64, u64),
) {
    let item_id = format!("msg_{id}");
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": format!("resp_{id}"), "object": "response", "created_at": created,
               "model": model, "status": status, "output": output, "usage": usage})
    };
    let part = |t: &str| json!({"type": "output_text", "text": t, "annotations": []});
    let item = |status: &str, content: Value| {
        json!({"type": "message", "id": item_id, "role": "assistant", "status": status,
               "content": content})
    };
    let mut seq = 0u64;
    let mut event = |out: &mut Sse, kind: &str, mut body: Value| {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(seq);
        seq += 1;
        out.event(kind, &body);
    };
    let started = response("in_progress", json!([]), Value::Null);
    event(out, "response.created", json!({"response": started}));
    event(out, "response.in_progress", json!({"response": started}));
    let at = json!({"item_id": item_id, "output_index": 0, "content_index": 0});
    event(
        out,
        "response.output_item.added",
        json!({"output_index": 0, "item": item("in_progress", json!([]))}),
    );
    let mut added = at.clone();
    added["part"] = part("");
    event(out, "response.content_part.added", added);
    for w in words {
        let mut delta = at.clone();
        delta["delta"] = json!(w);
        event(out, "response.output_text.delta", delta);
    }
    let mut text_done = at.clone();
    text_done["text"] = json!(text);
    event(out, "response.output_text.done", text_done);
    let mut part_done = at;
    part_done["part"] = part(text);
    event(out, "response.content_part.done", part_done);
    let done_item = item("completed", json!([part(text)]));
    event(
        out,
        "response.output_item.done",
        json!({"output_index": 0, "item": done_item}),
    );
    let (i, o) = usage;
    let finished = response(
        "completed",
        json!([done_item]),
        json!({"input_tokens": i, "output_tokens": o, "total_tokens": i + o}),
    );
    event(out, "response.completed", json!({"response": finished}));
}

/// The final chunk of an OpenAI stream asked for `stream_options.include_usage`.
fn usage_chunk(
    id: String,
    object: &str,
    created: u64,
    model: &str,
    (prompt, completion): (u64, u64),
) -> Value {
    json!({"id": id, "object": object, "created": created, "model": model, "choices": [],
           "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                     "total_tokens": prompt + completion}})
}

/// SSE bytes being written.
#[derive(Default)]
struct Sse(Vec<u8>);

impl Sse {
    fn data(&mut self, v: &Value) {
        self.0.extend_from_slice(b"data: ");
        self.0.extend_from_slice(v.to_string().as_bytes());
        self.0.extend_from_slice(b"\n\n");
    }

    fn event(&mut self, kind: &str, v: &Value) {
        self.0.extend_from_slice(b"event: ");
        self.0.extend_from_slice(kind.as_bytes());
        self.0.push(b'\n');
        self.data(v);
    }

    fn done(&mut self) {
        self.0.extend_from_slice(b"data: [DONE]\n\n");
    }
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

    fn data_lines(body: &[u8]) -> Vec<Value> {
        String::from_utf8(body.to_vec())
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn chat_stream_ends_with_done_and_reports_usage_only_when_asked() {
        let req = json!({"messages": [{"role": "user", "content": "a b"}]});
        let s = stream(Operation::Chat, "m", &req, "1", 0, false).unwrap();
        assert!(s.body.ends_with(b"data: [DONE]\n\n"));
        let chunks = data_lines(&s.body);
        assert!(chunks.len() >= 5);
        assert!(chunks
            .iter()
            .all(|c| c["choices"].as_array().unwrap().len() == 1));
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, reply_text(&req));
        assert_eq!(s.usage.1, text.split_whitespace().count() as u64);
        let with = stream(Operation::Chat, "m", &req, "1", 0, true).unwrap();
        let last = data_lines(&with.body).pop().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], json!(s.usage.1));
    }

    #[test]
    fn completion_stream_is_text_completion_chunks() {
        let req = json!({"prompt": "say x"});
        let s = stream(Operation::Completion, "m", &req, "1", 0, false).unwrap();
        assert!(s.body.ends_with(b"data: [DONE]\n\n"));
        let chunks = data_lines(&s.body);
        assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(text, reply_text(&req));
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "stop"
        );
    }

    #[test]
    fn responses_stream_is_typed_events_in_order() {
        let req = json!({"input": "hi there"});
        let s = stream(Operation::Responses, "m", &req, "1", 0, false).unwrap();
        let body = String::from_utf8(s.body.clone()).unwrap();
        assert!(!body.contains("[DONE]"));
        let events = data_lines(&s.body);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds[..4],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added"
            ]
        );
        assert_eq!(
            kinds[kinds.len() - 4..],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        // Every data line is announced by an `event:` line of the same type.
        let announced: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(announced, kinds);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], json!(i));
        }
        let deltas: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        let done = events.last().unwrap();
        assert_eq!(deltas, reply_text(&req));
        assert_eq!(
            done["response"]["output"][0]["content"][0]["text"],
            json!(deltas)
        );
        assert_eq!(done["response"]["status"], "completed");
        assert_eq!(done["response"]["usage"]["output_tokens"], json!(s.usage.1));
    }

    #[test]
    fn embeddings_do_not_stream() {
        assert!(stream(
            Operation::Embedding,
            "m",
            &json!({"input": "x"}),
            "1",
            0,
            true
        )
        .is_none());
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
