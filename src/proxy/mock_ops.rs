//! The mock provider's answers to the operations beyond chat: transcriptions and translations
//! (from a multipart upload), speech (a short valid WAV file), rerank, moderation and image
//! generation, each in the shape the real API answers, so the official SDKs parse them.
//!
//! Deterministic (no clock but `created`, no randomness) and pure: it never does I/O and never
//! decides routing; `local::answer_mock` writes what it returns.

use serde_json::{json, Value};

use super::multipart;
use crate::routing::model::Operation;

/// A mock answer: its content type, body, token usage and audio use.
pub struct Answer {
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub usage: Option<(u64, u64)>,
    pub audio: super::audio_usage::AudioUse,
}

/// A 1x1 PNG image, base64-encoded, for `b64_json`.
const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// The mock's WAV: 8 kHz, 16-bit, mono.
const RATE: u32 = 8000;

/// The answer to `op`, or `None` for the chat-family operations (`mock::respond` answers those).
/// `body` is the client's body: JSON, or the multipart upload of the audio operations.
pub fn answer(
    op: Operation,
    model: &str,
    body: &[u8],
    content_type: Option<&str>,
    id: &str,
    created: u64,
) -> Option<Answer> {
    let json = || serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let whole = |v: Value| Answer {
        content_type: "application/json",
        usage: super::dialect::usage_of(&v),
        body: serde_json::to_vec(&v).unwrap_or_default(),
        audio: super::audio_usage::AudioUse::default(),
    };
    match op {
        Operation::Chat
        | Operation::Completion
        | Operation::Embedding
        | Operation::Responses
        | Operation::Messages
        | Operation::CountTokens => None,
        Operation::Transcription | Operation::Translation => {
            Some(transcribe(op, body, content_type))
        }
        Operation::Speech => Some(speech(&json())),
        Operation::Rerank => Some(whole(rerank(&json(), model, id))),
        Operation::Moderation => Some(whole(moderation(&json(), model, id))),
        Operation::ImageGeneration => Some(whole(images(&json(), created))),
    }
}

/// A transcription (or translation) of the uploaded file: its length from the WAV header when
/// it is one, else estimated from its size; the text says what was heard.
fn transcribe(op: Operation, body: &[u8], content_type: Option<&str>) -> Answer {
    let parts = content_type
        .and_then(|ct| multipart::boundary(ct).ok())
        .and_then(|b| multipart::parts(body, b).ok())
        .unwrap_or_default();
    let file = parts.iter().find(|p| p.name == "file");
    let audio = file.map_or(&[][..], |p| &body[p.span.0..p.span.1]);
    let name = file.and_then(|p| p.filename.as_deref()).unwrap_or("audio");
    let seconds = wav_seconds(audio).unwrap_or(audio.len() as f64 / 16_000.0);
    let seconds = (seconds * 1000.0).round() / 1000.0;
    let text = format!(
        "Hello from the modelgate mock provider. I heard {} bytes of audio in {name}.",
        audio.len()
    );
    let format = multipart::field(body, &parts, "response_format").unwrap_or("json");
    let language = match op {
        Operation::Translation => "english".to_string(),
        _ => multipart::field(body, &parts, "language")
            .unwrap_or("english")
            .to_string(),
    };
    let usage = json!({"type": "duration", "seconds": seconds.ceil() as u64});
    let audio_use = super::audio_usage::AudioUse {
        seconds: Some(seconds),
        characters: None,
    };
    let streamed = multipart::field(body, &parts, "stream") == Some("true");
    let (content_type, body) = match format {
        // A streamed transcription (gpt-4o-transcribe's `stream: true`): one delta event per
        // word, then the whole text.
        _ if streamed => {
            let mut sse = Vec::new();
            let mut event = |v: Value| {
                sse.extend_from_slice(b"data: ");
                sse.extend_from_slice(v.to_string().as_bytes());
                sse.extend_from_slice(b"\n\n");
            };
            for w in text.split_inclusive(' ') {
                event(json!({"type": "transcript.text.delta", "delta": w}));
            }
            event(json!({"type": "transcript.text.done", "text": text, "usage": usage}));
            ("text/event-stream", sse)
        }
        "text" | "srt" | "vtt" => (
            "text/plain; charset=utf-8",
            format!("{text}\n").into_bytes(),
        ),
        "verbose_json" => {
            let task = if op == Operation::Translation {
                "translate"
            } else {
                "transcribe"
            };
            let v = json!({"task": task, "language": language, "duration": seconds, "text": text,
                "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text,
                    "tokens": [], "temperature": 0.0, "avg_logprob": -0.1,
                    "compression_ratio": 1.0, "no_speech_prob": 0.0}],
                "usage": usage});
            (
                "application/json",
                serde_json::to_vec(&v).unwrap_or_default(),
            )
        }
        _ => (
            "application/json",
            serde_json::to_vec(&json!({"text": text, "usage": usage})).unwrap_or_default(),
        ),
    };
    Answer {
        content_type,
        body,
        usage: None,
        audio: audio_use,
    }
}

