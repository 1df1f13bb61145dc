//! `peek` against its oracle, the former serde_json-based `peek`: on every body both accept
//! with the same `Peek`, or both refuse with the same error code and the same kind of message.

use proptest::prelude::{any, prop, prop_assert_eq, prop_oneof, proptest, Just};
use proptest::strategy::Strategy as Gen;

use super::{oracle, peek};

/// The part of a message before its details (`request body is not valid JSON`).
fn headline(message: &str) -> &str {
    message.split(':').next().unwrap_or(message)
}

fn agree(body: &[u8]) -> Result<(), String> {
    match (peek(body), oracle::peek(body)) {
        (Ok(new), Ok(old)) if new == old => Ok(()),
        (Err(new), Err(old))
            if new.code == old.code && headline(&new.message) == headline(&old.message) =>
        {
            Ok(())
        }
        (new, old) => Err(format!(
            "body {:?}\n new {:?}\n old {:?}",
            String::from_utf8_lossy(body),
            new.map_err(|e| (e.code, e.message)),
            old.map_err(|e| (e.code, e.message))
        )),
    }
}

#[track_caller]
fn check(body: &[u8]) {
    if let Err(e) = agree(body) {
        panic!("{e}");
    }
}

// ---- generators ----

fn ws() -> impl Gen<Value = &'static str> {
    prop_oneof![
        4 => Just(""),
        2 => Just(" "),
        1 => Just("\n  "),
        1 => Just("\t"),
        1 => Just("\r\n"),
    ]
}

/// One piece of a string's inside: text, long runs (to cross 64-byte blocks) and escapes,
/// including surrogate escapes serde_json decodes differently from how it skips them.
fn string_piece() -> impl Gen<Value = String> {
    prop_oneof![
        4 => "[a-z ]{0,12}",
        2 => (0usize..140).prop_map(|n| "x".repeat(n)),
        1 => Just("é中😀".to_string()),
        1 => prop_oneof![Just(BAD_BYTE), Just(BAD_TRUNCATED), Just(BAD_SURROGATE), Just(BAD_OVERLONG), Just(BAD_TOO_HIGH)]
            .prop_map(|c| c.to_string()),
        3 => prop_oneof![
            Just("\\n"), Just("\\\""), Just("\\\\"), Just("\\/"), Just("\\b"), Just("\\f"),
            Just("\\r"), Just("\\t"), Just("\\u00e9"), Just("\\u002D"), Just("\\ud83d\\ude00"),
            Just("\\ud800"), Just("\\udc00"), Just("\\ud800\\u0041"), Just("\\ud800\\n"),
            Just("\\ud800\\ud800"),
        ]
        .prop_map(str::to_string),
    ]
}

/// Placeholders (private-use characters) that `to_bytes` replaces with invalid UTF-8: a byte
/// that never starts a sequence, a truncated sequence, an encoded surrogate, an overlong
/// encoding, a code point past U+10FFFF.
const BAD_BYTE: char = '\u{F8F0}';
const BAD_TRUNCATED: char = '\u{F8F1}';
const BAD_SURROGATE: char = '\u{F8F2}';
const BAD_OVERLONG: char = '\u{F8F3}';
const BAD_TOO_HIGH: char = '\u{F8F4}';

