//! `redact`: pattern replacement over the text of the answer the client receives, whole or
//! streamed, in the client's dialect.
//!
//! Whole answers: OpenAI chat `choices[].message.content`, completions `choices[].text`,
//! Anthropic `content[]` text blocks, responses `output[].content[]` text parts. Streams go
//! through `StreamRedactor`, event by event, using the project's SSE parser: each text channel
//! (an OpenAI choice, an Anthropic content block, a responses content part) holds back at most
//! `window_chars` characters so that a match split across events is still replaced, and the
//! held text is sent when the channel ends (`finish_reason`, `content_block_stop`,
//! `response.output_text.done`) or, at the latest, when the stream ends. Events without text
//! pass with their meaning unchanged (SSE comments and ids are not kept). Never buffers more
//! than the window per channel, never fails a stream: an event it cannot read passes as it is.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::build::{parse_config, FieldProblem};
use super::patterns::{RuleSpec, Rules};
use crate::routing::model::Operation;
use crate::translate::sse::{write_event, SseEvent, SseParser};

const DEFAULT_WINDOW: usize = 64;
/// Bounds the text one stream may hold back per channel.
const MAX_WINDOW: usize = 65_536;

fn default_window() -> usize {
    DEFAULT_WINDOW
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    patterns: Vec<RuleSpec>,
    #[serde(default = "default_window")]
    window_chars: usize,
}

#[derive(Debug)]
pub(super) struct Redact {
    rules: Arc<Rules>,
    window: usize,
}

/// One `redact` step as a stream sees it.
#[derive(Debug, Clone)]
pub(super) struct Stage {
    rules: Arc<Rules>,
    window: usize,
}

impl Redact {
    pub fn compile(config: &Value) -> Result<Redact, Vec<FieldProblem>> {
        let c: Config = parse_config(config)?;
        let mut problems = Vec::new();
        if c.patterns.is_empty() {
            problems.push(FieldProblem::invalid(
                "patterns",
                "give at least one pattern",
            ));
        }
        if c.window_chars == 0 || c.window_chars > MAX_WINDOW {
            problems.push(FieldProblem::invalid(
                "window_chars",
                format!(
                    "{} is out of range; use 1 to {MAX_WINDOW} (default {DEFAULT_WINDOW})",
                    c.window_chars
                ),
            ));
        }
        match Rules::compile(&c.patterns, "patterns") {
            Ok(rules) if problems.is_empty() => Ok(Redact {
                rules: Arc::new(rules),
                window: c.window_chars,
            }),
            Ok(_) => Err(problems),
            Err(mut p) => {
                problems.append(&mut p);
                Err(problems)
            }
        }
    }

    pub fn stage(&self) -> Stage {
        Stage {
            rules: self.rules.clone(),
            window: self.window,
        }
    }

    pub fn redact_body(&self, body: &mut Value, operation: Operation) {
        redact_answer(&self.rules, body, operation);
    }
}

fn redact_string(rules: &Rules, v: &mut Value) {
    if let Value::String(s) = v {
        if let std::borrow::Cow::Owned(new) = rules.replace_all(s) {
            *s = new;
        }
    }
}

/// Redacts the text parts of an Anthropic content list or a responses content list.
fn redact_parts(rules: &Rules, parts: &mut Value) {
    for part in parts.as_array_mut().into_iter().flatten() {
        if matches!(
            part.get("type").and_then(Value::as_str),
            Some("text" | "output_text")
        ) {
            if let Some(text) = part.get_mut("text") {
                redact_string(rules, text);
            }
        }
    }
}

/// Redacts a responses output item (a message's content parts).
fn redact_item(rules: &Rules, item: &mut Value) {
    if let Some(content) = item.get_mut("content") {
        redact_parts(rules, content);
    }
}

