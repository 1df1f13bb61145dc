use super::*;
use proptest::prelude::*;

fn redact(config: Value) -> Redact {
    Redact::compile(&config).expect("valid config")
}

fn key_rule() -> Redact {
    redact(json!({"patterns": [{"pattern": "sk-[a-z0-9]{8}", "replacement": "[KEY]"}]}))
}

fn openai_stream(pieces: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
        write_event(&mut out, None, &chunk.to_string());
        if i + 1 == pieces.len() {
            let last = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            write_event(&mut out, None, &last.to_string());
        }
    }
    write_event(&mut out, None, "[DONE]");
    out
}

fn anthropic_stream(pieces: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut event = |name: &str, data: Value| write_event(&mut out, Some(name), &data.to_string());
    event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "m", "content": []}}),
    );
    event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    for piece in pieces {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        );
    }
    event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    out
}

/// Runs bytes through a redactor in the given byte chunks; returns the events sent on.
fn run(r: &Redact, op: Operation, bytes: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
    let mut s = StreamRedactor::new(vec![r.stage()], op);
    let mut out = Vec::new();
    let mut last = 0;
    for &cut in cuts.iter().chain([bytes.len()].iter()) {
        let cut = cut.clamp(last, bytes.len());
        out.extend(s.push(&bytes[last..cut]));
        last = cut;
    }
    out.extend(s.finish());
    let mut parser = SseParser::new();
    let mut events = parser.push(&out);
    events.extend(parser.finish());
    events
}

/// The answer's text as the client assembles it.
fn text_of(events: &[SseEvent], op: Operation) -> String {
    let mut text = String::new();
    for e in events {
        let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
            continue;
        };
        match op {
            Operation::Chat => {
                for c in v["choices"].as_array().into_iter().flatten() {
                    text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
                }
            }
            Operation::Completion => {
                for c in v["choices"].as_array().into_iter().flatten() {
                    text.push_str(c["text"].as_str().unwrap_or(""));
                }
            }
            Operation::Messages => {
                if v["type"] == "content_block_delta" {
                    text.push_str(v["delta"]["text"].as_str().unwrap_or(""));
                }
                if v["type"] == "content_block_start" {
                    text.push_str(v["content_block"]["text"].as_str().unwrap_or(""));
                }
            }
            Operation::Responses => {
                if v["type"] == "response.output_text.delta" {
                    text.push_str(v["delta"].as_str().unwrap_or(""));
                }
            }
            Operation::Embedding
            | Operation::CountTokens
            | Operation::Transcription
            | Operation::Translation
            | Operation::Speech
            | Operation::Rerank
            | Operation::Moderation
            | Operation::ImageGeneration => {}
        }
    }
    text
}

#[test]
fn whole_answers_in_every_shape() {
    let r = key_rule();
    let mut chat = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "use sk-abcdef12 now"}}]});
    r.redact_body(&mut chat, Operation::Chat);
    assert_eq!(chat["choices"][0]["message"]["content"], "use [KEY] now");
    let mut completion = json!({"choices": [{"index": 0, "text": "sk-abcdef12"}]});
    r.redact_body(&mut completion, Operation::Completion);
    assert_eq!(completion["choices"][0]["text"], "[KEY]");
    let mut messages = json!({"content": [{"type": "text", "text": "a sk-abcdef12"}, {"type": "tool_use", "input": {"k": "sk-abcdef12"}}]});
    r.redact_body(&mut messages, Operation::Messages);
    assert_eq!(messages["content"][0]["text"], "a [KEY]");
    // Tool arguments are the model's structured output, not answer text.
    assert_eq!(messages["content"][1]["input"]["k"], "sk-abcdef12");
    let mut responses = json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "sk-abcdef12!"}]}]});
    r.redact_body(&mut responses, Operation::Responses);
    assert_eq!(responses["output"][0]["content"][0]["text"], "[KEY]!");
}

#[test]
fn an_openai_match_split_across_two_events_is_replaced() {
    let bytes = openai_stream(&["my key is sk-ab", "cdef12 ok"]);
    let events = run(&key_rule(), Operation::Chat, &bytes, &[]);
    assert_eq!(text_of(&events, Operation::Chat), "my key is [KEY] ok");
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    // The held text rode in the finish chunk, before [DONE].
    let finish = &events[events.len() - 2];
    assert!(
        finish.data.contains("\"finish_reason\":\"stop\""),
        "{}",
        finish.data
    );
}

#[test]
fn an_anthropic_match_split_across_two_events_is_replaced_before_the_block_stops() {
    let bytes = anthropic_stream(&["key: sk-abcd", "ef12", " done"]);
    let events = run(&key_rule(), Operation::Messages, &bytes, &[]);
    assert_eq!(text_of(&events, Operation::Messages), "key: [KEY] done");
    let stop = events
        .iter()
        .position(|e| e.event.as_deref() == Some("content_block_stop"))
        .expect("stop event");
    let last_text = events
        .iter()
        .rposition(|e| e.event.as_deref() == Some("content_block_delta"))
        .expect("a delta");
    assert!(last_text < stop);
    assert_eq!(
        events.last().and_then(|e| e.event.as_deref()),
        Some("message_stop")
    );
}

