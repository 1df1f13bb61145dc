//! Request bodies: OpenAI Chat Completions <-> Anthropic Messages.
//!
//! Each function takes a client's JSON body and returns the body to send upstream in the
//! other dialect, or a [`TranslateError`] naming the first field that cannot be expressed
//! there. Output fields are built from an explicit list rather than copied wholesale,
//! because both APIs reject parameters they do not know. The `model` value is copied
//! unchanged: choosing the upstream model is the gateway's job, not this module's. Nothing
//! here performs I/O or inspects headers, and no input can make it panic.
//!
//! Field semantics follow the OpenAI "Create chat completion" reference and the Anthropic
//! "Messages" reference (including its "Tool use" and "Vision" guides).

use serde_json::{json, Map, Value};

use super::error::TranslateError;

/// Separator used when several system prompts (or text blocks of one input) must become one
/// string: a blank line keeps them apart as paragraphs, which is how a model would most
/// likely have read them as separate messages.
const JOIN: &str = "\n\n";

type Result<T> = std::result::Result<T, TranslateError>;

// ---------------------------------------------------------------------------------------
// OpenAI -> Anthropic
// ---------------------------------------------------------------------------------------

/// Translates an OpenAI Chat Completions request body into an Anthropic Messages request body.
///
/// `default_max_tokens` fills `max_tokens`, which Anthropic requires and OpenAI does not.
pub fn openai_chat_to_anthropic(
    body: &Map<String, Value>,
    default_max_tokens: u64,
) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    if let Some(model) = body.get("model") {
        out.insert("model".into(), model.clone());
    }

    // Anthropic always produces a single completion; answering `n: 2` with one choice would
    // silently break a client that relies on the count.
    match body.get("n") {
        None | Some(Value::Null) => {}
        Some(n) => match n.as_u64() {
            Some(1) => {}
            Some(_) => {
                return Err(TranslateError::unsupported(
                    "n",
                    "Anthropic returns exactly one choice, so n must be 1",
                ))
            }
            None => return Err(TranslateError::wrong_type("n", "a positive integer")),
        },
    }
    // Legacy function calling has no place in the tools translation below; refusing is
    // better than dropping the functions and answering as if none were offered.
    for legacy in ["functions", "function_call"] {
        if !matches!(body.get(legacy), None | Some(Value::Null)) {
            return Err(TranslateError::unsupported(
                legacy,
                "legacy function calling; use tools and tool_choice",
            ));
        }
    }

    let messages = get_array(body, "messages", "messages")?;
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let message = message
            .as_object()
            .ok_or_else(|| TranslateError::wrong_type(&path, "an object"))?;
        let role = get_str(message, "role", &path)?;
        match role {
            // Anthropic has no system role inside the conversation, only the top-level
            // `system` field, so every system or developer message is hoisted there.
            "system" | "developer" => {
                let text = plain_text(message.get("content"), &format!("{path}.content"))?;
                if !text.is_empty() {
                    system.push(text);
                }
            }
            "user" => {
                let blocks = user_blocks(message.get("content"), &format!("{path}.content"))?;
                push_turn(&mut turns, "user", blocks);
            }
            "assistant" => {
                let blocks = assistant_blocks(message, &path)?;
                // An assistant message with neither text nor tool calls says nothing, and
                // Anthropic rejects empty content; dropping it just joins its neighbours.
                if !blocks.is_empty() {
                    push_turn(&mut turns, "assistant", blocks);
                }
            }
            // Tool results travel inside a user turn in Anthropic's format.
            "tool" => push_turn(&mut turns, "user", vec![tool_result_block(message, &path)?]),
            "function" => {
                return Err(TranslateError::unsupported(
                    format!("{path}.role"),
                    "legacy function messages; use role \"tool\"",
                ))
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    format!("has unknown value {other:?}"),
                ))
            }
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join(JOIN)));
    }
    out.insert(
        "messages".into(),
        Value::Array(turns.into_iter().map(Turn::into_message).collect()),
    );

    let max_tokens = match first_present(body, &["max_completion_tokens", "max_tokens"]) {
        Some((key, value)) => value
            .as_u64()
            .ok_or_else(|| TranslateError::wrong_type(key, "a non-negative integer"))?,
        None => default_max_tokens,
    };
    out.insert("max_tokens".into(), max_tokens.into());

    if let Some(stop) = present(body, "stop") {
        let sequences = match stop {
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(items) if items.iter().all(Value::is_string) => items.clone(),
            _ => {
                return Err(TranslateError::wrong_type(
                    "stop",
                    "a string or an array of strings",
                ))
            }
        };
        if !sequences.is_empty() {
            out.insert("stop_sequences".into(), Value::Array(sequences));
        }
    }

    for key in ["temperature", "top_p", "stream"] {
        if let Some(value) = present(body, key) {
            out.insert(key.into(), value.clone());
        }
    }

    let tools = match present(body, "tools") {
        Some(tools) => openai_tools_to_anthropic(tools)?,
        None => Vec::new(),
    };
    let tool_choice = match present(body, "tool_choice") {
        Some(choice) => Some(openai_tool_choice_to_anthropic(choice)?),
        None => None,
    };
    let parallel = match present(body, "parallel_tool_calls") {
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(TranslateError::wrong_type(
                "parallel_tool_calls",
                "a boolean",
            ))
        }
        None => true,
    };
    // Anthropic rejects tool_choice without tools; OpenAI clients commonly send
    // `tool_choice`/`parallel_tool_calls` unconditionally, so without tools both are moot.
    if !tools.is_empty() {
        let mut choice = tool_choice;
        if !parallel {
            let choice = choice.get_or_insert_with(|| {
                let mut auto = Map::new();
                auto.insert("type".into(), "auto".into());
                auto
            });
            // `none` forbids tool use altogether, and its schema has no parallel flag.
            if choice.get("type").and_then(Value::as_str) != Some("none") {
                choice.insert("disable_parallel_tool_use".into(), true.into());
            }
        }
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = choice {
            out.insert("tool_choice".into(), Value::Object(choice));
        }
    }

    if let Some(user) = present(body, "user") {
        let user = user
            .as_str()
            .ok_or_else(|| TranslateError::wrong_type("user", "a string"))?;
        out.insert("metadata".into(), json!({ "user_id": user }));
    }

    // Deliberately dropped: stream_options (Anthropic always reports usage), the penalties,
    // logprobs/top_logprobs, logit_bias, response_format, seed, store, metadata (OpenAI's
    // free-form tags, unlike Anthropic's), service_tier and other OpenAI-only knobs.
    Ok(out)
}

