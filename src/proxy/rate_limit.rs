//! What a provider's answer says about its rate limits: OpenAI's `x-ratelimit-*` headers
//! (remaining, limit, reset as a Go duration such as `6m0s`), Anthropic's
//! `anthropic-ratelimit-*` (reset as an RFC 3339 time) and `Retry-After` (seconds or an HTTP
//! date), read into one `Reading` for rate-limit steering (`health::steer`).
//!
//! Pure: headers and the wall-clock time in, a reading out. It never stores anything and never
//! decides where a request goes (planning does, from `health::steer`'s state).

use http::HeaderMap;

/// One answer's rate-limit headers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reading {
    /// The smallest share of any announced limit that is left (0 = exhausted).
    pub remaining_fraction: Option<f64>,
    /// When that limit resets, in milliseconds from now.
    pub reset_in_ms: Option<u64>,
    /// `Retry-After`, in milliseconds from now.
    pub retry_after_ms: Option<u64>,
}

/// (remaining, limit, reset) header names of each limit a provider may announce.
const LIMITS: [(&str, &str, &str); 6] = [
    (
        "x-ratelimit-remaining-requests",
        "x-ratelimit-limit-requests",
        "x-ratelimit-reset-requests",
    ),
    (
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-reset-tokens",
    ),
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-reset",
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-reset",
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-reset",
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-reset",
    ),
];

/// The rate-limit reading of an answer's headers; `None` when they announce nothing.
/// `now_unix_ms` turns absolute reset times into waits.
pub fn read(headers: &HeaderMap, now_unix_ms: u64) -> Option<Reading> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let mut r = Reading {
        retry_after_ms: text("retry-after").and_then(|v| retry_after_ms(v, now_unix_ms)),
        ..Reading::default()
    };
    for (remaining, limit, reset) in LIMITS {
        let Some(left) = text(remaining).and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let fraction = match text(limit).and_then(|v| v.parse::<f64>().ok()) {
            Some(l) if l > 0.0 => (left / l).clamp(0.0, 1.0),
            // Without a limit only "none left" means anything.
            _ if left <= 0.0 => 0.0,
            _ => continue,
        };
        if r.remaining_fraction.is_none_or(|f| fraction < f) {
            r.remaining_fraction = Some(fraction);
            r.reset_in_ms = text(reset).and_then(|v| reset_ms(v, now_unix_ms));
        }
    }
    (r.remaining_fraction.is_some() || r.retry_after_ms.is_some()).then_some(r)
}

/// A reset as OpenAI writes it (a Go duration: `6m0s`, `1s`, `20ms`), as Anthropic does (an
/// RFC 3339 time), or a number of seconds.
fn reset_ms(v: &str, now_unix_ms: u64) -> Option<u64> {
    if let Some(ms) = crate::config::gomodel::parse_duration_ms(v) {
        return Some(ms);
    }
    let at: jiff::Timestamp = v.parse().ok()?;
    let at_ms = u64::try_from(at.as_millisecond()).ok()?;
    Some(at_ms.saturating_sub(now_unix_ms))
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after_ms(v: &str, now_unix_ms: u64) -> Option<u64> {
    if let Ok(s) = v.parse::<u64>() {
        return Some(s.saturating_mul(1000));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let at_ms = u64::try_from(at.as_millisecond()).ok()?;
    Some(at_ms.saturating_sub(now_unix_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// 2026-01-01T00:00:00Z.
    const NOW: u64 = 1_767_225_600_000;

    #[test]
    fn openai_headers() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-limit-tokens", "1000000"),
            ("x-ratelimit-remaining-tokens", "20000"),
            ("x-ratelimit-reset-tokens", "1.2s"),
        ]);
        let r = read(&h, NOW).unwrap();
        // Tokens are the scarcer limit: its reset counts.
        assert_eq!(r.remaining_fraction, Some(0.02));
        assert_eq!(r.reset_in_ms, Some(1_200));
        assert_eq!(r.retry_after_ms, None);
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20ms"),
        ]);
        let r = read(&h, NOW).unwrap();
        assert_eq!((r.remaining_fraction, r.reset_in_ms), (Some(0.0), Some(20)));
    }

    #[test]
    fn anthropic_headers() {
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "1"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:05Z"),
            ("anthropic-ratelimit-tokens-limit", "40000"),
            ("anthropic-ratelimit-tokens-remaining", "39000"),
            ("anthropic-ratelimit-tokens-reset", "2026-01-01T00:00:30Z"),
        ]);
        let r = read(&h, NOW).unwrap();
        assert_eq!(r.remaining_fraction, Some(0.02));
        assert_eq!(r.reset_in_ms, Some(5_000));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let r = read(&headers(&[("retry-after", "7")]), NOW).unwrap();
        assert_eq!(
            (r.retry_after_ms, r.remaining_fraction),
            (Some(7_000), None)
        );
        let r = read(
            &headers(&[("retry-after", "Thu, 01 Jan 2026 00:00:09 GMT")]),
            NOW,
        )
        .unwrap();
        assert_eq!(r.retry_after_ms, Some(9_000));
    }

    #[test]
    fn nothing_announced_is_no_reading() {
        assert_eq!(
            read(&headers(&[("content-type", "application/json")]), NOW),
            None
        );
        // A remaining count without its limit says nothing unless it is zero.
        assert_eq!(
            read(&headers(&[("x-ratelimit-remaining-requests", "12")]), NOW),
            None
        );
        let r = read(&headers(&[("x-ratelimit-remaining-requests", "0")]), NOW).unwrap();
        assert_eq!(r.remaining_fraction, Some(0.0));
    }
}