#[test]
fn text_held_at_a_cut_off_stream_is_flushed_at_finish() {
    let mut bytes = Vec::new();
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "tail text"}, "finish_reason": null}]});
    write_event(&mut bytes, None, &chunk.to_string());
    let events = run(&key_rule(), Operation::Chat, &bytes, &[]);
    assert_eq!(text_of(&events, Operation::Chat), "tail text");
    assert_eq!(events.len(), 2);
    assert_eq!(
        serde_json::from_str::<Value>(&events[1].data).unwrap_or_default()["id"],
        "c"
    );
}

#[test]
fn no_more_than_the_window_is_held_back() {
    let r = redact(json!({"patterns": [{"pattern": "zz"}], "window_chars": 4}));
    let bytes = openai_stream(&["abcdefgh"]);
    let mut s = StreamRedactor::new(vec![r.stage()], Operation::Chat);
    let first_event_end = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(0, |p| p + 2);
    let out = s.push(&bytes[..first_event_end]);
    let mut parser = SseParser::new();
    let events = parser.push(&out);
    assert_eq!(text_of(&events, Operation::Chat), "abcd");
}

#[test]
fn two_redact_steps_chain() {
    let a = key_rule();
    let b = redact(json!({"patterns": [{"pattern": r"\[KEY\]", "replacement": "<gone>"}]}));
    let mut s = StreamRedactor::new(vec![a.stage(), b.stage()], Operation::Chat);
    let mut out = s.push(&openai_stream(&["x sk-abc", "def12 y"]));
    out.extend(s.finish());
    let mut parser = SseParser::new();
    let events = parser.push(&out);
    assert_eq!(text_of(&events, Operation::Chat), "x <gone> y");
}

#[test]
fn responses_stream_deltas_and_done_text() {
    let mut bytes = Vec::new();
    for d in ["a sk-abcde", "f12 b"] {
        let e = json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": d});
        write_event(
            &mut bytes,
            Some("response.output_text.delta"),
            &e.to_string(),
        );
    }
    let done = json!({"type": "response.output_text.done", "output_index": 0, "content_index": 0, "text": "a sk-abcdef12 b"});
    write_event(
        &mut bytes,
        Some("response.output_text.done"),
        &done.to_string(),
    );
    let events = run(&key_rule(), Operation::Responses, &bytes, &[]);
    assert_eq!(text_of(&events, Operation::Responses), "a [KEY] b");
    let done = events.last().map(|e| e.data.clone()).unwrap_or_default();
    assert!(done.contains("\"text\":\"a [KEY] b\""), "{done}");
}

#[test]
fn config_mistakes_are_named() {
    let problems = Redact::compile(&json!({"patterns": [], "window_chars": 0})).unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["patterns", "window_chars"]);
    let problems =
        Redact::compile(&json!({"patterns": [{"pattern": "x", "with": "y"}]})).unwrap_err();
    assert_eq!(problems[0].field, "patterns[0].with");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// For any split of the text into events and of the bytes into reads, the text the client
    /// assembles equals redacting the whole text at once (every match is shorter than the
    /// window).
    #[test]
    fn any_split_gives_the_whole_text_redaction(
        text in "[abcs0-9e rtéx]{0,80}",
        splits in proptest::collection::vec(0usize..80, 0..8),
        byte_cuts in proptest::collection::vec(0usize..4000, 0..6),
        window in 7usize..20,
        anthropic in any::<bool>(),
    ) {
        let r = redact(json!({"patterns": [
            {"pattern": "a{1,3}b", "replacement": "<$0>"},
            {"pattern": "[0-9]{3}", "replacement": "#"},
            {"pattern": "secret", "replacement": "[S]"},
            {"pattern": "sé", "replacement": ""},
        ], "window_chars": window}));
        let chars: Vec<char> = text.chars().collect();
        let mut cuts: Vec<usize> = splits.into_iter().map(|s| s.min(chars.len())).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for cut in cuts.into_iter().chain([chars.len()]) {
            pieces.push(chars[last..cut].iter().collect::<String>());
            last = cut;
        }
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let (op, bytes) = if anthropic {
            (Operation::Messages, anthropic_stream(&refs))
        } else {
            (Operation::Chat, openai_stream(&refs))
        };
        let mut byte_cuts = byte_cuts;
        byte_cuts.sort_unstable();
        let events = run(&r, op, &bytes, &byte_cuts);
        let expected = r.rules.replace_all(&text).into_owned();
        prop_assert_eq!(text_of(&events, op), expected);
    }
}

#[test]
fn each_choice_of_a_completions_stream_is_its_own_channel() {
    let mut bytes = Vec::new();
    for (index, piece) in [
        (0, "a sk-abc"),
        (1, "b sk-xyz"),
        (0, "def12 A"),
        (1, "uvw34 B"),
    ] {
        let chunk = json!({"id": "c", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"index": index, "text": piece, "finish_reason": null}]});
        write_event(&mut bytes, None, &chunk.to_string());
    }
    write_event(&mut bytes, None, "[DONE]");
    let events = run(&key_rule(), Operation::Completion, &bytes, &[]);
    let mut per_choice = [String::new(), String::new()];
    for e in &events {
        let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
            continue;
        };
        for c in v["choices"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap_or(9) as usize;
            per_choice[i].push_str(c["text"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(per_choice, ["a [KEY] A", "b [KEY] B"]);
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
}
