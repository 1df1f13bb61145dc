//! Round-trip tests through the public API: translating one way and back must keep the
//! meaning of requests, responses and streams. The per-direction golden fixtures live in
//! each module's unit tests, which travel with the module; this file only uses the crate's
//! public items (in the gateway it would import `crate::translate::*` paths instead).

use modelgate::translate::{
    anthropic_error_to_openai, anthropic_response_to_openai, anthropic_to_openai_chat,
    openai_chat_to_anthropic, openai_error_to_anthropic, openai_response_to_anthropic,
    AnthropicToOpenAiStream, OpenAiToAnthropicStream, SseParser,
};
use serde_json::{json, Map, Value};

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

// Request follows the tool-calling flow of OpenAI's "Function calling" guide.
#[test]
fn openai_request_survives_a_round_trip_through_anthropic() {
    let original = json!({
        "model": "some-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "Where is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}}
            ]},
            {"role": "assistant", "content": "Looking it up.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "locate", "arguments": "{\"hint\":\"tower\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Paris"},
            {"role": "assistant", "content": "Paris."}
        ],
        "tools": [{"type": "function", "function": {
            "name": "locate", "description": "Find a place",
            "parameters": {"type": "object", "properties": {"hint": {"type": "string"}}}
        }}],
        "tool_choice": {"type": "function", "function": {"name": "locate"}},
        "parallel_tool_calls": false,
        "stop": ["END"],
        "max_tokens": 64,
        "temperature": 0.7,
        "stream": true,
        "user": "u-1"
    });
    let anthropic = openai_chat_to_anthropic(&obj(original.clone()), 1024).unwrap();
    let back = Value::Object(anthropic_to_openai_chat(&anthropic).unwrap());
    let mut expected = original;
    // The only difference: include_usage is added for streams, because Anthropic always
    // reports usage and the stream translator relies on OpenAI doing the same.
    expected["stream_options"] = json!({"include_usage": true});
    assert_eq!(back, expected);
}

// Response follows the example response of Anthropic's "Messages" reference.
#[test]
fn anthropic_response_survives_a_round_trip_through_openai() {
    let original = json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "rust", "n": 3}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 7}
    });
    let openai = anthropic_response_to_openai(&original, 1_700_000_000).unwrap();
    let back = openai_response_to_anthropic(&openai).unwrap();
    let mut expected = original;
    expected["id"] = json!("msg_chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL");
    assert_eq!(back, expected);
}

#[test]
fn error_bodies_survive_a_round_trip() {
    let original =
        br#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"}}"#;
    let openai = anthropic_error_to_openai(404, original);
    let back: Value = serde_json::from_slice(&openai_error_to_anthropic(404, &openai)).unwrap();
    assert_eq!(back, serde_json::from_slice::<Value>(original).unwrap());
}

/// What an OpenAI client would assemble from a chunk stream: text, tool calls by index,
/// finish reason, usage, and whether `[DONE]` came last.
#[derive(Debug, Default, PartialEq)]
struct Assembled {
    text: String,
    tools: Vec<(String, String, String)>,
    finish_reason: Option<String>,
    usage: Option<(u64, u64)>,
    done_last: bool,
}

fn assemble(bytes: &[u8]) -> Assembled {
    let mut parser = SseParser::new();
    let mut events = parser.push(bytes);
    events.extend(parser.finish());
    let mut out = Assembled::default();
    for event in &events {
        out.done_last = event.data == "[DONE]";
        if out.done_last {
            continue;
        }
        let chunk: Value = serde_json::from_str(&event.data).unwrap();
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            out.usage = Some((
                usage["prompt_tokens"].as_u64().unwrap(),
                usage["completion_tokens"].as_u64().unwrap(),
            ));
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(text) = choice["delta"]["content"].as_str() {
            out.text.push_str(text);
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if out.tools.len() <= index {
                out.tools.resize(index + 1, Default::default());
            }
            let tool = &mut out.tools[index];
            if let Some(id) = call["id"].as_str() {
                tool.0 = id.to_owned();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                tool.1 = name.to_owned();
            }
            if let Some(arguments) = call["function"]["arguments"].as_str() {
                tool.2.push_str(arguments);
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            out.finish_reason = Some(reason.to_owned());
        }
    }
    out
}

// Chunks follow OpenAI's "The chat completion chunk object" reference and the streamed
// tool-call deltas of its "Function calling" guide.
#[test]
fn openai_stream_survives_a_round_trip_through_anthropic_events() {
    let chunks = [
        json!({"delta": {"role": "assistant", "content": ""}}),
        json!({"delta": {"content": "Ché"}}),
        json!({"delta": {"content": "ck ✓"}}),
        json!({"delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
            "function": {"name": "lookup", "arguments": ""}}]}}),
        json!({"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"k\":"}}]}}),
        json!({"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"v\"}"}}]}}),
        json!({"delta": {"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
            "function": {"name": "noop", "arguments": "{}"}}]}}),
        json!({"delta": {}, "finish_reason": "tool_calls"}),
    ];
    let mut input = String::new();
    for chunk in &chunks {
        let mut choice = chunk.clone();
        choice["index"] = json!(0);
        let full = json!({"id": "chatcmpl-9", "object": "chat.completion.chunk",
            "created": 1, "model": "gpt", "choices": [choice]});
        input.push_str(&format!("data: {full}\n\n"));
    }
    input.push_str("data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":22,\"total_tokens\":33}}\n\n");
    input.push_str("data: [DONE]\n\n");

    // Pipe OpenAI -> Anthropic -> OpenAI in odd-sized pieces, forwarding each output
    // piece as soon as it is produced, as the gateway would.
    let mut to_anthropic = OpenAiToAnthropicStream::new("gpt", "hint");
    let mut to_openai = AnthropicToOpenAiStream::new("hint", 1);
    let mut output = Vec::new();
    for piece in input.as_bytes().chunks(7) {
        let middle = to_anthropic.push(piece);
        output.extend(to_openai.push(&middle));
    }
    let middle = to_anthropic.finish();
    output.extend(to_openai.push(&middle));
    output.extend(to_openai.finish());

    let direct = assemble(input.as_bytes());
    let round_trip = assemble(&output);
    assert_eq!(round_trip, direct);
    assert_eq!(round_trip.text, "Chéck ✓");
    assert_eq!(round_trip.tools.len(), 2);
    assert!(round_trip.done_last);
    assert_eq!(to_anthropic.usage(), Some((11, 22)));
    assert_eq!(to_openai.usage(), Some((11, 22)));
}
