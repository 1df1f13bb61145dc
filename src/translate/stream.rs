//! Streaming responses: Anthropic SSE <-> OpenAI `chat.completion.chunk` SSE, incrementally.
//!
//! Each translator is a small state machine fed with upstream body chunks as they arrive;
//! every `push` returns the client-side bytes for the events completed so far, so the
//! client sees tokens as soon as the upstream sends them. They must never buffer the whole
//! stream (only the unfinished SSE line and a few counters are kept), never perform I/O or
//! read a clock (ids and `created` come from the caller), and never panic on malformed
//! upstream data: an event they cannot understand is skipped, because one bad event should
//! not cost the client the rest of the answer.
//!
//! Event shapes follow Anthropic's "Streaming Messages" reference and OpenAI's "The chat
//! completion chunk object" reference.

use serde_json::{json, Map, Value};

use super::error::{
    anthropic_error_body, openai_error_object, openai_message_and_type,
    status_for_anthropic_error_type,
};
use super::response::{
    anthropic_usage_tokens, finish_reason_from_stop_reason, openai_usage,
    stop_reason_from_finish_reason,
};
use super::sse::{write_event, SseEvent, SseParser};

/// The OpenAI end-of-stream sentinel.
const DONE: &str = "[DONE]";

// ---------------------------------------------------------------------------------------
// Anthropic -> OpenAI
// ---------------------------------------------------------------------------------------

/// Turns an Anthropic Messages event stream into an OpenAI chat-completion chunk stream.
#[derive(Debug)]
pub struct AnthropicToOpenAiStream {
    parser: SseParser,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// The opening chunk (with `delta.role`) has been sent, so the id is fixed.
    started: bool,
    /// Tool-use blocks seen so far, in order; a block's position here is its OpenAI index.
    tools: Vec<ToolBlock>,
    /// Usage fields merged from message_start and message_delta (later values win, as
    /// message_delta carries cumulative counts).
    usage: Map<String, Value>,
    finish_sent: bool,
    /// `[DONE]` has been written; nothing more may follow it.
    done: bool,
}

#[derive(Debug)]
struct ToolBlock {
    /// The Anthropic content-block index.
    block: u64,
    /// Whether any argument text was forwarded for this tool.
    sent_arguments: bool,
}

impl AnthropicToOpenAiStream {
    /// `id_hint` is used as the message id (after `chatcmpl-`) only if the upstream's
    /// message_start does not carry one; `created` is the Unix time put in every chunk.
    pub fn new(id_hint: &str, created: u64) -> Self {
        Self {
            parser: SseParser::new(),
            id: format!("chatcmpl-{id_hint}"),
            created,
            model: String::new(),
            include_usage: true,
            started: false,
            tools: Vec::new(),
            usage: Map::new(),
            finish_sent: false,
            done: false,
        }
    }

    /// Whether to send the final usage-only chunk (`choices: []`). On by default; a gateway
    /// may turn it off for clients that did not ask for `stream_options.include_usage`,
    /// since such clients may not expect a chunk without choices.
    pub fn include_usage(mut self, include: bool) -> Self {
        self.include_usage = include;
        self
    }

