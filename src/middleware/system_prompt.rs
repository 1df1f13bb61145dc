//! `system-prompt`: a system text put before, after or instead of the client's, or only where
//! the client gave none (`inject`, GoModel's guardrail mode).
//!
//! OpenAI chat: a `system` message (prepend: first; append: after the client's leading
//! system/developer messages; replace: every system/developer message removed, ours first).
//! Anthropic messages: the `system` field, kept in the client's form (a string gains ours
//! joined by a blank line; a block list gains a text block, so the client's `cache_control`
//! marks stay where they were). Responses: the `instructions` string, the same way. Other
//! operations have no system text and are left as they are.

use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{Body, SlotRef};
use super::build::{parse_config, FieldProblem};
use crate::routing::model::Operation;

/// Between our text and the client's when both are one string.
const JOIN: &str = "\n\n";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Position {
    #[default]
    Prepend,
    Append,
    Replace,
    /// Only when the request has no system text of its own.
    Inject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    text: String,
    #[serde(default)]
    position: Position,
}

#[derive(Debug)]
pub(super) struct SystemPrompt {
    text: String,
    position: Position,
}

/// Whether a message is the client's system text (its `role` read without parsing the rest).
fn is_system(message: SlotRef<'_>) -> bool {
    matches!(
        message.field("role").and_then(SlotRef::as_str).as_deref(),
        Some("system" | "developer")
    )
}

impl SystemPrompt {
    pub fn compile(config: &Value) -> Result<SystemPrompt, Vec<FieldProblem>> {
        let c: Config = parse_config(config)?;
        if c.text.trim().is_empty() {
            return Err(vec![FieldProblem::invalid("text", "the text is empty")]);
        }
        Ok(SystemPrompt {
            text: c.text,
            position: c.position,
        })
    }

    pub fn apply(&self, body: &mut Body, operation: Operation) {
        match operation {
            Operation::Chat => self.apply_chat(body),
            Operation::Messages | Operation::CountTokens => self.apply_field(body, "system"),
            Operation::Responses => self.apply_field(body, "instructions"),
            Operation::Completion
            | Operation::Embedding
            | Operation::Transcription
            | Operation::Translation
            | Operation::Speech
            | Operation::Rerank
            | Operation::Moderation
            | Operation::ImageGeneration => {}
        }
    }

    fn apply_chat(&self, body: &mut Body) {
        // The conversation is opened into its messages, none of them parsed.
        let Some(mut messages) = body.items_mut("messages") else {
            return;
        };
        let ours = json!({"role": "system", "content": self.text});
        match self.position {
            Position::Prepend => messages.insert(0, ours),
            Position::Inject => {
                if !messages.any(is_system) {
                    messages.insert(0, ours);
                }
            }
            Position::Append => {
                let at = messages
                    .position(|m| !is_system(m))
                    .unwrap_or(messages.len());
                messages.insert(at, ours);
            }
            Position::Replace => {
                messages.retain(|m| !is_system(m));
                messages.insert(0, ours);
            }
        }
    }

