//! Carrying a request across wire dialects for one attempt: the upstream body, and a response
//! shaper that translates the answer back (whole bodies, SSE streams, error bodies) and taps the
//! upstream's token usage on the way.
//!
//! Same-dialect answers pass through byte for byte (the tap only reads). Only a non-stream
//! answer that needs translation is buffered whole, because its JSON must be complete to be
//! rewritten. Never decides routing or statuses.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::body::Peek;
use super::edits::{self, Edits};
use super::respond::ApiError;
use crate::routing::model::{Operation, WireFormat};
use crate::translate::{self, AnthropicToOpenAiStream, OpenAiToAnthropicStream, SseParser};

/// The dialect a client speaks on a route.
pub fn ingress_format(op: Operation) -> WireFormat {
    match op {
        Operation::Messages | Operation::CountTokens => WireFormat::AnthropicMessages,
        _ => WireFormat::OpenAiChat,
    }
}

/// How one attempt's body is made.
pub struct BodySpec<'a> {
    pub op: Operation,
    pub target: WireFormat,
    pub upstream_model: &'a str,
    pub override_params: Option<&'a Map<String, Value>>,
    pub drop_provider: bool,
    pub default_max_tokens: u64,
}

/// The upstream body for one attempt, and whether the client's stream must not show a usage
/// chunk: one added to the upstream request (the shaper removes it again), or one a translated
/// stream would make, when an OpenAI client did not ask for `stream_options.include_usage`.
pub fn upstream_body(
    raw: &[u8],
    peek: &Peek,
    spec: &BodySpec<'_>,
) -> Result<(Bytes, bool), ApiError> {
    let ingress = ingress_format(spec.op);
    // An OpenAI stream is asked for its final usage chunk so tokens and cost can be counted.
    let edits = Edits {
        model: spec.upstream_model,
        set: spec.override_params,
        drop_provider: spec.drop_provider,
        request_usage: spec.target == WireFormat::OpenAiChat
            && peek.stream
            && (matches!(spec.op, Operation::Chat | Operation::Completion)
                || ingress != spec.target),
    };
    if ingress == spec.target {
        return Ok(edits::apply(raw, peek, &edits));
    }
    let map: Map<String, Value> = serde_json::from_slice(raw).map_err(|e| {
        ApiError::invalid_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    // OpenAI streams end with a usage-only chunk (`choices: []`) only when asked for it.
    let client_usage = map
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let drop_usage = ingress == WireFormat::OpenAiChat && peek.stream && !client_usage;
    let bad = |e: translate::TranslateError| {
        let mut a = ApiError::invalid_request("invalid_request", e.to_string());
        a.kind = "invalid_request_error";
        a
    };
    let mut out = match (ingress, spec.target) {
        (WireFormat::OpenAiChat, WireFormat::AnthropicMessages) => {
            translate::openai_chat_to_anthropic(&map, spec.default_max_tokens).map_err(bad)?
        }
        (WireFormat::AnthropicMessages, WireFormat::OpenAiChat) => {
            translate::anthropic_to_openai_chat(&map).map_err(bad)?
        }
        (WireFormat::OpenAiChat, WireFormat::OpenAiChat)
        | (WireFormat::AnthropicMessages, WireFormat::AnthropicMessages) => map,
    };
    // A translated stream's usage is read by the translator, which leaves out the usage chunk
    // when `drop_usage` says so.
    edits::apply_map(&mut out, &edits);
    Ok((
        Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
        drop_usage,
    ))
}

enum Mode {
    /// Raw bytes (speech audio): relayed untouched and unread.
    Pass,
    /// Same dialect, whole body: keep it (up to a bound) to read `usage` at the end. A body in
    /// one piece is held by reference; only a body in several pieces is copied together.
    Tap { first: Option<Bytes>, copy: Vec<u8> },
    /// Same dialect stream: watch events for usage; drop the usage chunk we asked for.
    StreamTap {
        parser: SseParser,
        strip_usage: bool,
    },
    /// Different dialects: streams translated event by event; whole bodies (and error bodies)
    /// collected, then translated at the end.
    Translate {
        stream: Option<Box<dyn StreamTranslator>>,
        buf: Vec<u8>,
        back: Back,
    },
}

/// An incremental stream translator (either direction).
trait StreamTranslator: Send + Sync {
    fn push(&mut self, bytes: &[u8]) -> Vec<u8>;
    fn finish(&mut self) -> Vec<u8>;
    fn usage(&self) -> Option<(u64, u64)>;
}

impl StreamTranslator for AnthropicToOpenAiStream {
    fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        AnthropicToOpenAiStream::push(self, bytes)
    }
    fn finish(&mut self) -> Vec<u8> {
        AnthropicToOpenAiStream::finish(self)
    }
    fn usage(&self) -> Option<(u64, u64)> {
        AnthropicToOpenAiStream::usage(self)
    }
}

impl StreamTranslator for OpenAiToAnthropicStream {
    fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        OpenAiToAnthropicStream::push(self, bytes)
    }
    fn finish(&mut self) -> Vec<u8> {
        OpenAiToAnthropicStream::finish(self)
    }
    fn usage(&self) -> Option<(u64, u64)> {
        OpenAiToAnthropicStream::usage(self)
    }
}

