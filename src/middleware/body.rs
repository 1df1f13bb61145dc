//! The request body as the request phase sees it: its top-level fields in the client's order,
//! each kept as a span of the client's bytes until a step needs to change it.
//!
//! A coding agent's body is hundreds of kilobytes of conversation; the request middlewares
//! change a few top-level keys (`set-params`, `router`), add one element to `messages` or one
//! short field (`system-prompt`) and read the text (`guard`, `router`). Parsing the whole body
//! into a `serde_json::Value` and writing it back unescapes and escapes every byte, which cost
//! more than the proxied request itself. Here the body is walked with the request path's own
//! scanner (`proxy::json_scan`: spans, nothing decoded), a field is parsed only when a step
//! edits it, an array can be opened into its elements without parsing them, a string without
//! escapes is read where it lies, and writing the body copies every untouched span as it came.
//! This module must never reorder fields nor change a value no step edited.

use std::borrow::Cow;

use serde_json::Value;

use crate::proxy::json_scan::{for_each_item_at, for_each_member_at, skip_value_at, ScanError};

/// Top-level arrays opened into their elements' spans while the body is first walked: the
/// conversation, which the chat middlewares all walk (`system-prompt` inserts into it, `guard`
/// and `router` read its text). Other arrays (an embeddings `input` of thousands of items) stay
/// one span until a step opens them.
const OPENED: &[&str] = &["messages"];

/// A JSON object's fields, in order, over the client's bytes; a later duplicate key replaces
/// the earlier value in its place, as serde_json's order-preserving map does.
#[derive(Debug, Default)]
pub struct Body {
    raw: Vec<u8>,
    fields: Vec<(String, Slot)>,
    /// A key was repeated in the client's object (the later value took the earlier's place).
    duplicates: bool,
}

/// One value of the body.
#[derive(Debug)]
pub enum Slot {
    /// A span of the client's bytes, unparsed.
    Raw(usize, usize),
    /// Parsed (a step edits it, or wrote it).
    Value(Value),
    /// An array opened into its elements, each still a slot.
    Items(Vec<Slot>),
    /// An array as the client sent it (written as the span `.0`), whose elements' spans are
    /// known from the first walk.
    Array((usize, usize), Vec<Slot>),
    /// An object as the client sent it (written as the span `.0`), with its members' key and
    /// value spans, known from the first walk.
    Object((usize, usize), Vec<Member>),
}

/// A member of an object as spans of the body's bytes: its quoted key and its value.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    key: (usize, usize),
    value: (usize, usize),
}

impl Body {
    /// The body of a request; an error when it is not one JSON object.
    pub fn parse(raw: impl Into<Vec<u8>>) -> Result<Body, String> {
        Body::parse_or_return(raw.into()).map_err(|(e, _)| e)
    }

    /// `parse`, handing the bytes back with the error.
    pub fn parse_or_return(raw: Vec<u8>) -> Result<Body, (String, Vec<u8>)> {
        match Body::walk(&raw) {
            Ok((fields, duplicates)) => Ok(Body {
                raw,
                fields,
                duplicates,
            }),
            Err(e) => Err((e, raw)),
        }
    }

