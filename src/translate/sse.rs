//! Incremental Server-Sent Events framing: turning bytes into events and events into bytes.
//!
//! Upstream bodies arrive as arbitrary chunks, so the parser keeps whatever it cannot yet
//! finish (half a line, half a UTF-8 character, a `\r` whose `\n` is still in flight) and
//! returns only complete events. It follows the event-stream parsing rules of the WHATWG
//! HTML standard (section "Server-sent events"), which both the OpenAI and the Anthropic
//! streaming APIs use. It must never interpret the `data` payload (that is the job of
//! `stream`), never buffer more than one unfinished event, and never panic on malformed input.

/// One dispatched event: the value of its `event:` field, if any, and its joined `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `None` when the event had none (OpenAI streams never send one).
    pub event: Option<String>,
    /// All `data:` lines of the event joined with `\n`, without the final newline.
    pub data: String,
}

impl SseEvent {
    /// An event with only a `data` field.
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            event: None,
            data: data.into(),
        }
    }

    /// An event with both an `event` name and `data`.
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        Self {
            event: Some(event.into()),
            data: data.into(),
        }
    }

    /// The event in wire format, terminated by the blank line that dispatches it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_event(&mut out, self.event.as_deref(), &self.data);
        out
    }
}

/// Appends one event in wire format to `out`.
///
/// Multi-line `data` is split into several `data:` lines, because a raw newline inside a
/// single `data:` line would end that line early and corrupt the event for the reader.
/// The event name is cut at its first line break for the same reason.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    if let Some(name) = event {
        let name = name.split(['\r', '\n']).next().unwrap_or_default();
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in split_lines(data) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Splits on `\r\n`, `\n` or `\r`, the three line endings a reader accepts, so that
/// whichever one the payload contains becomes a separate `data:` line. An empty payload
/// still yields one (empty) line, so the event keeps its data field.
fn split_lines(data: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = data;
    loop {
        match rest.find(['\r', '\n']) {
            None => {
                lines.push(rest);
                return lines;
            }
            Some(pos) => {
                lines.push(&rest[..pos]);
                let skip = if rest[pos..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = &rest[pos + skip..];
            }
        }
    }
}

/// The three UTF-8 bytes of U+FEFF, which a stream may start with and which must be ignored.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Incremental SSE parser. Feed it chunks with [`SseParser::push`] and call
/// [`SseParser::finish`] once the body has ended.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line. Kept as bytes rather than text so that
    /// a UTF-8 character split across two chunks is decoded only once it is whole.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`; a `\n` at the start of the next one belongs to it.
    after_cr: bool,
    /// At least one line has been completed, so a BOM can no longer appear.
    seen_first_line: bool,
    /// The `event:` field of the event being assembled.
    event: Option<String>,
    /// The `data:` lines of the event being assembled, each followed by `\n`.
    data: String,
    /// Whether any `data:` line was seen: an event with no data field is not dispatched,
    /// but one with an empty `data:` line is (with empty data).
    has_data: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the parser sits between two events with nothing held (after the first line), so
    /// a chunk that is itself whole events can be looked at without it.
    pub fn is_idle(&self) -> bool {
        self.seen_first_line
            && self.line.is_empty()
            && !self.after_cr
            && self.event.is_none()
            && self.data.is_empty()
            && !self.has_data
    }

    /// Consumes `bytes` and returns the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while let Some((&first, tail)) = rest.split_first() {
            if self.after_cr && first == b'\n' {
                // Second half of a `\r\n` whose line was already ended at the `\r`.
                self.after_cr = false;
                rest = tail;
                continue;
            }
            // Whole runs of line content at once, up to the next line ending.
            let Some(i) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.after_cr = false;
                self.line.extend_from_slice(rest);
                break;
            };
            self.line.extend_from_slice(&rest[..i]);
            self.end_line(&mut events);
            self.after_cr = rest[i] == b'\r';
            rest = &rest[i + 1..];
        }
        events
    }

    /// Ends the stream: a last line without a line ending is processed and an event
    /// still being assembled is dispatched, since upstreams do not always close the body
    /// with a blank line. The parser is then ready for a new stream.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut events);
        }
        self.dispatch(&mut events);
        *self = Self::default();
        events
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let mut raw = std::mem::take(&mut self.line);
        self.take_line(&mut raw, events);
        // The buffer keeps its capacity for the next line.
        raw.clear();
        self.line = raw;
    }

    fn take_line(&mut self, raw: &mut Vec<u8>, events: &mut Vec<SseEvent>) {
        if !self.seen_first_line {
            self.seen_first_line = true;
            if raw.starts_with(BOM) {
                raw.drain(..BOM.len());
            }
        }
        // Invalid UTF-8 becomes U+FFFD, as the standard's decoding step prescribes, rather
        // than failing the whole stream over one bad byte.
        let line = String::from_utf8_lossy(raw);
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(':') {
            // Comment line (servers use them as keep-alives).
            return;
        }
        let (field, value) = match line.find(':') {
            Some(pos) => {
                let value = &line[pos + 1..];
                (&line[..pos], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            // `id` and `retry` matter only to a reconnecting browser, and unknown fields
            // must be ignored.
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take().filter(|name| !name.is_empty());
        let mut data = std::mem::take(&mut self.data);
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        if data.ends_with('\n') {
            data.pop();
        }
        events.push(SseEvent { event, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.push(chunk));
        }
        events.extend(parser.finish());
        events
    }

    #[test]
    fn parses_named_and_unnamed_events() {
        let input = b"event: ping\ndata: {\"type\": \"ping\"}\n\ndata: hello\n\n";
        assert_eq!(
            parse_all(&[input]),
            vec![
                SseEvent::named("ping", "{\"type\": \"ping\"}"),
                SseEvent::data("hello")
            ]
        );
    }

    #[test]
    fn handles_crlf_and_cr_line_endings() {
        let input = b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\rdata: 3\n\n";
        assert_eq!(
            parse_all(&[input]),
            vec![
                SseEvent::named("a", "1"),
                SseEvent::data("2"),
                SseEvent::data("3")
            ]
        );
    }

    #[test]
    fn joins_multi_line_data_and_skips_comments() {
        let input = b": keep-alive\ndata: first\n: inside\ndata:second\ndata\n\n";
        assert_eq!(parse_all(&[input]), vec![SseEvent::data("first\nsecond\n")]);
    }

    #[test]
    fn only_one_leading_space_is_removed() {
        assert_eq!(
            parse_all(&[b"data:  two spaces\n\n"]),
            vec![SseEvent::data(" two spaces")]
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_empty_data_is() {
        assert_eq!(
            parse_all(&[b"event: x\n\ndata:\n\n"]),
            vec![SseEvent::data("")]
        );
    }

    #[test]
    fn ignores_id_retry_and_unknown_fields() {
        assert_eq!(
            parse_all(&[b"id: 7\nretry: 10\nfoo: bar\ndata: x\n\n"]),
            vec![SseEvent::data("x")]
        );
    }

    #[test]
    fn strips_a_leading_bom_once() {
        assert_eq!(
            parse_all(&[b"\xEF\xBB", b"\xBFdata: a\n\n"]),
            vec![SseEvent::data("a")]
        );
        // A BOM later in the stream is content, not framing: the line is the unknown
        // field "\u{feff}data" and is ignored.
        assert_eq!(parse_all(&[b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"]).len(), 1);
    }

    #[test]
    fn finish_flushes_event_without_trailing_blank_line() {
        assert_eq!(
            parse_all(&[b"data: a\n\ndata: last"]),
            vec![SseEvent::data("a"), SseEvent::data("last")]
        );
        assert_eq!(
            parse_all(&[b"event: e\ndata: last\n"]),
            vec![SseEvent::named("e", "last")]
        );
        assert!(parse_all(&[b""]).is_empty());
    }

    #[test]
    fn finish_resets_the_parser() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"event: a\ndata: x").is_empty());
        assert_eq!(parser.finish(), vec![SseEvent::named("a", "x")]);
        assert_eq!(parser.push(b"data: y\n\n"), vec![SseEvent::data("y")]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(
            parse_all(&[b"data: a\xFFb\n\n"]),
            vec![SseEvent::data("a\u{FFFD}b")]
        );
    }

    /// The former byte-at-a-time `push`: the reference the run-at-a-time one must agree with.
    fn push_bytewise(p: &mut SseParser, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            match byte {
                b'\n' if p.after_cr => p.after_cr = false,
                b'\n' => p.end_line(&mut events),
                b'\r' => {
                    p.end_line(&mut events);
                    p.after_cr = true;
                }
                _ => {
                    p.after_cr = false;
                    p.line.push(byte);
                }
            }
        }
        events
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn runs_parse_as_single_bytes_did(
            chunks in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(
                    b"ad: ev\r\n\xef\xbb\xbf\xc3\xa9".to_vec()), 0..24),
                0..6)
        ) {
            let (mut fast, mut slow) = (SseParser::new(), SseParser::new());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for c in &chunks {
                a.extend(fast.push(c));
                b.extend(push_bytewise(&mut slow, c));
                proptest::prop_assert_eq!(fast.is_idle(), slow.is_idle());
            }
            a.extend(fast.finish());
            b.extend(slow.finish());
            proptest::prop_assert_eq!(a, b);
        }
    }

    /// Splitting anywhere, including inside `\r\n` and inside a multi-byte character,
    /// must give the same events as parsing the whole input.
    #[test]
    fn every_split_point_and_single_bytes_give_the_same_events() {
        let input = "event: message_start\r\ndata: {\"text\":\"h\u{e9}llo \u{1F600} \u{4e16}\u{754c}\"}\r\n\r\n: comment\ndata: a\ndata: b\n\ndata: tail\r"
            .as_bytes();
        let whole = parse_all(&[input]);
        assert_eq!(whole.len(), 3);
        assert_eq!(
            whole[0].data,
            "{\"text\":\"h\u{e9}llo \u{1F600} \u{4e16}\u{754c}\"}"
        );
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(parse_all(&[a, b]), whole, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
    }

    #[test]
    fn written_events_parse_back() {
        let events = vec![
            SseEvent::named("content_block_delta", "{\"a\":1}"),
            SseEvent::data("line one\nline two\r\nline three"),
            SseEvent::data(""),
            SseEvent::named("bad\nname", "x"),
        ];
        let mut bytes = Vec::new();
        for event in &events {
            bytes.extend(event.to_bytes());
        }
        let parsed = parse_all(&[&bytes]);
        assert_eq!(parsed[0], events[0]);
        assert_eq!(parsed[1], SseEvent::data("line one\nline two\nline three"));
        assert_eq!(parsed[2], events[2]);
        assert_eq!(parsed[3], SseEvent::named("bad", "x"));
        assert_eq!(
            SseEvent::data("[DONE]").to_bytes(),
            b"data: [DONE]\n\n".to_vec()
        );
    }
}
