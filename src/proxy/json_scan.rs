//! A single-pass validating scanner for request bodies: it checks that a body is one JSON object
//! exactly as serde_json's `from_slice` into a derived struct would, and hands back the top-level
//! members whose keys are asked for, as byte spans. It never builds a value and never allocates
//! for what it skips.
//!
//! It exists because parsing a 200 KB coding-agent body with serde_json spent most of its time
//! skipping long strings full of escapes; here strings are skipped 64 bytes at a time with a
//! bit mask of the bytes that matter (`"`, `\` and control characters), and an escape costs a
//! shift of that mask rather than a new search. Until a string's first non-ASCII byte the mask
//! marks those bytes too (a byte's high bit, taken by the same movemask): only a string that
//! holds one is checked for UTF-8, once it has ended.
//!
//! What it must accept and reject is serde_json's behaviour for a derived struct whose unknown
//! fields are ignored, read from a `&str` (so every string is UTF-8), and that differs from
//! RFC 8259 in places on purpose:
//! - skipped values have no nesting limit (serde_json ignores them without recursion);
//! - skipped strings are not checked for paired surrogate escapes;
//! - top-level keys are decoded, so their escapes must pair surrogates;
//! - a top-level key asked for twice is an error (serde's "duplicate field").
//!
//! Deciding what a member's value means is the caller's job (`on_member`), called in document
//! order so that the first error in the body is the one reported.

use std::borrow::Cow;

/// Why a body was refused, and the byte offset where that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Not JSON.
    Syntax {
        reason: Cow<'static, str>,
        at: usize,
    },
    /// JSON, but not the shape of a request body (not an object, a duplicate field).
    Shape {
        reason: Cow<'static, str>,
        at: usize,
    },
}

impl ScanError {
    fn syntax(reason: &'static str, at: usize) -> ScanError {
        ScanError::Syntax {
            reason: Cow::Borrowed(reason),
            at,
        }
    }

    /// The byte offset the error points at.
    pub fn at(&self) -> usize {
        match self {
            ScanError::Syntax { at, .. } | ScanError::Shape { at, .. } => *at,
        }
    }
}

/// One top-level member whose key was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Byte range of the value, without the whitespace around it.
    pub span: (usize, usize),
    /// How deeply arrays and objects nest inside the value (0 for a scalar).
    pub depth: usize,
}

/// The 1-based line and column of the byte at offset `at`, for error messages.
pub fn line_column(body: &[u8], at: usize) -> (usize, usize) {
    let at = at.min(body.len());
    let start_of_line = memchr::memrchr(b'\n', &body[..at]).map_or(0, |p| p + 1);
    let line = 1 + memchr::memchr_iter(b'\n', &body[..start_of_line]).count();
    (line, at - start_of_line + 1)
}

/// Scans `body` as one JSON object with nothing but whitespace around it. For each top-level
/// member whose decoded key is `keys[k]`, calls `on_member(k, member)` once the value has been
/// scanned; its error stops the scan.
pub fn scan_object<const N: usize>(
    body: &[u8],
    keys: [&str; N],
    on_member: impl FnMut(usize, Member) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let end = scan_object_at(body, 0, keys, on_member)?;
    let mut s = Scanner { b: body, i: end };
    match s.ws() {
        None => Ok(()),
        Some(_) => Err(ScanError::syntax("trailing characters", s.i)),
    }
}