/// The length of a PCM WAV file in seconds, from its `fmt ` and `data` chunks.
pub fn wav_seconds(b: &[u8]) -> Option<f64> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return None;
    }
    let u32_at = |i: usize| -> Option<u32> {
        b.get(i..i + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= b.len() {
        let size = u32_at(at + 4)? as usize;
        match &b[at..at + 4] {
            b"fmt " => byte_rate = u32_at(at + 16),
            b"data" => {
                let rate = byte_rate.filter(|r| *r > 0)?;
                // A streamed WAV may leave the size at its maximum: count what is there.
                let len = size.min(b.len() - at - 8);
                return Some(len as f64 / rate as f64);
            }
            _ => {}
        }
        at += 8 + size + (size & 1);
    }
    None
}

/// Speech for `input`: a WAV of a soft tone, 60 ms a character (0.2 to 3 s), whatever
/// `response_format` asked for (the mock has no encoder; the content type says WAV).
fn speech(req: &Value) -> Answer {
    let input = req.get("input").and_then(Value::as_str).unwrap_or("");
    let chars = input.chars().count() as u64;
    let seconds = (chars as f64 * 0.06).clamp(0.2, 3.0);
    Answer {
        content_type: "audio/wav",
        body: wav(seconds),
        usage: None,
        audio: super::audio_usage::AudioUse {
            seconds: None,
            characters: Some(chars),
        },
    }
}

/// A mono 16-bit PCM WAV of a 440 Hz tone lasting `seconds`.
pub fn wav(seconds: f64) -> Vec<u8> {
    let samples = (seconds * RATE as f64) as u32;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let t = i as f64 / RATE as f64;
        let v = (t * 440.0 * std::f64::consts::TAU).sin() * 3000.0;
        out.extend_from_slice(&(v as i16).to_le_bytes());
    }
    out
}

/// Words of a text, lowercased, for the rerank score.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A document's text: a string, or an object's `text`.
fn document_text(d: &Value) -> String {
    match d {
        Value::String(s) => s.clone(),
        other => other
            .get("text")
            .and_then(Value::as_str)
            .map_or_else(|| other.to_string(), str::to_string),
    }
}

