//! Whole (non-streaming) response bodies: Anthropic message <-> OpenAI chat.completion.
//!
//! Each function maps one successful upstream response to the client's dialect, including
//! the stop-reason and usage vocabularies, which the streaming translators reuse from here
//! so both paths agree. Error bodies are not handled here (see `error`), and nothing here
//! reads a clock or makes up ids: `created` comes from the caller and ids are derived from
//! the upstream's own.
//!
//! Shapes follow OpenAI's "The chat completion object" and Anthropic's "Messages" reference.

use serde_json::{json, Map, Value};

use super::error::TranslateError;

type Result<T> = std::result::Result<T, TranslateError>;

/// Anthropic `stop_reason` -> OpenAI `finish_reason`.
///
/// `pause_turn` (a server tool paused a long turn) ends the response normally from the
/// client's point of view, and `model_context_window_exceeded` is a length limit.
/// Unknown future reasons map to `stop` rather than failing a response that otherwise worked.
pub fn finish_reason_from_stop_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI `finish_reason` -> Anthropic `stop_reason`; the legacy `function_call` is a tool
/// call too, and unknown values map to the ordinary `end_turn`.
pub fn stop_reason_from_finish_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Token counts of an Anthropic `usage` object as (prompt, completion) in OpenAI's sense.
///
/// Anthropic's `input_tokens` excludes tokens read from or written to the prompt cache,
/// while OpenAI's `prompt_tokens` counts every prompt token, so the three are added up.
pub(super) fn anthropic_usage_tokens(usage: &Value) -> (u64, u64, u64) {
    let field = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
    let cached = field("cache_read_input_tokens");
    let prompt = field("input_tokens")
        .saturating_add(cached)
        .saturating_add(field("cache_creation_input_tokens"));
    (prompt, field("output_tokens"), cached)
}

/// An OpenAI `usage` object; `prompt_tokens_details.cached_tokens` reports cache reads the
/// way OpenAI does, so a client's cost accounting keeps working.
pub(super) fn openai_usage(prompt: u64, completion: u64, cached: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": { "cached_tokens": cached },
    })
}

/// Translates an Anthropic Messages response into an OpenAI `chat.completion` object.
/// `created` is the Unix time to report, supplied by the caller.
pub fn anthropic_response_to_openai(resp: &Value, created: u64) -> Result<Value> {
    let resp = resp
        .as_object()
        .ok_or_else(|| TranslateError::wrong_type("response", "an object"))?;
    let id = str_field(resp, "id")?;
    let model = resp.get("model").cloned().unwrap_or(Value::Null);
    let blocks = match resp.get("content") {
        Some(Value::Array(blocks)) => blocks.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err(TranslateError::wrong_type("content", "an array")),
    };

    // Text blocks are consecutive pieces of one answer (split around tool calls or
    // citations), so they are concatenated without separators.
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let path = format!("content[{i}]");
        let block = block
            .as_object()
            .ok_or_else(|| TranslateError::wrong_type(&path, "an object"))?;
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(str_field_at(block, "text", &path)?),
            Some("tool_use") => tool_calls.push(super::openai_tool_call(
                str_field_at(block, "id", &path)?,
                str_field_at(block, "name", &path)?,
                block.get("input"),
            )),
            // Thinking, server-tool and other block kinds have no place in a chat
            // completion message; the answer itself is in the text and tool_use blocks.
            _ => {}
        }
    }

    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    let content = if text.is_empty() && !tool_calls.is_empty() {
        // The reference gives `content: null` for a message that only calls tools.
        Value::Null
    } else {
        Value::String(text)
    };
    message.insert("content".into(), content);
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }

    let finish_reason = resp
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_reason_from_stop_reason);
    let (prompt, completion, cached) =
        anthropic_usage_tokens(resp.get("usage").unwrap_or(&Value::Null));

    Ok(json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": openai_usage(prompt, completion, cached),
    }))
}