    /// Consumes upstream bytes and returns the client bytes they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let events = self.parser.push(bytes);
        self.handle_all(events)
    }

    /// Ends the stream. If the upstream stopped without `message_stop`, the client still
    /// gets its `[DONE]` (preceded by the usage chunk if the final message_delta arrived);
    /// nothing is written if `[DONE]` was already sent.
    pub fn finish(&mut self) -> Vec<u8> {
        let events = self.parser.finish();
        let mut out = self.handle_all(events);
        if !self.done {
            if self.finish_sent {
                self.write_usage_chunk(&mut out);
            }
            self.write_done(&mut out);
        }
        out
    }

    /// (input, output) tokens reported so far; input counts cache reads and writes too,
    /// matching the `prompt_tokens` sent to the client.
    pub fn usage(&self) -> Option<(u64, u64)> {
        if self.usage.is_empty() {
            return None;
        }
        let (prompt, completion, _) = anthropic_usage_tokens(&Value::Object(self.usage.clone()));
        Some((prompt, completion))
    }

    fn handle_all(&mut self, events: Vec<SseEvent>) -> Vec<u8> {
        let mut out = Vec::new();
        for event in events {
            self.handle(&event, &mut out);
        }
        out
    }

    fn handle(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        // The payload's `type` is authoritative; the SSE event name is only a fallback.
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                if !self.started {
                    if let Some(id) = message.get("id").and_then(Value::as_str) {
                        self.id = format!("chatcmpl-{id}");
                    }
                }
                if let Some(model) = message.get("model").and_then(Value::as_str) {
                    self.model = model.to_owned();
                }
                self.merge_usage(message.get("usage"));
                self.start(out);
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        self.start(out);
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                        self.write_content(out, text);
                    }
                    Some("tool_use") => {
                        self.start(out);
                        let ordinal = self.tools.len();
                        self.tools.push(ToolBlock {
                            block: index_of(&data),
                            sent_arguments: false,
                        });
                        let call = json!({
                            "index": ordinal,
                            "id": block.get("id").and_then(Value::as_str).unwrap_or(""),
                            "type": "function",
                            "function": {
                                "name": block.get("name").and_then(Value::as_str).unwrap_or(""),
                                "arguments": "",
                            },
                        });
                        self.write_delta(out, json!({ "tool_calls": [call] }));
                        // The input normally streams as input_json_delta and starts out
                        // empty; if an upstream already filled it in, forward it now.
                        if let Some(input) = block.get("input").and_then(Value::as_object) {
                            if !input.is_empty() {
                                let arguments = Value::Object(input.clone()).to_string();
                                self.write_arguments(out, ordinal, &arguments);
                            }
                        }
                    }
                    // Thinking and server-tool blocks have no chat-completion equivalent.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        self.start(out);
                        self.write_content(out, text);
                    }
                    Some("input_json_delta") => {
                        let partial = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if let Some(ordinal) = self.tool_ordinal(index_of(&data)) {
                            self.write_arguments(out, ordinal, partial);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                // A tool without parameters may stream no argument text at all; OpenAI
                // clients parse the accumulated arguments as JSON, and "" is not JSON.
                if let Some(ordinal) = self.tool_ordinal(index_of(&data)) {
                    if self.tools.get(ordinal).is_some_and(|t| !t.sent_arguments) {
                        self.write_arguments(out, ordinal, "{}");
                    }
                }
            }
            "message_delta" => {
                self.merge_usage(data.get("usage"));
                let finish = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                    .map(finish_reason_from_stop_reason);
                if let Some(finish) = finish {
                    self.write_finish(out, finish);
                }
            }
            "message_stop" => {
                // A clean end always tells the client why it ended.
                self.write_finish(out, "stop");
                self.write_usage_chunk(out);
                self.write_done(out);
            }
            "error" => {
                let error = data.get("error").unwrap_or(&Value::Null);
                let error_type = error
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream stream failed");
                let object = openai_error_object(
                    message,
                    error_type,
                    status_for_anthropic_error_type(error_type),
                );
                write_event(out, None, &json!({ "error": object }).to_string());
                self.write_done(out);
            }
            // ping, and event types added to the API after this was written.
            _ => {}
        }
    }

    fn merge_usage(&mut self, usage: Option<&Value>) {
        if let Some(usage) = usage.and_then(Value::as_object) {
            for (key, value) in usage {
                if !value.is_null() {
                    self.usage.insert(key.clone(), value.clone());
                }
            }
        }
    }

    fn tool_ordinal(&self, block: u64) -> Option<usize> {
        self.tools.iter().position(|tool| tool.block == block)
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        })
    }

    /// Sends the opening chunk once. OpenAI streams announce the role first, with empty
    /// content; clients such as the OpenAI SDKs build the message from it.
    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let chunk = self.chunk(json!({ "role": "assistant", "content": "" }), None);
            write_event(out, None, &chunk.to_string());
        }
    }

    fn write_delta(&self, out: &mut Vec<u8>, delta: Value) {
        write_event(out, None, &self.chunk(delta, None).to_string());
    }

    fn write_content(&self, out: &mut Vec<u8>, text: &str) {
        if !text.is_empty() {
            self.write_delta(out, json!({ "content": text }));
        }
    }

    fn write_arguments(&mut self, out: &mut Vec<u8>, ordinal: usize, arguments: &str) {
        if arguments.is_empty() {
            return;
        }
        if let Some(tool) = self.tools.get_mut(ordinal) {
            tool.sent_arguments = true;
        }
        let call = json!({ "index": ordinal, "function": { "arguments": arguments } });
        self.write_delta(out, json!({ "tool_calls": [call] }));
    }

    fn write_finish(&mut self, out: &mut Vec<u8>, finish_reason: &str) {
        if !self.finish_sent {
            self.start(out);
            self.finish_sent = true;
            let chunk = self.chunk(json!({}), Some(finish_reason));
            write_event(out, None, &chunk.to_string());
        }
    }

    fn write_usage_chunk(&self, out: &mut Vec<u8>) {
        if !self.include_usage {
            return;
        }
        let (prompt, completion, cached) =
            anthropic_usage_tokens(&Value::Object(self.usage.clone()));
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": openai_usage(prompt, completion, cached),
        });
        write_event(out, None, &chunk.to_string());
    }

    fn write_done(&mut self, out: &mut Vec<u8>) {
        if !self.done {
            self.done = true;
            write_event(out, None, DONE);
        }
    }
}

