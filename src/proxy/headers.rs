//! Header lookup for the request path.
//!
//! `HeaderMap::get` with a `&str` name parses the name and hashes it on every call; a request
//! usually carries a handful of headers, and the gateway asks for several names per request
//! (request id, key, user path, session, metadata). A linear scan of a small map compares a
//! few short strings instead. Large maps still go through the hash.

use http::{HeaderMap, HeaderValue};

/// Maps with more entries than this are searched through their hash.
const SCAN_LIMIT: usize = 16;

/// The first value of the header `name` (any letter case), as `HeaderMap::get` returns it.
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a HeaderValue> {
    if headers.len() > SCAN_LIMIT {
        return headers.get(name);
    }
    headers
        .iter()
        .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn agrees_with_the_hashed_lookup() {
        let small = map(&[
            ("content-type", "application/json"),
            ("x-user-path", "/team/a"),
            ("x-user-path", "/team/b"),
            ("authorization", "Bearer k"),
        ]);
        let names: Vec<String> = (0..40).map(|i| format!("x-extra-{i}")).collect();
        let mut large = small.clone();
        for n in &names {
            large.insert(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_static("v"),
            );
        }
        for h in [&small, &large] {
            for name in [
                "content-type",
                "Content-Type",
                "X-USER-PATH",
                "x-user-path",
                "authorization",
                "missing",
                "",
                "bad name",
                "x-extra-7",
            ] {
                assert_eq!(find(h, name), h.get(name), "{name} in {} headers", h.len());
            }
        }
        assert_eq!(
            find(&small, "x-user-path").map(|v| v.as_bytes()),
            Some(&b"/team/a"[..])
        );
    }
}