/// Translates an OpenAI `chat.completion` object into an Anthropic Messages response.
/// Only the first choice is used: the request translation refuses `n` > 1.
pub fn openai_response_to_anthropic(resp: &Value) -> Result<Value> {
    let resp = resp
        .as_object()
        .ok_or_else(|| TranslateError::wrong_type("response", "an object"))?;
    let id = str_field(resp, "id")?;
    let model = resp.get("model").cloned().unwrap_or(Value::Null);
    let choice = match resp.get("choices") {
        Some(Value::Array(choices)) => choices
            .first()
            .ok_or_else(|| TranslateError::invalid("choices", "is empty"))?,
        None | Some(Value::Null) => return Err(TranslateError::missing("choices")),
        Some(_) => return Err(TranslateError::wrong_type("choices", "an array")),
    };
    let message = choice
        .get("message")
        .ok_or_else(|| TranslateError::missing("choices[0].message"))?
        .as_object()
        .ok_or_else(|| TranslateError::wrong_type("choices[0].message", "an object"))?;

    let mut content = Vec::new();
    let text = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        // Not in the reference for responses, but some compatible servers answer with
        // content parts; their text is what matters.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        Some(_) => {
            return Err(TranslateError::wrong_type(
                "choices[0].message.content",
                "a string or null",
            ))
        }
    };
    if !text.is_empty() {
        content.push(json!({ "type": "text", "text": text }));
    }
    // A refusal is what the model said instead of an answer; an Anthropic client can only
    // see it as text.
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
        if !refusal.is_empty() {
            content.push(json!({ "type": "text", "text": refusal }));
        }
    }
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (k, call) in calls.iter().enumerate() {
                content.push(tool_call_to_tool_use(
                    call,
                    &format!("choices[0].message.tool_calls[{k}]"),
                )?);
            }
        }
        Some(_) => {
            return Err(TranslateError::wrong_type(
                "choices[0].message.tool_calls",
                "an array",
            ))
        }
    }

    // Every complete response has a finish reason; if a server leaves it out, the
    // response still ended, which is Anthropic's end_turn.
    let stop_reason = stop_reason_from_finish_reason(
        choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .unwrap_or("stop"),
    );
    let usage = resp.get("usage").unwrap_or(&Value::Null);
    let tokens = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);

    Ok(json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": tokens("prompt_tokens"),
            "output_tokens": tokens("completion_tokens"),
        },
    }))
}

fn tool_call_to_tool_use(call: &Value, path: &str) -> Result<Value> {
    let call = call
        .as_object()
        .ok_or_else(|| TranslateError::wrong_type(path, "an object"))?;
    let function_path = format!("{path}.function");
    let function = call
        .get("function")
        .ok_or_else(|| TranslateError::missing(&function_path))?
        .as_object()
        .ok_or_else(|| TranslateError::wrong_type(&function_path, "an object"))?;
    let input = super::request::tool_arguments(function, &function_path)?;
    Ok(json!({
        "type": "tool_use",
        "id": str_field_at(call, "id", path)?,
        "name": str_field_at(function, "name", &function_path)?,
        "input": input,
    }))
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(TranslateError::missing(key)),
        Some(_) => Err(TranslateError::wrong_type(key, "a string")),
    }
}