/// The content-block `index` of an Anthropic event. A missing index is treated as 0, the
/// index of the only block in the simplest streams.
fn index_of(data: &Value) -> u64 {
    data.get("index").and_then(Value::as_u64).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// OpenAI -> Anthropic
// ---------------------------------------------------------------------------------------

/// Turns an OpenAI chat-completion chunk stream into an Anthropic Messages event stream.
#[derive(Debug)]
pub struct OpenAiToAnthropicStream {
    parser: SseParser,
    model: String,
    id: String,
    started: bool,
    /// Index of the next Anthropic content block.
    next_block: u64,
    /// The content block currently open; Anthropic blocks never overlap.
    open: Option<u64>,
    /// OpenAI tool-call index -> Anthropic block index, in order of appearance.
    tools: Vec<(u64, u64)>,
    /// The translated finish reason, once seen; message_delta waits for usage.
    stop_reason: Option<&'static str>,
    input_tokens: u64,
    output_tokens: u64,
    usage_seen: bool,
    /// message_stop or error has been written; nothing more may follow.
    done: bool,
}

impl OpenAiToAnthropicStream {
    /// `model` is reported in message_start (the chunk's own model is used if it is empty);
    /// `id_hint` becomes the message id (after `msg_`) if the chunks carry no id.
    pub fn new(model: &str, id_hint: &str) -> Self {
        Self {
            parser: SseParser::new(),
            model: model.to_owned(),
            id: format!("msg_{id_hint}"),
            started: false,
            next_block: 0,
            open: None,
            tools: Vec::new(),
            stop_reason: None,
            input_tokens: 0,
            output_tokens: 0,
            usage_seen: false,
            done: false,
        }
    }

    /// Consumes upstream bytes and returns the client bytes they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let events = self.parser.push(bytes);
        self.handle_all(events)
    }

    /// Ends the stream. A held message_delta is released (the usage chunk did not come);
    /// a stream that ended without any finish reason or `[DONE]` was cut off, which the
    /// client learns through an `error` event rather than a made-up stop reason.
    pub fn finish(&mut self) -> Vec<u8> {
        let events = self.parser.finish();
        let mut out = self.handle_all(events);
        if !self.done {
            if self.stop_reason.is_some() {
                self.complete(&mut out);
            } else {
                self.write_error(
                    &mut out,
                    "api_error",
                    "upstream stream ended before the response was complete",
                );
            }
        }
        out
    }

    /// (input, output) tokens reported by the upstream's usage, if it sent any.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.usage_seen
            .then_some((self.input_tokens, self.output_tokens))
    }

    fn handle_all(&mut self, events: Vec<SseEvent>) -> Vec<u8> {
        let mut out = Vec::new();
        for event in events {
            self.handle(&event, &mut out);
        }
        out
    }

    fn handle(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if event.data.trim() == DONE {
            self.complete(out);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let (message, error_type) = openai_message_and_type(&chunk);
            let message = message.unwrap_or_else(|| error.to_string());
            // OpenAI's types only partly match Anthropic's; api_error is the honest
            // default for a failure reported mid-stream.
            let error_type = error_type
                .filter(|t| {
                    matches!(
                        *t,
                        "invalid_request_error" | "rate_limit_error" | "overloaded_error"
                    )
                })
                .unwrap_or("api_error");
            self.write_error(out, error_type, &message);
            return;
        }
        self.start(out, &chunk);

        let chunk_has_usage = match chunk.get("usage").and_then(Value::as_object) {
            Some(usage) => {
                let tokens = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
                self.input_tokens = tokens("prompt_tokens");
                self.output_tokens = tokens("completion_tokens");
                self.usage_seen = true;
                true
            }
            None => false,
        };

        // Only the first choice is translated: the request translation refuses n > 1.
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| {
                choices
                    .iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        if let Some(choice) = choice {
            if let Some(delta) = choice.get("delta") {
                self.handle_delta(out, delta);
            }
            if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
                self.close_block(out);
                self.stop_reason = Some(stop_reason_from_finish_reason(finish));
            }
        }
        // message_delta carries the final usage, so once the finish reason is known it
        // waits for the usage chunk that include_usage streams send after it.
        if self.stop_reason.is_some() && chunk_has_usage {
            self.complete(out);
        }
    }

    fn handle_delta(&mut self, out: &mut Vec<u8>, delta: &Value) {
        // A refusal is what the model said instead of an answer; the client sees it as text.
        for key in ["content", "refusal"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str) {
                self.write_text(out, text);
            }
        }
        let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) else {
            return;
        };
        for (position, call) in calls.iter().enumerate() {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let function = call.get("function").unwrap_or(&Value::Null);
            let block = match self.tools.iter().find(|(tool, _)| *tool == index) {
                Some(&(_, block)) => block,
                None => {
                    self.close_block(out);
                    let block = self.next_block;
                    self.next_block += 1;
                    self.tools.push((index, block));
                    self.open = Some(block);
                    // The first delta of a call carries its id and name; a server that
                    // omits the id still needs a unique one for the tool_result to cite.
                    let id = call
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("{}_tool_{index}", self.id));
                    let name = function.get("name").and_then(Value::as_str).unwrap_or("");
                    self.write(
                        out,
                        json!({
                            "type": "content_block_start",
                            "index": block,
                            "content_block": { "type": "tool_use", "id": id, "name": name, "input": {} },
                        }),
                    );
                    block
                }
            };
            if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                if !arguments.is_empty() {
                    self.write(
                        out,
                        json!({
                            "type": "content_block_delta",
                            "index": block,
                            "delta": { "type": "input_json_delta", "partial_json": arguments },
                        }),
                    );
                }
            }
        }
    }

    fn write_text(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() {
            return;
        }
        let is_text_open = self
            .open
            .is_some_and(|open| !self.tools.iter().any(|&(_, block)| block == open));
        let block = match self.open {
            Some(block) if is_text_open => block,
            _ => {
                self.close_block(out);
                let block = self.next_block;
                self.next_block += 1;
                self.open = Some(block);
                self.write(
                    out,
                    json!({
                        "type": "content_block_start",
                        "index": block,
                        "content_block": { "type": "text", "text": "" },
                    }),
                );
                block
            }
        };
        self.write(
            out,
            json!({
                "type": "content_block_delta",
                "index": block,
                "delta": { "type": "text_delta", "text": text },
            }),
        );
    }

    fn start(&mut self, out: &mut Vec<u8>, chunk: &Value) {
        if self.started {
            return;
        }
        self.started = true;
        // Some servers (Azure's content-filter preamble) open with an empty id or model;
        // the caller's values are better than an empty one.
        let non_empty = |key: &str| {
            chunk
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(id) = non_empty("id") {
            self.id = format!("msg_{id}");
        }
        if self.model.is_empty() {
            if let Some(model) = non_empty("model") {
                self.model = model.to_owned();
            }
        }
        // Input tokens are unknown until the usage chunk at the end; message_delta then
        // reports them.
        self.write(
            out,
            json!({
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": { "input_tokens": 0, "output_tokens": 0 },
                },
            }),
        );
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(block) = self.open.take() {
            self.write(out, json!({ "type": "content_block_stop", "index": block }));
        }
    }

    /// Writes the closing message_delta and message_stop (once).
    fn complete(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out, &Value::Null);
        self.close_block(out);
        // `[DONE]` without a finish reason is still a clean end of the turn.
        let stop_reason = self.stop_reason.unwrap_or("end_turn");
        self.write(
            out,
            json!({
                "type": "message_delta",
                "delta": { "stop_reason": stop_reason, "stop_sequence": null },
                // input_tokens too, since message_start had to report 0.
                "usage": { "input_tokens": self.input_tokens, "output_tokens": self.output_tokens },
            }),
        );
        self.write(out, json!({ "type": "message_stop" }));
        self.done = true;
    }

    fn write_error(&mut self, out: &mut Vec<u8>, error_type: &str, message: &str) {
        let body = anthropic_error_body(error_type, message);
        write_event(out, Some("error"), &body.to_string());
        self.done = true;
    }

    fn write(&self, out: &mut Vec<u8>, event: Value) {
        let name = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        write_event(out, Some(&name), &event.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What both translators have in common, so one harness can drive either.
    trait Translator {
        fn push_bytes(&mut self, bytes: &[u8]) -> Vec<u8>;
        fn finish_stream(&mut self) -> Vec<u8>;
    }

    impl Translator for AnthropicToOpenAiStream {
        fn push_bytes(&mut self, bytes: &[u8]) -> Vec<u8> {
            self.push(bytes)
        }
        fn finish_stream(&mut self) -> Vec<u8> {
            self.finish()
        }
    }

    impl Translator for OpenAiToAnthropicStream {
        fn push_bytes(&mut self, bytes: &[u8]) -> Vec<u8> {
            self.push(bytes)
        }
        fn finish_stream(&mut self) -> Vec<u8> {
            self.finish()
        }
    }

    /// Feeds `pieces` in order, then finishes, and returns all output bytes.
    fn run<T: Translator>(translator: &mut T, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(translator.push_bytes(piece));
        }
        out.extend(translator.finish_stream());
        out
    }

    /// Output bytes as (event name, parsed data) pairs; `[DONE]` stays a string.
    fn parse_output(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
        let mut parser = SseParser::new();
        let mut events = parser.push(bytes);
        assert!(
            parser.finish().is_empty(),
            "output must end with a blank line"
        );
        events
            .drain(..)
            .map(|e| {
                let data = if e.data == DONE {
                    Value::String(e.data)
                } else {
                    serde_json::from_str(&e.data).unwrap()
                };
                (e.event, data)
            })
            .collect()
    }

    /// Splitting the input at every byte boundary, or feeding one byte at a time, must
    /// give the same events as feeding it whole.
    fn assert_split_invariant<T: Translator>(make: impl Fn() -> T, input: &[u8]) {
        let whole = parse_output(&run(&mut make(), &[input]));
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                parse_output(&run(&mut make(), &[a, b])),
                whole,
                "split at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            parse_output(&run(&mut make(), &bytes)),
            whole,
            "byte by byte"
        );
    }

    // Follows the "Basic streaming request" example of Anthropic's "Streaming Messages"
    // reference (ping included), with non-ASCII text to exercise UTF-8 splits.
    const ANTHROPIC_TEXT_STREAM: &str = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ", caf\u00e9 \u2615 — 世界!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"#;

    // Follows the "Streaming request with tool use" example of Anthropic's "Streaming
    // Messages" reference, extended to two tool calls so the OpenAI tool index (0, 1)
    // differs from the Anthropic block index (1, 2).
    const ANTHROPIC_TOOL_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let's check the weather for San Francisco, CA:"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_02Ab","name":"get_time","input":{}}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

    // Follows the streaming chunk examples of OpenAI's "The chat completion chunk object"
    // reference and the streamed tool-call deltas of OpenAI's "Function calling" guide,
    // with `stream_options.include_usage` (usage-only last chunk) and non-ASCII text.
    const OPENAI_TEXT_TOOL_STREAM: &str = r#"data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Let me check"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":" the weather in Zürich ☀"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"location\":"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":" \"Zürich\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_Fj2kLm","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":82,"completion_tokens":41,"total_tokens":123,"prompt_tokens_details":{"cached_tokens":0}}}

