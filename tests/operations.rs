//! The operations beyond chat (SPEC section 11), black box: audio transcriptions and translations
//! (multipart), speech (audio out, relayed as it comes), rerank, moderations and image
//! generation, each through a virtual model whose first target fails, checking what the client
//! got and what each upstream received.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use serde_json::json;

const BOUNDARY: &str = "----modelgate-test-7f3a";

/// A multipart/form-data body: text fields, then the file.
fn form(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((name, bytes)) = file {
        b.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: audio/wav\r\n\r\n"
            )
            .as_bytes(),
        );
        b.extend_from_slice(bytes);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// Audio-like bytes: every byte value, CR LF pairs and dashes included.
fn audio(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i * 7 + i / 253) as u8).collect();
    for i in (0..len).step_by(997) {
        v[i..(i + 4).min(len)].copy_from_slice(&b"\r\n--"[..(len - i).min(4)]);
    }
    v
}

fn failing(status: u16) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    move |_| {
        Reply::Json(
            status,
            json!({"error": {"message": "down", "type": "server_error"}}),
        )
    }
}

/// Providers `a` (failing) and `b`, OpenAI-compatible, and one virtual model `v` with
/// targets a/`ma`, b/`mb` in priority order (`types`: its model_types, if any).
fn config(a: &Upstream, b: &Upstream, types: Option<&str>) -> String {
    let types = types.map_or(String::new(), |t| format!("    model_types: [{t}]\n"));
    format!(
        "providers:\n{}{}virtual_models:\n  - source: v\n    strategy: priority\n    targets: [a/ma, b/mb]\n{types}",
        provider_block("a", a, &["ma"]),
        provider_block("b", b, &["mb"])
    )
}

fn post_form(g: &Gateway, path: &str, body: &[u8], extra: &[(&str, &str)]) -> Resp {
    let ct = multipart_type();
    let mut headers = vec![("content-type", ct.as_str())];
    headers.extend_from_slice(extra);
    g.post_raw(path, body, &headers)
}

/// The body the client sent with its `model` field's value replaced by `model`.
fn with_model(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let needle = format!("name=\"model\"\r\n\r\n{from}\r\n");
    let at = body
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("model field");
    let mut out = body[..at].to_vec();
    out.extend_from_slice(format!("name=\"model\"\r\n\r\n{to}\r\n").as_bytes());
    out.extend_from_slice(&body[at + needle.len()..]);
    out
}

/// `/metrics` once it shows `needle` (bounded polling: a request is counted just after its
/// answer's last byte left).
fn metrics_with(g: &Gateway, needle: &str) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = g.get("/metrics").1;
        if text.contains(needle) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("/metrics never showed {needle}:\n{text}");
}

#[test]
fn a_transcription_falls_back_after_a_500_and_the_second_upstream_gets_the_file_byte_for_byte() {
    let a = Upstream::start(&[], failing(500));
    let b = Upstream::start(&[], |_| {
        Reply::Json(
            200,
            json!({"text": "hello world", "usage": {"type": "duration", "seconds": 4}}),
        )
    });
    let g = Gateway::start(&config(&a, &b, Some("audio_transcription")), &[]);
    // Larger than 64 KiB, so more than one read and more than Pingora's retry buffer.
    let file = audio(300_000);
    let body = form(
        &[("model", "v"), ("language", "en")],
        Some(("talk.wav", &file)),
    );
    let r = post_form(&g, "/v1/audio/transcriptions", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["text"], "hello world");
    assert_eq!(r.header("x-modelgate-model"), Some("b/mb"));
    assert_eq!(r.header("x-modelgate-virtual-model"), Some("v"));
    // Two tries on a (the default retry), then b.
    assert_eq!(r.header("x-modelgate-attempts"), Some("3"));
    let seen_a = a.requests();
    assert_eq!(seen_a.len(), 2);
    assert_eq!(seen_a[0].path, "/v1/audio/transcriptions");
    assert_eq!(seen_a[1].body, with_model(&body, "v", "ma"));
    let seen_b = b.requests();
    assert_eq!(seen_b.len(), 1);
    assert_eq!(seen_b[0].path, "/v1/audio/transcriptions");
    assert_eq!(
        seen_b[0].header("content-type"),
        Some(multipart_type().as_str())
    );
    assert_eq!(seen_b[0].header("authorization"), Some("Bearer sk-test-b"));
    // Only the model value changed: every other byte, the file part's included, is the client's.
    assert!(
        seen_b[0].body == with_model(&body, "v", "mb"),
        "body differs"
    );
    // The audio seconds the answer reported are counted.
    metrics_with(
        &g,
        "modelgate_audio_seconds_total{provider=\"b\",model=\"mb\"} 4",
    );
}

