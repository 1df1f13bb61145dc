//! A fast path for reading YAML configuration into a `serde_yaml::Value`.
//!
//! `serde_yaml` (libyaml's scanner plus its event loader) is slow on large generated configs.
//! This module reads a conservative subset of YAML directly from the bytes and builds the very
//! tree `serde_yaml::from_str::<Value>` would build. Whatever falls outside the subset, or
//! anything the parser is not certain about, yields `None`, and the caller falls back to
//! `serde_yaml`, which then produces the real tree or the real error message.
//!
//! The subset:
//! - block mappings and block sequences nested by indentation (spaces only), including
//!   `- key: value` items and sequences at the same indentation as their parent key;
//! - single-line flow sequences and flow mappings (`[a, b]`, `{a: 1, b: [x]}`), nested;
//! - single-line plain, single-quoted and double-quoted scalars, plain ones resolved exactly as
//!   `serde_yaml` 0.9 resolves untagged plain scalars (null, bool, integer, float, string);
//! - comments, blank lines, `\n` or `\r\n` line ends.
//!
//! Refused (`None`): tabs, anchors, aliases, tags, `<<` keys, block scalars (`|`, `>`),
//! multi-line scalars and flow collections, complex keys (`?`), directives, document markers,
//! a BOM or other unusual characters, lone `\r`, duplicate keys, integers that only fit in 128
//! bits (`serde_yaml` errors on them), nesting deeper than [`MAX_DEPTH`], and malformed input.

use serde_yaml::{Mapping, Number, Value};
use std::num::ParseIntError;

/// Deepest nesting of collections read here (`serde_yaml` itself stops at 128).
const MAX_DEPTH: usize = 100;

/// Longest key, in bytes, read here: libyaml drops a simple key that spans more than 1024
/// characters, so longer keys are left to `serde_yaml`.
const MAX_KEY_BYTES: usize = 1000;

/// The document in `text` as serde_yaml would build it, when `text` keeps to the subset this
/// parser reads; None for anything else (the caller falls back to serde_yaml).
pub fn parse(text: &str) -> Option<serde_yaml::Value> {
    if !characters_are_plain(text) {
        return None;
    }
    Parser::new(text).document()
}

// ---------------------------------------------------------------------------------------------
// Characters
// ---------------------------------------------------------------------------------------------

/// Whether `text` holds only characters that libyaml reads as printable and that are not line
/// breaks other than `\n`, with every `\r` starting a `\r\n` pair. Tabs are refused as well:
/// libyaml allows them only in some positions.
fn characters_are_plain(text: &str) -> bool {
    let bytes = text.as_bytes();
    // Common case first: printable ASCII and `\n` only, checked a chunk at a time.
    let simple = bytes.chunks(64).all(|chunk| {
        chunk
            .iter()
            .fold(true, |ok, &b| ok & (is_printable_ascii(b) || b == b'\n'))
    });
    simple || (text.chars().all(is_plain_char) && carriage_returns_end_lines(bytes))
}

fn is_printable_ascii(b: u8) -> bool {
    (b' '..=b'~').contains(&b)
}

/// Whether `c` may appear in the subset: libyaml's printable characters, less its extra line
/// breaks (NEL, LS, PS), the BOM and the tab.
fn is_plain_char(c: char) -> bool {
    match c {
        '\n' | '\r' | ' '..='~' => true,
        '\u{A0}'..='\u{D7FF}' => !matches!(c, '\u{2028}' | '\u{2029}'),
        '\u{E000}'..='\u{FFFD}' => c != '\u{FEFF}',
        '\u{10000}'.. => true,
        _ => false,
    }
}

/// Whether every `\r` in `bytes` is followed by `\n`.
fn carriage_returns_end_lines(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b != b'\r' || bytes.get(i + 1) == Some(&b'\n'))
}

/// A space, a line break, or the end of the text (read as 0: the text holds no NUL).
fn is_blank_or_end(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | 0)
}

/// Whether a plain scalar may start with `b`, followed by `next`. Indicators cannot start one,
/// except `-` before a non-blank (`-1`, `-x`); `?x` and `:x` (plain in YAML) are left out.
fn starts_plain(b: u8, next: u8) -> bool {
    match b {
        b'-' => !is_blank_or_end(next),
        b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|'
        | b'>' | b'\'' | b'"' | b'%' | b'@' | b'`' => false,
        _ => !is_blank_or_end(b),
    }
}

// ---------------------------------------------------------------------------------------------
// The parser
// ---------------------------------------------------------------------------------------------