/// One Anthropic turn being assembled; consecutive OpenAI messages with the same Anthropic
/// role are merged into it, because Anthropic expects roles to alternate.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

impl Turn {
    fn into_message(self) -> Value {
        let Turn { role, mut blocks } = self;
        if role == "user" {
            // Anthropic requires tool_result blocks to open the user turn that answers a
            // tool call; a stable sort keeps everything else in its original order.
            blocks.sort_by_key(|block| {
                block.get("type").and_then(Value::as_str) != Some("tool_result")
            });
        }
        // A lone text block is written as a plain string, the form clients usually send.
        let content = match blocks.as_slice() {
            [block] if is_plain_text_block(block) => block["text"].clone(),
            _ => Value::Array(blocks),
        };
        json!({ "role": role, "content": content })
    }
}

fn is_plain_text_block(block: &Value) -> bool {
    block.get("type").and_then(Value::as_str) == Some("text")
        && block.as_object().map(Map::len) == Some(2)
        && block.get("text").is_some_and(Value::is_string)
}

fn push_turn(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>) {
    match turns.last_mut() {
        Some(last) if last.role == role => last.blocks.extend(blocks),
        _ => turns.push(Turn { role, blocks }),
    }
}

fn text_block(text: &str) -> Value {
    json!({ "type": "text", "text": text })
}

/// Content that may only hold text (system, developer): a string or an array of text parts.
fn plain_text(content: Option<&Value>, path: &str) -> Result<String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let part_path = format!("{path}[{j}]");
                let part = part
                    .as_object()
                    .ok_or_else(|| TranslateError::wrong_type(&part_path, "an object"))?;
                match get_str(part, "type", &part_path)? {
                    "text" => texts.push(get_str(part, "text", &part_path)?),
                    other => {
                        return Err(TranslateError::unsupported(
                            format!("{part_path}.type"),
                            format!("{other:?} parts in a message that only accepts text"),
                        ))
                    }
                }
            }
            Ok(texts.join(JOIN))
        }
        Some(_) => Err(TranslateError::wrong_type(
            path,
            "a string or an array of content parts",
        )),
    }
}

/// User (and tool) content: a string, or an array of text and image parts.
fn user_blocks(content: Option<&Value>, path: &str) -> Result<Vec<Value>> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![text_block(s)]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| content_part_to_block(part, &format!("{path}[{j}]")))
            .collect(),
        Some(_) => Err(TranslateError::wrong_type(
            path,
            "a string or an array of content parts",
        )),
    }
}

fn content_part_to_block(part: &Value, path: &str) -> Result<Value> {
    let part = part
        .as_object()
        .ok_or_else(|| TranslateError::wrong_type(path, "an object"))?;
    match get_str(part, "type", path)? {
        "text" => Ok(text_block(get_str(part, "text", path)?)),
        "image_url" => {
            let image_path = format!("{path}.image_url");
            // The reference nests the URL in an object (`{"url", "detail"}`); some clients
            // send the bare string, which is unambiguous, so it is accepted too. `detail`
            // has no Anthropic counterpart and is dropped.
            let url = match part.get("image_url") {
                Some(Value::String(url)) => url.as_str(),
                Some(Value::Object(image)) => get_str(image, "url", &image_path)?,
                Some(_) => return Err(TranslateError::wrong_type(&image_path, "an object")),
                None => return Err(TranslateError::missing(image_path)),
            };
            image_url_to_block(url, &format!("{image_path}.url"))
        }
        other => Err(TranslateError::unsupported(
            format!("{path}.type"),
            format!("content parts of type {other:?}"),
        )),
    }
}

/// An OpenAI image URL becomes an Anthropic image block: `data:` URLs carry the bytes and
/// become a base64 source, http(s) URLs become a URL source that Anthropic fetches itself.
fn image_url_to_block(url: &str, path: &str) -> Result<Value> {
    if let Some(rest) = strip_prefix_ignore_case(url, "data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| TranslateError::invalid(path, "is a data URL without a comma"))?;
        let mut params = meta.split(';');
        let media_type = params.next().unwrap_or_default().trim();
        if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
            return Err(TranslateError::unsupported(
                path,
                "data URLs that are not base64-encoded",
            ));
        }
        if media_type.is_empty() {
            return Err(TranslateError::invalid(
                path,
                "is a data URL without a media type",
            ));
        }
        return Ok(json!({
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": media_type.to_ascii_lowercase(),
                "data": data,
            },
        }));
    }
    if strip_prefix_ignore_case(url, "https://").is_some()
        || strip_prefix_ignore_case(url, "http://").is_some()
    {
        return Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    Err(TranslateError::invalid(
        path,
        "must be an http(s) URL or a base64 data URL",
    ))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn assistant_blocks(message: &Map<String, Value>, path: &str) -> Result<Vec<Value>> {
    let content_path = format!("{path}.content");
    let mut blocks = Vec::new();
    match message.get("content") {
        None | Some(Value::Null) => {}
        // Assistant messages that carry tool calls usually have `content: ""`; an empty
        // text block would be rejected by Anthropic, so empty text is skipped.
        Some(Value::String(s)) => {
            if !s.is_empty() {
                blocks.push(text_block(s));
            }
        }
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let part_path = format!("{content_path}[{j}]");
                let part = part
                    .as_object()
                    .ok_or_else(|| TranslateError::wrong_type(&part_path, "an object"))?;
                // A refusal the model produced earlier is still what it said, so it is
                // replayed as text.
                let text = match get_str(part, "type", &part_path)? {
                    "text" => get_str(part, "text", &part_path)?,
                    "refusal" => get_str(part, "refusal", &part_path)?,
                    other => {
                        return Err(TranslateError::unsupported(
                            format!("{part_path}.type"),
                            format!("assistant content parts of type {other:?}"),
                        ))
                    }
                };
                if !text.is_empty() {
                    blocks.push(text_block(text));
                }
            }
        }
        Some(_) => {
            return Err(TranslateError::wrong_type(
                content_path,
                "a string, an array of content parts or null",
            ))
        }
    }
    if !matches!(message.get("function_call"), None | Some(Value::Null)) {
        return Err(TranslateError::unsupported(
            format!("{path}.function_call"),
            "legacy function calling; use tool_calls",
        ));
    }
    if let Some(calls) = present(message, "tool_calls") {
        let calls_path = format!("{path}.tool_calls");
        let calls = calls
            .as_array()
            .ok_or_else(|| TranslateError::wrong_type(&calls_path, "an array"))?;
        for (k, call) in calls.iter().enumerate() {
            blocks.push(tool_call_to_tool_use(call, &format!("{calls_path}[{k}]"))?);
        }
    }
    Ok(blocks)
}