    /// The client's bytes, when no step changed anything.
    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }

    /// The client's bytes (whatever the steps changed since).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Whether the client's object repeated a key.
    pub fn has_duplicate_keys(&self) -> bool {
        self.duplicates
    }

    /// Where the value of `key` lies in the client's bytes, while no step has changed it.
    pub fn span_of(&self, key: &str) -> Option<(usize, usize)> {
        match self.fields.iter().find(|(k, _)| k == key)?.1 {
            Slot::Raw(a, b) | Slot::Array((a, b), _) | Slot::Object((a, b), _) => Some((a, b)),
            Slot::Value(_) | Slot::Items(_) => None,
        }
    }

    #[allow(clippy::type_complexity)]
    fn walk(raw: &[u8]) -> Result<(Vec<(String, Slot)>, bool), String> {
        let mut fields: Vec<(String, Slot)> = Vec::new();
        let mut duplicates = false;
        let mut bad_key = None;
        let start = raw
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(0);
        if raw.get(start) != Some(&b'{') {
            return Err("expected a JSON object".into());
        }
        let end = for_each_member_at(raw, start, |key, a| {
            let Some((ka, kb)) = key else {
                return skip_value_at(raw, a);
            };
            let Some(k) = decode(&raw[ka..kb]) else {
                bad_key = Some(ka);
                return skip_value_at(raw, a);
            };
            let (slot, b) = if raw.get(a) == Some(&b'[') && OPENED.contains(&k.as_ref()) {
                // The elements, and the members of those that are objects (a message's role
                // and content), in the same pass.
                let mut items = Vec::new();
                let b = for_each_member_at(raw, a, |_, s| {
                    if raw.get(s) != Some(&b'{') {
                        let e = skip_value_at(raw, s)?;
                        items.push(Slot::Raw(s, e));
                        return Ok(e);
                    }
                    let mut members = Vec::new();
                    let e = for_each_item_at(raw, s, |key, value| {
                        if let Some(key) = key {
                            members.push(Member { key, value });
                        }
                    })?;
                    items.push(Slot::Object((s, e), members));
                    Ok(e)
                })?;
                (Slot::Array((a, b), items), b)
            } else {
                let b = skip_value_at(raw, a)?;
                (Slot::Raw(a, b), b)
            };
            match fields.iter_mut().find(|(f, _)| *f == k) {
                Some((_, old)) => {
                    *old = slot;
                    duplicates = true;
                }
                None => fields.push((k.into_owned(), slot)),
            }
            Ok(b)
        })
        .map_err(|e| match e {
            ScanError::Syntax { reason, at } | ScanError::Shape { reason, at } => {
                format!("{reason} at byte {at}")
            }
        })?;
        if let Some(at) = bad_key {
            return Err(format!("the key at byte {at} is not a valid string"));
        }
        if raw[end..].iter().any(|c| !c.is_ascii_whitespace()) {
            return Err("trailing characters after the object".into());
        }
        Ok((fields, duplicates))
    }

    pub fn get(&self, key: &str) -> Option<SlotRef<'_>> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.view(&self.raw))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == key)
    }

    /// Sets `key`, in its place when present, else last.
    pub fn insert(&mut self, key: &str, value: Value) {
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, slot)) => *slot = Slot::Value(value),
            None => self.fields.push((key.to_string(), Slot::Value(value))),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.fields.retain(|(k, _)| k != key);
    }

    /// The value of `key`, parsed so it can be edited.
    pub fn value_mut(&mut self, key: &str) -> Option<&mut Value> {
        let Body { raw, fields, .. } = self;
        let slot = fields.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)?;
        if !matches!(slot, Slot::Value(_)) {
            *slot = Slot::Value(slot.to_value(raw));
        }
        match slot {
            Slot::Value(v) => Some(v),
            Slot::Raw(..) | Slot::Items(_) | Slot::Array(..) | Slot::Object(..) => None,
        }
    }

    /// The elements of the array at `key`, opened without parsing them; `None` when `key` is
    /// absent or not an array.
    pub fn items_mut(&mut self, key: &str) -> Option<ItemsMut<'_>> {
        let Body { raw, fields, .. } = self;
        let slot = fields.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)?;
        let opened = match slot {
            Slot::Items(_) => None,
            Slot::Array(_, items) => Some(std::mem::take(items)),
            Slot::Raw(a, b) => {
                let (a, b) = (*a, *b);
                if raw.get(a) != Some(&b'[') {
                    return None;
                }
                let mut items = Vec::new();
                for_each_item_at(&raw[..b], a, |_, (s, e)| items.push(Slot::Raw(s, e))).ok()?;
                Some(items)
            }
            Slot::Value(Value::Array(a)) => {
                Some(std::mem::take(a).into_iter().map(Slot::Value).collect())
            }
            Slot::Value(_) | Slot::Object(..) => return None,
        };
        if let Some(items) = opened {
            *slot = Slot::Items(items);
        }
        match slot {
            Slot::Items(items) => Some(ItemsMut { raw, items }),
            Slot::Raw(..) | Slot::Value(_) | Slot::Array(..) | Slot::Object(..) => None,
        }
    }

    /// The body as bytes: untouched fields exactly as the client sent them.
    pub fn to_vec(&self) -> Vec<u8> {
        self.to_vec_with_span("").0
    }

    /// `to_vec`, and where in the bytes the value of `key` was written (so that the request
    /// path need not scan the body again to find its `model`).
    pub fn to_vec_with_span(&self, key: &str) -> (Vec<u8>, Option<(usize, usize)>) {
        let mut out = Vec::with_capacity(self.raw.len() + 256);
        let mut span = None;
        out.push(b'{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // A String always serializes.
            let _ = serde_json::to_writer(&mut out, k);
            out.push(b':');
            let start = out.len();
            v.write(&self.raw, &mut out);
            if k == key {
                span = Some((start, out.len()));
            }
        }
        out.push(b'}');
        (out, span)
    }

    /// The whole body as a value (for tests and for `resolve`).
    pub fn to_value(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_value(&self.raw)))
                .collect(),
        )
    }
}

impl From<Value> for Body {
    /// A parsed body (a non-object becomes an empty body, which no step acts on).
    fn from(v: Value) -> Body {
        match v {
            Value::Object(map) => Body {
                raw: Vec::new(),
                fields: map.into_iter().map(|(k, v)| (k, Slot::Value(v))).collect(),
                duplicates: false,
            },
            _ => Body::default(),
        }
    }
}