/// A generated document as bytes, its placeholders turned into invalid UTF-8.
fn to_bytes(doc: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(doc.len());
    for c in doc.chars() {
        match c {
            BAD_BYTE => out.push(0xFF),
            BAD_TRUNCATED => out.extend(b"\xE4\xB8"),
            BAD_SURROGATE => out.extend(b"\xED\xA0\x80"),
            BAD_OVERLONG => out.extend(b"\xC0\xAF"),
            BAD_TOO_HIGH => out.extend(b"\xF4\x90\x80\x80"),
            c => out.extend(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

fn string() -> impl Gen<Value = String> {
    prop::collection::vec(string_piece(), 0..6).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn number() -> impl Gen<Value = String> {
    let int = prop_oneof![Just("0".to_string()), "[1-9][0-9]{0,25}"];
    let frac = prop_oneof![Just(String::new()), "\\.[0-9]{1,5}"];
    let exp = prop_oneof![
        3 => Just(String::new()),
        1 => "[eE][+-]?[0-9]{1,3}",
        1 => Just("e400".to_string()),
    ];
    (prop::bool::ANY, int, frac, exp)
        .prop_map(|(neg, i, f, e)| format!("{}{i}{f}{e}", if neg { "-" } else { "" }))
}

fn key() -> impl Gen<Value = String> {
    prop_oneof![
        3 => prop_oneof![
            Just("\"model\""), Just("\"stream\""), Just("\"provider\""), Just("\"messages\""),
            Just("\"mo\\u0064el\""), Just("\"stre\\u0061m\""), Just("\"x\\ud800\""),
            Just("\"modelx\""), Just("\"\""),
        ]
        .prop_map(str::to_string),
        1 => string(),
    ]
}

fn value() -> impl Gen<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        number(),
        string(),
    ];
    leaf.prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..5), ws())
                .prop_map(|(v, w)| format!("[{w}{}{w}]", v.join(&format!("{w},{w}")))),
            (prop::collection::vec((key(), inner), 0..5), ws()).prop_map(|(kv, w)| {
                let members: Vec<String> =
                    kv.iter().map(|(k, v)| format!("{k}{w}:{w}{v}")).collect();
                format!("{{{w}{}{w}}}", members.join(&format!("{w},{w}")))
            }),
        ]
    })
}

/// Values the routing fields commonly hold, and anything else.
fn field_value() -> impl Gen<Value = String> {
    prop_oneof![
        2 => prop_oneof![
            Just("\"gpt-4o\""), Just("\"gpt\\u002d4o\""), Just("\"  \""), Just("\" smart \""),
            Just("true"), Just("false"), Just("null"), Just("\"openai\""), Just("\"\""),
        ]
        .prop_map(str::to_string),
        1 => value(),
    ]
}

fn document() -> impl Gen<Value = String> {
    (
        prop::collection::vec((key(), field_value()), 0..6),
        ws(),
        ws(),
    )
        .prop_map(|(kv, w, outer)| {
            let members: Vec<String> = kv.iter().map(|(k, v)| format!("{k}{w}:{w}{v}")).collect();
            format!(
                "{outer}{{{w}{}{w}}}{outer}",
                members.join(&format!("{w},{w}"))
            )
        })
}

/// Bytes that break JSON in interesting ways.
fn nasty_byte() -> impl Gen<Value = u8> {
    prop_oneof![
        Just(b'"'),
        Just(b'\\'),
        Just(b','),
        Just(b':'),
        Just(b'{'),
        Just(b'}'),
        Just(b'['),
        Just(b']'),
        Just(b'u'),
        Just(b'0'),
        Just(b'-'),
        Just(b'.'),
        Just(b'e'),
        Just(0x00),
        Just(0x1f),
        Just(b'\n'),
        Just(0x0c),
        Just(0x7f),
        Just(0xff),
        Just(0xc3),
        Just(b' '),
        any::<u8>(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn mutation() -> impl Gen<Value = Mutation> {
    prop_oneof![
        (any::<usize>()).prop_map(Mutation::Truncate),
        (any::<usize>(), nasty_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), nasty_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>()).prop_map(Mutation::Delete),
    ]
}

fn mutate(doc: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut b = to_bytes(doc);
    for m in mutations {
        let n = b.len().max(1);
        match *m {
            Mutation::Truncate(i) => b.truncate(i % n),
            Mutation::Replace(i, c) if !b.is_empty() => b[i % n] = c,
            Mutation::Insert(i, c) => b.insert(i % (b.len() + 1), c),
            Mutation::Delete(i) if !b.is_empty() => {
                b.remove(i % n);
            }
            _ => {}
        }
    }
    b
}

proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(3000))]

    /// Well-formed documents (with the odd serde_json-specific refusal inside, and the odd
    /// invalid UTF-8 in a string).
    #[test]
    fn agrees_with_serde_json_on_documents(doc in document()) {
        prop_assert_eq!(agree(&to_bytes(&doc)), Ok(()));
    }

    /// Documents broken by truncation, replaced, inserted or deleted bytes.
    #[test]
    fn agrees_with_serde_json_on_broken_documents(
        doc in document(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        prop_assert_eq!(agree(&mutate(&doc, &mutations)), Ok(()));
    }
}

