//! The cost of the middleware pipelines on the request path.
//!
//! Request phase: `set-params` + `system-prompt` + `guard` (three deny patterns, one redaction,
//! a length limit) on a ~200 KB coding-agent chat body (built as bench/run.py builds its big
//! body), against the parse + serialize the proxy does for any rewritten body. Response phase:
//! `redact` over a 20-chunk OpenAI stream, whole and up to its first text event. Each request
//! step is also timed alone: regular-expression scans dominate, and their cost depends on the
//! patterns (a literal is found with a vectorised search; a case-insensitive alternation or a
//! class-based pattern runs the lazy DFA over every byte).
//!
//! `cargo bench --bench middleware`

use std::collections::BTreeMap;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

use modelgate::middleware::{Body, MiddlewareCall, Pipelines, RequestFacts};
use modelgate::routing::model::Operation;

fn call(name: &str, config: Value) -> MiddlewareCall {
    MiddlewareCall {
        name: name.into(),
        config_type: None,
        config: Some(config),
        config_id: None,
    }
}

fn big_body() -> Vec<u8> {
    const WORDS: [&str; 18] = [
        "fn",
        "let",
        "mut",
        "self",
        "match",
        "Some(x)",
        "=>",
        "return",
        "impl",
        "struct",
        "pub",
        "async",
        "await",
        "Result<T, E>",
        "\"quoted\"",
        "// comment",
        "{",
        "}",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut messages = vec![json!({
        "role": "system",
        "content": "You are a coding agent. Follow the style guide.",
    })];
    let mut size = 0;
    while size < 200 * 1024 {
        let lines: Vec<String> = (0..40)
            .map(|_| {
                let words: Vec<&str> = (0..12).map(|_| WORDS[rng.usize(..WORDS.len())]).collect();
                words.join(" ")
            })
            .collect();
        let content = lines.join("\n");
        size += serde_json::to_string(&content).map_or(0, |s| s.len());
        let role = if messages.len() % 2 == 1 {
            "user"
        } else {
            "assistant"
        };
        messages.push(json!({"role": role, "content": content}));
    }
    serde_json::to_vec(&json!({"model": "bench", "messages": messages})).unwrap_or_default()
}

fn request_pipelines() -> Pipelines {
    Pipelines::build(
        &[
            call("set-params", json!({"set": {"temperature": 0.2}, "defaults": {"max_tokens": 1024}})),
            call("system-prompt", json!({"text": "Answer in English.", "position": "prepend"})),
            call("guard", json!({
                "deny": ["(?i)ignore (all )?previous instructions", "BEGIN RSA PRIVATE KEY", "rm -rf /"],
                "redact": [{"pattern": r"\b\d{3}-\d{2}-\d{4}\b", "replacement": "[SSN]"}],
                "max_input_chars": 1_000_000
            })),
        ],
        &[],
        &[],
        &BTreeMap::new(),
    )
    .unwrap_or_default()
}

fn stream_body() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..20 {
        let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [{"index": 0, "delta": {"content": format!("token {i} of the answer, sk-abcdef{i:02} ")},
            "finish_reason": if i == 19 { json!("stop") } else { Value::Null }}]});
        out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn bench(c: &mut Criterion) {
    let body = big_body();
    let pipelines = request_pipelines();
    assert!(pipelines.has_request(), "the pipelines must build");
    let facts = RequestFacts {
        operation: Operation::Chat,
        metadata: None,
    };
    let mut g = c.benchmark_group(format!("request phase ({} bytes)", body.len()));
    g.bench_function("parse+serialize", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&body)).unwrap_or_default();
            serde_json::to_vec(&v).unwrap_or_default()
        })
    });
    g.bench_function("body fields read + written", |b| {
        b.iter(|| {
            Body::parse(black_box(body.as_slice()))
                .map(|v| v.to_vec())
                .unwrap_or_default()
        })
    });
    g.bench_function("set-params+system-prompt+guard, read to written", |b| {
        b.iter(|| {
            let Ok(mut v) = Body::parse(black_box(body.as_slice())) else {
                return Vec::new();
            };
            let _ = pipelines.run_request(&mut v, &facts);
            v.to_vec()
        })
    });
    // Each step alone, read to written: what a pipeline's cost is made of.
    for (label, calls) in [
        (
            "set-params",
            vec![call(
                "set-params",
                json!({"set": {"temperature": 0.2}, "defaults": {"max_tokens": 1024}}),
            )],
        ),
        (
            "system-prompt",
            vec![call("system-prompt", json!({"text": "Answer in English."}))],
        ),
        (
            "guard deny: 3 patterns, one case-insensitive",
            vec![call(
                "guard",
                json!({"deny": ["(?i)ignore (all )?previous instructions", "BEGIN RSA PRIVATE KEY", "rm -rf /"]}),
            )],
        ),
        (
            "guard deny: one literal",
            vec![call(
                "guard",
                json!({"deny": ["ignore previous instructions"]}),
            )],
        ),
        (
            "guard redact: SSN pattern",
            vec![call(
                "guard",
                json!({"redact": [{"pattern": r"\b\d{3}-\d{2}-\d{4}\b", "replacement": "[SSN]"}]}),
            )],
        ),
        (
            "guard max_input_chars",
            vec![call("guard", json!({"max_input_chars": 1_000_000}))],
        ),
    ] {
        let p = Pipelines::build(&calls, &[], &[], &BTreeMap::new()).expect("valid");
        g.bench_function(label, |b| {
            b.iter(|| {
                let Ok(mut v) = Body::parse(black_box(body.as_slice())) else {
                    return Vec::new();
                };
                let _ = p.run_request(&mut v, &facts);
                v.to_vec()
            })
        });
    }
    g.finish();

    let redact = Pipelines::build(
        &[],
        &[call(
            "redact",
            json!({"patterns": [{"pattern": "sk-[a-z0-9]{8}", "replacement": "[KEY]"}]}),
        )],
        &[],
        &BTreeMap::new(),
    )
    .unwrap_or_default();
    let stream = stream_body();
    let chunks: Vec<&[u8]> = stream.split_inclusive(|&b| b == b'\n').collect();
    let mut g = c.benchmark_group(format!("redact stream (20 chunks, {} bytes)", stream.len()));
    g.bench_function("redact", |b| {
        b.iter(|| {
            let mut r = redact
                .stream_redactor(Operation::Chat)
                .expect("the pipeline has a redact step");
            let mut n = 0;
            for chunk in &chunks {
                n += r.push(black_box(chunk)).len();
            }
            n + r.finish().len()
        })
    });
    g.bench_function("first event only", |b| {
        b.iter(|| {
            let mut r = redact
                .stream_redactor(Operation::Chat)
                .expect("the pipeline has a redact step");
            r.push(black_box(chunks[0])).len() + r.push(black_box(chunks[1])).len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