/// An opened array of the body, to edit in place.
pub struct ItemsMut<'a> {
    raw: &'a [u8],
    items: &'a mut Vec<Slot>,
}

impl ItemsMut<'_> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn any(&self, f: impl Fn(SlotRef<'_>) -> bool) -> bool {
        self.items.iter().any(|s| f(s.view(self.raw)))
    }

    pub fn position(&self, f: impl Fn(SlotRef<'_>) -> bool) -> Option<usize> {
        self.items.iter().position(|s| f(s.view(self.raw)))
    }

    pub fn insert(&mut self, at: usize, value: Value) {
        self.items
            .insert(at.min(self.items.len()), Slot::Value(value));
    }

    pub fn retain(&mut self, f: impl Fn(SlotRef<'_>) -> bool) {
        let raw = self.raw;
        self.items.retain(|s| f(s.view(raw)));
    }
}

impl Slot {
    fn view<'a>(&'a self, raw: &'a [u8]) -> SlotRef<'a> {
        match self {
            Slot::Raw(a, b) => SlotRef::Raw(&raw[*a..*b]),
            Slot::Value(v) => SlotRef::Value(v),
            Slot::Items(items) | Slot::Array(_, items) => SlotRef::Items(items, raw),
            Slot::Object((a, b), members) => SlotRef::Object(&raw[*a..*b], members, raw),
        }
    }

    fn to_value(&self, raw: &[u8]) -> Value {
        self.view(raw).value().into_owned()
    }

    fn write(&self, raw: &[u8], out: &mut Vec<u8>) {
        match self {
            Slot::Raw(a, b) | Slot::Array((a, b), _) | Slot::Object((a, b), _) => {
                out.extend_from_slice(&raw[*a..*b])
            }
            // A Value always serializes.
            Slot::Value(v) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
            Slot::Items(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(raw, out);
                }
                out.push(b']');
            }
        }
    }
}