/// How whole answers and error bodies are carried back to the client's dialect.
struct Back {
    whole: fn(&Value, u64) -> Option<Value>,
    error: fn(u16, &[u8]) -> Vec<u8>,
}

const TO_OPENAI: Back = Back {
    whole: |v, created| translate::anthropic_response_to_openai(v, created).ok(),
    error: translate::anthropic_error_to_openai,
};

const TO_ANTHROPIC: Back = Back {
    whole: |v, _| translate::openai_response_to_anthropic(v).ok(),
    error: translate::openai_error_to_anthropic,
};

/// Bound on the copy kept to read usage from a whole pass-through body.
const TAP_LIMIT: usize = 1 << 20;

pub struct Shaper {
    mode: Mode,
    /// The upstream answered with an error status: its body is an error envelope.
    error_status: Option<u16>,
    pub usage: Option<(u64, u64)>,
    /// Seconds of audio a transcription or translation answer reported.
    pub audio_seconds: Option<f64>,
    /// Read `audio_seconds` from the whole answer (transcriptions and translations).
    reads_seconds: bool,
    created: u64,
    /// A whole answer that had to be translated was not valid JSON of its dialect: what the
    /// client gets is an error envelope, to be sent with status 502.
    untranslatable: bool,
}

impl Shaper {
    /// A shaper for one attempt. `translated` says whether dialects differ.
    pub fn new(
        op: Operation,
        target: WireFormat,
        stream: bool,
        strip_usage: bool,
        id_hint: &str,
        model: &str,
        created: u64,
    ) -> Shaper {
        let ingress = ingress_format(op);
        let mode = match (ingress == target, stream) {
            _ if op.binary_answer() => Mode::Pass,
            (true, false) => Mode::Tap {
                first: None,
                copy: Vec::new(),
            },
            (true, true) => Mode::StreamTap {
                parser: SseParser::new(),
                strip_usage,
            },
            (false, _) if ingress == WireFormat::OpenAiChat => Mode::Translate {
                stream: stream.then(|| {
                    Box::new(
                        AnthropicToOpenAiStream::new(id_hint, created).include_usage(!strip_usage),
                    ) as Box<dyn StreamTranslator>
                }),
                buf: Vec::new(),
                back: TO_OPENAI,
            },
            (false, _) => Mode::Translate {
                stream: stream.then(|| {
                    Box::new(OpenAiToAnthropicStream::new(model, id_hint))
                        as Box<dyn StreamTranslator>
                }),
                buf: Vec::new(),
                back: TO_ANTHROPIC,
            },
        };
        Shaper {
            mode,
            error_status: None,
            usage: None,
            audio_seconds: None,
            reads_seconds: op.multipart(),
            created,
            untranslatable: false,
        }
    }

    /// Whether the body's length changes (the proxy then drops Content-Length).
    pub fn rewrites(&self) -> bool {
        match &self.mode {
            Mode::Tap { .. } | Mode::Pass => false,
            Mode::StreamTap { strip_usage, .. } => *strip_usage,
            _ => true,
        }
    }

    /// An upstream error answer as the client gets it: in the client's error envelope when the
    /// dialects differ, else as it came.
    pub fn error_for_client(&self, status: u16, body: &Bytes) -> Bytes {
        match &self.mode {
            Mode::Translate { back, .. } => Bytes::from((back.error)(status, body)),
            Mode::Pass | Mode::Tap { .. } | Mode::StreamTap { .. } => body.clone(),
        }
    }

    /// The usage reported so far: what a stream had counted when its client left after the
    /// last event, before the upstream ended its body.
    pub fn usage_so_far(&self) -> Option<(u64, u64)> {
        match &self.mode {
            Mode::Translate {
                stream: Some(s), ..
            } => s.usage().or(self.usage),
            Mode::Translate { stream: None, .. }
            | Mode::Pass
            | Mode::Tap { .. }
            | Mode::StreamTap { .. } => self.usage,
        }
    }

    /// Whether the whole answer could not be translated: its body is then an error envelope and
    /// its status must be 502, never the upstream's 2xx.
    pub fn untranslatable(&self) -> bool {
        self.untranslatable
    }

    /// Called with the upstream status before any body.
    pub fn on_status(&mut self, status: u16) {
        if status >= 400 {
            self.error_status = Some(status);
        }
    }

