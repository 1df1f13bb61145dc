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

/// A 64-bit signature of the header names a request carries: one bit per name, chosen by its
/// length and last letter. A name whose bit is clear is certainly absent, so most lookups of
/// optional headers (request id, user path, session, metadata) end without a scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Names(u64);

impl Names {
    pub fn of(headers: &HeaderMap) -> Names {
        Names(headers.keys().fold(0, |m, k| m | bit(k.as_str())))
    }

    /// Every name may be present (for a map whose names were not signed).
    pub const ALL: Names = Names(u64::MAX);

    pub fn may_have(self, name: &str) -> bool {
        self.0 & bit(name) != 0
    }

    /// `find`, answered at once for a name the map certainly lacks.
    pub fn find<'a>(self, headers: &'a HeaderMap, name: &str) -> Option<&'a HeaderValue> {
        if self.may_have(name) {
            find(headers, name)
        } else {
            None
        }
    }
}

/// The signature bit of a name (any letter case).
#[inline]
fn bit(name: &str) -> u64 {
    let last = name.as_bytes().last().map_or(0, u8::to_ascii_lowercase);
    1u64 << ((name.len().wrapping_mul(7) ^ usize::from(last)) & 63)
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

    #[test]
    fn the_signature_never_hides_a_present_name() {
        let names: Vec<String> = (0..200).map(|i| format!("x-name-{i}")).collect();
        for n in 0..names.len() {
            let mut h = HeaderMap::new();
            for name in &names[..n] {
                h.append(
                    http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_static("v"),
                );
            }
            let sig = Names::of(&h);
            for (k, name) in names.iter().enumerate() {
                let upper = name.to_ascii_uppercase();
                assert_eq!(sig.find(&h, name), h.get(name.as_str()));
                assert_eq!(sig.find(&h, &upper), h.get(name.as_str()));
                if k < n {
                    assert!(sig.may_have(name) && sig.may_have(&upper));
                }
            }
            assert_eq!(Names::ALL.find(&h, "x-name-0"), h.get("x-name-0"));
        }
        // A typical SDK request lets the optional lookups skip the scan.
        let sdk = map(&[
            ("host", "h"),
            ("content-type", "application/json"),
            ("content-length", "94"),
            ("user-agent", "OpenAI/Python"),
            ("accept", "application/json"),
            ("authorization", "Bearer k"),
        ]);
        let sig = Names::of(&sdk);
        let skipped = [
            "x-request-id",
            "x-modelgate-user-path",
            "x-gomodel-user-path",
            "x-modelgate-metadata",
            "x-session-id",
            "session-id",
            "x-claude-code-session-id",
        ]
        .iter()
        .filter(|n| !sig.may_have(n))
        .count();
        assert!(skipped >= 5, "{skipped}");
    }
}