    /// A top-level system field: absent, a string or a list of text blocks.
    fn apply_field(&self, body: &mut Body, field: &str) {
        let current = body.value_mut(field);
        let replaced = match (self.position, current) {
            // The client's own system text, in whatever form: left as it is.
            (Position::Inject, Some(v)) if !v.is_null() && v != &Value::String(String::new()) => {
                return
            }
            (Position::Inject, _) => Value::String(self.text.clone()),
            (Position::Replace, _) | (_, None) | (_, Some(Value::Null)) => {
                Value::String(self.text.clone())
            }
            (Position::Prepend, Some(Value::String(s))) if !s.is_empty() => {
                Value::String(format!("{}{JOIN}{s}", self.text))
            }
            (Position::Append, Some(Value::String(s))) if !s.is_empty() => {
                Value::String(format!("{s}{JOIN}{}", self.text))
            }
            (Position::Prepend, Some(Value::Array(blocks))) => {
                blocks.insert(0, json!({"type": "text", "text": self.text}));
                return;
            }
            (Position::Append, Some(Value::Array(blocks))) => {
                blocks.push(json!({"type": "text", "text": self.text}));
                return;
            }
            // An empty string, or a shape the upstream would refuse anyway: ours alone.
            (Position::Prepend | Position::Append, Some(_)) => Value::String(self.text.clone()),
        };
        body.insert(field, replaced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: Value, op: Operation, body: Value) -> Value {
        let mut body = Body::parse(serde_json::to_vec(&body).unwrap_or_default()).expect("object");
        SystemPrompt::compile(&config)
            .expect("valid config")
            .apply(&mut body, op);
        serde_json::from_slice(&body.to_vec()).expect("json")
    }

    fn chat() -> Value {
        json!({"model": "m", "messages": [
            {"role": "system", "content": "client"},
            {"role": "user", "content": "hi"}
        ]})
    }

    #[test]
    fn openai_chat_prepend_append_replace() {
        let roles_and_text = |b: &Value| -> Vec<(String, String)> {
            b["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap_or("").into(),
                        m["content"].as_str().unwrap_or("").into(),
                    )
                })
                .collect()
        };
        let pre = run(json!({"text": "ours"}), Operation::Chat, chat());
        assert_eq!(roles_and_text(&pre)[0], ("system".into(), "ours".into()));
        assert_eq!(roles_and_text(&pre)[1].1, "client");
        let app = run(
            json!({"text": "ours", "position": "append"}),
            Operation::Chat,
            chat(),
        );
        assert_eq!(roles_and_text(&app)[1], ("system".into(), "ours".into()));
        assert_eq!(roles_and_text(&app)[2].1, "hi");
        let rep = run(
            json!({"text": "ours", "position": "replace"}),
            Operation::Chat,
            chat(),
        );
        assert_eq!(
            roles_and_text(&rep),
            [
                ("system".into(), "ours".into()),
                ("user".into(), "hi".into())
            ]
        );
    }

    #[test]
    fn anthropic_system_string_blocks_and_absent() {
        let body = json!({"model": "m", "system": "client", "messages": []});
        let out = run(json!({"text": "ours"}), Operation::Messages, body);
        assert_eq!(out["system"], "ours\n\nclient");
        let body = json!({"system": [{"type": "text", "text": "client", "cache_control": {"type": "ephemeral"}}]});
        let out = run(
            json!({"text": "ours", "position": "append"}),
            Operation::Messages,
            body,
        );
        assert_eq!(out["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(out["system"][1], json!({"type": "text", "text": "ours"}));
        let out = run(
            json!({"text": "ours"}),
            Operation::Messages,
            json!({"messages": []}),
        );
        assert_eq!(out["system"], "ours");
        let out = run(
            json!({"text": "ours", "position": "replace"}),
            Operation::Messages,
            json!({"system": [{"type": "text", "text": "client"}]}),
        );
        assert_eq!(out["system"], "ours");
    }

    #[test]
    fn responses_instructions_and_untouched_operations() {
        let out = run(
            json!({"text": "ours", "position": "append"}),
            Operation::Responses,
            json!({"instructions": "client"}),
        );
        assert_eq!(out["instructions"], "client\n\nours");
        let body = json!({"prompt": "p"});
        assert_eq!(
            run(json!({"text": "ours"}), Operation::Completion, body.clone()),
            body
        );
    }

    #[test]
    fn an_unknown_position_lists_the_known_ones_and_empty_text_is_refused() {
        let problems =
            SystemPrompt::compile(&json!({"text": "t", "position": "middle"})).unwrap_err();
        assert_eq!(problems[0].field, "position");
        let message = problems[0].problem.to_string();
        assert!(
            message.contains("prepend") && message.contains("replace"),
            "{message}"
        );
        let problems = SystemPrompt::compile(&json!({"text": " "})).unwrap_err();
        assert_eq!(problems[0].field, "text");
    }
}