/// A value of the body to read: the client's bytes or parsed.
#[derive(Clone, Copy)]
pub enum SlotRef<'a> {
    Raw(&'a [u8]),
    Value(&'a Value),
    /// An opened array's elements, over the body's bytes.
    Items(&'a [Slot], &'a [u8]),
    /// An object's bytes, and its members' spans over the body's bytes.
    Object(&'a [u8], &'a [Member], &'a [u8]),
}

/// A quoted JSON string's text: borrowed when it has no escapes.
fn decode(quoted: &[u8]) -> Option<Cow<'_, str>> {
    if quoted.len() < 2 || quoted[0] != b'"' {
        return None;
    }
    let inner = &quoted[1..quoted.len() - 1];
    if memchr::memchr(b'\\', inner).is_none() {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    crate::proxy::json_scan::unescape(quoted).map(Cow::Owned)
}

impl<'a> SlotRef<'a> {
    /// The string this value is, borrowed from the client's bytes when it has no escapes.
    pub fn as_str(self) -> Option<Cow<'a, str>> {
        match self {
            SlotRef::Raw(b) => decode(b),
            SlotRef::Value(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
            SlotRef::Value(_) | SlotRef::Items(..) | SlotRef::Object(..) => None,
        }
    }

    /// This value parsed (borrowed when it already is).
    pub fn value(self) -> Cow<'a, Value> {
        match self {
            // The span was scanned as one valid value.
            SlotRef::Raw(b) | SlotRef::Object(b, ..) => {
                Cow::Owned(serde_json::from_slice(b).unwrap_or(Value::Null))
            }
            SlotRef::Value(v) => Cow::Borrowed(v),
            SlotRef::Items(items, raw) => Cow::Owned(Value::Array(
                items.iter().map(|s| s.to_value(raw)).collect(),
            )),
        }
    }

    /// One field of this object, when it is one (the last of duplicate keys, as when parsed);
    /// raw members stay raw.
    pub fn field(self, key: &str) -> Option<SlotRef<'a>> {
        match self {
            SlotRef::Raw(b) => {
                if b.first() != Some(&b'{') {
                    return None;
                }
                let mut found = None;
                let _ = for_each_item_at(b, 0, |k, (s, e)| {
                    if let Some((ka, kb)) = k {
                        if decode(&b[ka..kb]).is_some_and(|k| k == key) {
                            found = Some((s, e));
                        }
                    }
                });
                found.map(|(s, e)| SlotRef::Raw(&b[s..e]))
            }
            SlotRef::Value(v) => v.get(key).map(SlotRef::Value),
            SlotRef::Object(_, members, raw) => members
                .iter()
                .rev()
                .find(|m| decode(&raw[m.key.0..m.key.1]).is_some_and(|k| k == key))
                .map(|m| SlotRef::Raw(&raw[m.value.0..m.value.1])),
            SlotRef::Items(..) => None,
        }
    }

    /// Calls `f` with each element when this is an array.
    pub fn for_each_item(self, f: &mut dyn FnMut(SlotRef<'a>)) {
        match self {
            SlotRef::Raw(b) => {
                if b.first() == Some(&b'[') {
                    let _ = for_each_item_at(b, 0, |_, (s, e)| f(SlotRef::Raw(&b[s..e])));
                }
            }
            SlotRef::Value(Value::Array(a)) => a.iter().for_each(|v| f(SlotRef::Value(v))),
            SlotRef::Value(_) | SlotRef::Object(..) => {}
            SlotRef::Items(items, raw) => items.iter().for_each(|s| f(s.view(raw))),
        }
    }

    /// Whether this is a non-empty array.
    pub fn is_nonempty_array(self) -> bool {
        match self {
            SlotRef::Raw(b) => {
                b.first() == Some(&b'[')
                    && b[1..]
                        .iter()
                        .find(|c| !c.is_ascii_whitespace())
                        .is_some_and(|c| *c != b']')
            }
            SlotRef::Value(Value::Array(a)) => !a.is_empty(),
            SlotRef::Value(_) | SlotRef::Object(..) => false,
            SlotRef::Items(items, _) => !items.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RAW: &str = r#"{"model":"m", "messages":[{"role":"user","content":"a\nb"},{"role":"assistant","content":[{"type":"text","text":"c"}]}],"n":1,"n":2}"#;

    #[test]
    fn untouched_bodies_round_trip_to_the_same_value_and_fields_keep_their_bytes() {
        let b = Body::parse(RAW.as_bytes()).expect("an object");
        let expected: Value = serde_json::from_str(RAW).expect("json");
        assert_eq!(b.to_value(), expected);
        let out = String::from_utf8(b.to_vec()).expect("utf-8");
        assert!(out.contains(r#""content":"a\nb""#), "{out}");
        assert_eq!(serde_json::from_str::<Value>(&out).expect("json"), expected);
    }

    #[test]
    fn edits_land_in_place_and_new_keys_last() {
        let mut b = Body::parse(RAW.as_bytes()).expect("an object");
        b.insert("model", json!("x"));
        b.insert("temperature", json!(0.5));
        b.remove("n");
        b.items_mut("messages")
            .expect("an array")
            .insert(0, json!({"role": "system", "content": "s"}));
        let v: Value = serde_json::from_slice(&b.to_vec()).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["model", "messages", "temperature"]);
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["messages"][1]["content"], "a\nb");
        assert_eq!(v["messages"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn strings_are_borrowed_unless_escaped_and_fields_are_found_raw() {
        let b = Body::parse(
            br#"{"a":"plain","b":"esc\u00e9","c":{"role":"user","role":"tool"},"d":[],"e":[1]}"#,
        )
        .expect("an object");
        let a = b.get("a").expect("a").as_str().expect("a string");
        assert!(matches!(a, Cow::Borrowed("plain")));
        let s = b.get("b").expect("b").as_str().expect("a string");
        assert_eq!(s, "esc\u{e9}");
        let role = b
            .get("c")
            .expect("c")
            .field("role")
            .and_then(SlotRef::as_str);
        assert_eq!(role.as_deref(), Some("tool"));
        assert!(!b.get("d").expect("d").is_nonempty_array());
        assert!(b.get("e").expect("e").is_nonempty_array());
    }

    #[test]
    fn messages_are_walked_once_into_their_members_and_written_as_sent() {
        let raw = br#"{"messages": [ {"role":"user", "content":"a\"b", "role":"tool"} , 7,
            {"content":[{"type":"text","text":"c"}]} ] }"#;
        let b = Body::parse(raw.to_vec()).expect("an object");
        let mut seen = Vec::new();
        b.get("messages")
            .expect("messages")
            .for_each_item(&mut |m| {
                let role = m
                    .field("role")
                    .and_then(SlotRef::as_str)
                    .map(Cow::into_owned);
                let content = m.field("content").map(|c| c.value().into_owned());
                seen.push((role, content));
            });
        assert_eq!(
            seen,
            [
                (Some("tool".to_string()), Some(json!("a\"b"))),
                (None, None),
                (None, Some(json!([{"type": "text", "text": "c"}]))),
            ]
        );
        let expected: Value = serde_json::from_slice(raw).expect("json");
        assert_eq!(b.to_value(), expected);
        let out = String::from_utf8(b.to_vec()).expect("utf-8");
        assert!(
            out.contains(r#"[ {"role":"user", "content":"a\"b", "role":"tool"} , 7,"#),
            "{out}"
        );
    }

    #[test]
    fn a_non_object_is_refused() {
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"{").is_err());
    }
}
