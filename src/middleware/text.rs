//! The text a client wrote, found in a parsed request body of either dialect: what `guard`
//! checks and rewrites and what `router` measures.
//!
//! Covered: OpenAI chat `messages[].content`, Anthropic `system` and `messages[].content`
//! (text blocks, and the text inside `tool_result` blocks), completions `prompt`, embeddings
//! `input`, responses `instructions` and `input`. Content is a string, or a list of parts whose
//! text parts (`text`, `input_text`, `output_text`) hold text and whose other parts may hold
//! nested `content`. Never reorders or reshapes the body: only string values are visited.

use serde_json::Value;

use super::body::{Body, SlotRef};
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
pub(crate) fn for_each(body: &Body, operation: Operation, f: &mut dyn FnMut(&str)) {
    for field in fields(operation) {
        if let Some(v) = body.get(field) {
            if *field == "messages" {
                v.for_each_item(&mut |message| {
                    if let Some(content) = message.field("content") {
                        content_for_each(content, f);
                    }
                });
            } else {
                content_for_each(v, f);
            }
        }
    }
}

/// A string content is read where it lies (borrowed when it has no escapes); a list of parts is
/// parsed (parts are few and short next to the strings).
fn content_for_each(content: SlotRef<'_>, f: &mut dyn FnMut(&str)) {
    if let Some(s) = content.as_str() {
        f(&s);
        return;
    }
    value_for_each(&content.value(), f);
}

fn value_for_each(content: &Value, f: &mut dyn FnMut(&str)) {
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
                            value_for_each(inner, f);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

pub(super) fn for_each_mut(body: &mut Body, operation: Operation, f: &mut dyn FnMut(&mut String)) {
    for field in fields(operation) {
        if let Some(v) = body.value_mut(field) {
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
pub(super) fn input_chars(body: &Body, operation: Operation) -> u64 {
    let mut n = 0u64;
    for_each(body, operation, &mut |s| n += s.chars().count() as u64);
    n
}

pub(super) fn has_tools(body: &Body) -> bool {
    ["tools", "functions"]
        .iter()
        .any(|k| body.get(k).is_some_and(SlotRef::is_nonempty_array))
}

pub(super) fn has_images(body: &Body, operation: Operation) -> bool {
    let mut any = false;
    for field in fields(operation) {
        match body.get(field) {
            Some(items) if *field == "messages" => items.for_each_item(&mut |m| {
                any = any || m.field("content").is_some_and(slot_has_image);
            }),
            Some(v) => any = any || slot_has_image(v),
            None => {}
        }
    }
    any
}

/// Only a list of parts can hold an image: a string content is never parsed.
fn slot_has_image(content: SlotRef<'_>) -> bool {
    content.as_str().is_none() && content_has_image(&content.value())
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

    /// A body as the proxy reads it: from the client's bytes.
    fn raw(v: &Value) -> Body {
        Body::parse(serde_json::to_vec(v).unwrap_or_default()).expect("an object")
    }

    fn texts(body: &Value, op: Operation) -> Vec<String> {
        let mut out = Vec::new();
        for_each(&raw(body), op, &mut |s| out.push(s.to_string()));
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
        assert!(has_images(&raw(&body), Operation::Chat));
        assert_eq!(input_chars(&raw(&body), Operation::Chat), 8);
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
        assert!(!has_images(&raw(&body), Operation::Messages));
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
        assert!(has_images(&raw(&body), Operation::Responses));
    }

    #[test]
    fn rewriting_reaches_every_piece() {
        let mut body = raw(&json!({"system": "s", "messages": [{"role": "user", "content": "u"}]}));
        for_each_mut(&mut body, Operation::Messages, &mut |s| s.push('!'));
        assert_eq!(
            body.to_value(),
            json!({"system": "s!", "messages": [{"role": "user", "content": "u!"}]})
        );
    }

    #[test]
    fn tools_count_only_when_listed() {
        assert!(has_tools(&raw(&json!({"tools": [{"type": "function"}]}))));
        assert!(!has_tools(&raw(&json!({"tools": []}))));
        assert!(!has_tools(&raw(&json!({}))));
    }
}