/// A cursor over the text. Block structure is read line by line: `indent` is the indentation
/// of the content line `pos` is on (None once the text is exhausted), `line_start` where that
/// line starts, so that `pos - line_start` is the column of `pos`.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line_start: usize,
    indent: Option<usize>,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            line_start: 0,
            indent: None,
            depth: 0,
        }
    }

    // --- low-level cursor helpers ---

    /// The byte at `pos + offset`, or 0 past the end.
    fn peek_at(&self, offset: usize) -> u8 {
        self.bytes.get(self.pos + offset).copied().unwrap_or(0)
    }

    fn peek(&self) -> u8 {
        self.peek_at(0)
    }

    fn column(&self) -> usize {
        self.pos - self.line_start
    }

    fn follows_space(&self) -> bool {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.bytes.get(i))
            .is_some_and(|&b| b == b' ')
    }

    fn skip_spaces(&mut self) {
        while self.peek() == b' ' {
            self.pos += 1;
        }
    }

    /// Moves past the end of the current line (a comment's included).
    fn skip_rest_of_line(&mut self) {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        self.pos += rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
    }

    /// Counts one more level of nesting; None past [`MAX_DEPTH`].
    fn descend(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    // --- lines ---

    /// From the start of a line, skips blank and comment-only lines and stops on the first
    /// character of the next content line, recording its indentation (None at the end).
    /// Refuses document markers (`---`, `...`) at the start of a line.
    fn next_line(&mut self) -> Option<()> {
        loop {
            let start = self.pos;
            self.skip_spaces();
            match self.peek() {
                0 => {
                    self.indent = None;
                    return Some(());
                }
                b'\n' => self.pos += 1,
                b'\r' => self.pos += 2,
                b'#' => self.skip_rest_of_line(),
                _ => {
                    let rest = self.bytes.get(self.pos..).unwrap_or_default();
                    if self.pos == start && (rest.starts_with(b"---") || rest.starts_with(b"...")) {
                        return None;
                    }
                    self.line_start = start;
                    self.indent = Some(self.pos - start);
                    return Some(());
                }
            }
        }
    }

    /// Whether the current line has nothing left but spaces and maybe a comment. Callers are
    /// past an indicator and its blank, so a `#` here always starts a comment.
    fn at_line_end(&self) -> bool {
        matches!(self.peek(), 0 | b'\n' | b'\r' | b'#')
    }

    /// Ends the line after its last node: spaces, an optional comment (after a space), the
    /// line break; then moves to the next content line. Refuses anything else on the line.
    fn finish_line(&mut self) -> Option<()> {
        self.skip_spaces();
        match self.peek() {
            b'#' if self.follows_space() => self.skip_rest_of_line(),
            b'\n' => self.pos += 1,
            b'\r' => self.pos += 2,
            0 => {}
            _ => return None,
        }
        self.next_line()
    }

    // --- documents and block collections ---

    /// The whole text: one node, or Null when there is no content at all.
    fn document(mut self) -> Option<Value> {
        self.next_line()?;
        let value = match self.indent {
            None => Value::Null,
            Some(_) => self.block_node()?,
        };
        // Content left over (less indented than the node, or continuing it) is not ours.
        self.indent.is_none().then_some(value)
    }

    /// The node starting at `pos` in block context: a block sequence, a block mapping (its
    /// first key on this line), a flow collection or a scalar, the latter two alone on the line.
    fn block_node(&mut self) -> Option<Value> {
        let col = self.column();
        match self.peek() {
            b'-' if is_blank_or_end(self.peek_at(1)) => self.block_sequence(col),
            b'[' | b'{' => {
                let value = self.flow_node()?;
                self.finish_line()?;
                Some(value)
            }
            _ => {
                let start = self.pos;
                let scalar = self.scalar(false)?;
                if self.key_indicator(start, false)? {
                    self.block_mapping(col, scalar)
                } else {
                    self.finish_line()?;
                    Some(scalar)
                }
            }
        }
    }

    /// A block mapping at column `col` whose first key (and its `:`) has been read.
    fn block_mapping(&mut self, col: usize, first_key: Value) -> Option<Value> {
        self.descend()?;
        let mut map = Mapping::new();
        let mut key = first_key;
        loop {
            let value = self.block_value(col, true)?;
            if map.insert(key, value).is_some() {
                return None; // serde_yaml refuses duplicate keys
            }
            match self.indent {
                Some(indent) if indent == col => key = self.block_key()?,
                Some(indent) if indent > col => return None,
                _ => break,
            }
        }
        self.depth -= 1;
        Some(Value::Mapping(map))
    }

    /// A block sequence at column `col`, `pos` on its first `-`.
    fn block_sequence(&mut self, col: usize) -> Option<Value> {
        self.descend()?;
        let mut items = Vec::new();
        loop {
            self.pos += 1; // the `-`, followed by a blank or the line end
            items.push(self.block_value(col, false)?);
            match self.indent {
                Some(indent) if indent == col && self.at_block_entry() => {}
                Some(indent) if indent > col => return None,
                _ => break,
            }
        }
        self.depth -= 1;
        Some(Value::Sequence(items))
    }

    fn at_block_entry(&self) -> bool {
        self.peek() == b'-' && is_blank_or_end(self.peek_at(1))
    }

    /// A key of a block mapping, at the start of a line, with its `:`.
    fn block_key(&mut self) -> Option<Value> {
        let start = self.pos;
        if matches!(self.peek(), b'[' | b'{') {
            return None; // a flow collection as a key
        }
        let key = self.scalar(false)?;
        self.key_indicator(start, false)?.then_some(key)
    }

    /// Whether a `:` value indicator follows the key that started at `start` (consumed if so).
    /// In block context (and after plain keys) it must be followed by a blank; in flow context a
    /// quoted key's `:` may be followed by anything. None for keys too long to be simple keys.
    fn key_indicator(&mut self, start: usize, flow: bool) -> Option<bool> {
        let after_key = self.pos;
        self.skip_spaces();
        let found = self.peek() == b':' && (flow || is_blank_or_end(self.peek_at(1)));
        if !found {
            self.pos = after_key;
            return Some(false);
        }
        if self.pos - start > MAX_KEY_BYTES {
            return None;
        }
        self.pos += 1;
        Some(true)
    }

    /// The value after a mapping's `:` or a sequence's `-` for a collection at column `col`:
    /// on the same line, or on the following lines (more indented, or for a mapping also a
    /// sequence at the same indentation), or else Null.
    fn block_value(&mut self, col: usize, in_mapping: bool) -> Option<Value> {
        self.skip_spaces();
        if !self.at_line_end() {
            return if in_mapping {
                self.inline_value()
            } else {
                self.block_node() // `- a`, `- a: b`, `- - a`, `- [a]`
            };
        }
        self.finish_line()?;
        match self.indent {
            Some(indent) if indent > col => self.block_node(),
            Some(indent) if indent == col && in_mapping && self.at_block_entry() => {
                self.block_sequence(col)
            }
            _ => Some(Value::Null),
        }
    }

    /// A mapping value on the key's line: a scalar or a flow collection, alone up to the line
    /// end. (A block sequence or a further `key:` here is a YAML error: refused.)
    fn inline_value(&mut self) -> Option<Value> {
        let value = match self.peek() {
            b'[' | b'{' => self.flow_node()?,
            _ => self.scalar(false)?,
        };
        self.finish_line()?;
        Some(value)
    }

    // --- flow collections (on one line) ---

    /// A flow collection or a scalar, in flow context.
    fn flow_node(&mut self) -> Option<Value> {
        match self.peek() {
            b'[' => self.flow_sequence(),
            b'{' => self.flow_mapping(),
            _ => self.scalar(true),
        }
    }

    /// `[a, b, ...]`, `pos` on the `[`.
    fn flow_sequence(&mut self) -> Option<Value> {
        let mut items = Vec::new();
        self.flow_entries(b']', |p| {
            items.push(p.flow_node()?);
            Some(())
        })?;
        Some(Value::Sequence(items))
    }

    /// `{k: v, ...}`, `pos` on the `{`; every entry needs a `:`, values may be empty (Null).
    fn flow_mapping(&mut self) -> Option<Value> {
        let mut map = Mapping::new();
        self.flow_entries(b'}', |p| {
            let start = p.pos;
            let key = p.scalar(true)?;
            if !p.key_indicator(start, true)? {
                return None;
            }
            p.skip_spaces();
            let value = match p.peek() {
                b',' | b'}' => Value::Null,
                _ => p.flow_node()?,
            };
            // serde_yaml refuses duplicate keys
            map.insert(key, value).is_none().then_some(())
        })?;
        Some(Value::Mapping(map))
    }

    /// The entries of a flow collection, `pos` on its opening bracket, each read by `entry`; a
    /// trailing comma is allowed, as in YAML. Leaves `pos` past `close`.
    fn flow_entries(
        &mut self,
        close: u8,
        mut entry: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.descend()?;
        self.pos += 1;
        loop {
            self.skip_spaces();
            if self.peek() == close {
                break;
            }
            entry(self)?;
            if self.flow_separator(close)? {
                break;
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Some(())
    }

    /// After an entry of a flow collection: a `,` (consumed; false) or the collection's `close`
    /// (left for the caller; true). Anything else is refused: a line break (a multi-line
    /// collection), a comment, a `:` in a sequence (a single-pair mapping).
    fn flow_separator(&mut self, close: u8) -> Option<bool> {
        self.skip_spaces();
        match self.peek() {
            b',' => {
                self.pos += 1;
                Some(false)
            }
            b if b == close => Some(true),
            _ => None,
        }
    }

    // --- scalars ---

    /// The scalar at `pos`: quoted (always a string) or plain (resolved).
    fn scalar(&mut self, flow: bool) -> Option<Value> {
        match self.peek() {
            b'\'' => self.single_quoted().map(Value::String),
            b'"' => self.double_quoted().map(Value::String),
            _ => resolve_plain(self.plain(flow)?),
        }
    }

    /// The text of a plain scalar on the current line, trailing spaces trimmed; `pos` is left
    /// just after it. It ends at a line break, at `: ` (or `:` before the line end), at ` #`,
    /// and in flow context at `,[]{}`. A flow-context `:` before one of `,?[]{}` is a libyaml
    /// error: refused. So is `<<`, a merge key.
    fn plain(&mut self, flow: bool) -> Option<&'a str> {
        let start = self.pos;
        if !starts_plain(self.peek(), self.peek_at(1)) {
            return None;
        }
        let mut end = start;
        loop {
            match self.peek() {
                0 | b'\n' | b'\r' => break,
                b' ' => {
                    self.pos += 1;
                    continue;
                }
                b':' => {
                    let next = self.peek_at(1);
                    if is_blank_or_end(next) {
                        break;
                    }
                    if flow && matches!(next, b',' | b'?' | b'[' | b']' | b'{' | b'}') {
                        return None;
                    }
                }
                b'#' if self.follows_space() => break,
                b',' | b'[' | b']' | b'{' | b'}' if flow => break,
                _ => {}
            }
            self.pos += 1;
            end = self.pos;
        }
        self.pos = end;
        let text = self.text.get(start..end)?;
        (text != "<<").then_some(text)
    }

    /// A single-quoted scalar on one line, `pos` on the opening quote; `''` stands for `'`.
    fn single_quoted(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = String::new();
        let mut chunk = self.pos;
        loop {
            match self.peek() {
                b'\'' => {
                    out.push_str(self.text.get(chunk..self.pos)?);
                    if self.peek_at(1) != b'\'' {
                        self.pos += 1;
                        return Some(out);
                    }
                    out.push('\'');
                    self.pos += 2;
                    chunk = self.pos;
                }
                0 | b'\n' | b'\r' => return None, // unclosed on this line
                _ => self.pos += 1,
            }
        }
    }

    /// A double-quoted scalar on one line, `pos` on the opening quote, with libyaml's escapes.
    fn double_quoted(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = String::new();
        let mut chunk = self.pos;
        loop {
            match self.peek() {
                b'"' => {
                    out.push_str(self.text.get(chunk..self.pos)?);
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    out.push_str(self.text.get(chunk..self.pos)?);
                    out.push(self.escape()?);
                    chunk = self.pos;
                }
                0 | b'\n' | b'\r' => return None, // unclosed on this line
                _ => self.pos += 1,
            }
        }
    }

    /// The character an escape sequence stands for, `pos` on the backslash, moved past it.
    /// Unknown escapes and escaped line breaks are refused.
    fn escape(&mut self) -> Option<char> {
        let code = self.peek_at(1);
        self.pos += 2;
        let c = match code {
            b'0' => '\0',
            b'a' => '\x07',
            b'b' => '\x08',
            b't' => '\t',
            b'n' => '\n',
            b'v' => '\x0B',
            b'f' => '\x0C',
            b'r' => '\r',
            b'e' => '\x1B',
            b' ' => ' ',
            b'"' => '"',
            b'/' => '/',
            b'\\' => '\\',
            b'N' => '\u{85}',
            b'_' => '\u{A0}',
            b'L' => '\u{2028}',
            b'P' => '\u{2029}',
            b'x' => return self.hex_escape(2),
            b'u' => return self.hex_escape(4),
            b'U' => return self.hex_escape(8),
            _ => return None,
        };
        Some(c)
    }

    /// The character of `len` hex digits at `pos`; surrogates and values past U+10FFFF are
    /// libyaml errors, refused.
    fn hex_escape(&mut self, len: usize) -> Option<char> {
        let digits = self.bytes.get(self.pos..self.pos + len)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let code = digits
            .iter()
            .fold(0u32, |acc, &d| (acc << 4) | hex_value(d));
        self.pos += len;
        char::from_u32(code)
    }
}

fn hex_value(digit: u8) -> u32 {
    char::from(digit).to_digit(16).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Plain scalar resolution, as serde_yaml 0.9 does it for untagged plain scalars
// ---------------------------------------------------------------------------------------------

/// The value of a plain scalar: Null, Bool, Number or String, in serde_yaml's order of tries.
/// None where serde_yaml fails (integers that need 128 bits).
fn resolve_plain(text: &str) -> Option<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        _ => {}
    }
    // Numbers start with a digit, a sign or a dot; anything else is a string. (Rust's float
    // parser also reads `inf` and `nan`, but serde_yaml keeps only finite results.)
    if !matches!(
        text.as_bytes().first(),
        Some(b'0'..=b'9' | b'+' | b'-' | b'.')
    ) {
        return Some(Value::String(text.to_owned()));
    }
    match integer(text) {
        Integer::Fits(number) => return Some(Value::Number(number)),
        Integer::TooWide => return None,
        Integer::Neither => {}
    }
    match float(text) {
        Some(float) if !zero_padded_digits(text) => Some(Value::Number(Number::from(float))),
        _ => Some(Value::String(text.to_owned())),
    }
}