fn tool_call_to_tool_use(call: &Value, path: &str) -> Result<Value> {
    let call = call
        .as_object()
        .ok_or_else(|| TranslateError::wrong_type(path, "an object"))?;
    if let Some(kind) = present(call, "type") {
        if kind.as_str() != Some("function") {
            return Err(TranslateError::unsupported(
                format!("{path}.type"),
                "tool calls other than \"function\"",
            ));
        }
    }
    let id = get_str(call, "id", path)?;
    let function_path = format!("{path}.function");
    let function = call
        .get("function")
        .ok_or_else(|| TranslateError::missing(&function_path))?
        .as_object()
        .ok_or_else(|| TranslateError::wrong_type(&function_path, "an object"))?;
    let name = get_str(function, "name", &function_path)?;
    let input = tool_arguments(function, &function_path)?;
    Ok(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
}

fn tool_result_block(message: &Map<String, Value>, path: &str) -> Result<Value> {
    let tool_use_id = get_str(message, "tool_call_id", path)?;
    let mut block = json!({ "type": "tool_result", "tool_use_id": tool_use_id });
    let content_path = format!("{path}.content");
    let content = match message.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Value::String(s.clone())),
        Some(parts @ Value::Array(_)) => {
            Some(Value::Array(user_blocks(Some(parts), &content_path)?))
        }
        Some(_) => {
            return Err(TranslateError::wrong_type(
                content_path,
                "a string or an array of content parts",
            ))
        }
    };
    if let (Some(content), Some(obj)) = (content, block.as_object_mut()) {
        obj.insert("content".into(), content);
    }
    Ok(block)
}

/// A tool call's `function.arguments` (a JSON string) as the object Anthropic's `input` must be.
/// Shared by request and response translation.
pub(super) fn tool_arguments(function: &Map<String, Value>, function_path: &str) -> Result<Value> {
    let arguments_path = format!("{function_path}.arguments");
    let input = match function.get("arguments") {
        // Models calling a function without parameters sometimes emit no arguments at all;
        // Anthropic needs an object, and the empty one means the same thing.
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
        Some(Value::String(s)) => {
            serde_json::from_str(s).map_err(|e| TranslateError::InvalidJson {
                field: arguments_path.clone(),
                detail: e.to_string(),
            })?
        }
        // Not what the reference specifies, but an already-decoded object is unambiguous.
        Some(object @ Value::Object(_)) => object.clone(),
        Some(_) => return Err(TranslateError::wrong_type(arguments_path, "a JSON string")),
    };
    if !input.is_object() {
        return Err(TranslateError::invalid(
            arguments_path,
            "must encode a JSON object, as Anthropic tool input is always an object",
        ));
    }
    Ok(input)
}

/// `tools` as a list of objects, each with its path for messages.
fn tool_list(tools: &Value) -> Result<Vec<(String, &Map<String, Value>)>> {
    let tools = tools
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type("tools", "an array"))?;
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let path = format!("tools[{i}]");
            match tool.as_object() {
                Some(t) => Ok((path, t)),
                None => Err(TranslateError::wrong_type(&path, "an object")),
            }
        })
        .collect()
}

fn openai_tools_to_anthropic(tools: &Value) -> Result<Vec<Value>> {
    let tools = tool_list(tools)?;
    let mut out = Vec::with_capacity(tools.len());
    for (path, tool) in tools {
        if let Some(kind) = present(tool, "type") {
            if kind.as_str() != Some("function") {
                return Err(TranslateError::unsupported(
                    format!("{path}.type"),
                    "tools other than \"function\"",
                ));
            }
        }
        let function_path = format!("{path}.function");
        let function = tool
            .get("function")
            .ok_or_else(|| TranslateError::missing(&function_path))?
            .as_object()
            .ok_or_else(|| TranslateError::wrong_type(&function_path, "an object"))?;
        let mut converted = Map::new();
        converted.insert(
            "name".into(),
            get_str(function, "name", &function_path)?.into(),
        );
        if let Some(description) = present(function, "description") {
            converted.insert("description".into(), description.clone());
        }
        // OpenAI allows omitting `parameters` for a function without arguments; Anthropic
        // requires a schema, and the empty object schema says the same thing. `strict`
        // has no counterpart and is dropped.
        let schema = match present(function, "parameters") {
            Some(schema @ Value::Object(_)) => schema.clone(),
            Some(_) => {
                return Err(TranslateError::wrong_type(
                    format!("{function_path}.parameters"),
                    "a JSON Schema object",
                ))
            }
            None => json!({ "type": "object", "properties": {} }),
        };
        converted.insert("input_schema".into(), schema);
        out.push(Value::Object(converted));
    }
    Ok(out)
}

