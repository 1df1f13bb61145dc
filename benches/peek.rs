//! The cost of reading a request body's routing fields: `proxy::body::peek` (the validating
//! scanner) against the former single `serde_json::from_slice` into a derived struct, on a small
//! chat body and on a ~200 KB coding-agent body like the load benchmark's (a system prompt and
//! ~71 messages of code-like lines full of quotes and newlines).
//!
//! `cargo bench --bench peek`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde::Deserialize;
use serde_json::value::RawValue;

use modelgate::proxy::body::peek;

/// The former `peek`'s parse, which is all of its cost.
#[derive(Deserialize)]
struct PeekFields<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    provider: Option<serde_json::Value>,
}

fn serde_peek(body: &[u8]) -> Option<String> {
    let p: PeekFields<'_> = serde_json::from_slice(body).ok()?;
    let _ = (p.stream, p.provider);
    serde_json::from_str(p.model?.get()).ok()
}

fn small_body() -> Vec<u8> {
    br#"{"model":"bench","messages":[{"role":"user","content":"Write a haiku about load balancers."}]}"#
        .to_vec()
}

/// Built as bench/run.py builds its big body, with its own random numbers.
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
    let mut messages = vec![serde_json::json!({
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
        messages.push(serde_json::json!({"role": role, "content": content}));
    }
    serde_json::to_vec(&serde_json::json!({"model": "bench", "messages": messages}))
        .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    for (name, body) in [("small", small_body()), ("big", big_body())] {
        assert_eq!(
            peek(&body).ok().map(|p| p.model.to_string()),
            serde_peek(&body)
        );
        let mut g = c.benchmark_group(format!("peek/{name} ({} bytes)", body.len()));
        g.bench_function("scanner", |b| b.iter(|| peek(black_box(&body))));
        g.bench_function("serde_json", |b| b.iter(|| serde_peek(black_box(&body))));
        // What checking the whole body's UTF-8 up front would add to the scanner.
        g.bench_function("from_utf8", |b| {
            b.iter(|| std::str::from_utf8(black_box(&body)).is_ok())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