/// Scans one JSON object that starts at `start` (after optional whitespace), like
/// `scan_object`, and returns the offset just past its closing brace; what follows is not
/// looked at.
pub fn scan_object_at<const N: usize>(
    body: &[u8],
    start: usize,
    keys: [&str; N],
    mut on_member: impl FnMut(usize, Member) -> Result<(), ScanError>,
) -> Result<usize, ScanError> {
    let mut s = Scanner { b: body, i: start };
    match s.ws() {
        Some(b'{') => s.i += 1,
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            return Err(ScanError::Shape {
                reason: Cow::Borrowed("expected a JSON object"),
                at: s.i,
            })
        }
        Some(_) => return Err(ScanError::syntax("expected value", s.i)),
        None => return Err(ScanError::syntax("EOF while parsing a value", s.i)),
    }
    let mut seen = [false; N];
    let mut first = true;
    loop {
        match s.ws() {
            Some(b'}') => {
                s.i += 1;
                break;
            }
            Some(b'"') if first => {}
            Some(b',') if !first => {
                s.i += 1;
                match s.ws() {
                    Some(b'"') => {}
                    Some(b'}') => return Err(ScanError::syntax("trailing comma", s.i)),
                    Some(_) => return Err(ScanError::syntax("key must be a string", s.i)),
                    None => return Err(ScanError::syntax("EOF while parsing a value", s.i)),
                }
            }
            Some(_) if first => return Err(ScanError::syntax("key must be a string", s.i)),
            Some(_) => return Err(ScanError::syntax("expected `,` or `}`", s.i)),
            None => return Err(ScanError::syntax("EOF while parsing an object", s.i)),
        }
        first = false;
        let key_start = s.i;
        s.i += 1;
        let escaped = s.skip_str()?;
        let wanted = key_index(&body[key_start..s.i], escaped, &keys, key_start)?;
        if let Some(k) = wanted {
            if seen[k] {
                return Err(ScanError::Shape {
                    reason: Cow::Owned(format!("duplicate field `{}`", keys[k])),
                    at: key_start,
                });
            }
            seen[k] = true;
        }
        s.colon()?;
        s.ws();
        let start = s.i;
        let depth = s.skip_value()?;
        if let Some(k) = wanted {
            on_member(
                k,
                Member {
                    span: (start, s.i),
                    depth,
                },
            )?;
        }
    }
    Ok(s.i)
}

/// Which of `keys` a top-level key (quotes included) is. The key is decoded as serde_json
/// decodes a field name: it must be UTF-8, and its escapes must pair surrogates.
fn key_index<const N: usize>(
    quoted: &[u8],
    escaped: bool,
    keys: &[&str; N],
    at: usize,
) -> Result<Option<usize>, ScanError> {
    let decoded: Cow<'_, str> = if escaped {
        // Rare; serde_json's own string decoding keeps the rules identical.
        match serde_json::from_slice::<String>(quoted) {
            Ok(s) => Cow::Owned(s),
            Err(e) => {
                return Err(ScanError::Syntax {
                    reason: Cow::Owned(reason_of(&e)),
                    at,
                })
            }
        }
    } else {
        let inner = &quoted[1..quoted.len() - 1];
        // Bytes equal to a wanted key are that key (and so valid UTF-8).
        if let Some(k) = keys.iter().position(|k| k.as_bytes() == inner) {
            return Ok(Some(k));
        }
        match std::str::from_utf8(inner) {
            Ok(s) => Cow::Borrowed(s),
            Err(e) => {
                return Err(ScanError::syntax(
                    "invalid unicode code point",
                    at + 1 + e.valid_up_to(),
                ))
            }
        }
    };
    Ok(keys.iter().position(|k| *k == decoded))
}

/// serde_json's error text without its position (which is relative to what it was given).
pub fn reason_of(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(p) => text[..p].to_string(),
        None => text,
    }
}

/// Skips the one JSON value that starts at `start` (after optional whitespace) and returns the
/// offset just past it; what follows is not looked at.
pub fn skip_value_at(body: &[u8], start: usize) -> Result<usize, ScanError> {
    let mut s = Scanner { b: body, i: start };
    s.skip_value()?;
    Ok(s.i)
}

/// Walks the object or array that starts at `start` (after optional whitespace), calling
/// `on_item` with each member's quoted key span (`None` for an array's elements) and its value
/// span, in document order; returns the offset just past its end. Nothing is decoded or
/// allocated: values are skipped as `skip_value_at` skips them.
pub fn for_each_item_at(
    body: &[u8],
    start: usize,
    mut on_item: impl FnMut(Option<(usize, usize)>, (usize, usize)),
) -> Result<usize, ScanError> {
    for_each_member_at(body, start, |key, value_start| {
        let end = skip_value_at(body, value_start)?;
        on_item(key, (value_start, end));
        Ok(end)
    })
}