fn openai_tool_choice_to_anthropic(choice: &Value) -> Result<Map<String, Value>> {
    let kind = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => "auto",
            "none" => "none",
            // "required" means "call at least one tool", which is Anthropic's "any".
            "required" => "any",
            other => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    format!("has unknown value {other:?}"),
                ))
            }
        },
        Value::Object(obj) => {
            if obj.get("type").and_then(Value::as_str) != Some("function") {
                return Err(TranslateError::unsupported(
                    "tool_choice.type",
                    "forcing tools other than \"function\"",
                ));
            }
            let function = obj
                .get("function")
                .ok_or_else(|| TranslateError::missing("tool_choice.function"))?
                .as_object()
                .ok_or_else(|| TranslateError::wrong_type("tool_choice.function", "an object"))?;
            let name = get_str(function, "name", "tool_choice.function")?;
            let mut out = Map::new();
            out.insert("type".into(), "tool".into());
            out.insert("name".into(), name.into());
            return Ok(out);
        }
        _ => {
            return Err(TranslateError::wrong_type(
                "tool_choice",
                "a string or an object",
            ))
        }
    };
    let mut out = Map::new();
    out.insert("type".into(), kind.into());
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Anthropic -> OpenAI
// ---------------------------------------------------------------------------------------

/// Translates an Anthropic Messages request body into an OpenAI Chat Completions request body.
pub fn anthropic_to_openai_chat(body: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    if let Some(model) = body.get("model") {
        out.insert("model".into(), model.clone());
    }

    let mut messages = Vec::new();
    if let Some(system) = present(body, "system") {
        let text = match system {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => {
                let mut texts = Vec::with_capacity(blocks.len());
                for (j, block) in blocks.iter().enumerate() {
                    let path = format!("system[{j}]");
                    let block = block
                        .as_object()
                        .ok_or_else(|| TranslateError::wrong_type(&path, "an object"))?;
                    match get_str(block, "type", &path)? {
                        "text" => texts.push(get_str(block, "text", &path)?),
                        other => {
                            return Err(TranslateError::unsupported(
                                format!("{path}.type"),
                                format!("system blocks of type {other:?}"),
                            ))
                        }
                    }
                }
                texts.join(JOIN)
            }
            _ => {
                return Err(TranslateError::wrong_type(
                    "system",
                    "a string or an array of text blocks",
                ))
            }
        };
        if !text.is_empty() {
            messages.push(json!({ "role": "system", "content": text }));
        }
    }

    for (i, message) in get_array(body, "messages", "messages")?.iter().enumerate() {
        let path = format!("messages[{i}]");
        let message = message
            .as_object()
            .ok_or_else(|| TranslateError::wrong_type(&path, "an object"))?;
        let content_path = format!("{path}.content");
        let content = message
            .get("content")
            .ok_or_else(|| TranslateError::missing(&content_path))?;
        match get_str(message, "role", &path)? {
            "user" => anthropic_user_to_openai(content, &content_path, &mut messages)?,
            "assistant" => messages.push(anthropic_assistant_to_openai(content, &content_path)?),
            other => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    format!("has unknown value {other:?}"),
                ))
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(max_tokens) = present(body, "max_tokens") {
        let max_tokens = max_tokens
            .as_u64()
            .ok_or_else(|| TranslateError::wrong_type("max_tokens", "a non-negative integer"))?;
        out.insert("max_tokens".into(), max_tokens.into());
    }
    if let Some(stop) = present(body, "stop_sequences") {
        match stop {
            Value::Array(items) if items.iter().all(Value::is_string) => {
                if !items.is_empty() {
                    out.insert("stop".into(), stop.clone());
                }
            }
            _ => {
                return Err(TranslateError::wrong_type(
                    "stop_sequences",
                    "an array of strings",
                ))
            }
        }
    }
    for key in ["temperature", "top_p"] {
        if let Some(value) = present(body, key) {
            out.insert(key.into(), value.clone());
        }
    }
    match present(body, "stream") {
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), true.into());
            // Anthropic streams always report usage; OpenAI only does when asked, and
            // the stream translator needs it for message_delta.
            out.insert("stream_options".into(), json!({ "include_usage": true }));
        }
        Some(Value::Bool(false)) => {
            out.insert("stream".into(), false.into());
        }
        Some(_) => return Err(TranslateError::wrong_type("stream", "a boolean")),
        None => {}
    }

    let tools = match present(body, "tools") {
        Some(tools) => anthropic_tools_to_openai(tools)?,
        None => Vec::new(),
    };
    // OpenAI rejects tool_choice and parallel_tool_calls when no tools are given.
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = present(body, "tool_choice") {
            let (choice, parallel) = anthropic_tool_choice_to_openai(choice)?;
            if let Some(choice) = choice {
                out.insert("tool_choice".into(), choice);
            }
            if !parallel {
                out.insert("parallel_tool_calls".into(), false.into());
            }
        }
    }

    if let Some(metadata) = present(body, "metadata") {
        if let Some(user) = metadata.get("user_id").and_then(Value::as_str) {
            out.insert("user".into(), user.into());
        }
    }
    // Deliberately dropped: top_k, thinking, service_tier and other Anthropic-only fields,
    // which OpenAI would reject as unrecognized arguments.
    Ok(out)
}