    /// Transforms one body piece in place.
    pub fn on_body(&mut self, body: &mut Option<Bytes>, end: bool) {
        let chunk = body.take().unwrap_or_default();
        let reads_seconds = self.reads_seconds && self.error_status.is_none();
        let out: Option<Bytes> = match &mut self.mode {
            Mode::Pass => Some(chunk),
            Mode::Tap { first, copy } => {
                if end && first.is_none() && copy.is_empty() {
                    // The whole answer in one call: read it in place.
                    self.usage = usage_only(&chunk);
                    if reads_seconds {
                        self.audio_seconds = super::audio_usage::answer_seconds(&chunk);
                    }
                } else {
                    let held = first.as_ref().map_or(0, Bytes::len) + copy.len();
                    if !chunk.is_empty() && held + chunk.len() <= TAP_LIMIT {
                        if held == 0 {
                            *first = Some(chunk.clone());
                        } else {
                            if let Some(f) = first.take() {
                                copy.extend_from_slice(&f);
                            }
                            copy.extend_from_slice(&chunk);
                        }
                    }
                    if end {
                        let whole: &[u8] = first.as_deref().unwrap_or(copy);
                        self.usage = usage_only(whole);
                        if reads_seconds {
                            self.audio_seconds = super::audio_usage::answer_seconds(whole);
                        }
                        first.take();
                    }
                }
                Some(chunk)
            }
            // An error answer to a stream request is one JSON envelope, no events: it passes
            // as it came.
            Mode::StreamTap { .. } if self.error_status.is_some() => Some(chunk),
            Mode::StreamTap { parser, .. }
                if !end && parser.is_idle() && chunk.ends_with(b"\n\n") && !has_usage(&chunk) =>
            {
                // Whole events, none carrying usage: they pass untouched, unparsed.
                Some(chunk)
            }
            Mode::StreamTap {
                parser,
                strip_usage,
            } => {
                let mut events = parser.push(&chunk);
                if end {
                    events.extend(parser.finish());
                }
                let mut out = Vec::with_capacity(if *strip_usage { chunk.len() } else { 0 });
                for ev in &events {
                    // Only the usage chunk mentions usage: skip parsing everything else.
                    let usage_only = if ev.data.contains("\"usage\"") {
                        let v = serde_json::from_str::<Value>(&ev.data).unwrap_or(Value::Null);
                        if let Some(u) = stream_usage(&v, self.usage) {
                            self.usage = Some(u);
                        }
                        v.get("choices")
                            .and_then(Value::as_array)
                            .is_some_and(Vec::is_empty)
                    } else {
                        false
                    };
                    if *strip_usage && !usage_only {
                        translate::write_event(&mut out, ev.event.as_deref(), &ev.data);
                    }
                }
                if *strip_usage {
                    Some(Bytes::from(out))
                } else {
                    Some(chunk)
                }
            }
            Mode::Translate { stream, buf, back } => match (self.error_status, stream.as_mut()) {
                (None, Some(s)) => {
                    let mut out = s.push(&chunk);
                    if end {
                        out.extend(s.finish());
                        self.usage = s.usage();
                    }
                    Some(Bytes::from(out))
                }
                (status, _) => {
                    buf.extend_from_slice(&chunk);
                    if !end {
                        None
                    } else if let Some(st) = status {
                        Some(Bytes::from((back.error)(st, buf)))
                    } else {
                        let whole = serde_json::from_slice::<Value>(buf)
                            .ok()
                            .and_then(|v| (back.whole)(&v, self.created));
                        Some(Bytes::from(match whole {
                            Some(v) => {
                                self.usage = usage_of(&v);
                                serde_json::to_vec(&v).unwrap_or_default()
                            }
                            None => {
                                self.untranslatable = true;
                                (back.error)(502, b"upstream answer could not be translated")
                            }
                        }))
                    }
                }
            },
        };
        *body = out.filter(|b| !b.is_empty() || end);
    }
}

#[derive(serde::Deserialize)]
struct Counts {
    prompt_tokens: Option<u64>,
    input_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl Counts {
    fn pair(self) -> Option<(u64, u64)> {
        let input = self.prompt_tokens.or(self.input_tokens)?;
        Some((
            input,
            self.completion_tokens.or(self.output_tokens).unwrap_or(0),
        ))
    }
}

/// Reads only `usage` from a whole answer: every other field is skipped without being built
/// into a value, which keeps the tap cheap on the pass-through path.
fn usage_only(body: &[u8]) -> Option<(u64, u64)> {
    match usage_at_end(body) {
        Some(found) => found,
        None => usage_scanned(body),
    }
}

/// The common case without a scan: the answer ends with its `usage` member, as OpenAI's and
/// Anthropic's answers usually do. `None` when that is not certain (a `usage` key elsewhere,
/// members after it, an escaped quote before it): the caller then scans the whole answer.
fn usage_at_end(body: &[u8]) -> Option<Option<(u64, u64)>> {
    const KEY: &[u8] = b"\"usage\"";
    // One searcher for every answer (building one costs more than a search).
    static FINDER: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new(KEY));
    let at = FINDER.rfind(body)?;
    // A key starts a member: `{` or `,` before it.
    let before = body[..at].iter().rposition(|b| !b.is_ascii_whitespace())?;
    if !matches!(body[before], b'{' | b',') {
        return None;
    }
    let after_key = at + KEY.len();
    let colon = after_key
        + body[after_key..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())?;
    if body[colon] != b':' {
        return None;
    }
    let start = colon
        + 1
        + body[colon + 1..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())?;
    let (counts, end) = if body[start..].starts_with(b"null") {
        (None, start + 4)
    } else {
        let (counts, end) = counts_at(body, start)?;
        (Some(counts), end)
    };
    // Then only the top-level object's end: a nested `usage` would be followed by its
    // parents' ends as well.
    (body[end..].trim_ascii() == b"}").then(|| counts.and_then(Counts::pair))
}

