//! The text a client wrote, found in a parsed request body of either dialect: what `guard`
//! checks and rewrites and what `router` measures.
//!
//! Covered: OpenAI chat `messages[].content`, Anthropic `system` and `messages[].content`
//! (text blocks, and the text inside `tool_result` blocks), completions `prompt`, embeddings
//! `input`, responses `instructions` and `input`. Content is a string, or a list of parts whose
//! text parts (`text`, `input_text`, `output_text`) hold text and whose other parts may hold
//! nested `content`. Never reorders or reshapes the body: only string values are visited.

use serde_json::Value;

use crate::routing::model::Operation;

/// The top-level fields holding client text for an operation.
fn fields(operation: Operation) -> &'static [&'static str] {
    match operation {
        Operation::Chat => &["messages"],
        Operation::Messages | Operation::CountTokens => &["system", "messages"],
        Operation::Completion => &["prompt"],
        Operation::Embedding => &["input"],
        Operation::Responses => &["instructions", "input"],
        Operation::Speech | Operation::Moderation => &["input"],
        Operation::Rerank => &["query", "documents"],
        Operation::ImageGeneration => &["prompt"],
        // Multipart uploads carry no JSON text.
        Operation::Transcription | Operation::Translation => &[],
    }
}

fn is_text_part(kind: Option<&str>) -> bool {
    matches!(kind, Some("text" | "input_text" | "output_text"))
}

fn is_image_part(kind: Option<&str>) -> bool {
    matches!(kind, Some("image" | "image_url" | "input_image"))
}

/// Calls `f` on every piece of client text.
pub(super) fn for_each(body: &Value, operation: Operation, f: &mut dyn FnMut(&str)) {
    for field in fields(operation) {
        if let Some(v) = body.get(*field) {
            if *field == "messages" {
                for message in v.as_array().into_iter().flatten() {
                    if let Some(content) = message.get("content") {
                        content_for_each(content, f);
                    }
                }
            } else {
                content_for_each(v, f);
            }
        }
    }
}

fn content_for_each(content: &Value, f: &mut dyn FnMut(&str)) {
    match content {
        Value::String(s) => f(s),
        Value::Array(parts) => {
            for part in parts {
                match part {
                    Value::String(s) => f(s),
                    Value::Object(o) => {
                        if is_text_part(o.get("type").and_then(Value::as_str)) {
                            if let Some(Value::String(s)) = o.get("text") {
                                f(s);
                            }
                        } else if let Some(inner) = o.get("content") {
                            content_for_each(inner, f);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Calls `f` on every piece of client text, which it may rewrite in place.
pub(super) fn for_each_mut(body: &mut Value, operation: Operation, f: &mut dyn FnMut(&mut String)) {
    for field in fields(operation) {
        if let Some(v) = body.get_mut(*field) {
            if *field == "messages" {
                for message in v.as_array_mut().into_iter().flatten() {
                    if let Some(content) = message.get_mut("content") {
                        content_for_each_mut(content, f);
                    }
                }
            } else {
                content_for_each_mut(v, f);
            }
        }
    }
}

fn content_for_each_mut(content: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match content {
        Value::String(s) => f(s),
        Value::Array(parts) => {
            for part in parts {
                match part {
                    Value::String(s) => f(s),
                    Value::Object(o) => {
                        if is_text_part(o.get("type").and_then(Value::as_str)) {
                            if let Some(Value::String(s)) = o.get_mut("text") {
                                f(s);
                            }
                        } else if let Some(inner) = o.get_mut("content") {
                            content_for_each_mut(inner, f);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Characters of client text.
pub(super) fn input_chars(body: &Value, operation: Operation) -> u64 {
    let mut n = 0u64;
    for_each(body, operation, &mut |s| n += s.chars().count() as u64);
    n
}

/// Whether the request offers tools (`tools`, or OpenAI's older `functions`), non-empty.
pub(super) fn has_tools(body: &Value) -> bool {
    ["tools", "functions"].iter().any(|k| {
        body.get(*k)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    })
}

/// Whether any message or input item carries an image part.
pub(super) fn has_images(body: &Value, operation: Operation) -> bool {
    fields(operation)
        .iter()
        .any(|field| match body.get(*field) {
            Some(Value::Array(items)) if *field == "messages" => items
                .iter()
                .any(|m| m.get("content").is_some_and(content_has_image)),
            Some(v) => content_has_image(v),
            None => false,
        })
}

fn content_has_image(content: &Value) -> bool {
    let Value::Array(parts) = content else {
        return false;
    };
    parts.iter().any(|part| {
        is_image_part(part.get("type").and_then(Value::as_str))
            || part.get("content").is_some_and(content_has_image)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(body: &Value, op: Operation) -> Vec<String> {
        let mut out = Vec::new();
        for_each(body, op, &mut |s| out.push(s.to_string()));
        out
    }

    #[test]
    fn openai_chat_strings_and_text_parts() {
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [
                {"type": "text", "text": "hello"},
                {"type": "image_url", "image_url": {"url": "data:x"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": []}
        ]});
        assert_eq!(texts(&body, Operation::Chat), ["sys", "hello"]);
        assert!(has_images(&body, Operation::Chat));
        assert_eq!(input_chars(&body, Operation::Chat), 8);
    }

    #[test]
    fn anthropic_system_blocks_and_tool_results() {
        let body = json!({"model": "m", "system": [{"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "42"}]},
            {"type": "text", "text": "thanks"}
        ]}]});
        assert_eq!(
            texts(&body, Operation::Messages),
            ["be brief", "42", "thanks"]
        );
        assert!(!has_images(&body, Operation::Messages));
    }

    #[test]
    fn prompt_input_and_instructions() {
        assert_eq!(
            texts(&json!({"prompt": ["a", "b"]}), Operation::Completion),
            ["a", "b"]
        );
        assert_eq!(texts(&json!({"input": "e"}), Operation::Embedding), ["e"]);
        let body = json!({"instructions": "i", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "q"},
                                         {"type": "input_image", "image_url": "u"}]}
        ]});
        assert_eq!(texts(&body, Operation::Responses), ["i", "q"]);
        assert!(has_images(&body, Operation::Responses));
    }

    #[test]
    fn rewriting_reaches_every_piece() {
        let mut body = json!({"system": "s", "messages": [{"role": "user", "content": "u"}]});
        for_each_mut(&mut body, Operation::Messages, &mut |s| s.push('!'));
        assert_eq!(
            body,
            json!({"system": "s!", "messages": [{"role": "user", "content": "u!"}]})
        );
    }

    #[test]
    fn tools_count_only_when_listed() {
        assert!(has_tools(&json!({"tools": [{"type": "function"}]})));
        assert!(!has_tools(&json!({"tools": []})));
        assert!(!has_tools(&json!({})));
    }
}