fn redact_answer(rules: &Rules, body: &mut Value, operation: Operation) {
    match operation {
        Operation::Chat | Operation::Completion => {
            let field = if operation == Operation::Chat {
                "message"
            } else {
                "text"
            };
            for choice in body
                .get_mut("choices")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let Some(target) = choice.get_mut(field) else {
                    continue;
                };
                if operation == Operation::Chat {
                    if let Some(content) = target.get_mut("content") {
                        if content.is_array() {
                            redact_parts(rules, content);
                        } else {
                            redact_string(rules, content);
                        }
                    }
                } else {
                    redact_string(rules, target);
                }
            }
        }
        Operation::Messages => {
            if let Some(content) = body.get_mut("content") {
                redact_parts(rules, content);
            }
        }
        Operation::Responses => {
            for item in body
                .get_mut("output")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                redact_item(rules, item);
            }
        }
        Operation::Transcription | Operation::Translation => {
            if let Some(text) = body.get_mut("text") {
                redact_string(rules, text);
            }
        }
        Operation::Embedding
        | Operation::CountTokens
        | Operation::Speech
        | Operation::Rerank
        | Operation::Moderation
        | Operation::ImageGeneration => {}
    }
}

/// A text channel of a stream and what each stage holds back of it.
#[derive(Debug)]
struct Channel {
    key: (u64, u64),
    held: Vec<String>,
}

/// Redacts one streamed answer: feed it the upstream-to-client SSE bytes with `push` and call
/// `finish` when the body ends; each returns the bytes to send on.
#[derive(Debug)]
pub struct StreamRedactor {
    parser: SseParser,
    stages: Vec<Stage>,
    operation: Operation,
    channels: Vec<Channel>,
    /// The first OpenAI chunk's `id`, `object`, `created` and `model`, for the chunk that
    /// carries text flushed at the end of the stream.
    template: Option<Value>,
}

impl StreamRedactor {
    pub(super) fn new(stages: Vec<Stage>, operation: Operation) -> Self {
        Self {
            parser: SseParser::new(),
            stages,
            operation,
            channels: Vec::new(),
            template: None,
        }
    }