#[test]
fn a_translation_is_routed_to_its_own_path_and_falls_back_on_503() {
    let a = Upstream::start(&[], failing(503));
    let b = Upstream::start(&[], |_| Reply::Json(200, json!({"text": "good morning"})));
    let g = Gateway::start(&config(&a, &b, None), &[]);
    let body = form(&[("model", "v")], Some(("fr.wav", &audio(5000))));
    let r = post_form(&g, "/v1/audio/translations", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["text"], "good morning");
    assert_eq!(b.requests()[0].path, "/v1/audio/translations");
    assert!(b.requests()[0].body == with_model(&body, "v", "mb"));
}

#[test]
fn malformed_uploads_are_400s_that_name_the_problem() {
    let up = Upstream::echo(&[]);
    let g = Gateway::start(&config(&up, &up, None), &[]);
    // No file.
    let r = post_form(
        &g,
        "/v1/audio/transcriptions",
        &form(&[("model", "v")], None),
        &[],
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "file");
    assert!(
        r.body.contains("multipart field file is missing"),
        "{}",
        r.body
    );
    // No model.
    let r = post_form(
        &g,
        "/v1/audio/transcriptions",
        &form(&[], Some(("a.wav", b"x"))),
        &[],
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "missing_model");
    // Not multipart at all.
    let r = g.post("/v1/audio/transcriptions", &json!({"model": "v"}), &[]);
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("multipart/form-data with a boundary"),
        "{}",
        r.body
    );
    // Cut short before its closing boundary.
    let mut cut = form(&[("model", "v")], Some(("a.wav", &audio(2000))));
    cut.truncate(1500);
    let r = post_form(&g, "/v1/audio/transcriptions", &cut, &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "invalid_multipart");
    assert_eq!(r.json()["error"]["param"], "file");
    assert!(up.requests().is_empty());
}

#[test]
fn audio_uploads_have_their_own_size_limit() {
    let up = Upstream::start(&[], |_| Reply::Json(200, json!({"text": "ok"})));
    let g = Gateway::start(
        &config(&up, &up, None),
        &[("AUDIO_BODY_SIZE_LIMIT", "4K"), ("BODY_SIZE_LIMIT", "1K")],
    );
    let big = form(&[("model", "v")], Some(("a.wav", &audio(5000))));
    let r = post_form(&g, "/v1/audio/transcriptions", &big, &[]);
    assert_eq!(r.status, 413);
    assert!(r.body.contains("AUDIO_BODY_SIZE_LIMIT"), "{}", r.body);
    // Between the two limits: an upload passes, a JSON body does not.
    let mid = form(&[("model", "v")], Some(("a.wav", &audio(2000))));
    assert_eq!(
        post_form(&g, "/v1/audio/transcriptions", &mid, &[]).status,
        200
    );
    let json_body = json!({"model": "v", "input": "x".repeat(2000)});
    let r = g.post("/v1/moderations", &json_body, &[]);
    assert_eq!(r.status, 413);
    assert!(r.body.contains("(BODY_SIZE_LIMIT)"), "{}", r.body);
}

#[test]
fn speech_falls_back_and_passes_any_audio_through_untouched() {
    let a = Upstream::start(&[], failing(500));
    let sound: Vec<u8> = (0..90_000u32).map(|i| (i % 251) as u8).collect();
    let reply = sound.clone();
    let b = Upstream::start(&[], move |_| {
        Reply::Raw(
            200,
            vec![("content-type".into(), "audio/mpeg".into())],
            reply.clone(),
        )
    });
    let g = Gateway::start(&config(&a, &b, Some("text_to_speech")), &[]);
    let resp = Gateway::agent()
        .post(&g.url("/v1/audio/speech"))
        .set("content-type", "application/json")
        .send_json(json!({"model": "v", "input": "Hello there", "voice": "alloy"}))
        .expect("speech");
    assert_eq!(resp.header("content-type"), Some("audio/mpeg"));
    assert_eq!(resp.header("x-modelgate-model"), Some("b/mb"));
    let mut got = Vec::new();
    resp.into_reader().read_to_end(&mut got).unwrap();
    assert!(got == sound, "audio differs: {} bytes", got.len());
    let seen = &b.requests()[0];
    assert_eq!(seen.path, "/v1/audio/speech");
    assert_eq!(
        seen.json(),
        json!({"model": "mb", "input": "Hello there", "voice": "alloy"})
    );
    metrics_with(
        &g,
        "modelgate_speech_characters_total{provider=\"b\",model=\"mb\"} 11",
    );
}