// ---- edge cases ----

#[test]
fn escaped_model_is_decoded_and_its_span_keeps_the_escapes() {
    let body = br#"{"mo\u0064el":"gpt\u002d4o"}"#;
    let p = peek(body).unwrap();
    assert_eq!(p.model, "gpt-4o");
    assert_eq!(&body[p.model_span.0..p.model_span.1], br#""gpt\u002d4o""#);
    check(body);
}

#[test]
fn lone_surrogates_are_skipped_in_other_strings_but_refused_in_read_ones() {
    for body in [
        r#"{"model":"m","messages":["\ud800"]}"#,
        r#"{"model":"m","messages":{"\udc00":1}}"#,
        r#"{"model":"\ud800"}"#,
        r#"{"model":["\ud800"]}"#,
        r#"{"model":"m","provider":"\ud800"}"#,
        r#"{"model":"m","stream":["\ud800"]}"#,
        r#"{"model":"m","\ud800":1}"#,
        r#"{"model":"m","\ud800\u0041":1}"#,
        r#"{"model":"m","\ud83d\ude00":1}"#,
    ] {
        check(body.as_bytes());
    }
}

#[test]
fn invalid_utf8_is_refused_in_every_string() {
    for body in [
        &b"{\"model\":\"m\",\"messages\":\"\xff\"}"[..],
        b"{\"model\":\"\xff\"}",
        b"{\"model\":[\"\xff\"]}",
        b"{\"model\":\"m\",\"\xff\":1}",
        b"{\"model\":\"m\",\"stream\":\"\xff\"}",
        b"{\"model\":\"m\",\"provider\":{\"\xff\":1}}",
        b"{\"model\":\"m\",\"x\":{\"\xff\":1}}",
        b"{\"model\":\"m\"}\xff",
        // An earlier fault does not hide the invalid byte.
        b"{\"model\":\"m\",\"model\":\"n\",\"x\":\"\xff\"}",
        b"{\"model\":\"m\",\"a\":01,\"x\":\"\xff\"}",
        b"{\"model\":1,\"x\":\"\xff\"}",
    ] {
        check(body);
        assert_eq!(
            peek(body).map_err(|e| e.code).err(),
            Some("invalid_json"),
            "{body:?}"
        );
    }
}

#[test]
fn nesting_limits_match_serde_json() {
    for n in [125, 126, 127, 128, 129, 300] {
        let nest = format!("{}{}", "[".repeat(n), "]".repeat(n));
        for body in [
            format!(r#"{{"model":"m","stream":{nest}}}"#),
            format!(r#"{{"model":"m","provider":{nest}}}"#),
            format!(r#"{{"model":{nest}}}"#),
            format!(r#"{{"model":"m","messages":{nest}}}"#),
        ] {
            check(body.as_bytes());
        }
    }
}

#[test]
fn numbers_out_of_range_matter_only_in_read_fields() {
    for body in [
        r#"{"model":"m","stream":1e400}"#,
        r#"{"model":"m","stream":-1e400}"#,
        r#"{"model":"m","stream":1e-400}"#,
        r#"{"model":"m","provider":[1e400]}"#,
        r#"{"model":1e400}"#,
        r#"{"model":"m","temperature":1e400}"#,
        r#"{"model":"m","stream":123456789012345678901234567890}"#,
    ] {
        check(body.as_bytes());
    }
}

#[test]
fn nulls_and_duplicates() {
    for body in [
        r#"{"model":null}"#,
        r#"{"model":null,"model":"m"}"#,
        r#"{"model":"m","stream":null,"provider":null}"#,
        r#"{"model":"m","stream":true,"stre\u0061m":true}"#,
        r#"{"model":"m","messages":1,"messages":2}"#,
        r#"{"model":"m","provider":" openai "}"#,
        r#"{"model":"m","provider":"  "}"#,
    ] {
        check(body.as_bytes());
    }
}

#[test]
fn whitespace_and_framing() {
    for body in [
        &b""[..],
        b"  \n",
        b"\x0c",
        b"\x0c{\"model\":\"m\"}",
        b"{\"model\":\"m\"}\x0c",
        b" {\"model\":\"m\"} \r\n",
        b"{\"model\":\"m\"} x",
        b"{\"model\":\"m\"}{}",
        b"{\"model\":\"m\",}",
        b"{\"model\":\"m\" \"x\":1}",
        b"[1]",
        b"{",
        b"{\"model\"",
        b"{\"model\":",
        b"{\"model\":\"m",
        b"{\"model\":\"m\\",
        b"{\"model\":\"m\\u12",
        b"{\"model\":\"m\\x\"}",
        b"{\"model\":\"a\tb\"}",
        b"{1:2}",
        b"{\"model\":\"m\",\"a\":[1,]}",
        b"{\"model\":\"m\",\"a\":[,1]}",
        b"{\"model\":\"m\",\"a\":{\"b\"}}",
        b"{\"model\":\"m\",\"a\":tru}",
        b"{\"model\":\"m\",\"a\":01}",
        b"{\"model\":\"m\",\"a\":-}",
        b"{\"model\":\"m\",\"a\":1.}",
        b"{\"model\":\"m\",\"a\":1e}",
        b"{\"model\":\"m\",\"a\":.5}",
        b"{\"model\":\"m\",\"a\":+1}",
        b"{\"model\":\"m\",\"a\":-0.0e-0}",
    ] {
        check(body);
    }
}

#[test]
fn long_strings_with_escapes_at_block_edges() {
    for n in 55..75 {
        let pad = "x".repeat(n);
        for esc in ["\\n", "\\\"", "\\u00e9", "\\", "\\u00", "\u{1}", "\""] {
            let body = format!(r#"{{"messages":"{pad}{esc}{pad}","model":"m"}}"#);
            check(body.as_bytes());
        }
    }
}

/// The request phase's peek of the bytes it wrote equals a fresh peek of them, whatever the
/// steps did to the routing fields.
#[test]
fn a_peek_of_written_bytes_equals_a_fresh_peek() {
    use crate::middleware::Body;
    use serde_json::json;
    let client: &[&[u8]] = &[
        br#"{ "messages": [{"role":"user","content":"a\nb"}], "model" : "vm" , "stream":true}"#,
        br#"{"model":"vm","provider":null,"stream":null}"#,
        br#"{"provider":"p","model":"caf\u00e9"}"#,
    ];
    for raw in client {
        let edits: [&dyn Fn(&mut Body); 4] = [
            &|_| {},
            &|b| b.insert("model", json!("routed/one")),
            &|b| b.insert("stream", json!(false)),
            &|b| {
                b.insert("temperature", json!(0.2));
                b.insert("provider", json!("openai"));
            },
        ];
        // Unedited, the client's own bytes and spans give the same peek.
        let body = Body::parse(raw.to_vec()).expect("an object");
        let read = |key| body.get(key).map(|v| v.value().into_owned());
        let span = body.span_of("model").expect("a model");
        let own = super::peek_written(body.raw(), span, read("stream"), read("provider"));
        assert_eq!(own.ok(), peek(raw).ok());
        for edit in edits {
            let mut body = Body::parse(raw.to_vec()).expect("an object");
            edit(&mut body);
            let (bytes, span) = body.to_vec_with_span("model");
            let read = |key| body.get(key).map(|v| v.value().into_owned());
            let written = super::peek_written(
                &bytes,
                span.expect("a model"),
                read("stream"),
                read("provider"),
            );
            assert_eq!(
                written.ok(),
                peek(&bytes).ok(),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // A step that leaves a model of the wrong type is refused the same way.
    let mut body = Body::parse(br#"{"model":"vm"}"#.to_vec()).expect("an object");
    body.insert("model", json!(7));
    let (bytes, span) = body.to_vec_with_span("model");
    let written = super::peek_written(&bytes, span.expect("a model"), None, None);
    assert_eq!(
        written.map_err(|e| e.code),
        peek(&bytes).map_err(|e| e.code)
    );
}