/// The token counts of the `usage` object at `start` and the offset past it. `None` unless the
/// object is plainly what serde_json would read the same way: unescaped keys, each count at
/// most once and a plain integer or `null`; other members' values are skipped by the
/// validating scanner. Anything else is left to serde_json and its exact rules.
fn counts_at(b: &[u8], start: usize) -> Option<(Counts, usize)> {
    const KEYS: [&[u8]; 4] = [
        b"prompt_tokens",
        b"input_tokens",
        b"completion_tokens",
        b"output_tokens",
    ];
    let ws = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut found: [Option<Option<u64>>; 4] = [None; 4];
    let mut i = ws(start);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            // The key up to its closing quote, in one pass that also notes any byte needing
            // the strict path (an escape, a control character, non-ASCII).
            let mut key_len = 0;
            let mut plain = true;
            loop {
                let c = *b.get(i + 1 + key_len)?;
                if c == b'"' {
                    break;
                }
                plain &= c != b'\\' && (0x20..0x80).contains(&c);
                key_len += 1;
            }
            let key = &b[i + 1..i + 1 + key_len];
            if !plain
                && (key.iter().any(|c| *c == b'\\' || *c < 0x20)
                    || std::str::from_utf8(key).is_err())
            {
                return None;
            }
            i = ws(i + 2 + key_len);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = ws(i + 1);
            let wanted = match key.len() {
                12 if key == KEYS[1] => Some(1),
                13 if key == KEYS[0] => Some(0),
                13 if key == KEYS[3] => Some(3),
                17 if key == KEYS[2] => Some(2),
                _ => None,
            };
            match wanted {
                Some(k) => {
                    if found[k].is_some() {
                        return None;
                    }
                    let (value, end) = plain_count(b, i)?;
                    found[k] = Some(value);
                    i = end;
                }
                // Other members are mostly plain integers (`total_tokens`): stepped over
                // directly; anything else goes through the validating scanner.
                None => {
                    i = match plain_count(b, i) {
                        Some((_, end)) => end,
                        None => super::json_scan::skip_value_at(b, i).ok()?,
                    }
                }
            }
            i = ws(i);
            match b.get(i) {
                Some(b',') => i = ws(i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    let count = |k: usize| found[k].flatten();
    Some((
        Counts {
            prompt_tokens: count(0),
            input_tokens: count(1),
            completion_tokens: count(2),
            output_tokens: count(3),
        },
        i,
    ))
}

/// A count at `i`: `null`, or an integer without sign, fraction or exponent that fits a u64.
fn plain_count(b: &[u8], i: usize) -> Option<(Option<u64>, usize)> {
    if b.get(i..i + 4) == Some(b"null") {
        return Some((None, i + 4));
    }
    let digits = b
        .get(i..)?
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let end = i + digits;
    if digits == 0 || (digits > 1 && b[i] == b'0') || matches!(b.get(end), Some(b'.' | b'e' | b'E'))
    {
        return None;
    }
    let mut n: u64 = 0;
    for c in &b[i..end] {
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some((Some(n), end))
}

/// The top-level `usage` member, found by the validating scanner; only that member goes
/// through serde.
fn usage_scanned(body: &[u8]) -> Option<(u64, u64)> {
    let mut span = None;
    super::json_scan::scan_object(body, ["usage"], |_, m| {
        span = Some(m.span);
        Ok(())
    })
    .ok()?;
    let (start, end) = span?;
    serde_json::from_slice::<Option<Counts>>(&body[start..end])
        .ok()??
        .pair()
}

/// (input, output) tokens from an OpenAI or Anthropic `usage` object.
pub fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let u = v.get("usage")?;
    if u.is_null() {
        return None;
    }
    let get = |k: &str| u.get(k).and_then(Value::as_u64);
    let input = get("prompt_tokens").or(get("input_tokens"))?;
    let output = get("completion_tokens")
        .or(get("output_tokens"))
        .unwrap_or(0);
    Some((input, output))
}

/// The usage an event of a same-dialect stream reports, given what earlier events reported:
/// OpenAI's usage chunk; Anthropic's `message_start` (`message.usage`, the input tokens) and
/// `message_delta` (`usage`, the output tokens so far, sometimes the input tokens again); the
/// Responses API's `response.completed` (`response.usage`).
fn stream_usage(v: &Value, so_far: Option<(u64, u64)>) -> Option<(u64, u64)> {
    if let Some(u) = ["message", "response"]
        .iter()
        .find_map(|k| v.get(*k).and_then(usage_of))
    {
        return Some(u);
    }
    let u = v.get("usage").filter(|u| !u.is_null())?;
    let get = |k: &str| u.get(k).and_then(Value::as_u64);
    let input = get("prompt_tokens")
        .or(get("input_tokens"))
        .or(so_far.map(|s| s.0))?;
    let output = get("completion_tokens")
        .or(get("output_tokens"))
        .or(so_far.map(|s| s.1))
        .unwrap_or(0);
    Some((input, output))
}

/// Whether `piece`, as the client gets it, ends the stream of `op`: OpenAI's `data: [DONE]`,
/// Anthropic's `message_stop`, the Responses API's `response.completed`. A client may close
/// its connection once it has read that, before the upstream ends its body.
pub fn ends_stream(op: Operation, piece: &[u8]) -> bool {
    match op {
        Operation::Messages => piece.ends_with(b"{\"type\":\"message_stop\"}\n\n"),
        Operation::Responses => {
            piece.ends_with(b"\n\n")
                && memchr::memmem::find(piece, b"\"type\":\"response.completed\"").is_some()
        }
        Operation::Chat
        | Operation::Completion
        | Operation::Embedding
        | Operation::CountTokens
        | Operation::Transcription
        | Operation::Translation
        | Operation::Speech
        | Operation::Rerank
        | Operation::Moderation
        | Operation::ImageGeneration => piece.ends_with(b"data: [DONE]\n\n"),
    }
}

/// How many SSE `data:` lines start in `chunk` (events of a stream, for time per token): at its
/// start or after a line feed. A line cut between two chunks counts in the chunk where it begins.
pub fn count_events(chunk: &[u8]) -> u64 {
    // Line feeds are two or three an event, so this looks at few places; a search for the
    // field's name would run a substring searcher over every byte.
    let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', chunk).map(|i| i + 1));
    starts.filter(|&i| chunk[i..].starts_with(b"data:")).count() as u64
}

/// Whether `chunk` may carry a usage object: some `"usage"` key not followed by `null`.
fn has_usage(chunk: &[u8]) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    let mut rest = chunk;
    // One searcher for every chunk of every stream (building one costs more than a search).
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    while let Some(at) = FINDER.find(rest) {
        rest = &rest[at + KEY.len()..];
        let value = rest
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b':'))
            .map_or(&[][..], |i| &rest[i..]);
        if !value.starts_with(b"null") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek_of(b: &[u8]) -> Peek {
        crate::proxy::body::peek(b).unwrap()
    }

    #[test]
    fn the_tap_reads_usage_of_both_dialects() {
        assert_eq!(usage_only(br#"{"id":"x","choices":[{"a":[1,{"b":2}]}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#), Some((3, 4)));
        assert_eq!(
            usage_only(br#"{"content":[],"usage":{"input_tokens":5,"output_tokens":6}}"#),
            Some((5, 6))
        );
        assert_eq!(usage_only(br#"{"usage":null}"#), None);
        assert_eq!(usage_only(b"not json"), None);
    }

    #[test]
    fn usage_at_the_end_is_read_without_a_scan_and_everything_else_is_scanned() {
        let at_end =
            br#"{"id":"x","choices":[],"usage": {"prompt_tokens":3,"completion_tokens":4} }
"#;
        assert_eq!(usage_at_end(at_end), Some(Some((3, 4))));
        assert_eq!(usage_only(at_end), Some((3, 4)));
        assert_eq!(usage_at_end(br#"{"id":"x","usage":null}"#), Some(None));
        // Members after usage (OpenAI's system_fingerprint): the scan finds it.
        let before_more =
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":2},"system_fingerprint":"fp"}"#;
        assert_eq!(usage_at_end(before_more), None);
        assert_eq!(usage_only(before_more), Some((1, 2)));
        // A nested `usage` last (a tool's input) is not the answer's.
        let nested = br#"{"usage":{"input_tokens":7,"output_tokens":8},"content":[{"type":"tool_use","input":{"usage":{"input_tokens":1}}}]}"#;
        assert_eq!(usage_at_end(nested), None);
        assert_eq!(usage_only(nested), Some((7, 8)));
        let nested_only = br#"{"content":[{"input":{"usage":{"input_tokens":1}}}]}"#;
        assert_eq!(usage_at_end(nested_only), None);
        assert_eq!(usage_only(nested_only), None);
        // Text that quotes a usage object is a string, not a member.
        let quoted =
            br#"{"usage":{"prompt_tokens":5},"text":"see \"usage\":{\"prompt_tokens\":9}"}"#;
        assert_eq!(usage_only(quoted), Some((5, 0)));
        let quoted_end = br#"{"text":"a \"usage\": {\"prompt_tokens\":9}}"}"#;
        assert_eq!(usage_at_end(quoted_end), None);
        assert_eq!(usage_only(quoted_end), None);
    }

    /// The shaper of an OpenAI stream to an OpenAI target whose client did not ask for usage.
    /// `usage_only` against the whole answer parsed by serde_json: the top-level `usage` member
    /// into `Counts` (so a duplicate count is an error, as serde makes it).
    fn serde_usage(body: &[u8]) -> Option<(u64, u64)> {
        #[derive(serde::Deserialize)]
        struct Top<'a> {
            #[serde(borrow)]
            usage: Option<&'a serde_json::value::RawValue>,
        }
        let top: Top<'_> = serde_json::from_slice(body).ok()?;
        serde_json::from_str::<Option<Counts>>(top.usage?.get())
            .ok()??
            .pair()
    }

    #[test]
    fn usage_with_a_key_that_is_not_utf8_is_refused_as_serde_refuses_it() {
        let body = b"{\"usage\":{\"\xff\":1,\"prompt_tokens\":2}}";
        assert_eq!(serde_usage(body), None);
        assert_eq!(usage_only(body), None);
        let fine = b"{\"usage\":{\"\xc3\xa9\":1,\"prompt_tokens\":2}}";
        assert_eq!(usage_only(fine), Some((2, 0)));
        assert_eq!(serde_usage(fine), Some((2, 0)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2000))]
        #[test]
        fn usage_only_agrees_with_a_full_parse(
            before in proptest::collection::vec(0usize..4, 0..3),
            counts in proptest::collection::vec((0usize..8, 0usize..13), 0..6),
            after in proptest::bool::ANY,
            ws in proptest::sample::select(vec!["", " ", "\n  "]),
        ) {
            let keys = ["prompt_tokens", "input_tokens", "completion_tokens", "output_tokens",
                "total_tokens", "prompt_tokens_details", "prompt\\u005ftokens", "caf\u{e9}"];
            let values = ["12", "0", "null", "1.5", "-3", "\"7\"", "{\"cached_tokens\":2}",
                "012", "1e3", "18446744073709551616", "18446744073709551615", "[1,{}]", "nul"];
            let members: Vec<String> = counts
                .iter()
                .map(|(k, v)| format!("\"{}\":{ws}{}", keys[*k], values[*v]))
                .collect();
            let usage = format!("{{{ws}{}{ws}}}", members.join(","));
            let fillers = ["\"id\":\"x\"", "\"usage_note\":\"usage\"",
                "\"choices\":[{\"usage\":{\"prompt_tokens\":99}}]", "\"n\":1"];
            let mut parts: Vec<String> = before.iter().map(|i| fillers[*i].to_string()).collect();
            parts.push(format!("\"usage\"{ws}:{ws}{usage}"));
            if after {
                parts.push("\"tail\":true".to_string());
            }
            let body = format!("{{{ws}{}{ws}}}", parts.join(&format!(",{ws}")));
            proptest::prop_assert_eq!(usage_only(body.as_bytes()), serde_usage(body.as_bytes()), "{}", body);
        }
    }

    fn openai_stream_shaper() -> Shaper {
        Shaper::new(
            Operation::Chat,
            WireFormat::OpenAiChat,
            true,
            true,
            "id",
            "m",
            0,
        )
    }

    #[test]
    fn the_whole_body_tap_reads_usage_however_the_body_is_cut() {
        let answer: &[u8] =
            br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        for cuts in [vec![], vec![10], vec![1, 40], vec![0, 20, 20, 60]] {
            for trailing_empty_end in [false, true] {
                let mut tap = Shaper::new(
                    Operation::Chat,
                    WireFormat::OpenAiChat,
                    false,
                    false,
                    "id",
                    "m",
                    0,
                );
                let mut pieces = Vec::new();
                let mut at = 0;
                for c in &cuts {
                    pieces.push(&answer[at..*c.max(&at)]);
                    at = *c.max(&at);
                }
                pieces.push(&answer[at..]);
                let mut out = Vec::new();
                let n = pieces.len();
                for (k, p) in pieces.into_iter().enumerate() {
                    let end = k + 1 == n && !trailing_empty_end;
                    let mut body = Some(Bytes::copy_from_slice(p));
                    tap.on_body(&mut body, end);
                    out.extend_from_slice(&body.unwrap_or_default());
                }
                if trailing_empty_end {
                    let mut body = None;
                    tap.on_body(&mut body, true);
                    out.extend_from_slice(&body.unwrap_or_default());
                }
                assert_eq!(out, answer, "{cuts:?}");
                assert_eq!(tap.usage, Some((3, 4)), "{cuts:?} {trailing_empty_end}");
            }
        }
    }

    #[test]
    fn events_are_counted_by_their_data_lines() {
        assert_eq!(count_events(b""), 0);
        assert_eq!(count_events(b"data: {}\n\ndata: [DONE]\n\n"), 2);
        // A `data: ` inside an event's JSON is not a line of its own.
        assert_eq!(count_events(b"event: x\ndata: {\"a\":\"data: \"}\n\n"), 1);
        assert_eq!(count_events(b"data:x\r\ndata: y\n\n"), 2);
        // A line cut between chunks counts once, where it begins.
        assert_eq!(count_events(b"data: {\"a\":1}\n\ndata:"), 2);
        assert_eq!(count_events(b" {\"b\":2}\n\n"), 0);
        assert_eq!(count_events(b"dat"), 0);
    }

    #[test]
    fn usage_is_found_unless_null() {
        assert!(!has_usage(
            br#"data: {"choices":[{"delta":{}}],"usage":null}"#
        ));
        assert!(!has_usage(br#"data: {"choices":[],"usage" : null}"#));
        assert!(!has_usage(b"data: {\"choices\":[]}\n\n"));
        assert!(has_usage(
            br#"data: {"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(has_usage(br#"{"usage":null} {"usage": {"a":1}}"#));
        assert!(has_usage(br#"{"usage":"#));
    }

    #[test]
    fn whole_events_without_usage_pass_untouched_and_the_usage_chunk_is_still_stripped() {
        let mut s = openai_stream_shaper();
        let chunks: [&[u8]; 6] = [
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}],\"usage\":null}\n\n",
            // Odd spacing the parser would normalise: passed as the upstream wrote it.
            b"data:{\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
            // An event split across two chunks goes through the parser.
            b"data: {\"choices\":[{\"delta\":{\"content\":",
            b"\"b\"}}]}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
            b"data: [DONE]\n\n",
        ];
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(c));
            s.on_body(&mut body, i + 1 == chunks.len());
            out.push(body.unwrap_or_default());
        }
        assert_eq!(&out[1][..], chunks[1], "passed byte for byte");
        let text: Vec<u8> = out.concat();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("\"content\":\"b\""), "{text}");
        assert!(
            !text.contains("prompt_tokens"),
            "usage chunk stripped: {text}"
        );
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert_eq!(s.usage, Some((3, 2)));
    }

    #[test]
    fn same_dialect_non_stream_is_the_plain_rewrite() {
        let raw = br#"{"model":"x","messages":[]}"#;
        let spec = BodySpec {
            op: Operation::Chat,
            target: WireFormat::OpenAiChat,
            upstream_model: "m",
            override_params: None,
            drop_provider: false,
            default_max_tokens: 10,
        };
        let (b, injected) = upstream_body(raw, &peek_of(raw), &spec).unwrap();
        assert_eq!(&b[..], br#"{"model":"m","messages":[]}"#);
        assert!(!injected);
    }

    #[test]
    fn openai_chat_and_completions_streams_ask_for_usage_and_the_shaper_strips_it() {
        let chat = (
            Operation::Chat,
            &br#"{"model":"x","stream":true,"messages":[]}"#[..],
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        );
        let completion = (
            Operation::Completion,
            &br#"{"model":"x","prompt":"hi","stream":true}"#[..],
            "data: {\"choices\":[{\"text\":\"a\",\"index\":0}]}\n\n",
        );
        for (op, raw, first) in [chat, completion] {
            let spec = BodySpec {
                op,
                target: WireFormat::OpenAiChat,
                upstream_model: "m",
                override_params: None,
                drop_provider: false,
                default_max_tokens: 10,
            };
            let (b, injected) = upstream_body(raw, &peek_of(raw), &spec).unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], true, "{op:?}");
            assert!(injected);
            let mut s = Shaper::new(op, WireFormat::OpenAiChat, true, true, "id", "m", 0);
            s.on_status(200);
            let stream = format!("{first}data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":1}}}}\n\ndata: [DONE]\n\n");
            let mut body = Some(Bytes::from(stream));
            s.on_body(&mut body, true);
            let out = String::from_utf8(body.unwrap().to_vec()).unwrap();
            assert!(!out.contains("usage"), "{out}");
            assert!(
                out.contains("\"a\"") && out.ends_with("data: [DONE]\n\n"),
                "{out}"
            );
            assert_eq!(s.usage, Some((3, 1)), "{op:?}");
        }
    }

    #[test]
    fn usage_request_is_spliced_when_certain_and_matches_the_parsed_path() {
        let spec = |params: Option<&'static Map<String, Value>>| BodySpec {
            op: Operation::Chat,
            target: WireFormat::OpenAiChat,
            upstream_model: "up\"model",
            override_params: params,
            drop_provider: false,
            default_max_tokens: 10,
        };
        for raw in [
            &br#"{"model":"x","stream":true,"messages":[{"role":"user","content":"hi }"}]}"#[..],
            br#" { "messages" : [] , "stream" : true , "model" : "x" }  "#,
            br#"{"stream":true,"model":"x"}"#,
        ] {
            let p = peek_of(raw);
            let (spliced, _) = upstream_body(raw, &p, &spec(None)).unwrap();
            let parsed: Value = serde_json::from_slice(&spliced).expect("valid JSON");
            let mut expected: Value = serde_json::from_slice(raw).unwrap();
            expected["model"] = Value::String("up\"model".into());
            expected["stream_options"] = serde_json::json!({"include_usage": true});
            assert_eq!(parsed, expected, "{}", String::from_utf8_lossy(&spliced));
            let (b, injected) = upstream_body(raw, &p, &spec(None)).unwrap();
            assert_eq!(b, spliced);
            assert!(injected);
        }
        // Not certain: the parsed path runs, and keeps the client's own stream_options.
        for raw in [
            &br#"{"model":"x","stream":true,"stream_options":{"include_usage":false}}"#[..],
            br#"{"model":"x","stream":true,"stream\u005foptions":{"include_usage":false}}"#,
        ] {
            let p = peek_of(raw);
            let (b, injected) = upstream_body(raw, &p, &spec(None)).unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], false);
            assert!(!injected);
        }
    }

    #[test]
    fn openai_chat_to_anthropic_target_translates_the_body() {
        let raw = br#"{"model":"x","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#;
        let spec = BodySpec {
            op: Operation::Chat,
            target: WireFormat::AnthropicMessages,
            upstream_model: "claude",
            override_params: None,
            drop_provider: false,
            default_max_tokens: 4096,
        };
        let (b, _) = upstream_body(raw, &peek_of(raw), &spec).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["model"], "claude");
        assert_eq!(v["system"], "be brief");
        assert_eq!(v["max_tokens"], 4096);
    }

    #[test]
    fn whole_anthropic_answer_becomes_a_chat_completion() {
        let mut s = Shaper::new(
            Operation::Chat,
            WireFormat::AnthropicMessages,
            false,
            false,
            "id",
            "claude",
            7,
        );
        s.on_status(200);
        let msg = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":2}}"#;
        let mut first = Some(Bytes::from_static(&msg[..20]));
        s.on_body(&mut first, false);
        assert!(first.is_none(), "held until complete");
        let mut rest = Some(Bytes::from_static(&msg[20..]));
        s.on_body(&mut rest, true);
        let v: Value = serde_json::from_slice(&rest.unwrap()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hello");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(s.usage, Some((5, 2)));
    }

    #[test]
    fn anthropic_errors_become_openai_envelopes() {
        let mut s = Shaper::new(
            Operation::Chat,
            WireFormat::AnthropicMessages,
            true,
            false,
            "id",
            "c",
            0,
        );
        s.on_status(429);
        let mut b = Some(Bytes::from_static(
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        ));
        s.on_body(&mut b, true);
        let v: Value = serde_json::from_slice(&b.unwrap()).unwrap();
        assert_eq!(v["error"]["message"], "slow down");
    }

    #[test]
    fn a_translated_stream_shows_a_usage_chunk_only_when_the_client_asked() {
        let spec = BodySpec {
            op: Operation::Chat,
            target: WireFormat::AnthropicMessages,
            upstream_model: "claude",
            override_params: None,
            drop_provider: false,
            default_max_tokens: 64,
        };
        let events = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        for (raw, asked) in [
            (&br#"{"model":"x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#[..], false),
            (br#"{"model":"x","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#, true),
        ] {
            let (_, drop_usage) = upstream_body(raw, &peek_of(raw), &spec).unwrap();
            assert_eq!(drop_usage, !asked);
            let mut s = Shaper::new(
                Operation::Chat,
                WireFormat::AnthropicMessages,
                true,
                drop_usage,
                "id",
                "claude",
                0,
            );
            s.on_status(200);
            let mut b = Some(Bytes::from_static(events.as_bytes()));
            s.on_body(&mut b, true);
            let out = String::from_utf8(b.unwrap().to_vec()).unwrap();
            assert_eq!(out.contains(r#""choices":[]"#), asked, "{out}");
            assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
            assert_eq!(s.usage, Some((5, 3)), "usage is counted either way");
        }
    }

    #[test]
    fn an_anthropic_stream_to_an_anthropic_client_counts_its_usage() {
        let mut s = Shaper::new(
            Operation::Messages,
            WireFormat::AnthropicMessages,
            true,
            false,
            "id",
            "claude",
            0,
        );
        s.on_status(200);
        let events = [
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":13,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        for (i, e) in events.iter().enumerate() {
            let mut b = Some(Bytes::from_static(e.as_bytes()));
            s.on_body(&mut b, i + 1 == events.len());
            assert_eq!(b.as_deref(), Some(e.as_bytes()), "passed through untouched");
        }
        assert_eq!(s.usage, Some((13, 9)));
    }

    #[test]
    fn the_last_event_of_each_stream_dialect_is_recognised() {
        assert!(ends_stream(
            Operation::Chat,
            b"data: {}\n\ndata: [DONE]\n\n"
        ));
        assert!(!ends_stream(
            Operation::Chat,
            b"data: {\"x\":\"[DONE]\"}\n\n"
        ));
        assert!(ends_stream(
            Operation::Messages,
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        ));
        assert!(!ends_stream(Operation::Messages, b"data: [DONE]\n\n"));
        assert!(ends_stream(
            Operation::Responses,
            b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n"
        ));
        assert!(!ends_stream(
            Operation::Responses,
            b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\"}\n\n"
        ));
    }

    #[test]
    fn an_error_answer_to_a_stream_that_strips_usage_passes_whole() {
        let mut s = Shaper::new(
            Operation::Chat,
            WireFormat::OpenAiChat,
            true,
            true,
            "id",
            "m",
            0,
        );
        s.on_status(400);
        let envelope: &[u8] = br#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":"x"}}"#;
        let mut first = Some(Bytes::copy_from_slice(&envelope[..30]));
        s.on_body(&mut first, false);
        let mut rest = Some(Bytes::copy_from_slice(&envelope[30..]));
        s.on_body(&mut rest, true);
        let got = [first.unwrap_or_default(), rest.unwrap_or_default()].concat();
        assert_eq!(got, envelope);
        assert_eq!(s.usage, None);
    }

    #[test]
    fn a_transcription_in_pieces_reports_its_audio_seconds() {
        let mut s = Shaper::new(
            Operation::Transcription,
            WireFormat::OpenAiChat,
            false,
            false,
            "id",
            "whisper",
            0,
        );
        s.on_status(200);
        let answer = br#"{"task":"transcribe","duration":12.5,"text":"hello there"}"#;
        for (i, piece) in answer.chunks(10).enumerate() {
            let mut b = Some(Bytes::copy_from_slice(piece));
            s.on_body(&mut b, (i + 1) * 10 >= answer.len());
            assert_eq!(b.as_deref(), Some(piece), "passed through untouched");
        }
        assert_eq!(s.audio_seconds, Some(12.5));
    }

    #[test]
    fn speech_passes_untouched_and_unread() {
        let mut s = Shaper::new(
            Operation::Speech,
            WireFormat::OpenAiChat,
            false,
            false,
            "id",
            "tts",
            0,
        );
        s.on_status(200);
        assert!(!s.rewrites());
        // Bytes that look like an SSE event with usage are audio here: neither parsed nor kept.
        let audio = Bytes::from_static(b"data: {\"usage\":{\"prompt_tokens\":9}}\n\n\xff\x00");
        let mut b = Some(audio.clone());
        s.on_body(&mut b, true);
        assert_eq!(b, Some(audio));
        assert_eq!(s.usage, None);
        assert_eq!(s.audio_seconds, None);
    }
}