#[test]
fn speech_reaches_the_client_before_the_upstream_has_finished() {
    let (release, gate) = gate();
    let up = Upstream::start(&[], move |_| {
        Reply::Stream(
            vec![b"RIFF-first-bytes".to_vec(), b"-the-rest".to_vec()],
            Some(gate.clone()),
        )
    });
    let g = Gateway::start(&config(&up, &up, None), &[]);
    let resp = Gateway::agent()
        .post(&g.url("/v1/audio/speech"))
        .set("content-type", "application/json")
        .send_json(json!({"model": "v", "input": "hi", "voice": "alloy"}))
        .expect("speech");
    let mut reader = resp.into_reader();
    // The first bytes arrive while the upstream still holds its last chunk; a gateway that
    // buffered the answer would block here until the gate's own timeout.
    let (tx, rx) = std::sync::mpsc::channel();
    let first = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        reader.read_exact(&mut buf).unwrap();
        tx.send(buf).unwrap();
        reader
    });
    let buf = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the first audio bytes while the upstream was still sending");
    assert_eq!(&buf, b"RIFF-first-bytes");
    release.send(()).unwrap();
    let mut rest = String::new();
    first.join().unwrap().read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "-the-rest");
}

#[test]
fn rerank_falls_back_with_its_body_kept() {
    let a = Upstream::start(&[], failing(502));
    let b = Upstream::start(&[], |s| {
        Reply::Json(
            200,
            json!({"id": "r1", "model": s.json()["model"], "results": [
                {"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]}),
        )
    });
    let g = Gateway::start(&config(&a, &b, Some("rerank")), &[]);
    let body = json!({"model": "v", "query": "capital of France",
                      "documents": ["bananas", "Paris is the capital of France"], "top_n": 2});
    let r = g.post("/v1/rerank", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["index"], 1);
    assert_eq!(r.header("x-modelgate-model"), Some("b/mb"));
    let seen = &b.requests()[0];
    assert_eq!(seen.path, "/v1/rerank");
    let mut expected = body.clone();
    expected["model"] = json!("mb");
    assert_eq!(seen.json(), expected);
}

#[test]
fn moderations_and_image_generations_fall_back_too() {
    let a = Upstream::start(&[], failing(500));
    let b = Upstream::start(&[], |s| {
        if s.path.ends_with("/moderations") {
            Reply::Json(
                200,
                json!({"id": "m", "model": "mb", "results": [{"flagged": false}]}),
            )
        } else {
            Reply::Json(
                200,
                json!({"created": 1, "data": [{"b64_json": "iVBORw0KGgo="}]}),
            )
        }
    });
    let g = Gateway::start(&config(&a, &b, Some("moderation, image_generation")), &[]);
    let r = g.post(
        "/v1/moderations",
        &json!({"model": "v", "input": "hello"}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["flagged"], false);
    let r = g.post(
        "/v1/images/generations",
        &json!({"model": "v", "prompt": "a red fox", "n": 1}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"][0]["b64_json"], "iVBORw0KGgo=");
    let paths: Vec<String> = b.requests().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/v1/moderations", "/v1/images/generations"]);
    assert_eq!(b.requests()[1].json()["prompt"], "a red fox");
    assert_eq!(a.requests().len(), 4);
}

#[test]
fn an_operation_outside_model_types_is_422() {
    let up = Upstream::echo(&[]);
    let g = Gateway::start(&config(&up, &up, Some("chat")), &[]);
    let r = g.post(
        "/v1/audio/speech",
        &json!({"model": "v", "input": "hi", "voice": "alloy"}),
        &[],
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("text_to_speech"), "{}", r.body);
    assert_eq!(r.header("x-modelgate-virtual-model"), Some("v"));
    assert!(up.requests().is_empty());
}

#[test]
fn an_anthropic_target_is_not_eligible_for_audio_and_resolve_says_why() {
    let anth = Upstream::echo(&[]);
    let b = Upstream::start(&[], |_| Reply::Json(200, json!({"text": "ok"})));
    let cfg = format!(
        "providers:\n  anth:\n    type: anthropic\n    base_url: {}\n    api_key: k\n    models: [claude]\n{}virtual_models:\n  - source: v\n    strategy: priority\n    targets: [anth/claude, b/mb]\n  - source: only\n    targets: [anth/claude]\n",
        anth.base_url(),
        provider_block("b", &b, &["mb"])
    );
    let g = Gateway::start(&cfg, &[]);
    let body = form(&[("model", "v")], Some(("a.wav", b"RIFF")));
    let r = post_form(&g, "/v1/audio/transcriptions", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("b/mb"));
    assert_eq!(r.header("x-modelgate-attempts"), Some("1"));
    assert!(anth.requests().is_empty());
    let body = form(&[("model", "only")], Some(("a.wav", b"RIFF")));
    let r = post_form(&g, "/v1/audio/transcriptions", &body, &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_code(), "unsupported_operation");
    assert_eq!(r.header("x-modelgate-virtual-model"), Some("only"));
    let (code, out) = run_cli(
        &cfg,
        &["resolve", "v", "--operation", "audio_transcription"],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "not eligible for audio_transcription: the Anthropic API serves only chat and messages"
        ),
        "{out}"
    );
    assert!(out.contains("request 1: b/mb"), "{out}");
    let (_, out) = run_cli(&cfg, &["resolve", "only", "--operation", "tts"], &[]);
    assert!(
        out.contains("no target of only can serve text_to_speech requests"),
        "{out}"
    );
    let (code, out) = run_cli(&cfg, &["resolve", "v", "--operation", "dance"], &[]);
    assert_ne!(code, 0);
    assert!(out.contains("--operation \"dance\" is unknown"), "{out}");
}

#[test]
fn the_mock_provider_answers_every_operation() {
    let cfg = "providers:\n  m:\n    type: mock\n    models: [voice, ears, ranker]\n  n:\n    type: mock\n    models: [voice2]\nvirtual_models:\n  - source: speak\n    strategy: priority\n    targets: [m/voice, n/voice2]\n    model_types: [text_to_speech]\n";
    let g = Gateway::start(cfg, &[]);
    let resp = Gateway::agent()
        .post(&g.url("/v1/audio/speech"))
        .set("content-type", "application/json")
        .send_json(json!({"model": "speak", "input": "Hello, mock.", "voice": "alloy"}))
        .expect("speech");
    assert_eq!(resp.header("content-type"), Some("audio/wav"));
    let mut wav = Vec::new();
    resp.into_reader().read_to_end(&mut wav).unwrap();
    assert_eq!(&wav[0..4], b"RIFF");
    assert_eq!(&wav[8..16], b"WAVEfmt ");
    // The speech, transcribed back: the mock reads the WAV's length.
    let body = form(
        &[("model", "m/ears"), ("response_format", "verbose_json")],
        Some(("hello.wav", &wav)),
    );
    let r = post_form(&g, "/v1/audio/transcriptions", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(v["duration"].as_f64().unwrap() > 0.5, "{v}");
    assert!(v["text"].as_str().unwrap().contains("hello.wav"), "{v}");
    let r = g.post(
        "/v1/rerank",
        &json!({"model": "m/ranker", "query": "red fox", "documents": ["blue sky", "a red fox"], "top_n": 1}),
        &[],
    );
    assert_eq!(r.json()["results"][0]["index"], 1, "{}", r.body);
    let r = g.post(
        "/v1/moderations",
        &json!({"model": "m/ranker", "input": "attack now"}),
        &[],
    );
    assert_eq!(r.json()["results"][0]["flagged"], true, "{}", r.body);
    let r = g.post(
        "/v1/images/generations",
        &json!({"model": "m/ranker", "prompt": "fox"}),
        &[],
    );
    assert!(r.json()["data"][0]["b64_json"]
        .as_str()
        .unwrap()
        .starts_with("iVBOR"));
}

#[test]
fn the_example_config_serves_audio_with_no_keys() {
    let cfg = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .unwrap();
    let g = Gateway::start(&cfg, &[]);
    let resp = Gateway::agent()
        .post(&g.url("/v1/audio/speech"))
        .set("content-type", "application/json")
        .send_json(json!({"model": "speak", "input": "Failover works.", "voice": "alloy"}))
        .expect("speech");
    assert_eq!(resp.header("x-modelgate-model"), Some("demo/voice"));
    let mut wav = Vec::new();
    resp.into_reader().read_to_end(&mut wav).unwrap();
    assert_eq!(&wav[0..4], b"RIFF");
    let body = form(&[("model", "transcribe")], Some(("speech.wav", &wav)));
    let r = post_form(&g, "/v1/audio/translations", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("demo/ears"));
    assert!(r.json()["text"].as_str().unwrap().contains("speech.wav"));
    metrics_with(
        &g,
        "modelgate_speech_characters_total{provider=\"demo\",model=\"voice\"} 15",
    );
    metrics_with(
        &g,
        "modelgate_audio_seconds_total{provider=\"demo\",model=\"ears\"}",
    );
}

#[test]
fn an_upload_that_expects_100_continue_is_told_to_go_on_and_the_upstream_gets_no_expect() {
    use std::io::Write;
    let up = Upstream::start(&[], |_| Reply::Json(200, json!({"text": "ok"})));
    let g = Gateway::start(&config(&up, &up, None), &[]);
    let body = form(&[("model", "b/mb")], Some(("a.wav", &audio(2_000_000))));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        multipart_type(),
        body.len()
    )
    .unwrap();
    // As curl does: wait for the interim answer before sending the body.
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(&body).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("expect"), None);
    assert!(seen[0].body == with_model(&body, "b/mb", "mb"));
}