/// A user turn may mix tool results with ordinary content. OpenAI wants each result as its
/// own `tool` message right after the assistant's tool calls, so those go first and the
/// rest follows as one user message.
fn anthropic_user_to_openai(content: &Value, path: &str, messages: &mut Vec<Value>) -> Result<()> {
    let blocks = match content_blocks(content, path)? {
        Content::Text(s) => {
            messages.push(json!({ "role": "user", "content": s }));
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    // Images returned by tools cannot ride in a `tool` message (text only there), so they
    // are shown to the model in the user message that follows, ahead of the user's own parts.
    let mut tool_images = Vec::new();
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let (block_path, block) = block_object(block, path, j)?;
        match get_str(block, "type", &block_path)? {
            "text" => parts.push(text_part(get_str(block, "text", &block_path)?)),
            "image" => parts.push(anthropic_image_to_part(block, &block_path)?),
            "tool_result" => {
                let id = get_str(block, "tool_use_id", &block_path)?;
                let text = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(inner)) => {
                        let mut texts = Vec::new();
                        for (k, item) in inner.iter().enumerate() {
                            let item_path = format!("{block_path}.content[{k}]");
                            let item = item.as_object().ok_or_else(|| {
                                TranslateError::wrong_type(&item_path, "an object")
                            })?;
                            match get_str(item, "type", &item_path)? {
                                "text" => texts.push(get_str(item, "text", &item_path)?),
                                "image" => {
                                    tool_images.push(anthropic_image_to_part(item, &item_path)?)
                                }
                                other => {
                                    return Err(TranslateError::unsupported(
                                        format!("{item_path}.type"),
                                        format!("tool result blocks of type {other:?}"),
                                    ))
                                }
                            }
                        }
                        texts.join(JOIN)
                    }
                    Some(_) => {
                        return Err(TranslateError::wrong_type(
                            format!("{block_path}.content"),
                            "a string or an array of content blocks",
                        ))
                    }
                };
                messages.push(json!({ "role": "tool", "tool_call_id": id, "content": text }));
            }
            other => {
                return Err(TranslateError::unsupported(
                    format!("{block_path}.type"),
                    format!("user content blocks of type {other:?}"),
                ))
            }
        }
    }
    tool_images.append(&mut parts);
    let parts = tool_images;
    match parts.as_slice() {
        [] => {}
        // A single text part is sent as a plain string, which every OpenAI-compatible
        // server understands.
        [only] if only.get("type").and_then(Value::as_str) == Some("text") => {
            messages.push(json!({ "role": "user", "content": only["text"].clone() }));
        }
        _ => messages.push(json!({ "role": "user", "content": parts })),
    }
    Ok(())
}

fn text_part(text: &str) -> Value {
    json!({ "type": "text", "text": text })
}

fn anthropic_image_to_part(block: &Map<String, Value>, path: &str) -> Result<Value> {
    let source_path = format!("{path}.source");
    let source = block
        .get("source")
        .ok_or_else(|| TranslateError::missing(&source_path))?
        .as_object()
        .ok_or_else(|| TranslateError::wrong_type(&source_path, "an object"))?;
    let url = match get_str(source, "type", &source_path)? {
        "base64" => format!(
            "data:{};base64,{}",
            get_str(source, "media_type", &source_path)?,
            get_str(source, "data", &source_path)?
        ),
        "url" => get_str(source, "url", &source_path)?.to_owned(),
        other => {
            return Err(TranslateError::unsupported(
                format!("{source_path}.type"),
                format!("image sources of type {other:?}"),
            ))
        }
    };
    Ok(json!({ "type": "image_url", "image_url": { "url": url } }))
}

/// Anthropic message content: a plain string or a list of content blocks.
enum Content<'a> {
    Text(&'a str),
    Blocks(&'a [Value]),
}

fn content_blocks<'a>(content: &'a Value, path: &str) -> Result<Content<'a>> {
    match content {
        Value::String(s) => Ok(Content::Text(s)),
        Value::Array(blocks) => Ok(Content::Blocks(blocks)),
        _ => Err(TranslateError::wrong_type(
            path,
            "a string or an array of content blocks",
        )),
    }
}

/// Block `j` of a content list as an object, with its path for messages.
fn block_object<'a>(
    block: &'a Value,
    path: &str,
    j: usize,
) -> Result<(String, &'a Map<String, Value>)> {
    let block_path = format!("{path}[{j}]");
    match block.as_object() {
        Some(b) => Ok((block_path, b)),
        None => Err(TranslateError::wrong_type(&block_path, "an object")),
    }
}