fn str_field_at<'a>(obj: &'a Map<String, Value>, key: &str, parent: &str) -> Result<&'a str> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(TranslateError::missing(format!("{parent}.{key}"))),
        Some(_) => Err(TranslateError::wrong_type(
            format!("{parent}.{key}"),
            "a string",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixture follows the example response of Anthropic's "Messages" reference, with prompt
    // caching usage fields from the "Prompt caching" guide.
    #[test]
    fn anthropic_text_response_to_openai() {
        let resp = json!({
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "Hi! My name is Claude."}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 2095,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 1000,
                "output_tokens": 503
            }
        });
        assert_eq!(
            anthropic_response_to_openai(&resp, 1_700_000_000).unwrap(),
            json!({
                "id": "chatcmpl-msg_013Zva2CMHLNnXjNJJKqJ2EF",
                "object": "chat.completion",
                "created": 1_700_000_000u64,
                "model": "claude-sonnet-4-5-20250929",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi! My name is Claude."},
                    "logprobs": null,
                    "finish_reason": "stop"
                }],
                "usage": {
                    "prompt_tokens": 3195,
                    "completion_tokens": 503,
                    "total_tokens": 3698,
                    "prompt_tokens_details": {"cached_tokens": 1000}
                }
            })
        );
    }

    // Fixture follows the tool_use response example of Anthropic's "Tool use" guide.
    #[test]
    fn anthropic_tool_use_response_to_openai() {
        let resp = json!({
            "id": "msg_01Aq9w938a90dw8q",
            "type": "message",
            "role": "assistant",
            "model": "claude-opus-4-1-20250805",
            "content": [
                {"type": "thinking", "thinking": "Need weather.", "signature": "abc"},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                 "input": {"location": "San Francisco, CA", "unit": "celsius"}}
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": 472, "output_tokens": 89}
        });
        let out = anthropic_response_to_openai(&resp, 1).unwrap();
        assert_eq!(
            out["choices"][0]["message"],
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"
                    }
                }]
            })
        );
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["usage"]["prompt_tokens"], 472);
        assert_eq!(out["usage"]["total_tokens"], 561);
        // Text before a tool call is kept next to the call.
        let mut with_text = resp.clone();
        with_text["content"][0] = json!({"type": "text", "text": "Let me check."});
        let out = anthropic_response_to_openai(&with_text, 1).unwrap();
        assert_eq!(out["choices"][0]["message"]["content"], "Let me check.");
    }

    #[test]
    fn stop_reason_mapping_both_ways() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            let resp = json!({"id": "m", "model": "c", "content": [], "stop_reason": stop});
            let out = anthropic_response_to_openai(&resp, 0).unwrap();
            assert_eq!(out["choices"][0]["finish_reason"], finish, "{stop}");
            assert_eq!(out["choices"][0]["message"]["content"], "");
        }
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            let resp = json!({"id": "c", "model": "g", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish}
            ]});
            let out = openai_response_to_anthropic(&resp).unwrap();
            assert_eq!(out["stop_reason"], stop, "{finish}");
        }
        let resp = json!({"id": "m", "content": [], "stop_reason": null});
        let out = anthropic_response_to_openai(&resp, 0).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], Value::Null);
    }

    // Fixture follows the example response of OpenAI's "Create chat completion" reference.
    #[test]
    fn openai_text_response_to_anthropic() {
        let resp = json!({
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1741569952,
            "model": "gpt-4.1-2025-04-14",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! How can I assist you today?",
                    "refusal": null,
                    "annotations": []
                },
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": 19,
                "completion_tokens": 10,
                "total_tokens": 29,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0}
            },
            "service_tier": "default"
        });
        assert_eq!(
            openai_response_to_anthropic(&resp).unwrap(),
            json!({
                "id": "msg_chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
                "type": "message",
                "role": "assistant",
                "model": "gpt-4.1-2025-04-14",
                "content": [{"type": "text", "text": "Hello! How can I assist you today?"}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 19, "output_tokens": 10}
            })
        );
    }

    // Fixture follows the "Functions" example response of OpenAI's "Create chat completion"
    // reference.
    #[test]
    fn openai_tool_call_response_to_anthropic() {
        let resp = json!({
            "id": "chatcmpl-abc123",
            "object": "chat.completion",
            "created": 1699896916,
            "model": "gpt-4o-mini",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": "call_abc123",
                        "type": "function",
                        "function": {
                            "name": "get_current_weather",
                            "arguments": "{\n\"location\": \"Boston, MA\"\n}"
                        }
                    }, {
                        "id": "call_def456",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""}
                    }]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
        });
        assert_eq!(
            openai_response_to_anthropic(&resp).unwrap(),
            json!({
                "id": "msg_chatcmpl-abc123",
                "type": "message",
                "role": "assistant",
                "model": "gpt-4o-mini",
                "content": [
                    {"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                     "input": {"location": "Boston, MA"}},
                    {"type": "tool_use", "id": "call_def456", "name": "get_time", "input": {}}
                ],
                "stop_reason": "tool_use",
                "stop_sequence": null,
                "usage": {"input_tokens": 82, "output_tokens": 17}
            })
        );
    }

    #[test]
    fn openai_refusal_becomes_text() {
        let resp = json!({"id": "c", "model": "g", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."},
            "finish_reason": "content_filter"}]});
        let out = openai_response_to_anthropic(&resp).unwrap();
        assert_eq!(
            out["content"],
            json!([{"type": "text", "text": "I can't help with that."}])
        );
        assert_eq!(out["stop_reason"], "refusal");
    }

    #[test]
    fn malformed_responses_are_errors_naming_the_field() {
        let bad_args = json!({"id": "c", "choices": [{"message": {"role": "assistant", "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
        ]}}]});
        let err = openai_response_to_anthropic(&bad_args).unwrap_err();
        assert_eq!(
            err.field(),
            "choices[0].message.tool_calls[0].function.arguments"
        );
        assert!(err.to_string().contains("is not valid JSON"));
        let err = openai_response_to_anthropic(&json!({"id": "c", "choices": []})).unwrap_err();
        assert_eq!(err.to_string(), "choices is empty");
        let err = openai_response_to_anthropic(&json!({"choices": []})).unwrap_err();
        assert_eq!(err.field(), "id");
        let err = anthropic_response_to_openai(&json!([]), 0).unwrap_err();
        assert_eq!(err.field(), "response");
        let err = anthropic_response_to_openai(
            &json!({"id": "m", "content": [{"type": "tool_use", "id": "t", "input": {}}]}),
            0,
        )
        .unwrap_err();
        assert_eq!(err.field(), "content[0].name");
    }
}