/// How a plain scalar reads as an integer.
enum Integer {
    /// A u64 or an i64.
    Fits(Number),
    /// Only a u128 or an i128: serde_yaml's Value visitor errors on those.
    TooWide,
    Neither,
}

type RadixParser<T> = fn(&str, u32) -> Result<T, ParseIntError>;

/// serde_yaml's integer tries, in its order: unsigned and negative in 64 bits, then 128 bits.
fn integer(text: &str) -> Integer {
    if let Some(n) = unsigned(text, u64::from_str_radix) {
        Integer::Fits(Number::from(n))
    } else if let Some(n) = negative(text, i64::from_str_radix) {
        Integer::Fits(Number::from(n))
    } else if unsigned(text, u128::from_str_radix).is_some()
        || negative(text, i128::from_str_radix).is_some()
    {
        Integer::TooWide
    } else {
        Integer::Neither
    }
}

/// The radix prefixes serde_yaml knows.
const RADIXES: [(&str, u32); 3] = [("0x", 16), ("0o", 8), ("0b", 2)];

/// An optional `+`, then a radix prefix and digits, or decimal digits (no zero padding).
fn unsigned<T>(text: &str, parse: RadixParser<T>) -> Option<T> {
    let body = text.strip_prefix('+').unwrap_or(text);
    for (prefix, radix) in RADIXES {
        if let Some(digits) = body.strip_prefix(prefix) {
            if digits.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(n) = parse(digits, radix) {
                return Some(n);
            }
        }
    }
    if body.starts_with(['+', '-']) || zero_padded_digits(text) {
        return None;
    }
    parse(body, 10).ok()
}