    /// Consumes stream bytes and returns the bytes of the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let started = std::time::Instant::now();
        let events = self.parser.push(bytes);
        let mut out = Vec::with_capacity(bytes.len() + 16);
        for event in events {
            self.handle(event, &mut out);
        }
        super::COUNTERS.spent(super::Kind::Redact, started.elapsed());
        out
    }

    /// Ends the stream: the last event and any text still held back.
    pub fn finish(&mut self) -> Vec<u8> {
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        for event in self.parser.finish() {
            self.handle(event, &mut out);
        }
        self.flush_all(&mut out);
        super::COUNTERS.spent(super::Kind::Redact, started.elapsed());
        out
    }

    /// Passes text of a channel through every stage; returns what may be sent now.
    fn feed(&mut self, key: (u64, u64), text: &str) -> String {
        let at = match self.channels.iter().position(|c| c.key == key) {
            Some(at) => at,
            None => {
                self.channels.push(Channel {
                    key,
                    held: vec![String::new(); self.stages.len()],
                });
                self.channels.len() - 1
            }
        };
        let channel = &mut self.channels[at];
        let mut input = text.to_string();
        for (stage, held) in self.stages.iter().zip(channel.held.iter_mut()) {
            held.push_str(&input);
            let mut out = String::new();
            let consumed = stage.rules.scan(held, &mut out, Some(stage.window));
            held.drain(..consumed);
            input = out;
        }
        input
    }

    /// Ends a channel: everything it holds, redacted.
    fn flush(&mut self, key: (u64, u64)) -> String {
        let Some(at) = self.channels.iter().position(|c| c.key == key) else {
            return String::new();
        };
        let mut channel = self.channels.swap_remove(at);
        let mut input = String::new();
        for (stage, held) in self.stages.iter().zip(channel.held.iter_mut()) {
            held.push_str(&input);
            let mut out = String::new();
            stage.rules.scan(held, &mut out, None);
            input = out;
        }
        input
    }

    fn flush_all(&mut self, out: &mut Vec<u8>) {
        let mut keys: Vec<(u64, u64)> = self.channels.iter().map(|c| c.key).collect();
        keys.sort_unstable();
        for key in keys {
            let text = self.flush(key);
            if !text.is_empty() {
                self.write_flushed(key, text, out);
            }
        }
    }

    /// An event carrying text flushed outside any upstream event (at the end of the stream).
    fn write_flushed(&self, key: (u64, u64), text: String, out: &mut Vec<u8>) {
        match self.operation {
            Operation::Chat | Operation::Completion => {
                let mut chunk = self.template.clone().unwrap_or_else(|| json!({}));
                let choice = if self.operation == Operation::Chat {
                    json!({"index": key.0, "delta": {"content": text}, "finish_reason": null})
                } else {
                    json!({"index": key.0, "text": text, "finish_reason": null})
                };
                chunk["choices"] = json!([choice]);
                write_event(out, None, &chunk.to_string());
            }
            Operation::Messages | Operation::CountTokens => {
                let event = json!({"type": "content_block_delta", "index": key.0,
                    "delta": {"type": "text_delta", "text": text}});
                write_event(out, Some("content_block_delta"), &event.to_string());
            }
            Operation::Responses => {
                let event = json!({"type": "response.output_text.delta",
                    "output_index": key.0, "content_index": key.1, "delta": text});
                write_event(out, Some("response.output_text.delta"), &event.to_string());
            }
            // No stream redactor is made for these (`Pipelines::stream_redactor`).
            Operation::Embedding
            | Operation::Transcription
            | Operation::Translation
            | Operation::Speech
            | Operation::Rerank
            | Operation::Moderation
            | Operation::ImageGeneration => {}
        }
    }

    fn handle(&mut self, event: SseEvent, out: &mut Vec<u8>) {
        if event.data == "[DONE]" {
            self.flush_all(out);
            write_event(out, event.event.as_deref(), &event.data);
            return;
        }
        let Ok(mut data) = serde_json::from_str::<Value>(&event.data) else {
            write_event(out, event.event.as_deref(), &event.data);
            return;
        };
        let mut before = Vec::new();
        let changed = match self.operation {
            Operation::Chat | Operation::Completion => self.openai_chunk(&mut data),
            Operation::Messages | Operation::CountTokens => {
                self.anthropic_event(&mut data, &mut before)
            }
            Operation::Responses => self.responses_event(&mut data, &mut before),
            Operation::Embedding
            | Operation::Transcription
            | Operation::Translation
            | Operation::Speech
            | Operation::Rerank
            | Operation::Moderation
            | Operation::ImageGeneration => false,
        };
        out.extend_from_slice(&before);
        if changed {
            write_event(out, event.event.as_deref(), &data.to_string());
        } else {
            write_event(out, event.event.as_deref(), &event.data);
        }
    }

    /// OpenAI chat and completion chunks: `choices[].delta.content` / `choices[].text`; a
    /// choice's `finish_reason` ends its channel, and its held text rides in the same chunk.
    fn openai_chunk(&mut self, data: &mut Value) -> bool {
        if let Some(obj) = data.as_object().filter(|_| self.template.is_none()) {
            let mut template = serde_json::Map::new();
            for key in ["id", "object", "created", "model"] {
                if let Some(v) = obj.get(key) {
                    template.insert(key.into(), v.clone());
                }
            }
            self.template = Some(Value::Object(template));
        }
        let chat = self.operation == Operation::Chat;
        let Some(choices) = data.get_mut("choices").and_then(Value::as_array_mut) else {
            return false;
        };
        let mut changed = false;
        for (position, choice) in choices.iter_mut().enumerate() {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let key = (index, 0);
            let text = if chat {
                choice.pointer("/delta/content").and_then(Value::as_str)
            } else {
                choice.get("text").and_then(Value::as_str)
            };
            let mut new = text.map(|text| self.feed(key, text));
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                let flushed = self.flush(key);
                if !flushed.is_empty() {
                    new.get_or_insert_with(String::new).push_str(&flushed);
                }
            }
            let Some(new) = new else {
                continue;
            };
            if text == Some(new.as_str()) {
                continue;
            }
            changed = true;
            if chat {
                if !choice.get("delta").is_some_and(Value::is_object) {
                    choice["delta"] = json!({});
                }
                choice["delta"]["content"] = Value::String(new);
            } else {
                choice["text"] = Value::String(new);
            }
        }
        changed
    }

    /// Anthropic events: text blocks start or continue a channel per block index; the block's
    /// `content_block_stop` is preceded by a delta with what it held.
    fn anthropic_event(&mut self, data: &mut Value, before: &mut Vec<u8>) -> bool {
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match data.get("type").and_then(Value::as_str) {
            Some("content_block_start") => {
                let Some(Value::String(text)) = data.pointer("/content_block/text") else {
                    return false;
                };
                if data.pointer("/content_block/type").and_then(Value::as_str) != Some("text")
                    || text.is_empty()
                {
                    return false;
                }
                let new = self.feed((index, 0), &text.clone());
                data["content_block"]["text"] = Value::String(new);
                true
            }
            Some("content_block_delta") => {
                if data.pointer("/delta/type").and_then(Value::as_str) != Some("text_delta") {
                    return false;
                }
                let Some(text) = data.pointer("/delta/text").and_then(Value::as_str) else {
                    return false;
                };
                let text = text.to_string();
                let new = self.feed((index, 0), &text);
                if new == text {
                    return false;
                }
                data["delta"]["text"] = Value::String(new);
                true
            }
            Some("content_block_stop") => {
                let flushed = self.flush((index, 0));
                if !flushed.is_empty() {
                    self.write_flushed((index, 0), flushed, before);
                }
                false
            }
            Some("message_stop") => {
                self.flush_all(before);
                false
            }
            _ => false,
        }
    }

    /// Responses events: `response.output_text.delta` feeds a channel per (output, content)
    /// index; `.done` ends it; events carrying whole parts, items or the response are redacted
    /// whole.
    fn responses_event(&mut self, data: &mut Value, before: &mut Vec<u8>) -> bool {
        let key = (
            data.get("output_index")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            data.get("content_index")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        );
        match data.get("type").and_then(Value::as_str) {
            Some("response.output_text.delta") => {
                let Some(text) = data.get("delta").and_then(Value::as_str) else {
                    return false;
                };
                let text = text.to_string();
                let new = self.feed(key, &text);
                if new == text {
                    return false;
                }
                data["delta"] = Value::String(new);
                true
            }
            Some("response.output_text.done") => {
                let flushed = self.flush(key);
                if !flushed.is_empty() {
                    self.write_flushed(key, flushed, before);
                }
                if let Some(text) = data.get_mut("text") {
                    for stage in &self.stages {
                        redact_string(&stage.rules, text);
                    }
                }
                true
            }
            Some("response.content_part.done") => {
                if let Some(part) = data.get_mut("part") {
                    let mut parts = Value::Array(vec![part.take()]);
                    for stage in &self.stages {
                        redact_parts(&stage.rules, &mut parts);
                    }
                    if let Value::Array(mut v) = parts {
                        *part = v.pop().unwrap_or(Value::Null);
                    }
                }
                true
            }
            Some("response.output_item.done") => {
                if let Some(item) = data.get_mut("item") {
                    for stage in &self.stages {
                        redact_item(&stage.rules, item);
                    }
                }
                true
            }
            Some("response.completed" | "response.incomplete" | "response.failed") => {
                if let Some(response) = data.get_mut("response") {
                    for stage in &self.stages {
                        redact_answer(&stage.rules, response, Operation::Responses);
                    }
                }
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