data: [DONE]

"#;

    fn openai_chunk(delta: Value, finish: Value) -> Value {
        json!({
            "object": "chat.completion.chunk",
            "created": 1_700_000_000u64,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    /// Checks every OpenAI chunk's envelope and returns (delta, finish_reason) per chunk,
    /// the usage chunk's usage, and asserts the stream ends with `[DONE]`.
    fn openai_chunks(bytes: &[u8], id: &str, model: &str) -> (Vec<(Value, Value)>, Value) {
        let mut events = parse_output(bytes);
        assert_eq!(
            events.pop(),
            Some((None, json!(DONE))),
            "must end with [DONE]"
        );
        let (_, usage_chunk) = events.pop().unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["id"], id);
        let mut out = Vec::new();
        for (name, chunk) in events {
            assert_eq!(name, None);
            assert_eq!(chunk["id"], id);
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["created"], 1_700_000_000u64);
            assert_eq!(chunk["model"], model);
            let expected = openai_chunk(
                chunk["choices"][0]["delta"].clone(),
                chunk["choices"][0]["finish_reason"].clone(),
            );
            let mut shape = chunk.clone();
            if let Some(obj) = shape.as_object_mut() {
                obj.remove("id");
                obj.remove("model");
            }
            assert_eq!(shape, expected);
            out.push((
                chunk["choices"][0]["delta"].clone(),
                chunk["choices"][0]["finish_reason"].clone(),
            ));
        }
        (out, usage_chunk["usage"].clone())
    }

    #[test]
    fn anthropic_text_stream_to_openai_chunks() {
        let mut translator = AnthropicToOpenAiStream::new("fallback", 1_700_000_000);
        let bytes = run(&mut translator, &[ANTHROPIC_TEXT_STREAM.as_bytes()]);
        let (chunks, usage) = openai_chunks(
            &bytes,
            "chatcmpl-msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
            "claude-sonnet-4-5-20250929",
        );
        assert_eq!(
            chunks,
            vec![
                (json!({"role": "assistant", "content": ""}), json!(null)),
                (json!({"content": "Hello"}), json!(null)),
                (
                    json!({"content": ", caf\u{e9} \u{2615} — 世界!"}),
                    json!(null)
                ),
                (json!({}), json!("stop")),
            ]
        );
        assert_eq!(
            usage,
            json!({"prompt_tokens": 35, "completion_tokens": 15, "total_tokens": 50,
                   "prompt_tokens_details": {"cached_tokens": 10}})
        );
        assert_eq!(translator.usage(), Some((35, 15)));
    }

    #[test]
    fn anthropic_tool_stream_to_openai_chunks() {
        let mut translator = AnthropicToOpenAiStream::new("fallback", 1_700_000_000);
        let bytes = run(&mut translator, &[ANTHROPIC_TOOL_STREAM.as_bytes()]);
        let (chunks, usage) = openai_chunks(
            &bytes,
            "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U",
            "claude-opus-4-1-20250805",
        );
        assert_eq!(
            chunks,
            vec![
                (json!({"role": "assistant", "content": ""}), json!(null)),
                (
                    json!({"content": "Okay, let's check the weather for San Francisco, CA:"}),
                    json!(null)
                ),
                (
                    json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                    json!(null)
                ),
                (
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
                    json!(null)
                ),
                (
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"San Francisco, CA\"}"}}]}),
                    json!(null)
                ),
                (
                    json!({"tool_calls": [{"index": 1, "id": "toolu_02Ab", "type": "function",
                        "function": {"name": "get_time", "arguments": ""}}]}),
                    json!(null)
                ),
                // No argument text streamed for get_time: "{}" keeps it parseable.
                (
                    json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
                    json!(null)
                ),
                (json!({}), json!("tool_calls")),
            ]
        );
        assert_eq!(usage["prompt_tokens"], 472);
        assert_eq!(usage["completion_tokens"], 89);
        assert_eq!(usage["total_tokens"], 561);
    }

    #[test]
    fn anthropic_streams_survive_any_split() {
        let make = || AnthropicToOpenAiStream::new("fallback", 1_700_000_000);
        assert_split_invariant(make, ANTHROPIC_TEXT_STREAM.as_bytes());
        assert_split_invariant(make, ANTHROPIC_TOOL_STREAM.as_bytes());
        // CRLF framing, which splits can cut in half, gives the same result as LF.
        let crlf = ANTHROPIC_TOOL_STREAM.replace('\n', "\r\n");
        assert_split_invariant(make, crlf.as_bytes());
        assert_eq!(
            parse_output(&run(&mut make(), &[crlf.as_bytes()])),
            parse_output(&run(&mut make(), &[ANTHROPIC_TOOL_STREAM.as_bytes()]))
        );
    }

    #[test]
    fn output_is_incremental() {
        let mut translator = AnthropicToOpenAiStream::new("x", 1);
        let (head, _) = ANTHROPIC_TEXT_STREAM.split_at(
            ANTHROPIC_TEXT_STREAM
                .find("event: content_block_stop")
                .unwrap(),
        );
        let events = parse_output(&translator.push(head.as_bytes()));
        assert_eq!(
            events.len(),
            3,
            "role chunk and both text deltas come out at once"
        );
        assert_eq!(translator.usage(), Some((35, 1)));
    }

    // The error event follows the "Error events" section of Anthropic's "Streaming
    // Messages" reference.
    #[test]
    fn anthropic_error_event_becomes_openai_error_then_done() {
        let input = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: error\n",
            "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let make = || AnthropicToOpenAiStream::new("x", 1);
        let events = parse_output(&run(&mut make(), &[input.as_bytes()]));
        assert_eq!(events.len(), 4);
        assert_eq!(events[1].1["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            events[2].1,
            json!({"error": {"message": "Overloaded", "type": "overloaded_error",
                             "param": null, "code": "529"}})
        );
        assert_eq!(events[3].1, json!(DONE));
        assert_split_invariant(make, input.as_bytes());
    }

    #[test]
    fn truncated_anthropic_stream_still_ends_with_one_done() {
        let cut = ANTHROPIC_TEXT_STREAM.find("event: message_delta").unwrap();
        let mut translator = AnthropicToOpenAiStream::new("x", 1);
        let mut bytes = translator.push(&ANTHROPIC_TEXT_STREAM.as_bytes()[..cut]);
        bytes.extend(translator.finish());
        bytes.extend(translator.finish());
        let events = parse_output(&bytes);
        assert_eq!(events.last(), Some(&(None, json!(DONE))));
        assert_eq!(events.iter().filter(|(_, d)| *d == json!(DONE)).count(), 1);
        // No finish_reason was invented and no usage chunk claims a complete answer.
        assert!(events
            .iter()
            .all(|(_, d)| d.get("usage").is_none() && d["choices"][0]["finish_reason"].is_null()));

        // After message_delta but before message_stop: finish, usage, then [DONE].
        let cut = ANTHROPIC_TEXT_STREAM.find("event: message_stop").unwrap();
        let mut translator = AnthropicToOpenAiStream::new("x", 1);
        let mut bytes = translator.push(&ANTHROPIC_TEXT_STREAM.as_bytes()[..cut]);
        bytes.extend(translator.finish());
        let events = parse_output(&bytes);
        let n = events.len();
        assert_eq!(events[n - 3].1["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[n - 2].1["usage"]["completion_tokens"], 15);
        assert_eq!(events[n - 1].1, json!(DONE));

        // An empty upstream body still gets its [DONE], and only once.
        let mut translator = AnthropicToOpenAiStream::new("x", 1);
        assert_eq!(translator.finish(), b"data: [DONE]\n\n".to_vec());
        assert!(translator.finish().is_empty());
        assert_eq!(translator.usage(), None);
    }

    #[test]
    fn usage_chunk_can_be_turned_off_and_id_hint_is_a_fallback() {
        let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let mut translator = AnthropicToOpenAiStream::new("hint", 9).include_usage(false);
        let events = parse_output(&run(&mut translator, &[input.as_bytes()]));
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].1["id"], "chatcmpl-hint");
        assert_eq!(events[1].1["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[2].1, json!(DONE));
    }

    #[test]
    fn openai_text_and_tool_stream_to_anthropic_events() {
        let mut translator = OpenAiToAnthropicStream::new("gpt-4o-mini", "fallback");
        let bytes = run(&mut translator, &[OPENAI_TEXT_TOOL_STREAM.as_bytes()]);
        let events = parse_output(&bytes);
        for (name, data) in &events {
            assert_eq!(
                name.as_deref(),
                data["type"].as_str(),
                "event name matches type"
            );
        }
        let data: Vec<Value> = events.into_iter().map(|(_, d)| d).collect();
        assert_eq!(
            data,
            vec![
                json!({"type": "message_start", "message": {
                    "id": "msg_chatcmpl-123", "type": "message", "role": "assistant",
                    "model": "gpt-4o-mini", "content": [], "stop_reason": null,
                    "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}
                }}),
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": "Let me check"}}),
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": " the weather in Zürich ☀"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "content_block_start", "index": 1, "content_block": {
                    "type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                    "name": "get_weather", "input": {}
                }}),
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": "{\"location\":"}}),
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": " \"Zürich\"}"}}),
                json!({"type": "content_block_stop", "index": 1}),
                json!({"type": "content_block_start", "index": 2, "content_block": {
                    "type": "tool_use", "id": "call_Fj2kLm", "name": "get_time", "input": {}
                }}),
                json!({"type": "content_block_delta", "index": 2,
                       "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
                json!({"type": "content_block_stop", "index": 2}),
                json!({"type": "message_delta",
                       "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                       "usage": {"input_tokens": 82, "output_tokens": 41}}),
                json!({"type": "message_stop"}),
            ]
        );
        assert_eq!(translator.usage(), Some((82, 41)));
    }

    #[test]
    fn openai_stream_survives_any_split() {
        let make = || OpenAiToAnthropicStream::new("gpt-4o-mini", "fallback");
        assert_split_invariant(make, OPENAI_TEXT_TOOL_STREAM.as_bytes());
        let crlf = OPENAI_TEXT_TOOL_STREAM.replace('\n', "\r\n");
        assert_split_invariant(make, crlf.as_bytes());
    }

    fn openai_sse(chunks: &[Value]) -> String {
        chunks
            .iter()
            .map(|c| format!("data: {c}\n\n"))
            .collect::<String>()
    }

    #[test]
    fn message_delta_waits_for_usage_or_done() {
        let text = json!({"id": "c1", "model": "m", "choices": [
            {"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]});
        let finish = json!({"id": "c1", "model": "m", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "length"}]});
        let usage = json!({"id": "c1", "model": "m", "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});

        // Finish reason first: nothing after content_block_stop until usage arrives.
        let mut translator = OpenAiToAnthropicStream::new("", "h");
        let first =
            parse_output(&translator.push(openai_sse(&[text.clone(), finish.clone()]).as_bytes()));
        assert_eq!(first.last().unwrap().1["type"], "content_block_stop");
        assert_eq!(
            first[0].1["message"]["model"], "m",
            "chunk model used when none given"
        );
        let rest = parse_output(&translator.push(openai_sse(&[usage]).as_bytes()));
        assert_eq!(rest[0].1["delta"]["stop_reason"], "max_tokens");
        assert_eq!(
            rest[0].1["usage"],
            json!({"input_tokens": 3, "output_tokens": 2})
        );
        assert_eq!(rest[1].1["type"], "message_stop");
        assert!(translator.push(b"data: [DONE]\n\n").is_empty());
        assert!(translator.finish().is_empty());

        // No usage chunk at all: [DONE] releases message_delta.
        let mut translator = OpenAiToAnthropicStream::new("m", "h");
        let events = parse_output(&run(
            &mut translator,
            &[
                openai_sse(&[text.clone(), finish.clone()]).as_bytes(),
                b"data: [DONE]\n\n",
            ],
        ));
        let n = events.len();
        assert_eq!(events[n - 2].1["delta"]["stop_reason"], "max_tokens");
        assert_eq!(events[n - 1].1["type"], "message_stop");
        assert_eq!(translator.usage(), None);

        // Neither usage nor [DONE]: finish() releases it.
        let mut translator = OpenAiToAnthropicStream::new("m", "h");
        let events = parse_output(&run(
            &mut translator,
            &[openai_sse(&[text.clone(), finish]).as_bytes()],
        ));
        assert_eq!(events.last().unwrap().1["type"], "message_stop");

        // Usage in the same chunk as the finish reason completes at once.
        let both = json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
        let mut translator = OpenAiToAnthropicStream::new("m", "h");
        let events = parse_output(&translator.push(openai_sse(&[text, both]).as_bytes()));
        assert_eq!(events.last().unwrap().1["type"], "message_stop");
    }

    #[test]
    fn truncated_openai_stream_ends_with_an_error_event() {
        let text = json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]});
        let mut translator = OpenAiToAnthropicStream::new("m", "h");
        let events = parse_output(&run(&mut translator, &[openai_sse(&[text]).as_bytes()]));
        let (name, last) = events.last().unwrap();
        assert_eq!(name.as_deref(), Some("error"));
        assert_eq!(last["error"]["type"], "api_error");
        assert!(translator.finish().is_empty(), "only once");
    }

    #[test]
    fn openai_error_chunk_becomes_anthropic_error_event() {
        let input = "data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"rate_limit_error\"}}\n\ndata: [DONE]\n\n";
        let mut translator = OpenAiToAnthropicStream::new("m", "h");
        let events = parse_output(&run(&mut translator, &[input.as_bytes()]));
        assert_eq!(
            events,
            vec![(
                Some("error".to_owned()),
                json!({"type": "error", "error": {"type": "rate_limit_error",
                                                  "message": "Rate limit reached"}})
            )]
        );
    }

    #[test]
    fn text_after_a_tool_call_opens_a_new_text_block() {
        let chunks = [
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_1", "type": "function",
                 "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "done"}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "function": {"name": "g"}}]}, "finish_reason": "tool_calls"}]}),
            json!("[DONE]"),
        ];
        let input: String = chunks
            .iter()
            .map(|c| match c {
                Value::String(s) => format!("data: {s}\n\n"),
                other => format!("data: {other}\n\n"),
            })
            .collect();
        let mut translator = OpenAiToAnthropicStream::new("m", "h");
        let events = parse_output(&run(&mut translator, &[input.as_bytes()]));
        let kinds: Vec<String> = events
            .iter()
            .map(|(_, d)| match (d["type"].as_str(), d["index"].as_u64()) {
                (Some(t), Some(i)) => format!("{t}:{i}"),
                (Some(t), None) => t.to_owned(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start:0",
                "content_block_delta:0",
                "content_block_stop:0",
                "content_block_start:1",
                "content_block_delta:1",
                "content_block_stop:1",
                "content_block_start:2",
                "content_block_stop:2",
                "message_delta",
                "message_stop"
            ]
        );
        // The id-less tool call gets a stable id derived from the message id.
        assert_eq!(events[7].1["content_block"]["id"], "msg_c_tool_1");
        assert_eq!(events[1].1["content_block"]["type"], "tool_use");
        assert_eq!(events[4].1["content_block"]["type"], "text");
    }
}