/// `-` and a radix prefix and digits, or what Rust's signed parser takes in decimal (no zero
/// padding).
fn negative<T>(text: &str, parse: RadixParser<T>) -> Option<T> {
    for (prefix, radix) in RADIXES {
        let Some(digits) = text.strip_prefix('-').and_then(|t| t.strip_prefix(prefix)) else {
            continue;
        };
        if let Ok(n) = parse(&format!("-{digits}"), radix) {
            return Some(n);
        }
    }
    if zero_padded_digits(text) {
        return None;
    }
    parse(text, 10).ok()
}

/// Digits with a leading zero (`007`, `-01`): a string in YAML 1.2, neither integer nor float.
fn zero_padded_digits(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    digits.len() > 1
        && digits.starts_with('0')
        && digits.bytes().skip(1).all(|b| b.is_ascii_digit())
}

/// A finite float in Rust's syntax, after an optional `+`, or one of YAML's `.inf`/`.nan`.
fn float(text: &str) -> Option<f64> {
    let body = match text.strip_prefix('+') {
        Some(body) if body.starts_with(['+', '-']) => return None,
        Some(body) => body,
        None => text,
    };
    if matches!(body, ".inf" | ".Inf" | ".INF") {
        return Some(f64::INFINITY);
    }
    match text {
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        _ => body.parse::<f64>().ok().filter(|f| f.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;
    use serde_yaml::Value;

    /// The contract on `text`: a fast result equals serde_yaml's, and serde_yaml's errors are
    /// never answered. Returns the fast result, or what broke the contract.
    fn contract(text: &str) -> Result<Option<Value>, String> {
        let fast = parse(text);
        match (&fast, serde_yaml::from_str::<Value>(text)) {
            (Some(f), Ok(s)) if !same_tree(f, &s) => {
                Err(format!("{text:?}: fast {f:?}, serde_yaml {s:?}"))
            }
            (Some(f), Err(e)) => Err(format!("{text:?}: fast {f:?}, serde_yaml fails: {e}")),
            _ => Ok(fast),
        }
    }

    /// Equal trees, with mapping keys in the same order (`Mapping`'s own equality ignores the
    /// order; its Debug output shows it, and tells `-0.0` from `0.0` too).
    fn same_tree(a: &Value, b: &Value) -> bool {
        a == b && format!("{a:?}") == format!("{b:?}")
    }

    fn check(text: &str) -> Option<Value> {
        contract(text).unwrap_or_else(|broken| panic!("{broken}"))
    }

    /// Checks the contract and that the fast path is taken.
    fn accepted(text: &str) -> Value {
        check(text).unwrap_or_else(|| panic!("fast path refused {text:?}"))
    }

    /// Runs `test` on every text, then reports all failures at once.
    fn each(texts: &[&str], test: impl Fn(&str) -> Result<(), String>) {
        let failures: Vec<String> = texts.iter().filter_map(|t| test(t).err()).collect();
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// Documents in the subset: the fast path must take them and agree with serde_yaml.
    const ACCEPTED: &[&str] = &[
        // Null, bool and the YAML 1.1 words serde_yaml keeps as strings.
        "a: ~",
        "a: null",
        "a: Null",
        "a: NULL",
        "a: nULL",
        "a:",
        "a:   ",
        "a: # c",
        "a: true",
        "a: True",
        "a: TRUE",
        "a: tRUE",
        "a: false",
        "a: False",
        "a: FALSE",
        "a: yes",
        "a: no",
        "a: on",
        "a: off",
        "a: y",
        "a: n",
        "a: Yes",
        "a: OFF",
        // Integers.
        "a: 0",
        "a: -0",
        "a: +0",
        "a: +5",
        "a: -5",
        "a: 007",
        "a: -007",
        "a: +007",
        "a: 00",
        "a: 0x1F",
        "a: 0x1f",
        "a: -0x1F",
        "a: +0x1F",
        "a: 0o17",
        "a: -0o17",
        "a: 0b101",
        "a: -0b101",
        "a: 0x",
        "a: 0o",
        "a: 0b",
        "a: 0x_1",
        "a: 0xG",
        "a: 0o8",
        "a: 0b2",
        "a: 0x+1",
        "a: 0x-1",
        "a: -0x-1",
        "a: -0x+1",
        "a: +-1",
        "a: -+1",
        "a: ++1",
        "a: --1",
        "a: 1_000",
        "a: 1,000",
        "a: 18446744073709551615",
        "a: 9223372036854775807",
        "a: -9223372036854775808",
        "a: 0xFFFFFFFFFFFFFFFF",
        "a: -0x8000000000000000",
        "a: 340282366920938463463374607431768211456",
        "a: -170141183460469231731687303715884105729",
        "a: 0x100000000000000000000000000000000",
        "a: 12abc",
        "a: 1.2.3",
        // Floats.
        "a: 1.5",
        "a: .5",
        "a: 5.",
        "a: -.5",
        "a: +.5",
        "a: 1e3",
        "a: 1E-3",
        "a: -1.5e+3",
        "a: 1.0",
        "a: 0.0",
        "a: -0.0",
        "a: 00.5",
        "a: 01.5",
        "a: 0.",
        "a: 1e400",
        "a: -1e400",
        "a: .inf",
        "a: .Inf",
        "a: .INF",
        "a: +.inf",
        "a: -.inf",
        "a: -.Inf",
        "a: -.INF",
        "a: .iNF",
        "a: +-.inf",
        "a: inf",
        "a: -inf",
        "a: Infinity",
        "a: .nan",
        "a: .NaN",
        "a: .NAN",
        "a: nan",
        "a: NaN",
        "a: +.nan",
        "a: -.nan",
        "a: 1e",
        "a: e3",
        "a: .",
        "a: +",
        "a: -x",
        "a: 1.5.",
        "a: 0x1.8p1",
        "a: 1_0.5",
        // Plain strings with indicators inside.
        "a: 1:2",
        "a: a:b",
        "a: http://x:9/v1",
        "a: value # comment",
        "a: a#b",
        "a: a #b",
        "a: ${PORT:-8080}",
        "a: 10M",
        "a: a, b",
        "a: a]",
        "a: a}",
        "a: a[b]",
        "a: x{y}",
        "a: a'b",
        "a: a\"b",
        "a: a  b",
        "a: -- x",
        "a: ---",
        "a: a\\nb",
        "a: a!b",
        "a: a&b*c",
        "a: a|b>c",
        "a: a?",
        "a: a%b@c`d",
        "a: é",
        "a: 日本語",
        "a:b: c",
        "a:b:c: d",
        "-a: b",
        "a - b: c",
        "a b: c",
        "a : b",
        "a  :  b",
        "a.b: c",
        "a/b: c",
        "${X}: y",
        // Quoted scalars.
        "a: 'it''s'",
        "a: ''",
        "a: \"\"",
        "a: '#x'",
        "a: \"quoted # not comment\"",
        "a: \"\\u00e9\\n\"",
        "a: \"\\x41\\t\\\\\\\"\\/\\0\\a\\b\\v\\f\\r\\e\\ \"",
        "a: \"\\N\\_\\L\\P\"",
        "a: \"\\U0001F600\"",
        "a: \"\\uD7FF\\uE000\"",
        "a: 'a  '",
        "a: \"  a  \"",
        "a: 'a\\nb'",
        "a: \"a'b\"",
        "a: 'a\"b'",
        "a: \"null\"",
        "a: '1'",
        "a: \"true\"",
        "'a': 1",
        "\"a\": 1",
        "'a' : 1",
        "\"a b\": c",
        "'': 1",
        "\"\": 1",
        "a: 'x' # c",
        "a: \"x\"  # c",
        "a: ''''",
        "a: \"\\\"\"",
        "\"a\\u0000\": 1",
        // Keys of other types.
        "1: a",
        "-1: a",
        "1.5: a",
        "true: a",
        "null: a",
        "~: a",
        "0x10: a",
        "007: a",
        "1: a\n'1': b",
        "1: a\n1.0: b",
        "true: a\n'true': b",
        "null: a\n'null': b",
        "1: a\n01: c",
        ".nan: a",
        ".inf: a\n-.inf: b",
        // Block mappings and sequences.
        "a: 1\nb: 2",
        "a:\n  b: 1\n  c: 2\nd: 3",
        "a:\n    b: 1\nc:\n  d: 2",
        "a:\n  b:\n    c:\n      d: 1",
        "a:\n  b:\nc: 1",
        "a:\nb:",
        "a:\n\n\nb: 1",
        "- a\n- b",
        "-  a\n-   b",
        "- a\n-\n- c",
        "-\n-",
        "- - a\n  - b\n- c",
        "- - - a",
        "- a: 1\n  b: 2\n- c: 3",
        "-   a: 1\n    b: 2",
        "- a:\n  b: 1",
        "- a:\n    b: 1\n  c: 2",
        "- a:\n  - x\n  - y\n  b: 1",
        "-\n  a: 1\n  b: 2",
        "-\n  - a\n  - b",
        "-\n - a",
        "a:\n- x\n- y\nb: 1",
        "a:\n- x: 1\n  y: 2\n- z\nb:\n- 1",
        "a:\n-\n- b",
        "a:\n  - x\n  -\nb: 1",
        "a:\n  b:\n  - x\n  c: 1",
        "a:\n  - - x\n    - y",
        "a:\n  x",
        "a:\n  'x'",
        "a:\n  [x]",
        "-\n  x",
        "a:\n    x\nb: 1",
        "  a: 1\n  b: 2",
        "  - a\n  - b",
        "a: 1\n\n# c\n\nb: 2\n",
        "a: 1\n   # c\nb: 2",
        "# c\na: 1",
        "a: 1\n# c",
        "a: # c\n  b: 1",
        "- # c\n  a: 1",
        "a:\n  # c\n  b: 1",
        // Flow collections.
        "a: []",
        "a: {}",
        "a: [ ]",
        "a: { }",
        "a: [a, b, \"c\"]",
        "a: [a,b,c]",
        "a: [a, b,]",
        "a: {a: 1,}",
        "a: [[a], [b, [c]]]",
        "a: {a: 1, b: [x, y], c: {d: e}}",
        "a: {a: , b: 1}",
        "a: {\"a\":1}",
        "a: {\"a\":}",
        "a: {'a' :1}",
        "a: [a b, c]",
        "a: [-1, -a, -]",
        "a: [a:b]",
        "a: [a#b]",
        "a: [http://x:9/v1]",
        "a: {a: b:c}",
        "a: [1, 1.5, true, null, ~, '', \"\"]",
        "a: [\"a, b\", 'c]']",
        "a: [a] # c",
        "a: {a: 1, 'b': \"2\"}",
        "a: [ a , b ]",
        "a: [ {a: 1}, {b: 2} ]",
        "a: [a!b, c&d]",
        "[a, b]",
        "{a: 1}",
        "[]",
        "{}",
        "- [a, b]\n- {c: d}",
        "a:\n  [a, b]",
        "- [[]]",
        // Whole-document scalars and empty documents.
        "",
        "\n",
        "   \n",
        "# only a comment",
        "# c\n# d\n",
        "hello",
        "'hi'",
        "\"hi\"",
        "42",
        "-1",
        "~",
        "null",
        "true",
        "1.5",
        "a b c",
        "hello # c",
        "hello\n# c\n",
        // CRLF line ends.
        "a: 1\r\nb: 2\r\n",
        "a:\r\n  - x\r\n  - y\r\n",
        "a: 'x'\r\n",
        "a: # c\r\n  b: 1\r\n",
        "a: [x, y]\r\n",
        "a:\r\n",
        "# c\r\na: b",
        // Duplicate-looking keys that are not duplicates.
        "a: 1\nb:\n  a: 2",
        "- a: 1\n- a: 2",
        "{a: {a: 1}}",
    ];

    /// Valid YAML outside the subset: the fast path may refuse them; if it answers, it agrees.
    const OUTSIDE: &[&str] = &[
        "a: &x 1\nb: *x",
        "a: !!str 1",
        "a: !tag x",
        "<<: {a: 1}",
        "a: |\n  x\n",
        "a: >\n  x\n",
        "a: b\n  c",
        "a: 'b\n  c'",
        "a: \"b\n  c\"",
        "a: [b,\n  c]",
        "? a\n: b",
        "%YAML 1.2\n---\na: 1",
        "---\na: 1",
        "a: 1\n...\n",
        "\u{feff}a: 1",
        "a:\tb",
        "a: 1\rb: 2",
        "[a: b]",
        "{a, b: 1}",
        "a: \"\\\n  b\"",
        "- a\n  b",
        ":x: 1",
        "?x: 1",
        "{? a: b}",
        "a: 'x'#c",
        "a: \"x\"#c",
        "a: [x]#c",
        "[a, [b], {c: d}]: x",
        "- a\n - b",
        "a:\n- b\n c",
    ];

    /// Invalid YAML: serde_yaml errors, so the fast path must refuse.
    const REJECTED: &[&str] = &[
        "a: 1\na: 2",
        "a: 1\nb: 2\na: 3",
        "1: a\n1: b",
        "1: a\n0x1: b",
        "1: a\n+1: b",
        "null: a\n~: b",
        "true: a\nTrue: b",
        "1.0: a\n1.00: b",
        "0.0: a\n-0.0: b",
        ".nan: a\n.NaN: b",
        "{a: 1, a: 2}",
        "- a: 1\n  a: 2",
        "a: {b: 1, b: 1}",
        "a: b: c",
        "a: - b",
        "a: 18446744073709551616",
        "a: -9223372036854775809",
        "a: 0x10000000000000000",
        "a: 'x",
        "a: \"x",
        "a: [x",
        "a: {x: 1",
        "a: [x]]",
        "a: {x: 1}}",
        "a: x\n b: 1",
        "a: 1\n- b",
        "- a\nb: 1",
        "a:\n  b: 1\n c: 2",
        "a: 1\n  b: 2",
        "a: \"\\q\"",
        "a: \"\\uD800\"",
        "a: \"\\x4\"",
        "a: [x]y",
        "a: {x:}",
        "a: [x:,]",
        "a: [,]",
        "a: [a,,b]",
        "a: 'x' y",
        "a: \"x\" y",
        "a: 1\n---\nb: 2",
        "a: 1\n--- \nb: 2",
        "a\nb: 1",
        "a: `x`",
        "a: @x",
        "a: %x",
        "key: value\n\tother: 1",
        "a: \u{7f}",
        "a: \u{1}",
        "a: x\u{2028}y",
        "a: x\u{85}y",
        "\"a\":1",
        "a: [x, \"y\"z]",
    ];

    #[test]
    fn accepted_documents_take_the_fast_path() {
        each(ACCEPTED, |text| match contract(text)? {
            Some(_) => Ok(()),
            None => Err(format!(
                "{text:?} refused ({:?})",
                serde_yaml::from_str::<Value>(text)
            )),
        });
    }

    #[test]
    fn documents_outside_the_subset_keep_the_contract() {
        each(OUTSIDE, |text| match serde_yaml::from_str::<Value>(text) {
            Ok(_) => contract(text).map(|_| ()),
            Err(e) => Err(format!("{text:?} is not valid YAML: {e}")),
        });
    }

    #[test]
    fn invalid_documents_are_refused() {
        each(REJECTED, |text| {
            match (serde_yaml::from_str::<Value>(text), parse(text)) {
                (Ok(v), _) => Err(format!("{text:?} is valid YAML: {v:?}")),
                (Err(_), Some(v)) => Err(format!("{text:?} answered {v:?}")),
                (Err(_), None) => Ok(()),
            }
        });
    }

    #[test]
    fn scalars_resolve_like_serde_yaml() {
        let cases: &[(&str, Value)] = &[
            ("a: yes", Value::String("yes".into())),
            ("a: 0123", Value::String("0123".into())),
            ("a: 1_000", Value::String("1_000".into())),
            ("a: -0", Value::Number(0.into())),
            ("a: +5", Value::Number(5.into())),
            ("a: 0x1F", Value::Number(31.into())),
            ("a: -0o17", Value::Number((-15).into())),
            ("a: 1e3", Value::Number(1000.0.into())),
            ("a: 1e400", Value::String("1e400".into())),
            ("a: -.Inf", Value::Number(f64::NEG_INFINITY.into())),
            ("a: .nan", Value::Number(f64::NAN.into())),
            ("a: 'it''s'", Value::String("it's".into())),
            ("a: \"\\u00e9\\n\"", Value::String("é\n".into())),
            ("a:", Value::Null),
        ];
        for (text, expected) in cases {
            assert_eq!(accepted(text)["a"], *expected, "{text:?}");
        }
    }

    #[test]
    fn nesting_depth_is_bounded() {
        let flow = |n: usize| format!("a: {}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&flow(50)).is_some());
        for n in [99, 100, 101, 127, 128, 129, 200] {
            check(&flow(n));
        }
        let block: String = (0..150).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        check(&block);
    }

    #[test]
    fn long_keys_are_left_to_serde_yaml() {
        for len in [999, 1000, 1023, 1024, 1025, 1100] {
            let key = "k".repeat(len);
            check(&format!("{key}: 1"));
            check(&format!("a: {{{key}: 1}}"));
            check(&format!("- {key}: 1"));
            check(&format!("a: {key}"));
        }
        assert!(parse(&format!("{}: 1", "k".repeat(900))).is_some());
    }

    /// The shipped example config.
    const CONFIG_EXAMPLE: &str = include_str!("../../config.example.yaml");

    #[test]
    fn config_example_takes_the_fast_path() {
        let value = accepted(CONFIG_EXAMPLE);
        assert_eq!(
            value["server"]["port"],
            Value::String("${PORT:-8080}".into())
        );
        accepted(&CONFIG_EXAMPLE.replace('\n', "\r\n"));
    }

    /// The config the gateway's reload benchmark writes, with `n` virtual models.
    fn bench_config(n: usize) -> String {
        let models: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
        let mut out = format!(
            "providers:\n  bench:\n    type: openai_compatible\n    \
             base_url: http://127.0.0.1:9/v1\n    api_key: unused\n    models: [{}]\n\
             virtual_models:\n",
            models.join(", ")
        );
        for i in 0..n {
            out.push_str(&format!(
                "  - source: vm-{i}\n    strategy: round_robin\n    targets:\n      \
                 - model: bench/m{}\n        weight: 2\n      - model: bench/m{}\n        \
                 weight: 1\n",
                i % 100,
                (i + 1) % 100
            ));
        }
        out
    }

    #[test]
    fn bench_config_takes_the_fast_path() {
        let value = accepted(&bench_config(300));
        assert_eq!(
            value["virtual_models"][299]["source"],
            Value::String("vm-299".into())
        );
    }

    // --- randomized differential testing ---

    /// xorshift64*: a small deterministic generator.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn one_in(&mut self, n: usize) -> bool {
            self.below(n) == 0
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const EDGE_SCALARS: &[&str] = &[
        "~",
        "null",
        "Null",
        "NULL",
        "true",
        "True",
        "TRUE",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "0",
        "-0",
        "+5",
        "007",
        "0x1F",
        "0o17",
        "0b101",
        "1_000",
        "1.5",
        ".5",
        "5.",
        "1e3",
        "1E-3",
        "-1.5e+3",
        ".inf",
        "-.Inf",
        "+.inf",
        ".nan",
        ".NaN",
        "1e400",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "1:2",
        "a:b",
        "http://x:9/v1",
        "a#b",
        "${PORT:-8080}",
        "10M",
        "-x",
        "-",
        "a b",
        "it's",
        "a\"b",
        "0x",
        "-0x1F",
        "+0x10",
        "1.0",
        "-0.0",
        "+-1",
        "inf",
        "'it''s'",
        "''",
        "\"\"",
        "\"tab\\there\"",
        "\"\\u00e9\\n\"",
        "\"quoted # not comment\"",
        "'a: b'",
        "\"[x]\"",
        "\"\\x41\"",
        "\"\\U0001F600\"",
        "\"\\ud800\"",
        "é",
        "<<",
    ];

    const KEYS: &[&str] = &[
        "a", "b", "c", "key", "name", "1", "true", "null", "'a'", "\"b\"",
    ];

    fn identifier(rng: &mut Rng) -> String {
        let len = 1 + rng.below(6);
        let mut s: String = (0..len)
            .map(|_| char::from(b"abcxyz019_-."[rng.below(12)]))
            .collect();
        if s.starts_with(['-', '.']) {
            s.insert(0, 'v');
        }
        if rng.one_in(8) {
            s.push_str(" w");
        }
        s
    }

    fn scalar(rng: &mut Rng) -> String {
        if rng.one_in(2) {
            rng.pick(EDGE_SCALARS).to_string()
        } else {
            identifier(rng)
        }
    }

    fn key(rng: &mut Rng) -> String {
        match rng.below(4) {
            0 => scalar(rng),
            1 => identifier(rng),
            _ => rng.pick(KEYS).to_string(),
        }
    }

    /// One space, sometimes more.
    fn spaces(rng: &mut Rng) -> String {
        " ".repeat(if rng.one_in(4) { 1 + rng.below(3) } else { 1 })
    }

    fn flow(rng: &mut Rng, depth: usize) -> String {
        let n = rng.below(4);
        let sequence = rng.one_in(2);
        let mut items = Vec::new();
        for _ in 0..n {
            let value = if depth < 3 && rng.one_in(3) {
                flow(rng, depth + 1)
            } else {
                scalar(rng)
            };
            items.push(if sequence {
                value
            } else {
                format!("{}:{}{}", key(rng), spaces(rng), value)
            });
        }
        let separator = if rng.one_in(3) { "," } else { ", " };
        let trailing = if n > 0 && rng.one_in(6) { "," } else { "" };
        let (open, close) = if sequence { ("[", "]") } else { ("{", "}") };
        format!("{open}{}{trailing}{close}", items.join(separator))
    }

    /// A scalar or flow collection after a `:` or `-`, to the line end.
    fn inline_value(rng: &mut Rng) -> String {
        let value = if rng.one_in(4) {
            flow(rng, 0)
        } else {
            scalar(rng)
        };
        let comment = if rng.one_in(5) { " # note" } else { "" };
        format!("{}{value}{comment}\n", spaces(rng))
    }

    /// Sometimes a blank line or a comment line.
    fn noise(rng: &mut Rng, out: &mut String, col: usize) {
        match rng.below(12) {
            0 => out.push('\n'),
            1 => out.push_str(&format!("{}# comment\n", " ".repeat(rng.below(col + 3)))),
            _ => {}
        }
    }

    /// A block mapping at column `col`, its first line started with `lead`.
    fn block_mapping(rng: &mut Rng, out: &mut String, col: usize, depth: usize, lead: &str) {
        for i in 0..1 + rng.below(4) {
            if i == 0 {
                out.push_str(lead);
            } else {
                noise(rng, out, col);
                out.push_str(&" ".repeat(col));
            }
            out.push_str(&key(rng));
            out.push(':');
            block_value(rng, out, col, depth, true);
        }
    }

    /// A block sequence at column `col`, its first line started with `lead`.
    fn block_sequence(rng: &mut Rng, out: &mut String, col: usize, depth: usize, lead: &str) {
        for i in 0..1 + rng.below(4) {
            if i == 0 {
                out.push_str(lead);
            } else {
                noise(rng, out, col);
                out.push_str(&" ".repeat(col));
            }
            out.push('-');
            let pad = spaces(rng);
            let inner = col + 1 + pad.len();
            match rng.below(6) {
                0 if depth < 4 => block_mapping(rng, out, inner, depth + 1, &pad),
                1 if depth < 4 => block_sequence(rng, out, inner, depth + 1, &pad),
                _ => block_value(rng, out, col, depth, false),
            }
        }
    }

    /// The value after a `:` or `-` of a collection at column `col`.
    fn block_value(rng: &mut Rng, out: &mut String, col: usize, depth: usize, in_map: bool) {
        match rng.below(8) {
            0 => out.push('\n'),
            1 => out.push_str(" # c\n"),
            2 | 3 if depth < 4 => {
                out.push('\n');
                noise(rng, out, col);
                let inner = col + 1 + rng.below(3);
                let lead = " ".repeat(inner);
                if rng.one_in(2) {
                    block_mapping(rng, out, inner, depth + 1, &lead);
                } else {
                    block_sequence(rng, out, inner, depth + 1, &lead);
                }
            }
            4 if depth < 4 && in_map => {
                out.push('\n');
                let lead = " ".repeat(col);
                block_sequence(rng, out, col, depth + 1, &lead);
            }
            _ => out.push_str(&inline_value(rng)),
        }
    }

    fn document(rng: &mut Rng) -> String {
        let mut out = String::new();
        noise(rng, &mut out, 0);
        match rng.below(10) {
            0 => out.push_str(&format!("{}\n", flow(rng, 0))),
            1 => out.push_str(&format!("{}\n", scalar(rng))),
            2..=5 => block_mapping(rng, &mut out, 0, 0, ""),
            _ => block_sequence(rng, &mut out, 0, 0, ""),
        }
        if rng.one_in(10) {
            out = out.replace('\n', "\r\n");
        }
        out
    }

    /// `text` with one byte deleted, one of YAML's syntax characters inserted, or a line
    /// repeated (which makes duplicate keys and odd indentation).
    fn mutate(rng: &mut Rng, text: &str) -> String {
        let mut bytes = text.as_bytes().to_vec();
        let at = rng.below(bytes.len() + 1);
        match rng.below(5) {
            0 | 1 if at < bytes.len() => {
                bytes.remove(at);
            }
            2 => {
                let lines: Vec<&str> = text.split_inclusive('\n').collect();
                let line = lines[rng.below(lines.len())];
                let before = rng.below(lines.len() + 1);
                let mut out: String = lines[..before].concat();
                out.push_str(line);
                out.push_str(&lines[before..].concat());
                return out;
            }
            _ => bytes.insert(at, b": -#[]{}'\",\n  \t1"[rng.below(16)]),
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Checks `rounds` random documents and three mutants of each; returns how many documents
    /// and how many mutants took the fast path.
    fn fuzz(seed: u64, rounds: usize) -> (usize, usize) {
        let mut rng = Rng(seed);
        let (mut fast, mut fast_mutants) = (0, 0);
        for _ in 0..rounds {
            let text = document(&mut rng);
            fast += usize::from(check(&text).is_some());
            for _ in 0..3 {
                let mut mutant = mutate(&mut rng, &text);
                if rng.one_in(3) {
                    mutant = mutate(&mut rng, &mutant);
                }
                fast_mutants += usize::from(check(&mutant).is_some());
            }
        }
        (fast, fast_mutants)
    }

    #[test]
    fn random_documents_keep_the_contract() {
        let rounds = 3000;
        let (fast, fast_mutants) = fuzz(0x9E37_79B9_7F4A_7C15, rounds);
        // The generator stays mostly inside the subset: most documents must take the fast path,
        // and so must a good share of the mutants (the contract is tested where it answers).
        assert!(
            fast * 2 > rounds,
            "only {fast} of {rounds} took the fast path"
        );
        assert!(
            fast_mutants * 5 > rounds,
            "only {fast_mutants} mutants took the fast path"
        );
    }

    /// A longer run for hunting bugs: `cargo test --release -- --ignored`.
    #[test]
    #[ignore]
    fn random_documents_keep_the_contract_long() {
        for seed in 1..=20 {
            fuzz(seed * 0x1234_5678_9ABC_DEF1, 50_000);
        }
    }
}