fn anthropic_assistant_to_openai(content: &Value, path: &str) -> Result<Value> {
    let blocks = match content_blocks(content, path)? {
        Content::Text(s) => return Ok(json!({ "role": "assistant", "content": s })),
        Content::Blocks(blocks) => blocks,
    };
    // Text blocks of one assistant turn are consecutive pieces of the same output (split
    // around tool calls or citations), so they are concatenated without separators.
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let (block_path, block) = block_object(block, path, j)?;
        match get_str(block, "type", &block_path)? {
            "text" => text.push_str(get_str(block, "text", &block_path)?),
            "tool_use" => tool_calls.push(super::openai_tool_call(
                get_str(block, "id", &block_path)?,
                get_str(block, "name", &block_path)?,
                block.get("input"),
            )),
            // Chat Completions has no way to hand reasoning back to the model; the
            // signature-bound thinking blocks only matter to Anthropic itself.
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(TranslateError::unsupported(
                    format!("{block_path}.type"),
                    format!("assistant content blocks of type {other:?}"),
                ))
            }
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    if tool_calls.is_empty() {
        message.insert("content".into(), text.into());
    } else {
        // The reference gives `content: null` for a message that only calls tools.
        let content = if text.is_empty() {
            Value::Null
        } else {
            text.into()
        };
        message.insert("content".into(), content);
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    Ok(Value::Object(message))
}

fn anthropic_tools_to_openai(tools: &Value) -> Result<Vec<Value>> {
    let tools = tool_list(tools)?;
    let mut out = Vec::with_capacity(tools.len());
    for (path, tool) in tools {
        // Client tools have no type or `custom`; anything else is an Anthropic-hosted tool
        // (web search, code execution, computer use) that an OpenAI upstream cannot run.
        if let Some(kind) = present(tool, "type") {
            if kind.as_str() != Some("custom") {
                return Err(TranslateError::unsupported(
                    format!("{path}.type"),
                    format!("Anthropic server tools ({kind})"),
                ));
            }
        }
        let mut function = Map::new();
        function.insert("name".into(), get_str(tool, "name", &path)?.into());
        if let Some(description) = present(tool, "description") {
            function.insert("description".into(), description.clone());
        }
        let schema = present(tool, "input_schema")
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
        function.insert("parameters".into(), schema);
        out.push(json!({ "type": "function", "function": function }));
    }
    Ok(out)
}

/// Returns the OpenAI `tool_choice` (if any) and whether parallel tool calls stay allowed.
fn anthropic_tool_choice_to_openai(choice: &Value) -> Result<(Option<Value>, bool)> {
    let choice = choice
        .as_object()
        .ok_or_else(|| TranslateError::wrong_type("tool_choice", "an object"))?;
    let parallel = match present(choice, "disable_parallel_tool_use") {
        Some(Value::Bool(disable)) => !disable,
        Some(_) => {
            return Err(TranslateError::wrong_type(
                "tool_choice.disable_parallel_tool_use",
                "a boolean",
            ))
        }
        None => true,
    };
    let converted = match get_str(choice, "type", "tool_choice")? {
        "auto" => json!("auto"),
        "none" => json!("none"),
        "any" => json!("required"),
        "tool" => json!({
            "type": "function",
            "function": { "name": get_str(choice, "name", "tool_choice")? },
        }),
        other => {
            return Err(TranslateError::invalid(
                "tool_choice.type",
                format!("has unknown value {other:?}"),
            ))
        }
    };
    Ok((Some(converted), parallel))
}

// ---------------------------------------------------------------------------------------
// Field access helpers: every failure names the full path of the field.
// ---------------------------------------------------------------------------------------

/// A field that is present and not `null`: both APIs treat an explicit null as absent.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn first_present<'a>(
    obj: &'a Map<String, Value>,
    keys: &[&'static str],
) -> Option<(&'static str, &'a Value)> {
    keys.iter()
        .find_map(|&key| present(obj, key).map(|value| (key, value)))
}

fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str, parent: &str) -> Result<&'a str> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(TranslateError::missing(join_path(parent, key))),
        Some(_) => Err(TranslateError::wrong_type(
            join_path(parent, key),
            "a string",
        )),
    }
}