/// `for_each_item_at`, where `on_member` walks each value itself: it gets the member's quoted
/// key span (`None` in an array) and the offset its value starts at, and returns the offset
/// just past the value (as `skip_value_at` or a nested `for_each_item_at` do), so a caller can
/// open a nested container in the same pass.
pub fn for_each_member_at(
    body: &[u8],
    start: usize,
    mut on_member: impl FnMut(Option<(usize, usize)>, usize) -> Result<usize, ScanError>,
) -> Result<usize, ScanError> {
    let mut s = Scanner { b: body, i: start };
    let close = match s.ws() {
        Some(b'{') => b'}',
        Some(b'[') => b']',
        Some(_) => {
            return Err(ScanError::Shape {
                reason: Cow::Borrowed("expected an object or an array"),
                at: s.i,
            })
        }
        None => return Err(ScanError::syntax("EOF while parsing a value", s.i)),
    };
    s.i += 1;
    if s.ws() == Some(close) {
        return Ok(s.i + 1);
    }
    loop {
        let key = if close == b'}' {
            match s.ws() {
                Some(b'"') => {}
                Some(_) => return Err(ScanError::syntax("key must be a string", s.i)),
                None => return Err(ScanError::syntax("EOF while parsing an object", s.i)),
            }
            let key_start = s.i;
            s.i += 1;
            s.skip_str()?;
            let span = (key_start, s.i);
            s.colon()?;
            Some(span)
        } else {
            None
        };
        s.ws();
        s.i = on_member(key, s.i)?;
        match s.ws() {
            Some(b',') => s.i += 1,
            Some(c) if c == close => return Ok(s.i + 1),
            Some(_) => return Err(ScanError::syntax("expected `,` or a closing bracket", s.i)),
            None => return Err(ScanError::syntax("EOF while parsing a value", s.i)),
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    /// Skips JSON whitespace and peeks at the next byte.
    #[inline]
    fn ws(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' => self.i += 1,
                _ => return Some(c),
            }
        }
        None
    }

    fn colon(&mut self) -> Result<(), ScanError> {
        match self.ws() {
            Some(b':') => {
                self.i += 1;
                Ok(())
            }
            Some(_) => Err(ScanError::syntax("expected `:`", self.i)),
            None => Err(ScanError::syntax("EOF while parsing an object", self.i)),
        }
    }

    /// Skips one value of any kind; returns how deeply containers nest in it. Iterative, with
    /// the enclosing containers on a stack that spills to the heap past 32 levels, so nesting
    /// is bounded by memory only.
    fn skip_value(&mut self) -> Result<usize, ScanError> {
        let mut stack: smallvec::SmallVec<[u8; 32]> = smallvec::SmallVec::new();
        let mut depth = 0;
        'value: loop {
            let Some(c) = self.ws() else {
                return Err(ScanError::syntax("EOF while parsing a value", self.i));
            };
            match c {
                b'{' | b'[' => {
                    self.i += 1;
                    depth = depth.max(stack.len() + 1);
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.ws() == Some(close) {
                        self.i += 1;
                    } else {
                        stack.push(c);
                        if c == b'{' {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                b'"' => {
                    self.i += 1;
                    self.skip_str()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return Err(ScanError::syntax("expected value", self.i)),
            }
            // A value ended: close containers until one expects another element.
            loop {
                let Some(&frame) = stack.last() else {
                    return Ok(depth);
                };
                let close = if frame == b'{' { b'}' } else { b']' };
                match self.ws() {
                    Some(b',') => {
                        self.i += 1;
                        if frame == b'{' {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(c) if c == close => {
                        self.i += 1;
                        stack.pop();
                    }
                    Some(_) if frame == b'{' => {
                        return Err(ScanError::syntax("expected `,` or `}`", self.i))
                    }
                    Some(_) => return Err(ScanError::syntax("expected `,` or `]`", self.i)),
                    None if frame == b'{' => {
                        return Err(ScanError::syntax("EOF while parsing an object", self.i))
                    }
                    None => return Err(ScanError::syntax("EOF while parsing a list", self.i)),
                }
            }
        }
    }

    /// A key of a nested object and its colon.
    fn key(&mut self) -> Result<(), ScanError> {
        match self.ws() {
            Some(b'"') => {
                self.i += 1;
                self.skip_str()?;
                self.colon()
            }
            Some(_) => Err(ScanError::syntax("key must be a string", self.i)),
            None => Err(ScanError::syntax("EOF while parsing an object", self.i)),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        for (k, &w) in word.iter().enumerate() {
            match self.b.get(self.i + k) {
                Some(&c) if c == w => {}
                Some(_) => return Err(ScanError::syntax("expected ident", self.i + k)),
                None => return Err(ScanError::syntax("EOF while parsing a value", self.i + k)),
            }
        }
        self.i += word.len();
        Ok(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; its value is not looked at.
    fn number(&mut self) -> Result<(), ScanError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(ScanError::syntax("invalid number", self.i));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(ScanError::syntax("invalid number", self.i)),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(ScanError::syntax("invalid number", self.i));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(ScanError::syntax("invalid number", self.i));
            }
            self.digits();
        }
        Ok(())
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    /// Skips the rest of a string (the opening quote is behind us); returns whether it held an
    /// escape. Checks escapes, control characters and, in a string holding a non-ASCII byte,
    /// UTF-8.
    ///
    /// Bytes are taken in blocks, each turned into one mask of the bytes that matter and
    /// consumed bit by bit: first one 16-byte block (most strings of a chat body end there),
    /// then 64-byte blocks (long strings), then 16-byte blocks and single bytes for the tail.
    fn skip_str(&mut self) -> Result<bool, ScanError> {
        let b = self.b;
        let start = self.i;
        let mut seen = Seen::default();
        // The masks mark non-ASCII bytes too until the string's first one; from there on (the
        // string will be checked for UTF-8 anyway) the walk goes on with masks that do not.
        let mut i = match blocks::<true>(b, start, &mut seen)? {
            Run::End(end) => return self.end_str(start, end, seen),
            Run::Rest(i) if seen.non_ascii => match blocks::<false>(b, i, &mut seen)? {
                Run::End(end) => return self.end_str(start, end, seen),
                Run::Rest(i) => i,
            },
            Run::Rest(i) => i,
        };
        while let Some(&c) = b.get(i) {
            match c {
                b'"' => return self.end_str(start, i + 1, seen),
                b'\\' => {
                    seen.escape = true;
                    i = escape_end(b, i)?;
                }
                0..=0x1F => return Err(control_character(i)),
                0x80.. => {
                    seen.non_ascii = true;
                    i += 1;
                }
                _ => i += 1,
            }
        }
        Err(ScanError::syntax("EOF while parsing a string", b.len()))
    }

    /// Ends the string that began at `start` just before `end`, its closing quote; a string
    /// with a non-ASCII byte must be UTF-8.
    #[inline]
    fn end_str(&mut self, start: usize, end: usize, seen: Seen) -> Result<bool, ScanError> {
        if seen.non_ascii {
            if let Err(e) = std::str::from_utf8(&self.b[start..end - 1]) {
                return Err(ScanError::syntax(
                    "invalid unicode code point",
                    start + e.valid_up_to(),
                ));
            }
        }
        self.i = end;
        Ok(seen.escape)
    }
}

/// What a string's walk has met so far.
#[derive(Default, Clone, Copy)]
struct Seen {
    escape: bool,
    non_ascii: bool,
}

/// How far `blocks` went.
enum Run {
    /// The string ends before this offset.
    End(usize),
    /// Go on from this offset: fewer than 16 bytes are left, or (with marked non-ASCII bytes)
    /// the string's first non-ASCII byte is just behind.
    Rest(usize),
}

/// Walks a string's bytes from `i` in blocks: one of 16 bytes (most strings of a chat body end
/// there), then blocks of 64 (long strings), then of 16. With `HIGH` the masks also mark
/// non-ASCII bytes, and the run stops just past the first one.
#[inline(always)]
fn blocks<const HIGH: bool>(b: &[u8], mut i: usize, seen: &mut Seen) -> Result<Run, ScanError> {
    let first = i;
    while let Some(block) = b.get(i..i + 16) {
        let mask = u64::from(mask16::<HIGH>(block.try_into().unwrap_or(&[0; 16])));
        match walk(b, i, 16, mask, seen)? {
            Step::End(end) => return Ok(Run::End(end)),
            Step::Next(next) => i = next,
        }
        if HIGH && seen.non_ascii {
            return Ok(Run::Rest(i));
        }
        if i >= first + 16 {
            break;
        }
    }
    while let Some(block) = b.get(i..i + 64) {
        let mask = mask64::<HIGH>(block.try_into().unwrap_or(&[0; 64]));
        match walk(b, i, 64, mask, seen)? {
            Step::End(end) => return Ok(Run::End(end)),
            Step::Next(next) => i = next,
        }
        if HIGH && seen.non_ascii {
            return Ok(Run::Rest(i));
        }
    }
    while let Some(block) = b.get(i..i + 16) {
        let mask = u64::from(mask16::<HIGH>(block.try_into().unwrap_or(&[0; 16])));
        match walk(b, i, 16, mask, seen)? {
            Step::End(end) => return Ok(Run::End(end)),
            Step::Next(next) => i = next,
        }
        if HIGH && seen.non_ascii {
            return Ok(Run::Rest(i));
        }
    }
    Ok(Run::Rest(i))
}

/// Where a string's block walk stopped.
enum Step {
    /// The string ends before this offset (its closing quote is the byte before).
    End(usize),
    /// The string goes on from this offset.
    Next(usize),
}

/// Walks the special bytes (bits of `mask`) of the `width`-byte block at `base`: the closing
/// quote ends the string, an escape is checked and its bytes masked off, a control character
/// is an error. A marked non-ASCII byte is noted, and the walk goes on just past it.
#[inline(always)]
fn walk(
    b: &[u8],
    base: usize,
    width: usize,
    mut mask: u64,
    seen: &mut Seen,
) -> Result<Step, ScanError> {
    loop {
        if mask == 0 {
            return Ok(Step::Next(base + width));
        }
        let j = base + mask.trailing_zeros() as usize;
        match b[j] {
            b'"' => return Ok(Step::End(j + 1)),
            b'\\' => {
                seen.escape = true;
                let next = escape_end(b, j)?;
                let off = next - base;
                if off >= width {
                    return Ok(Step::Next(next));
                }
                mask &= !0u64 << off;
            }
            0x80.. => {
                seen.non_ascii = true;
                return Ok(Step::Next(j + 1));
            }
            _ => return Err(control_character(j)),
        }
    }
}

fn control_character(at: usize) -> ScanError {
    ScanError::syntax(
        "control character (\\u0000-\\u001F) found while parsing a string",
        at,
    )
}

/// The text of a quoted JSON string that the scanner accepted (so it holds no raw control
/// character and each escape is well-formed), as `serde_json::from_slice::<String>` gives it;
/// `None` where that fails (a lone surrogate, or bytes that are not such a string). The bytes
/// are walked 16 at a time for backslashes and the runs between escapes copied whole: on a
/// chat body full of `\n` and `\"` this costs about half of serde_json's string reader
/// (BENCHMARKS.md, "Middleware pipelines end to end").
pub fn unescape(quoted: &[u8]) -> Option<String> {
    let inner = match quoted {
        [b'"', inner @ .., b'"'] => inner,
        _ => return None,
    };
    let mut out = Vec::with_capacity(inner.len());
    let (mut i, mut run) = (0, 0);
    loop {
        let at = match inner.get(i..i + 16) {
            Some(block) => match backslashes16(block.try_into().unwrap_or(&[0; 16])) {
                0 => {
                    i += 16;
                    continue;
                }
                mask => i + mask.trailing_zeros() as usize,
            },
            None => match memchr::memchr(b'\\', &inner[i..]) {
                Some(k) => i + k,
                None => break,
            },
        };
        out.extend_from_slice(&inner[run..at]);
        i = push_escape(inner, at, &mut out)?;
        run = i;
    }
    out.extend_from_slice(&inner[run..]);
    String::from_utf8(out).ok()
}

/// Decodes the escape at `at` (its backslash) onto `out`; returns the offset after it.
fn push_escape(b: &[u8], at: usize, out: &mut Vec<u8>) -> Option<usize> {
    let byte = match b.get(at + 1)? {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'b' => 0x08,
        b'f' => 0x0C,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'u' => {
            let unit = hex4(b.get(at + 2..at + 6)?)?;
            let (c, end) = match unit {
                0xD800..=0xDBFF => {
                    // A leading surrogate needs its trailing half in the next escape.
                    let low = match b.get(at + 6..at + 12)? {
                        [b'\\', b'u', hex @ ..] => hex4(hex)?,
                        _ => return None,
                    };
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return None;
                    }
                    let c =
                        0x10000 + ((u32::from(unit) - 0xD800) << 10) + (u32::from(low) - 0xDC00);
                    (char::from_u32(c)?, at + 12)
                }
                0xDC00..=0xDFFF => return None,
                _ => (char::from_u32(u32::from(unit))?, at + 6),
            };
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            return Some(end);
        }
        _ => return None,
    };
    out.push(byte);
    Some(at + 2)
}

/// Bit k is set when `block[k]` is a backslash (SSE2 on x86_64, as `mask16`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn backslashes16(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is in the x86_64 baseline; the load reads the 16 bytes of `block`, and
    // `_mm_loadu_si128` has no alignment requirement.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8))) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn backslashes16(block: &[u8; 16]) -> u32 {
    block
        .iter()
        .enumerate()
        .fold(0, |m, (k, &c)| if c == b'\\' { m | 1 << k } else { m })
}

/// Four hex digits.
fn hex4(hex: &[u8]) -> Option<u16> {
    if hex.len() != 4 {
        return None;
    }
    hex.iter().try_fold(0u16, |n, &d| {
        let v = (d as char).to_digit(16)?;
        Some(n << 4 | v as u16)
    })
}

/// Where the escape starting with the backslash at `at` ends. `\u` needs four hex digits; what
/// they encode is not checked (serde_json does not check it in strings it skips).
#[inline]
fn escape_end(b: &[u8], at: usize) -> Result<usize, ScanError> {
    match b.get(at + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(at + 2),
        Some(b'u') => match b.get(at + 2..at + 6) {
            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(at + 6),
            Some(_) => Err(ScanError::syntax("invalid escape", at + 6)),
            None => Err(ScanError::syntax("EOF while parsing a string", b.len())),
        },
        Some(_) => Err(ScanError::syntax("invalid escape", at + 2)),
        None => Err(ScanError::syntax("EOF while parsing a string", b.len())),
    }
}

/// Bit k is set when `block[k]` is `"`, `\\` or a control character, and with `HIGH` also when
/// it is not ASCII. SSE2 is part of every x86_64 CPU, so this is one 16-byte compare of each
/// kind (a byte's high bit is its own sign bit, taken by the same movemask); elsewhere, a plain
/// loop.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn mask16<const HIGH: bool>(block: &[u8; 16]) -> u16 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is in the x86_64 baseline; the load reads the 16 bytes of `block`, and
    // `_mm_loadu_si128` has no alignment requirement.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        // A byte is a control character when min(byte, 0x1F) is the byte itself.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v);
        let special = _mm_or_si128(
            _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
            ),
            control,
        );
        let special = if HIGH {
            _mm_or_si128(special, v)
        } else {
            special
        };
        _mm_movemask_epi8(special) as u16
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn mask16<const HIGH: bool>(block: &[u8; 16]) -> u16 {
    portable_mask16::<HIGH>(block)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn portable_mask16<const HIGH: bool>(block: &[u8; 16]) -> u16 {
    let mut mask = 0u16;
    for (k, &c) in block.iter().enumerate() {
        mask |= u16::from(c == b'"' || c == b'\\' || c < 0x20 || (HIGH && c >= 0x80)) << k;
    }
    mask
}

/// The same for 64 bytes: four 16-byte masks side by side.
#[inline(always)]
fn mask64<const HIGH: bool>(block: &[u8; 64]) -> u64 {
    let mut mask = 0u64;
    for (k, part) in block.chunks_exact(16).enumerate() {
        mask |= u64::from(mask16::<HIGH>(part.try_into().unwrap_or(&[0; 16]))) << (16 * k);
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unescape_decodes_every_escape_and_refuses_what_serde_json_refuses() {
        let ok = [
            r#""plain""#,
            r#""""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u0041\u00e9\u20ac\ud83d\ude00 end""#,
            r#""\u0000""#,
            "\"caf\u{e9} \u{1F600}\"",
        ];
        for q in ok {
            let want: String = serde_json::from_str(q).expect("valid");
            assert_eq!(
                unescape(q.as_bytes()).as_deref(),
                Some(want.as_str()),
                "{q}"
            );
        }
        // What the scanner accepts and serde_json refuses: lone surrogates.
        let bad: [&[u8]; 4] = [
            b"\"\\ud83d\"",
            b"\"\\ude00\"",
            b"\"\\ud83d\\u0041\"",
            b"\"a long text before it, longer than a block \\ud83d\\u0041\"",
        ];
        for q in bad {
            assert_eq!(skip_value_at(q, 0), Ok(q.len()));
            assert!(serde_json::from_slice::<String>(q).is_err(), "{q:?}");
            assert_eq!(unescape(q), None, "{q:?}");
        }
        assert_eq!(unescape(b"nope"), None);
        assert_eq!(unescape(b"\""), None);
    }

    proptest! {
        #[test]
        fn unescape_agrees_with_serde_json(
            parts in proptest::collection::vec(
                prop_oneof![
                    "[a-z \u{e9}\u{1F600}]{0,40}",
                    proptest::sample::select(vec![
                        r"\n", r"\t", r#"\""#, r"\\", r"\/", r"\b", r"\f", r"\r",
                        r"\u0041", r"\u00E9", r"\uD83D\uDE00", r"\uD83D", r"\uDE00",
                        r"\uD83DX", r"\q", r"\u12G4", "\u{1}",
                    ]).prop_map(String::from),
                ],
                0..12,
            )
        ) {
            let quoted = format!("\"{}\"", parts.concat());
            // Only what the scanner accepted is ever unescaped.
            if skip_value_at(quoted.as_bytes(), 0) == Ok(quoted.len()) {
                let want = serde_json::from_str::<String>(&quoted).ok();
                prop_assert_eq!(unescape(quoted.as_bytes()), want);
            }
        }
    }

    #[test]
    fn items_of_objects_and_arrays_come_as_spans_in_order() {
        let b = br#" {"a" : [1, {"x":"}"}], "b\u0041":"s\"", "c":{}} "#;
        let mut seen = Vec::new();
        let end = for_each_item_at(b, 0, |k, (s, e)| {
            let key = k.map(|(ka, kb)| String::from_utf8_lossy(&b[ka..kb]).into_owned());
            seen.push((key, String::from_utf8_lossy(&b[s..e]).into_owned()));
        })
        .expect("an object");
        assert_eq!(&b[end..], b" ");
        let expected = [
            (Some(r#""a""#), r#"[1, {"x":"}"}]"#),
            (Some(r#""b\u0041""#), r#""s\"""#),
            (Some(r#""c""#), "{}"),
        ];
        let seen: Vec<(Option<&str>, &str)> = seen
            .iter()
            .map(|(k, v)| (k.as_deref(), v.as_str()))
            .collect();
        assert_eq!(seen, expected);
        let mut items = Vec::new();
        for_each_item_at(b"[ 1 ,\"two\", [] ]", 0, |k, span| items.push((k, span)))
            .expect("an array");
        assert_eq!(items, [(None, (2, 3)), (None, (5, 10)), (None, (12, 14))]);
        let mut none = 0;
        assert_eq!(for_each_item_at(b"[ ]", 0, |_, _| none += 1), Ok(3));
        assert_eq!(none, 0);
        assert!(for_each_item_at(b"[1,]", 0, |_, _| {}).is_err());
        assert!(for_each_item_at(b"{\"a\" 1}", 0, |_, _| {}).is_err());
        assert!(for_each_item_at(b"\"s\"", 0, |_, _| {}).is_err());
    }

    fn scan(body: &str) -> Result<Vec<(usize, Member)>, ScanError> {
        let mut found = Vec::new();
        scan_object(body.as_bytes(), ["model", "stream"], |k, m| {
            found.push((k, m));
            Ok(())
        })?;
        Ok(found)
    }

    #[test]
    fn finds_members_after_long_escaped_strings() {
        let text = "line \\\"quoted\\\"\\n".repeat(200);
        let body = format!(r#"{{"messages":["{text}"], "model" : "m", "stream":[[1]]}}"#);
        let found = scan(&body).unwrap();
        assert_eq!(found.len(), 2);
        let (s, e) = found[0].1.span;
        assert_eq!(&body[s..e], r#""m""#);
        assert_eq!(found[1].1.depth, 2);
    }

    #[test]
    fn escaped_keys_are_decoded() {
        let found = scan(r#"{"mo\u0064el":"m"}"#).unwrap();
        assert_eq!(found[0].0, 0);
    }

    #[test]
    fn a_control_character_in_a_long_string_is_refused() {
        let body = format!("{{\"a\":\"{}\u{1}{}\"}}", "x".repeat(70), "y".repeat(70));
        assert!(matches!(scan(&body), Err(ScanError::Syntax { at: 76, .. })));
    }

    #[test]
    fn duplicate_wanted_keys_are_a_shape_error() {
        assert!(matches!(
            scan(r#"{"model":null,"model":"m"}"#),
            Err(ScanError::Shape { .. })
        ));
        assert!(scan(r#"{"other":1,"other":2,"model":"m"}"#).is_ok());
    }

    #[test]
    fn skipped_values_nest_without_limit() {
        let body = format!(r#"{{"a":{}{}}}"#, "[".repeat(1000), "]".repeat(1000));
        assert!(scan(&body).is_ok());
    }

    #[test]
    fn the_block_mask_marks_quotes_backslashes_and_control_characters() {
        let mut block = [b'a'; 64];
        for (k, c) in [
            (0, b'"'),
            (5, b'\\'),
            (17, 0x1F),
            (33, 0x00),
            (63, b'\n'),
            (40, 0x20),
        ] {
            block[k] = c;
        }
        block[50] = 0xFF;
        block[51] = 0x80;
        let want = (1u64 << 0) | (1 << 5) | (1 << 17) | (1 << 33) | (1 << 63);
        let high = (1u64 << 50) | (1 << 51);
        assert_eq!(mask64::<false>(&block), want);
        assert_eq!(mask64::<true>(&block), want | high);
        let first: &[u8; 16] = block[..16].try_into().unwrap();
        assert_eq!(mask16::<false>(first), want as u16);
        assert_eq!(portable_mask16::<false>(first), want as u16);
        for k in 0..4 {
            let part: &[u8; 16] = block[16 * k..16 * (k + 1)].try_into().unwrap();
            assert_eq!(
                u64::from(portable_mask16::<false>(part)),
                (want >> (16 * k)) & 0xFFFF
            );
            assert_eq!(
                u64::from(portable_mask16::<true>(part)),
                ((want | high) >> (16 * k)) & 0xFFFF
            );
        }
    }

    #[test]
    fn escapes_at_every_offset_across_block_edges() {
        // An escape (short or \\u) starting at each offset of the first blocks, with the
        // string's end, another escape or a control character right behind it.
        for esc in [r#"\""#, r"\\", r"\u00e9", r"\uZZ00", r"\x"] {
            for pad in 0..100 {
                for after in ["", r"\n", "\u{1}", "tail"] {
                    let value = format!("\"{}{esc}{after}\"", "a".repeat(pad));
                    let doc = format!(r#"{{"skip":{value},"model":"m"}}"#);
                    let ours = scan(&doc).map(|m| m.len());
                    let serde = serde_json::from_str::<serde::de::IgnoredAny>(&doc);
                    assert_eq!(ours.is_ok(), serde.is_ok(), "{doc:?}: {ours:?}");
                    if let Ok(n) = ours {
                        assert_eq!(n, 1, "{doc:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_utf8_is_refused_in_every_string_at_every_offset() {
        // A bad sequence at each offset of the first blocks, with the string's end or more
        // text (valid non-ASCII included) right behind it; valid non-ASCII alone is accepted.
        for bad in [
            &b"\xff"[..],
            b"\xc3",
            b"\xc3(",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
        ] {
            for pad in 0..100 {
                for after in [&b""[..], "é".as_bytes(), b"tail", b"\\n"] {
                    let mut doc = br#"{"skip":[""#.to_vec();
                    doc.extend("a".repeat(pad).as_bytes());
                    doc.extend(bad);
                    doc.extend(after);
                    doc.extend(br#""],"model":"m"}"#);
                    let at = 10 + pad;
                    let got = scan_object(&doc, ["model"], |_, _| Ok(()));
                    assert_eq!(
                        got,
                        Err(ScanError::syntax("invalid unicode code point", at)),
                        "{doc:?}"
                    );
                }
            }
        }
        for pad in 0..100 {
            let doc = format!(
                r#"{{"skip":["{}é中😀","{}"],"model":"m"}}"#,
                "a".repeat(pad),
                "b".repeat(pad)
            );
            assert!(scan(&doc).is_ok(), "{doc:?}");
        }
    }

    #[test]
    fn invalid_utf8_after_valid_non_ascii_is_refused_too() {
        // The walk stops marking non-ASCII bytes after a string's first: a later bad byte, in
        // the same block or blocks on, is still found (by the check at the string's end).
        for gap in [0, 5, 20, 70, 150] {
            let mut doc = br#"{"skip":"e\u00e9"#.to_vec();
            doc.extend("é".as_bytes());
            doc.extend("a".repeat(gap).as_bytes());
            doc.push(0xff);
            doc.extend(br#"z","model":"m"}"#);
            let at = doc.len() - 16;
            assert_eq!(
                scan_object(&doc, ["model"], |_, _| Ok(())),
                Err(ScanError::syntax("invalid unicode code point", at)),
                "{doc:?}"
            );
        }
    }

    #[test]
    fn a_non_ascii_byte_after_the_closing_quote_is_not_the_strings() {
        // The block that holds the quote reads on past it: bytes there are not the string's.
        let doc = b"{\"model\":\"m\",\"a\":[\"x\",\"\xc3\xa9\"]}";
        assert!(scan_object(doc, ["model"], |_, _| Ok(())).is_ok());
        let doc = b"{\"model\":\"m\"} \xff";
        assert!(matches!(
            scan_object(doc, ["model"], |_, _| Ok(())),
            Err(ScanError::Syntax { .. })
        ));
    }

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_column(b"{\n  x", 4), (2, 3));
    }
}
