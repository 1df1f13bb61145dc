//! What an audio request used, for `/metrics`: seconds of audio a transcription or translation
//! answer reports (`duration`, or `usage: {type: "duration", seconds}`), characters of text a
//! speech request sent (`input`).
//!
//! Read from bodies the gateway already holds (a small speech request, a JSON answer of at most
//! the tap's bound); never reads or holds an audio file or a speech answer.

use serde_json::Value;

/// Audio a request used, when known.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AudioUse {
    pub seconds: Option<f64>,
    pub characters: Option<u64>,
}

/// Seconds of audio a transcription or translation answer reports.
pub fn answer_seconds(body: &[u8]) -> Option<f64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("duration")
        .and_then(Value::as_f64)
        .or_else(|| {
            let u = v.get("usage")?;
            (u.get("type").and_then(Value::as_str) == Some("duration"))
                .then(|| u.get("seconds").and_then(Value::as_f64))
                .flatten()
        })
        .filter(|s| s.is_finite() && *s >= 0.0)
}

/// Characters of the text a speech request asks to be spoken.
pub fn speech_characters(body: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Speech<'a> {
        #[serde(borrow)]
        input: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Speech<'_>>(body)
        .ok()
        .map(|s| s.input.chars().count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_from_duration_or_usage() {
        assert_eq!(answer_seconds(br#"{"text":"x","duration":2.5}"#), Some(2.5));
        assert_eq!(
            answer_seconds(br#"{"text":"x","usage":{"type":"duration","seconds":3}}"#),
            Some(3.0)
        );
        assert_eq!(
            answer_seconds(br#"{"text":"x","usage":{"type":"tokens","input_tokens":3}}"#),
            None
        );
        assert_eq!(answer_seconds(b"plain text"), None);
    }

    #[test]
    fn characters_of_the_input() {
        assert_eq!(
            speech_characters(r#"{"model":"m","input":"héllo","voice":"a"}"#.as_bytes()),
            Some(5)
        );
        assert_eq!(speech_characters(br#"{"model":"m"}"#), None);
    }
}