fn get_array<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a Vec<Value>> {
    match obj.get(key) {
        Some(Value::Array(items)) => Ok(items),
        None | Some(Value::Null) => Err(TranslateError::missing(path)),
        Some(_) => Err(TranslateError::wrong_type(path, "an array")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("fixture is not an object: {other}"),
        }
    }

    fn to_anthropic(body: Value) -> Value {
        Value::Object(openai_chat_to_anthropic(&obj(body), 4096).unwrap())
    }

    fn to_openai(body: Value) -> Value {
        Value::Object(anthropic_to_openai_chat(&obj(body)).unwrap())
    }

    fn to_anthropic_err(body: Value) -> TranslateError {
        openai_chat_to_anthropic(&obj(body), 4096).unwrap_err()
    }

    // Fixture follows the "Default" example of OpenAI's "Create chat completion" reference,
    // with a developer message and the sampling fields added.
    #[test]
    fn openai_text_chat_with_system_prompt() {
        let out = to_anthropic(json!({
            "model": "gpt-4.1",
            "messages": [
                {"role": "developer", "content": "You are a helpful assistant."},
                {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
                {"role": "user", "content": "Hello!"}
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "stream": true,
            "stream_options": {"include_usage": true},
            "frequency_penalty": 0.5,
            "presence_penalty": 0.1,
            "logprobs": true,
            "top_logprobs": 2,
            "response_format": {"type": "text"},
            "seed": 42,
            "n": 1,
            "user": "user-1234",
            "metadata": {"tag": "x"}
        }));
        assert_eq!(
            out,
            json!({
                "model": "gpt-4.1",
                "system": "You are a helpful assistant.\n\nAnswer briefly.",
                "messages": [{"role": "user", "content": "Hello!"}],
                "max_tokens": 4096,
                "temperature": 0.2,
                "top_p": 0.9,
                "stream": true,
                "metadata": {"user_id": "user-1234"}
            })
        );
    }

    #[test]
    fn max_tokens_sources_in_order_of_preference() {
        let base = |extra: Value| {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
                body.extend(extra);
            }
            to_anthropic(body)["max_tokens"].clone()
        };
        assert_eq!(base(json!({})), json!(4096));
        assert_eq!(base(json!({"max_tokens": 100})), json!(100));
        assert_eq!(
            base(json!({"max_completion_tokens": 200, "max_tokens": 100})),
            json!(200)
        );
        assert_eq!(
            base(json!({"max_completion_tokens": null, "max_tokens": 100})),
            json!(100)
        );
        let err = to_anthropic_err(json!({"messages": [], "max_tokens": -1}));
        assert_eq!(err.field(), "max_tokens");
    }

    #[test]
    fn stop_string_or_array_becomes_stop_sequences() {
        let msgs = json!([{"role": "user", "content": "count"}]);
        let out = to_anthropic(json!({"messages": msgs, "stop": "\n\n"}));
        assert_eq!(out["stop_sequences"], json!(["\n\n"]));
        let out = to_anthropic(json!({"messages": msgs, "stop": ["END", "STOP"]}));
        assert_eq!(out["stop_sequences"], json!(["END", "STOP"]));
        let out = to_anthropic(json!({"messages": msgs, "stop": null}));
        assert!(out.get("stop_sequences").is_none());
        let err = to_anthropic_err(json!({"messages": msgs, "stop": [1]}));
        assert_eq!(
            err.to_string(),
            "stop must be a string or an array of strings"
        );
    }

    // Fixture follows the "Image input" example of OpenAI's "Create chat completion"
    // reference; the expected blocks follow the base64 and URL image sources of
    // Anthropic's "Vision" guide.
    #[test]
    fn multi_part_user_message_with_url_and_base64_images() {
        let out = to_anthropic(json!({
            "model": "gpt-4.1",
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in these images?"},
                    {"type": "image_url", "image_url": {
                        "url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg",
                        "detail": "high"
                    }},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}}
                ]
            }],
            "max_tokens": 300
        }));
        assert_eq!(
            out["messages"],
            json!([{
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in these images?"},
                    {"type": "image", "source": {
                        "type": "url",
                        "url": "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
                    }},
                    {"type": "image", "source": {
                        "type": "base64",
                        "media_type": "image/png",
                        "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
                    }}
                ]
            }])
        );
    }

    #[test]
    fn bad_image_urls_are_rejected_with_their_path() {
        let body = |url: &str| {
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": url}}
            ]}]})
        };
        let err = to_anthropic_err(body("ftp://example.com/a.png"));
        assert_eq!(err.field(), "messages[0].content[1].image_url.url");
        let err = to_anthropic_err(body("data:image/png,rawbytes"));
        assert!(matches!(err, TranslateError::Unsupported { .. }));
        let err = to_anthropic_err(body("data:image/png;base64"));
        assert!(err.to_string().contains("without a comma"));
        let err = to_anthropic_err(json!({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "...", "format": "wav"}}
        ]}]}));
        assert_eq!(err.field(), "messages[0].content[0].type");
    }

    // Fixture follows the "Functions" example of OpenAI's "Create chat completion"
    // reference and the tool-calling flow of OpenAI's "Function calling" guide (assistant
    // `tool_calls`, then one `tool` message per call); the expected output follows the
    // `tool_use` / `tool_result` shapes of Anthropic's "Tool use" guide.
    #[test]
    fn tool_call_conversation_openai_to_anthropic() {
        let out = to_anthropic(json!({
            "model": "gpt-4.1",
            "messages": [
                {"role": "system", "content": "You can look up the weather."},
                {"role": "user", "content": "What's the weather like in Boston and Paris today?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_abc123", "type": "function", "function": {
                        "name": "get_current_weather",
                        "arguments": "{\"location\": \"Boston, MA\"}"
                    }},
                    {"id": "call_def456", "type": "function", "function": {
                        "name": "get_current_weather",
                        "arguments": "{\"location\": \"Paris, France\", \"unit\": \"celsius\"}"
                    }}
                ]},
                {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"},
                {"role": "tool", "tool_call_id": "call_def456", "content": [{"type": "text", "text": "18 C, cloudy"}]},
                {"role": "user", "content": "Thanks! Which is warmer?"}
            ],
            "tools": [{
                "type": "function",
                "function": {
                    "name": "get_current_weather",
                    "description": "Get the current weather in a given location",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                        },
                        "required": ["location"]
                    },
                    "strict": false
                }
            }, {
                "type": "function",
                "function": {"name": "get_time"}
            }],
            "tool_choice": "required",
            "parallel_tool_calls": false
        }));
        assert_eq!(
            out,
            json!({
                "model": "gpt-4.1",
                "system": "You can look up the weather.",
                "max_tokens": 4096,
                "messages": [
                    {"role": "user", "content": "What's the weather like in Boston and Paris today?"},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                         "input": {"location": "Boston, MA"}},
                        {"type": "tool_use", "id": "call_def456", "name": "get_current_weather",
                         "input": {"location": "Paris, France", "unit": "celsius"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_abc123",
                         "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"},
                        {"type": "tool_result", "tool_use_id": "call_def456",
                         "content": [{"type": "text", "text": "18 C, cloudy"}]},
                        {"type": "text", "text": "Thanks! Which is warmer?"}
                    ]}
                ],
                "tools": [{
                    "name": "get_current_weather",
                    "description": "Get the current weather in a given location",
                    "input_schema": {
                        "type": "object",
                        "properties": {
                            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                        },
                        "required": ["location"]
                    }
                }, {
                    "name": "get_time",
                    "input_schema": {"type": "object", "properties": {}}
                }],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
            })
        );
    }

    #[test]
    fn tool_choice_variants() {
        let choice = |tool_choice: Value, parallel: Value| {
            to_anthropic(json!({
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": tool_choice,
                "parallel_tool_calls": parallel
            }))
            .get("tool_choice")
            .cloned()
        };
        assert_eq!(
            choice(json!("auto"), json!(null)),
            Some(json!({"type": "auto"}))
        );
        assert_eq!(
            choice(json!("none"), json!(false)),
            Some(json!({"type": "none"}))
        );
        assert_eq!(choice(json!(null), json!(true)), None);
        assert_eq!(
            choice(json!(null), json!(false)),
            Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
        );
        assert_eq!(
            choice(
                json!({"type": "function", "function": {"name": "f"}}),
                json!(null)
            ),
            Some(json!({"type": "tool", "name": "f"}))
        );
        // Without tools, tool_choice and parallel_tool_calls are dropped.
        let out = to_anthropic(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "tool_choice": "auto", "parallel_tool_calls": false
        }));
        assert!(out.get("tool_choice").is_none() && out.get("tools").is_none());
        let err = to_anthropic_err(json!({
            "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "sometimes"
        }));
        assert_eq!(err.field(), "tool_choice");
    }

    #[test]
    fn invalid_tool_arguments_json_is_an_error_naming_the_field() {
        let err = to_anthropic_err(json!({
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "", "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\": 1"}
                }]}
            ]
        }));
        assert_eq!(err.field(), "messages[2].tool_calls[0].function.arguments");
        assert!(
            err.to_string()
                .starts_with("messages[2].tool_calls[0].function.arguments is not valid JSON"),
            "{err}"
        );
        let err = to_anthropic_err(json!({"messages": [{"role": "assistant", "tool_calls": [{
            "id": "c", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}
        }]}]}));
        assert!(matches!(err, TranslateError::Invalid { .. }), "{err}");
    }

    #[test]
    fn empty_tool_arguments_mean_an_empty_object() {
        let out = to_anthropic(
            json!({"messages": [{"role": "assistant", "content": "Checking.", "tool_calls": [{
                "id": "c", "type": "function", "function": {"name": "now", "arguments": ""}
            }]}]}),
        );
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "c", "name": "now", "input": {}}
            ])
        );
    }

    #[test]
    fn n_other_than_one_is_rejected() {
        let err = to_anthropic_err(json!({"messages": [], "n": 2}));
        assert_eq!(err.field(), "n");
        assert!(matches!(err, TranslateError::Unsupported { .. }));
        let err = to_anthropic_err(json!({"messages": [], "n": "two"}));
        assert!(matches!(err, TranslateError::WrongType { .. }));
    }

    #[test]
    fn consecutive_same_role_messages_are_merged() {
        let out = to_anthropic(json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "b"}]},
            {"role": "user", "content": "third"}
        ]}));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "first"}, {"type": "text", "text": "second"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "a"}, {"type": "text", "text": "b"}
                ]},
                {"role": "user", "content": "third"}
            ])
        );
    }

    #[test]
    fn tool_results_are_moved_to_the_front_of_their_user_turn() {
        let out = to_anthropic(json!({"messages": [
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]},
            {"role": "user", "content": "(note before the result)"},
            {"role": "tool", "tool_call_id": "t1", "content": "done"}
        ]}));
        assert_eq!(
            out["messages"][1]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "t1", "content": "done"},
                {"type": "text", "text": "(note before the result)"}
            ])
        );
    }

    #[test]
    fn malformed_openai_requests_name_the_field() {
        let cases = [
            (json!({}), "messages"),
            (json!({"messages": {}}), "messages"),
            (json!({"messages": ["hi"]}), "messages[0]"),
            (json!({"messages": [{"content": "hi"}]}), "messages[0].role"),
            (
                json!({"messages": [{"role": "robot", "content": "hi"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "system", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}]}),
                "messages[0].tool_calls[0].function.name",
            ),
            (
                json!({"messages": [], "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (json!({"messages": [], "functions": []}), "functions"),
            (json!({"messages": [], "user": 7}), "user"),
        ];
        for (body, field) in cases {
            assert_eq!(to_anthropic_err(body.clone()).field(), field, "{body}");
        }
    }

    // Fixture follows the "Tool use" and "Vision" guides and the "Messages" reference of
    // Anthropic's API (system as text blocks, tool_use / tool_result, base64 and URL images).
    #[test]
    fn anthropic_tool_conversation_to_openai() {
        let out = to_openai(json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": [
                {"type": "text", "text": "You are a weather bot."},
                {"type": "text", "text": "Be concise.", "cache_control": {"type": "ephemeral"}}
            ],
            "tools": [{
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "input_schema": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"]
                }
            }],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}},
                    {"type": "text", "text": "What's the weather where this photo was taken?"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "The photo shows SF.", "signature": "sig"},
                    {"type": "text", "text": "I'll check the weather in San Francisco."},
                    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
                     "input": {"location": "San Francisco, CA"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                     "content": [{"type": "text", "text": "15 degrees"}, {"type": "text", "text": "foggy"}]},
                    {"type": "text", "text": "And tomorrow?"}
                ]}
            ],
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 0.5,
            "top_k": 40,
            "stream": true,
            "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"}
        }));
        assert_eq!(
            out,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "messages": [
                    {"role": "system", "content": "You are a weather bot.\n\nBe concise."},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/map.png"}},
                        {"type": "text", "text": "What's the weather where this photo was taken?"}
                    ]},
                    {"role": "assistant", "content": "I'll check the weather in San Francisco.", "tool_calls": [{
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"}
                    }]},
                    {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees\n\nfoggy"},
                    {"role": "user", "content": "And tomorrow?"}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "get_weather",
                    "description": "Get the current weather in a given location",
                    "parameters": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                        "required": ["location"]
                    }
                }}],
                "tool_choice": "required",
                "parallel_tool_calls": false,
                "stop": ["\n\nHuman:"],
                "temperature": 0.5,
                "stream": true,
                "stream_options": {"include_usage": true},
                "user": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"
            })
        );
    }

    #[test]
    fn anthropic_simple_text_and_tool_choice_variants() {
        let out = to_openai(json!({
            "model": "claude-haiku-4-5", "max_tokens": 10, "system": "Be nice.",
            "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/s.png"}}
                ]}]}
            ],
            "stream": false
        }));
        assert_eq!(
            out,
            json!({
                "model": "claude-haiku-4-5", "max_tokens": 10, "stream": false,
                "messages": [
                    {"role": "system", "content": "Be nice."},
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "t", "content": ""},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": "https://example.com/s.png"}}
                    ]}
                ]
            })
        );
        let choice = |tool_choice: Value| {
            to_openai(json!({
                "messages": [], "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "tool_choice": tool_choice
            }))
        };
        assert_eq!(choice(json!({"type": "auto"}))["tool_choice"], "auto");
        assert_eq!(choice(json!({"type": "none"}))["tool_choice"], "none");
        let out = choice(json!({"type": "tool", "name": "f"}));
        assert_eq!(
            out["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert!(out.get("parallel_tool_calls").is_none());
    }

    #[test]
    fn malformed_anthropic_requests_name_the_field() {
        let err = |body: Value| anthropic_to_openai_chat(&obj(body)).unwrap_err();
        assert_eq!(err(json!({})).field(), "messages");
        assert_eq!(
            err(json!({"messages": [{"role": "user"}]})).field(),
            "messages[0].content"
        );
        assert_eq!(
            err(json!({"messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": ""}}
            ]}]}))
            .field(),
            "messages[0].content[0].type"
        );
        assert_eq!(
            err(json!({"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}))
                .field(),
            "tools[0].type"
        );
        assert_eq!(
            err(json!({"messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "file", "file_id": "f"}}
            ]}]}))
            .field(),
            "messages[0].content[0].source.type"
        );
        assert_eq!(
            err(json!({"messages": [], "stop_sequences": "x"})).field(),
            "stop_sequences"
        );
    }
}