/// Rerank results (Cohere/Jina shape): each document scored by the share of the query's words
/// it contains, best first, `top_n` of them; documents echoed unless `return_documents: false`.
fn rerank(req: &Value, model: &str, id: &str) -> Value {
    let query = words(req.get("query").and_then(Value::as_str).unwrap_or(""));
    let docs = req
        .get("documents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut scored: Vec<(usize, f64, String)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let text = document_text(d);
            let w = words(&text);
            let hits = query.iter().filter(|q| w.contains(q)).count();
            let score = (hits as f64 + 1.0 / (2.0 + i as f64)) / (query.len() as f64 + 1.0);
            (i, (score * 10_000.0).round() / 10_000.0, text)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = req
        .get("top_n")
        .and_then(Value::as_u64)
        .map_or(scored.len(), |n| n as usize);
    let echo = req
        .get("return_documents")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let tokens: usize = query.len() + scored.iter().map(|s| words(&s.2).len()).sum::<usize>();
    let results: Vec<Value> = scored
        .into_iter()
        .take(top)
        .map(|(i, score, text)| {
            let mut r = json!({"index": i, "relevance_score": score});
            if echo {
                r["document"] = json!({"text": text});
            }
            r
        })
        .collect();
    json!({"id": format!("rerank-{id}"), "model": model, "results": results,
           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

/// The moderation categories OpenAI reports.
const CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// Moderation results, one per input: `violence` is flagged when the text says kill, attack
/// or weapon; everything else scores low.
fn moderation(req: &Value, model: &str, id: &str) -> Value {
    let inputs: Vec<String> = match req.get("input") {
        Some(Value::Array(a)) => a.iter().map(document_text).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => vec![String::new()],
    };
    let results: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let violent = words(text)
                .iter()
                .any(|w| matches!(w.as_str(), "kill" | "attack" | "weapon"));
            let mut categories = serde_json::Map::new();
            let mut scores = serde_json::Map::new();
            let mut applied = serde_json::Map::new();
            for c in CATEGORIES {
                let hit = violent && c == "violence";
                categories.insert(c.into(), json!(hit));
                scores.insert(c.into(), json!(if hit { 0.92 } else { 0.0001 }));
                applied.insert(c.into(), json!(["text"]));
            }
            json!({"flagged": violent, "categories": categories, "category_scores": scores,
                   "category_applied_input_types": applied})
        })
        .collect();
    json!({"id": format!("modr-{id}"), "model": model, "results": results})
}

/// `n` images (a 1x1 PNG each) as `b64_json`, or as data URLs when `response_format: url`.
fn images(req: &Value, created: u64) -> Value {
    let n = req
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10);
    let prompt = req.get("prompt").and_then(Value::as_str).unwrap_or("");
    let url = req.get("response_format").and_then(Value::as_str) == Some("url");
    let data: Vec<Value> = (0..n)
        .map(|_| {
            if url {
                json!({"url": format!("data:image/png;base64,{PNG_B64}"), "revised_prompt": prompt})
            } else {
                json!({"b64_json": PNG_B64, "revised_prompt": prompt})
            }
        })
        .collect();
    let input = words(prompt).len() as u64;
    json!({"created": created, "data": data,
           "usage": {"input_tokens": input, "output_tokens": n * 272,
                     "total_tokens": input + n * 272}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_is_a_wav_whose_length_the_transcription_reads_back() {
        let a = speech(&json!({"input": "hello there", "voice": "alloy"}));
        assert_eq!(a.content_type, "audio/wav");
        assert_eq!(&a.body[0..4], b"RIFF");
        let secs = wav_seconds(&a.body).unwrap();
        assert!((secs - 0.66).abs() < 0.01, "{secs}");
        assert_eq!(a.audio.characters, Some(11));
    }

    #[test]
    fn a_transcription_reports_its_duration() {
        let wav = wav(1.5);
        let mut body =
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.wav\"\r\n\r\n"
                .to_vec();
        body.extend_from_slice(&wav);
        body.extend_from_slice(b"\r\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--b\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\nverbose_json\r\n--b--\r\n");
        let a = answer(
            Operation::Transcription,
            "m",
            &body,
            Some("multipart/form-data; boundary=b"),
            "1",
            0,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["duration"], json!(1.5));
        assert_eq!(v["task"], "transcribe");
        assert!(v["text"].as_str().unwrap().contains("x.wav"));
        assert_eq!(a.audio.seconds, Some(1.5));
    }

    #[test]
    fn a_streamed_transcription_is_delta_events_then_the_text() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.wav\"\r\n\r\nabc\r\n--b\r\nContent-Disposition: form-data; name=\"stream\"\r\n\r\ntrue\r\n--b--\r\n";
        let a = answer(
            Operation::Transcription,
            "m",
            body,
            Some("multipart/form-data; boundary=b"),
            "1",
            0,
        )
        .unwrap();
        assert_eq!(a.content_type, "text/event-stream");
        let text = String::from_utf8(a.body).unwrap();
        let events: Vec<Value> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(events[0]["type"], "transcript.text.delta");
        assert_eq!(events[0]["delta"], "Hello ");
        let done = events.last().unwrap();
        assert_eq!(done["type"], "transcript.text.done");
        assert!(done["text"].as_str().unwrap().contains("3 bytes"), "{done}");
    }

    #[test]
    fn rerank_orders_by_overlap_and_keeps_top_n() {
        let v = rerank(
            &json!({"query": "capital of France", "top_n": 2,
                    "documents": ["bananas are yellow", "Paris is the capital of France", "France"]}),
            "m",
            "1",
        );
        let r = v["results"].as_array().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0]["index"], 1);
        assert_eq!(r[0]["document"]["text"], "Paris is the capital of France");
    }

    #[test]
    fn moderation_flags_violence_only() {
        let v = moderation(&json!({"input": ["I will attack", "hello"]}), "m", "1");
        assert_eq!(v["results"][0]["flagged"], true);
        assert_eq!(v["results"][0]["categories"]["violence"], true);
        assert_eq!(v["results"][1]["flagged"], false);
    }

    #[test]
    fn images_carry_b64_json() {
        let v = images(&json!({"prompt": "a cat", "n": 2}), 7);
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["data"][0]["b64_json"], PNG_B64);
        assert_eq!(v["created"], 7);
    }
}
